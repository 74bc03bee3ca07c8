"""`--tensorboard`: losses, evaluation results and sample grids as event files beside metrics.jsonl."""

import json
import shutil
import sys
import time

import pytest

from fastgan import Trainer
from fastgan.cli import main
from fastgan.tensorboard_log import INSTALL_HINT, scalars_of
from helpers import one_thread, tiny_points  # noqa: F401  (one_thread: fixture)


def _accumulated(run):
    """What TensorBoard shows for a run folder (it drops purged events as it reads)."""
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_event_files_hold_losses_evaluation_and_samples(tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=8, log_every=4, sample_every=4, eval_every=8, eval_metrics="modes",
                        ckpt_every=0, tensorboard=True)).fit()
    acc = _accumulated(run)
    logged = [r for r in _records(run) if "eval" not in r]
    evals = [r for r in _records(run) if "eval" in r]
    assert [r["step"] for r in logged] == [4, 8] and [r["step"] for r in evals] == [8]
    for rec in logged + evals:   # every number of metrics.jsonl, at its step, as TensorBoard reads it back
        for tag, value in scalars_of(rec).items():
            events = {e.step: e.value for e in acc.Scalars(tag)}
            assert events[rec["step"]] == pytest.approx(value, rel=1e-6, abs=1e-12), tag
    tags = set(acc.Tags()["scalars"])
    assert {"train/d_loss", "train/g_loss", "train/images_per_s", "eval/modes", "eval/reverse_kl"} <= tags
    assert not any(t.endswith(("/step", "/time")) for t in tags)
    images = acc.Images("samples")
    assert [im.step for im in images] == [4, 8]
    from PIL import Image
    with Image.open(run / "samples" / "step_00000008.png") as png:
        assert (images[-1].width, images[-1].height) == png.size


def test_resume_continues_the_event_log_without_duplicates(tmp_path, one_thread):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    cfg = tiny_points(run, steps=8, log_every=2, ckpt_every=4, keep_ckpts=3, sample_every=0, tensorboard=True)
    Trainer(cfg).fit()
    # as if killed after step 4's checkpoint: the events of steps 6 and 8 were written, their checkpoint was not
    shutil.rmtree(run / "checkpoints" / "step_00000008")
    resumed_at = time.time()
    resumed = Trainer(cfg)
    assert resumed.step == 4
    resumed.fit()
    events = _accumulated(run).Scalars("train/d_loss")
    assert [e.step for e in events] == [2, 4, 6, 8]
    assert all(e.wall_time < resumed_at for e in events[:2]) and all(e.wall_time >= resumed_at for e in events[2:])
    want = {r["step"]: r["d_loss"] for r in resumed.history if "d_loss" in r}
    assert [e.value for e in events] == pytest.approx([want[s] for s in (2, 4, 6, 8)], rel=1e-6)
    # the resumed writer marks step 5 as a restart (the first, step 0), so TensorBoard drops later old events
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    files = sorted((run / "tensorboard").iterdir())
    starts = [e.step for f in files for e in EventFileLoader(str(f)).Load() if e.HasField("session_log")]
    assert len(files) == 2 and starts == [0, 5]
    # starting over (no checkpoint left) hides every earlier event
    shutil.rmtree(run / "checkpoints")
    Trainer(tiny_points(run, steps=2, log_every=2, ckpt_every=0, sample_every=0, tensorboard=True)).fit()
    assert [e.step for e in _accumulated(run).Scalars("train/d_loss")] == [2]


def test_missing_package_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    # as on a machine without the extra: torch's tensorboard module then fails to import the package
    for name in list(sys.modules):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run = tmp_path / "run"
    rc = main(["train", "--data", "ring8", "--out", str(run), "--steps", "2", "--tensorboard", "--no-progress",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fastgan: error: --tensorboard needs the tensorboard package") and err.count("\n") == 1
    assert INSTALL_HINT in err and "fastgan[tensorboard]" in INSTALL_HINT
    assert not run.exists()   # nothing loaded, built or written
