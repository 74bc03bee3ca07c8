"""The data-parallel benchmark scripts, run in-process with tiny settings."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from helpers import one_thread  # noqa: F401  (fixture)

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_comm_model_counts_the_presets_and_agrees_with_torch_and_the_measured_flops(one_thread):
    cm = _load("ddp_comm_model")
    m = cm.model()
    p = m["presets"]["dcgan64"]
    assert p["bytes_per_step"] == 4 * (p["g_params"] + p["d_params"]) == 4 * (3_576_707 + 2_765_633)
    for pr in m["presets"].values():   # DDP's bucketing, modelled, is torch's own
        assert pr["torch_g_buckets"] in (None, pr["g_buckets"]) and pr["torch_d_buckets"] in (None, pr["d_buckets"])
        assert sum(pr["g_buckets"]) == 4 * pr["g_params"]
    flops = m["dcgan64_flops_gflop"][512]
    assert abs(flops["step_measured_recipe"] - m["measured_gflop_512"]) / m["measured_gflop_512"] < 0.005
    rows = {(r["gpus"], r["link"]): r for r in m["dcgan64_rows"]}
    r8 = rows[(8, "NVLink 4")]
    assert r8["sent_MB_per_gpu"] == pytest.approx(2 * 7 / 8 * p["bytes_per_step"] / 1e6)
    assert r8["comm_ms"] == pytest.approx(r8["sent_MB_per_gpu"] * 1e6 / 450e9 * 1e3)
    for r in m["dcgan64_rows"]:   # overlap can only help, and a larger per-GPU batch hides more
        assert 0 < r["eff_no_overlap_b128"] <= r["eff_overlap_b128"] <= 1
        assert r["eff_no_overlap_b128"] <= r["eff_no_overlap_b512"]
    assert "| dcgan64 | 3,576,707 | 2,765,633 | 25.37 MB |" in cm.report(m)


def test_throughput_worker_times_real_steps(tmp_path, capsys, one_thread):
    tp = _load("ddp_throughput")
    tp.main(["--worker", "--steps", "2", "--warmup", "1", "--batch_size", "8", "--out", str(tmp_path / "run")])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["processes"] == 1 and result["ms_per_step"] > 0 and "DDP" not in result["plan"]
    assert not (tmp_path / "run").exists()   # the benchmark writes nothing
