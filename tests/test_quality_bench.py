"""bench/quality.py end to end on two tiny runs (the real benchmark trains 20 runs for minutes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("members", [1, 5])  # one Trainer run per seed; both seeds in one ensemble run
def test_quality_bench_writes_runs_summary_and_progress(tmp_path, members):
    out = tmp_path / "q.json"
    cmd = [sys.executable, str(ROOT / "bench" / "quality.py"), "--seeds", "2", "--data", "ring8", "--workers", "1",
           "--members", str(members), "--set", "steps=3", "--set", "batch_size=16", "--set", "g_width=8",
           "--set", "d_width=8", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "[1/2] ring8 seed" in r.stdout and "[2/2] ring8 seed" in r.stdout
    assert "PacGAN paper PacGAN2" in r.stdout
    rec = json.loads(out.read_text())
    assert [run["seed"] for run in rec["runs"]] == [0, 1]
    assert all(run["config"]["steps"] == 3 and run["config"]["g_width"] == 8 for run in rec["runs"])
    assert all(run["config"]["batch_size"] == 16 and run["members"] == min(members, 2) for run in rec["runs"])
    assert rec["members"] == members
    s = rec["summary"]["ring8"]
    assert s["runs"] == 2 and 0 <= s["modes"]["mean"] <= 8 and s["meets_target"] in (True, False)
    assert rec["overrides"] == {"steps": 3, "batch_size": 16, "g_width": 8, "d_width": 8}


def test_quality_bench_refuses_unknown_fields_and_data(tmp_path):
    for bad in (["--set", "stepz=3"], ["--data", "moons"], ["--set", "pack=2"], ["--members", "0"]):
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), *bad], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and "error:" in r.stderr


def test_cpu_point_step_bench_times_every_form(tmp_path):
    out = tmp_path / "s.json"
    cmd = [sys.executable, str(ROOT / "bench" / "cpu_point_step.py"), "--rounds", "2", "--burst", "1",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert set(rec["results"]) == {"two_step", "fast_layers", "one_pass", "both"}
    assert all(v["median_ms"] > 0 for v in rec["results"].values())
    assert rec["results"]["two_step"]["speedup_vs_two_step"] == 1.0
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_point_step.py"), "--rounds", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "positive" in r.stderr


def test_cpu_ensemble_step_bench_times_standalone_and_ensembles(tmp_path):
    out = tmp_path / "e.json"
    cmd = [sys.executable, str(ROOT / "bench" / "cpu_ensemble_step.py"), "--members", "1,2", "--procs", "1",
           "--steps", "4", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert set(rec["results"]) == {"1", "2"} and rec["procs"] == 1
    assert all(v["median_ms"] > 0 and len(v["per_process_ms"]) == 1 for v in rec["results"].values())
    assert rec["results"]["1"]["speedup_vs_standalone"] == 1.0
    ab = tmp_path / "ab.json"
    cmd = [sys.executable, str(ROOT / "bench" / "cpu_ensemble_step.py"), "--inplace-ab", "--members", "2",
           "--rounds", "1", "--steps", "4", "--out", str(ab)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(ab.read_text())["results"]
    assert res["bit_identical"] is True and res["members"] == 2 and all(v > 0 for v in res["median_ms"].values())
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_ensemble_step.py"), "--members", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "positive" in r.stderr
