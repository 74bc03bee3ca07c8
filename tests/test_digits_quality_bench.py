"""bench/digits_quality.py end to end on tiny runs (the real study trains for minutes per seed)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "steps=4", "--set", "batch_size=8", "--set", "g_width=8", "--set", "d_width=8",
        "--set", "z_dim=16", "--eval_every", "2", "--eval_n", "40"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("digits_quality", ROOT / "bench" / "digits_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def shared_cache(tmp_path_factory, monkeypatch):
    """The session's shared cache: the digits classifier trains once for all tests."""
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fastgan-cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_curves_by_steps(tmp_path, bench, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    assert bench.main(["--preset", "old", "--seeds", "0", "1", *TINY, "--out", str(old)]) == 0
    assert bench.main(["--seeds", "3", *TINY, "--set", "r1_gamma=0.5", "--out", str(new)]) == 0
    a, b = json.loads(old.read_text()), json.loads(new.read_text())
    assert [run["seed"] for run in a["runs"]] == [0, 1] and [run["seed"] for run in b["runs"]] == [3]
    assert a["runs"][0]["config"]["digits_upscale"] == "bicubic" and b["runs"][0]["config"]["digits_upscale"] == "block"
    assert a["runs"][0]["config"]["lr_g"] == 2e-4 and a["runs"][0]["config"]["g_width"] == 8
    assert b["runs"][0]["config"]["r1_gamma"] == 0.5 and b["runs"][0]["config"]["lr_g"] == 2e-3
    for run in a["runs"] + b["runs"]:
        assert [p["step"] for p in run["curve"]] == [0, 2, 4]
        assert all(p["pixel_fd"] > 0 and 1 <= p["classes"] <= 10 for p in run["curve"])
    s = a["summary"]["old"]
    assert s["pixel_fd"]["values"] == [run["final"]["pixel_fd"] for run in a["runs"]]
    assert s["pixel_fd"]["se"] > 0 and s["classes_min"] >= 1 and s["steps"] == [4, 4]
    assert "old: pixel_fd" in capsys.readouterr().out


def test_demo_runs_the_command_and_evaluates_its_checkpoints(tmp_path, bench, monkeypatch):
    from fastgan.cli import main as fastgan_main

    called = []

    def in_process(*args):          # the commands as the script runs them, without a process each
        called.append(args[0])
        assert fastgan_main(list(args)) == 0

    monkeypatch.setattr(bench, "_fastgan", in_process)
    out = tmp_path / "demo.json"
    assert bench.main(["--demo", "--preset", "both", "--seeds", "0", *TINY, "--keep", str(tmp_path / "runs"),
                       "--out", str(out)]) == 0
    assert called == ["train", "eval", "eval"] * 2
    rec = json.loads(out.read_text())
    assert [(run["preset"], run["seed"]) for run in rec["runs"]] == [("new", 0), ("old", 0)]
    new, old = rec["runs"]
    assert new["command"].startswith("fastgan train --data digits --out RUN --seed 0 --steps=4 --batch_size=8")
    assert "--digits_upscale=bicubic" in old["command"] and "digits_upscale" not in new["command"]
    assert new["eval_command"] == "fastgan eval --run RUN/checkpoints/step_N --metrics pixel_fd,classes --n 40 --seed 0"
    assert old["config"]["digits_upscale"] == "bicubic" and new["config"]["digits_upscale"] == "block"
    assert (new["config"]["r1_gamma"], old["config"]["r1_gamma"]) == (1.0, 0.0)
    for run in rec["runs"]:
        assert [p["step"] for p in run["curve"]] == [2, 4] and run["final"] == run["curve"][-1]
        assert run["final"]["pixel_fd"] > 0 and 1 <= run["final"]["classes"] <= 10
    saved = json.loads((tmp_path / "runs" / "new0" / "eval_step_00000004.json").read_text())
    assert saved["metrics"]["pixel_fd"] == new["final"]["pixel_fd"]
    assert set(rec["summary"]) == {"old", "new"}
    assert rec["summary"]["new"]["pixel_fd"]["values"] == [new["final"]["pixel_fd"]]

    # the A/B timing of both defaults, then the plot of the curves against steps times those timings
    ab = tmp_path / "ab.json"
    assert bench.main(["--ab", "--preset", "both", "--threads", "1", "--chunk", "2", "--rounds", "3",
                       "--out", str(ab)]) == 0
    timing = json.loads(ab.read_text())
    assert [(s["preset"], s["threads"], len(s["ms_per_step"])) for s in timing["settings"]] == [
        ("old", 1, 3), ("new", 1, 3)]
    assert all(0 < s["median_ms_per_step"] < 60_000 for s in timing["settings"])
    assert set(timing["new_over_old"]) == {"1"} and 0 < timing["new_over_old"]["1"] < 100
    png = tmp_path / "plot.png"
    assert bench.main(["--plot", str(out), "--timing", str(ab), "--threads", "1", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match=r"holds no old defaults at 2 thread\(s\)"):
        bench.main(["--plot", str(out), "--timing", str(ab), "--threads", "2", "--out", str(png)])


def test_refuses_unknown_fields_and_a_plot_without_timing(bench, capsys):
    with pytest.raises(SystemExit, match="TrainConfig field"):
        bench.main(["--set", "stepz=3"])
    with pytest.raises(SystemExit):
        bench.main(["--plot", "a.json"])
    assert "--plot needs --timing" in capsys.readouterr().err
