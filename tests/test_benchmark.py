"""The throughput runner on CPU: JSON and table, skipped CUDA recipes, same networks everywhere, the
headline ratio, the --compare gate, errors."""

import copy
import json

import pytest
from helpers import one_thread  # noqa: F401  (fixture)
import torch

from fastgan import benchmark
from fastgan import benchmark_report as report_mod
from fastgan import benchmark_recipes as recipes
from fastgan.benchmark_context import BenchContext, PRESETS, get_preset, network_signature, synthetic_data
from fastgan.benchmark_plain import PlainGAN, plain_networks
from fastgan.cli import main as cli_main

TINY = ["--device", "cpu", "--preset", "dcgan16", "--batch_size", "4", "--width", "8", "--steps", "1",
        "--windows", "2", "--warmup", "1"]
RECIPES = "pytorch-eager-fp32,pytorch-eager-bf16,pytorch-graph-bf16,pytorch-graph-compiled,fastgan-eager," \
          "fastgan-compile,fastgan-graph,fastgan-fast"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One tiny CPU benchmark run shared by the tests below: (exit status, stdout, report)."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    mp = pytest.MonkeyPatch()
    # dynamo's tracing alone ("eager" backend): the compile recipe still runs through torch.compile, without
    # inductor's ~40 s per graph on a CPU (the engine's own tests check the compiled maths)
    mp.setenv("FASTGAN_COMPILE_BACKEND", "eager")
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
    assert by["pytorch-eager-bf16"]["status"] == "skipped" and by["pytorch-eager-bf16"]["reason"] == "needs CUDA"
    for name in ("pytorch-graph-bf16", "pytorch-graph-compiled", "fastgan-graph"):
        assert by[name]["status"] == "skipped" and by[name]["reason"] == "needs CUDA (whole-step CUDA graph)"
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
    assert by["fastgan-compile"]["info"]["engine"]["compile_backend"] == "eager"
    # pytorch/examples also computes D's weight gradients in the G step; fastgan freezes D there
    assert by["pytorch-eager-fp32"]["gflop_per_step"] > by["fastgan-eager"]["gflop_per_step"]
    assert by["fastgan-eager"]["gflop_per_step"] == by["fastgan-fast"]["gflop_per_step"]
    # every recipe that ran trained the same networks, and the headline says so
    ran = [r for r in report["results"] if r["status"] == "ok"]
    assert len({json.dumps(r["networks"], sort_keys=True) for r in ran}) == 1
    assert ran[0]["networks"]["d_tensors"] == 7 and ran[0]["networks"]["g_tensors"] == 8
    (head,) = report["headline"]
    assert head["same_networks"] is True and head["fastest_plain"] == "pytorch-eager-fp32"
    fastest = min((r for r in ran if not r["plain"]), key=lambda r: r["ms_per_step"]["median"])
    assert head["fastest_fastgan"] == fastest["recipe"]
    assert head["speedup"] == pytest.approx(by["pytorch-eager-fp32"]["ms_per_step"]["median"]
                                            / fastest["ms_per_step"]["median"])
    assert report["complete"] is True
    for name in by:
        assert name in stdout
    assert "ms/step" in stdout and "skipped: needs CUDA" in stdout and "headline dcgan16 b4: " in stdout


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
    regressions, lines = report_mod.compare(report, other)
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


def test_append_adds_results_and_recomputes_the_headline(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert benchmark.main(TINY + ["--recipes", "pytorch-eager-fp32", "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    assert first["headline"][0]["fastest_fastgan"] is None and first["headline"][0]["speedup"] is None
    assert benchmark.main(TINY + ["--recipes", "fastgan-eager", "--out", str(out), "--append"]) == 0
    report = json.loads(out.read_text())
    assert [r["recipe"] for r in report["results"]] == ["pytorch-eager-fp32", "fastgan-eager"]
    assert report["results"][0] == {**first["results"][0], "speedup_vs_best_plain": 1.0}
    assert report["config"]["appended_to"]["recipes"] == ["pytorch-eager-fp32"]
    (head,) = report["headline"]
    assert head["fastest_fastgan"] == "fastgan-eager" and head["fastest_plain"] == "pytorch-eager-fp32"
    assert head["speedup"] > 0 and head["same_networks"] is True
    other = copy.deepcopy(report)
    other["env"]["device_name"] = "Another GPU"
    out.write_text(json.dumps(other))
    capsys.readouterr()
    assert benchmark.main(TINY + ["--recipes", "fastgan-eager", "--out", str(out), "--append"]) == 2
    assert "holds results from 'Another GPU'" in capsys.readouterr().err
    assert benchmark.main(TINY + ["--append"]) == 2


# ---------------------------------------------------------------------------- same networks in every recipe
def _fastgan_networks(preset, batch=8):
    """fastgan's (G, D) exactly as the benchmark's fastgan recipes build them (on the CPU)."""
    ctx = BenchContext(preset, batch, torch.device("cpu"), synthetic_data(preset, torch.device("cpu")), "unused")
    (built,) = [recipes.fastgan_recipe(recipes.FastganVariant("eager"))(ctx)]
    return built.networks


def _head_as_linear(D, p):
    """fastgan applies D's last 4x4 convolution as a linear layer on the flattened map."""
    return p.flatten(1) if p is D.out.weight else p


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_plain_recipe_has_fastgans_parameter_shapes(name):
    preset = get_preset(name, width=8)
    G, D = _fastgan_networks(preset)
    for sigmoid in (True, False):   # recipe (1) ends D in a Sigmoid; (2), (3), (4) use logits
        pG, pD = plain_networks(preset, sigmoid)
        assert [p.shape for p in pG.parameters()] == [p.shape for p in G.parameters()]
        assert [p.shape for p in pD.parameters()] == [_head_as_linear(D, p).shape for p in D.parameters()]
    ctx = BenchContext(preset, 8, torch.device("cpu"), synthetic_data(preset, torch.device("cpu")), "unused")
    ran = [r.build(ctx) for r in recipes.RECIPES if r.name in ("pytorch-eager-fp32", "fastgan-eager", "fastgan-fast")]
    assert len({json.dumps(network_signature(*b.networks)) for b in ran}) == 1


@pytest.mark.parametrize("name", ["dcgan16", "dcgan32", "mlp2d"])
def test_plain_networks_compute_fastgans_function(name):
    """With fastgan's weights copied in, the plain networks give fastgan's outputs and running statistics."""
    preset = get_preset(name, width=8)
    G, D = _fastgan_networks(preset)
    pG, pD = plain_networks(preset, sigmoid=False)
    with torch.no_grad():
        for net, plain in ((G, pG), (D, pD)):
            for p, q in zip(net.parameters(), plain.parameters()):
                q.copy_(p.reshape(q.shape))
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, preset.z_dim, generator=g)
    x = synthetic_data(preset, torch.device("cpu"))[:8]
    x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x
    z_plain = z * getattr(G, "z_gain", 1.0)
    z_plain = z_plain[:, :, None, None] if preset.kind == "image" else z_plain
    torch.testing.assert_close(pG(z_plain) * getattr(G, "scale", 1.0), G(z), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pD(x / getattr(D, "scale", 1.0)).view(-1), D(x), rtol=1e-4, atol=1e-5)
    fast_stats = [b for n, b in D.named_buffers() if "running" in n]
    plain_stats = [b for n, b in pD.named_buffers() if "running" in n]
    assert len(fast_stats) == len(plain_stats) and (len(fast_stats) > 0) == (preset.kind == "image")
    for a, b in zip(fast_stats, plain_stats):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_compiled_pieces_train_like_the_eager_step():
    """Recipe (4)'s compiled forward+loss pieces (aot_eager here; inductor on a GPU) follow the eager step."""
    preset = get_preset("dcgan16", width=4)
    ctx = BenchContext(preset, 4, torch.device("cpu"), synthetic_data(preset, torch.device("cpu")), "unused")
    eager = PlainGAN(ctx, amp=None, channels_last=False, adam={}, sigmoid=False)
    comp = PlainGAN(ctx, amp=None, channels_last=False, adam={}, sigmoid=False,
                    compile_kwargs={"backend": "aot_eager", "dynamic": False, "fullgraph": True})
    start = [p.detach().clone() for p in comp.G.parameters()]
    for gan in (eager, comp):
        torch.manual_seed(3)
        for _ in range(2):
            gan.tuned_step()
    for net in ("G", "D"):
        for a, b in zip(getattr(eager, net).state_dict().values(), getattr(comp, net).state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(start, comp.G.parameters()))   # it trained
    assert all(p.requires_grad for p in comp.D.parameters())   # D unfrozen after the G update


def test_headline_is_fastest_fastgan_against_fastest_plain():
    def res(recipe, plain, ms, digest="a", status="ok", batch=4):
        return {"recipe": recipe, "plain": plain, "preset": "p", "batch_size": batch, "status": status,
                "ms_per_step": {"median": ms}, "networks": {"digest": digest}}

    results = [res("pytorch-a", True, 4.0), res("pytorch-b", True, 2.0), res("pytorch-c", True, 1.0, status="skipped"),
               res("fastgan-x", False, 1.0), res("fastgan-y", False, 0.5), res("fastgan-z", False, 3.0, batch=8)]
    head = {h["batch_size"]: h for h in report_mod.add_speedups(results)}
    assert head[4]["fastest_plain"] == "pytorch-b" and head[4]["fastest_fastgan"] == "fastgan-y"
    assert head[4]["speedup"] == 4.0 and head[4]["same_networks"] is True
    assert head[8]["speedup"] is None and head[8]["fastest_plain"] is None
    assert results[0]["speedup_vs_best_plain"] == 0.5 and "speedup_vs_best_plain" not in results[2]
    results[1]["networks"]["digest"] = "b"
    (h4, _) = report_mod.add_speedups(results)
    assert h4["same_networks"] is False
    assert "different networks" in report_mod.headline_line(h4)



def test_benchmark_tools_are_extras_not_runtime_dependencies():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "pytest" not in runtime
    assert any(d.startswith("pytest-benchmark") for d in project["optional-dependencies"]["bench"])
