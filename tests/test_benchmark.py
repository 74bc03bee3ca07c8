"""The throughput runner on CPU: JSON and table, skipped CUDA recipes, the --compare gate, errors."""

import copy
import json

import pytest
from helpers import one_thread  # noqa: F401  (fixture)
import torch

from fastgan import benchmark
from fastgan import benchmark_recipes as recipes
from fastgan.cli import main as cli_main

TINY = ["--device", "cpu", "--preset", "dcgan16", "--batch_size", "4", "--width", "8", "--steps", "1",
        "--windows", "2", "--warmup", "1"]
RECIPES = "pytorch-eager-fp32,pytorch-eager-bf16,pytorch-graph-bf16,fastgan-eager,fastgan-compile,fastgan-graph," \
          "fastgan-fast"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One tiny CPU benchmark run shared by the tests below: (exit status, stdout, report)."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    mp = pytest.MonkeyPatch()
    mp.setenv("FASTGAN_COMPILE_BACKEND", "aot_eager")   # inductor takes ~40 s per graph on a CPU
    import io
    import contextlib
    buf = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(buf):
            rc = benchmark.main(TINY + ["--recipes", RECIPES, "--out", str(out)])
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return rc, buf.getvalue(), out


def test_cpu_run_writes_well_formed_json_and_table(cpu_run):
    rc, stdout, out = cpu_run
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["schema"] == benchmark.SCHEMA
    env = report["env"]
    assert {"device_name", "torch", "triton", "cuda", "driver", "fastgan", "nvml"} <= set(env)
    assert env["device_type"] == "cpu" and env["nvml"] is False
    assert report["config"]["batch_sizes"] == [4] and report["config"]["presets"] == ["dcgan16"]
    by = {r["recipe"]: r for r in report["results"]}
    assert list(by) == RECIPES.split(",")
    for name in ("pytorch-eager-bf16", "pytorch-graph-bf16", "fastgan-graph"):
        assert by[name]["status"] == "skipped" and by[name]["reason"] == "needs CUDA"
    for name in ("pytorch-eager-fp32", "fastgan-eager", "fastgan-compile", "fastgan-fast"):
        r = by[name]
        assert r["status"] == "ok", r
        ms = r["ms_per_step"]
        assert ms["windows"] == 2 and 0 < ms["min"] <= ms["median"] <= ms["max"]
        assert ms["q1"] <= ms["q3"]
        assert r["images_per_s"] == pytest.approx(4 * 1000 / ms["median"])
        assert r["gflop_per_step"] > 0 and r["tflops"] > 0
        assert r["peak_mem_mb"] is None and r["timing"] == "perf_counter"
    assert by["fastgan-fast"]["info"]["engine"]["mode"] == "eager"
    assert by["fastgan-compile"]["info"]["engine"]["compile_backend"] == "aot_eager"
    # pytorch/examples also computes D's weight gradients in the G step; fastgan freezes D there
    assert by["pytorch-eager-fp32"]["gflop_per_step"] > by["fastgan-eager"]["gflop_per_step"]
    assert by["fastgan-eager"]["gflop_per_step"] == by["fastgan-fast"]["gflop_per_step"]
    for name in by:
        assert name in stdout
    assert "ms/step" in stdout and "skipped: needs CUDA" in stdout


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch with one intra-op thread (see helpers.one_thread)."""


def _faster(report, factor):
    fake = copy.deepcopy(report)
    for r in fake["results"]:
        if r["status"] == "ok":
            for k in ("median", "min", "max", "q1", "q3"):
                r["ms_per_step"][k] *= factor
    return fake


def test_compare_gate(cpu_run, tmp_path, capsys):
    _, _, out = cpu_run
    report = json.loads(out.read_text())
    same = ["--compare", str(out), "--results", str(out)]
    assert benchmark.main(same) == 0
    assert "REGRESSION" not in capsys.readouterr().out
    faster = tmp_path / "faster.json"
    faster.write_text(json.dumps(_faster(report, 0.5)))
    assert benchmark.main(["--compare", str(faster), "--results", str(out)]) == 1
    text = capsys.readouterr().out
    assert "REGRESSION" in text and "fastgan-eager" in text and "4 recipe(s) more than 10% slower" in text
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(_faster(report, 2.0)))
    assert benchmark.main(["--compare", str(slower), "--results", str(out)]) == 0
    # just inside and just outside the threshold
    assert benchmark.main(["--compare", str(faster), "--results", str(out), "--threshold", "1.05"]) == 0


def test_compare_after_a_fresh_run(cpu_run, tmp_path):
    _, _, out = cpu_run
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(_faster(json.loads(out.read_text()), 1000.0)))
    assert benchmark.main(TINY + ["--recipes", "pytorch-eager-fp32", "--compare", str(slower)]) == 0


def test_compare_function_reports_devices_and_missing_recipes(cpu_run):
    _, _, out = cpu_run
    report = json.loads(out.read_text())
    other = copy.deepcopy(report)
    other["env"]["device_name"] = "Another GPU"
    other["results"] = other["results"][:1]
    regressions, lines = benchmark.compare(report, other)
    assert regressions == [] and any("Another GPU" in l for l in lines)
    assert "1 recipe(s) in common" in lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--recipes", "nope"], "unknown recipe 'nope'"),
    (["--preset", "dcgan7"], "unknown preset 'dcgan7'"),
    (["--results", "x.json"], "--results needs --compare"),
    (["--compare", "missing.json", "--results", "missing.json"], "no benchmark results at 'missing.json'"),
    (["--device", "cpu", "--steps", "0"], "--steps must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle, capsys):
    assert benchmark.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan bench: error:") and needle in err and "\n" not in err


def test_not_json_baseline(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert benchmark.main(["--compare", str(bad), "--results", str(bad)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def test_cli_dispatch_and_list(capsys):
    assert cli_main(["bench", "--list"]) == 0
    text = capsys.readouterr().out
    assert "dcgan64" in text and "pytorch-graph-bf16" in text and "mlp2d" in text


def test_points_preset_on_cpu(tmp_path):
    out = tmp_path / "p.json"
    rc = benchmark.main(["--device", "cpu", "--preset", "mlp2d", "--batch_size", "32", "--width", "16",
                         "--steps", "2", "--windows", "1", "--warmup", "1",
                         "--recipes", "pytorch-eager-fp32,fastgan-eager", "--out", str(out)])
    assert rc == 0
    results = json.loads(out.read_text())["results"]
    assert [r["status"] for r in results] == ["ok", "ok"]


def test_a_failing_recipe_is_reported_and_exit_3(monkeypatch, tmp_path, capsys):
    def broken(ctx):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(recipes, "RECIPES", recipes.RECIPES + (recipes.Recipe("broken", broken, "fails"),))
    out = tmp_path / "r.json"
    assert benchmark.main(TINY + ["--recipes", "broken,pytorch-eager-fp32", "--out", str(out)]) == 3
    res = json.loads(out.read_text())["results"]
    assert res[0]["status"] == "error" and res[0]["reason"] == "RuntimeError: boom"
    assert res[1]["status"] == "ok"
