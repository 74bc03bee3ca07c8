"""The CPU benchmark scripts in bench/, called in-process with tiny settings (the real runs take minutes)."""

import importlib.util
import json
from pathlib import Path

import pytest
from helpers import one_thread  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    """Import bench/<name>.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The scripts set one intra-op thread themselves; this restores the count afterwards."""


def _refuses(main, argv, capsys, needle="error:"):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize("members", [1, 2])  # one Trainer run per seed; both seeds in one ensemble run
def test_quality_bench_writes_runs_summary_and_progress(tmp_path, members, capsys):
    out = tmp_path / "q.json"
    quality = _script("quality")
    assert quality.main(["--seeds", "2", "--data", "ring8", "--workers", "1", "--members", str(members),
                         "--set", "steps=2", "--set", "batch_size=16", "--set", "g_width=8", "--set", "d_width=8",
                         "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "[1/2] ring8 seed" in stdout and "[2/2] ring8 seed" in stdout
    assert "PacGAN paper PacGAN2" in stdout and f"wrote {out}" in stdout
    rec = json.loads(out.read_text())
    assert [run["seed"] for run in rec["runs"]] == [0, 1]
    assert all(run["config"]["steps"] == 2 and run["config"]["g_width"] == 8 for run in rec["runs"])
    assert all(run["config"]["batch_size"] == 16 and run["members"] == members for run in rec["runs"])
    assert rec["members"] == members
    s = rec["summary"]["ring8"]
    assert s["runs"] == 2 and 0 <= s["modes"]["mean"] <= 8 and s["meets_target"] in (True, False)
    assert rec["overrides"] == {"steps": 2, "batch_size": 16, "g_width": 8, "d_width": 8}


def test_quality_summary_statistics():
    quality = _script("quality")
    assert quality.mean_se([2.0]) == (2.0, 0.0)
    mean, se = quality.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx((1.0 / 3) ** 0.5)
    runs = [{"data": "ring8", "modes": m, "high_quality": hq, "reverse_kl": 0.0, "seconds": 1.0}
            for m, hq in ((8, 99.0), (8, 96.0))]
    assert quality.summarise(runs)["ring8"]["meets_target"] is True        # 8 modes, 97.5% >= 97%
    runs[1]["modes"] = 7
    assert quality.summarise(runs)["ring8"]["meets_target"] is False


@pytest.mark.parametrize("bad", [["--set", "stepz=3"], ["--data", "moons"], ["--set", "pack=2"], ["--members", "0"]])
def test_quality_bench_refuses_unknown_fields_and_data(bad, capsys):
    _refuses(_script("quality").main, bad, capsys)


def test_cpu_point_step_bench_times_every_form(tmp_path, capsys):
    out = tmp_path / "s.json"
    step = _script("cpu_point_step")
    assert step.main(["--rounds", "2", "--burst", "1", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert set(rec["results"]) == {"two_step", "fast_layers", "one_pass", "both"}
    assert all(v["median_ms"] > 0 for v in rec["results"].values())
    assert rec["results"]["two_step"]["speedup_vs_two_step"] == 1.0
    assert rec["env"]["device_type"] == "cpu" and rec["rounds"] == 2
    import fastgan.models.mlp as mlp
    assert mlp._run_hidden.__name__ == "_run_hidden"   # the patched layer function is restored
    _refuses(step.main, ["--rounds", "0"], capsys, "positive")


def test_cpu_ensemble_step_bench_times_standalone_and_ensembles(tmp_path, capsys):
    ens = _script("cpu_ensemble_step")
    out = tmp_path / "e.json"
    assert ens.main(["--members", "1,2", "--procs", "1", "--steps", "4", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert set(rec["results"]) == {"1", "2"} and rec["procs"] == 1
    assert all(v["median_ms"] > 0 and len(v["per_process_ms"]) == 1 for v in rec["results"].values())
    assert rec["results"]["1"]["speedup_vs_standalone"] == 1.0
    capsys.readouterr()
    assert ens.main(["--worker", "2", "--steps", "4"]) == 0          # what each process of --procs N prints
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ms"] > 0
    ab = tmp_path / "ab.json"
    assert ens.main(["--inplace-ab", "--members", "2", "--rounds", "1", "--steps", "4", "--out", str(ab)]) == 0
    res = json.loads(ab.read_text())["results"]
    assert res["bit_identical"] is True and res["members"] == 2 and all(v > 0 for v in res["median_ms"].values())
    _refuses(ens.main, ["--members", "0"], capsys, "positive")
