import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastgan.cli import main
from helpers import one_thread  # noqa: F401  (fixture)

TINY = ["--batch_size", "32", "--g_width", "32", "--d_width", "32", "--log_every", "5",
        "--sample_every", "0", "--no-progress", "--device", "cpu"]


def _fastgan(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fastgan", *args], capture_output=True, text=True, env=env, **kw)


def test_train_sample_end_to_end(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    r = _fastgan("train", "--data", "ring8", "--steps", "10", "--out", str(run), *TINY)
    assert r.returncode == 0, r.stderr
    assert "trained to step 10" in r.stdout
    for name in ("config.json", "metrics.jsonl", "samples", "checkpoints"):
        assert (run / name).exists(), name
    # continue the same run with more steps (in this process): only --steps changes
    assert main(["train", "--out", str(run), "--steps", "15"]) == 0
    out = capsys.readouterr()
    assert "continuing run" in out.err and "trained to step 15" in out.out
    assert json.loads((run / "config.json").read_text())["steps"] == 15

    assert main(["sample", "--run", str(run), "--n", "9", "--out", str(tmp_path / "s.npy")]) == 0
    a = np.load(tmp_path / "s.npy")
    assert a.shape == (9, 2) and a.dtype == np.float32
    assert main(["sample", "--run", str(run), "--n", "9", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (9, 2)
    assert main(["sample", "--run", str(run), "--n", "50", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_image_samples_to_grid_and_folder(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--resolution", "16", "--steps", "2", "--out", str(run),
                 "--batch_size", "8", "--g_width", "8", "--d_width", "8", "--z_dim", "8",
                 "--no-progress", "--device", "cpu", "--sample_every", "0"]) == 0
    assert main(["sample", "--run", str(run), "--n", "5", "--out", str(tmp_path / "dir") + "/"]) == 0
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == [f"000{i}.png" for i in range(5)]
    assert main(["sample", "--run", str(run), "--n", "5", "--out", str(tmp_path / "g.png")]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "g.png").size[0] > 16
    x = np.load(_save_npy(run, tmp_path))
    assert x.shape == (4, 1, 16, 16) and x.min() >= -1 and x.max() <= 1


def _save_npy(run, tmp_path):
    out = tmp_path / "x.npy"
    assert main(["sample", "--run", str(run), "--n", "4", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("args, needle", [
    (["train", "--data", "cifar99"], "unknown dataset"),
    (["train", "--data", "grid25", "--steps", "-3"], "steps must be a positive integer"),
    (["train", "--data", "grid25", "--loss", "nope"], "unknown loss 'nope'"),
    (["train", "--data", "digits", "--resolution", "48"], "resolution 48 is not supported"),
    (["sample", "--run", "RUN_MISSING", "--n", "4", "--out", "x.png"], "no run or checkpoint"),
    (["sample", "--run", "RUN_MISSING", "--n", "4", "--out", "x.gif"], "no run or checkpoint"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, needle):
    args = [a.replace("RUN_MISSING", str(tmp_path / "missing")) for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan: error: ") and needle in err
    assert len(err.splitlines()) == 1


def test_missing_and_empty_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder, needle in [(tmp_path / "nope", "does not exist"), (tmp_path / "empty", "no images")]:
        assert main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert needle in err.lower() or needle in err, err


def test_bad_output_suffix_keeps_nothing_half_written(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "grid25", "--steps", "2", "--out", str(run), *TINY]) == 0
    assert main(["sample", "--run", str(run), "--n", "4", "--out", str(tmp_path / "x.gif")]) == 2
    assert "use a .png, .npy or .npz file" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_python_dash_m_and_version():
    r = _fastgan("--version")
    assert r.returncode == 0 and r.stdout.startswith("fastgan ")


@pytest.mark.parametrize("data, omp, expect_one", [("ring8", None, True), ("ring8", "2", False),
                                                   ("digits", None, False)])
def test_point_runs_use_one_cpu_thread_unless_told(tmp_path, monkeypatch, data, omp, expect_one):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    args = ["train", "--data", data, "--steps", "1", "--out", str(tmp_path / "run"), "--batch_size", "8",
            "--g_width", "8", "--d_width", "8", "--sample_every", "0", "--no-progress", "--device", "cpu"]
    if data == "digits":
        args += ["--resolution", "16", "--z_dim", "8"]
    assert main(args) == 0
    assert calls == ([1] if expect_one else [])
