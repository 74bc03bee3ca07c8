"""Operating-system errors the command line meets: one line naming the path and what to do, exit
status 2, nothing already written lost; and sample counts bounded before anything is generated.

The tests run as root in CI containers, where permissions are not enforced, so a permission or
read-only error is injected where the file or folder is made; a path through a file is real."""

import errno
import json
import pathlib
import weakref

import numpy as np
import pytest

from fastgan import checkpoint_store as store
from fastgan.cli import main
from helpers import one_thread  # noqa: F401  (a fixture)

TINY = ["--data", "grid25", "--batch_size", "32", "--g_width", "32", "--d_width", "32", "--sample_every", "0",
        "--no-progress", "--device", "cpu", "--log_every", "2"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [x for x in err if x.startswith("fastgan: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _refuse_open(monkeypatch, module, refuse, code, text):
    """Make ``open`` inside ``module`` raise ``OSError(code, text)`` where ``refuse(file, mode)`` says so."""
    import builtins

    def fake(file, mode="r", *a, **k):
        if refuse(str(file), mode):
            raise OSError(code, text)
        return builtins.open(file, mode, *a, **k)
    monkeypatch.setattr(module, "open", fake, raising=False)


def _fail_mkdir(monkeypatch, target, code, text):
    real = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if self == target:
            raise OSError(code, text, str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


@pytest.mark.parametrize("code, text, hint", [
    (errno.EACCES, "Permission denied", "fix its permissions or choose another location"),
    (errno.EROFS, "Read-only file system", "the file system is read-only: choose a writable location"),
])
def test_train_out_that_cannot_be_written(tmp_path, capsys, monkeypatch, one_thread, code, text, hint):
    run = tmp_path / "run"
    _fail_mkdir(monkeypatch, run, code, text)
    assert main(["train", "--out", str(run), *TINY, "--steps", "2"]) == 2
    line = _one_line(capsys)
    assert f"'{run}'" in line and text in line and hint in line
    assert not run.exists()


def test_train_out_through_a_file(tmp_path, capsys, one_thread):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    assert main(["train", "--out", str(blocker / "run"), *TINY, "--steps", "2"]) == 2
    line = _one_line(capsys)
    assert f"'{blocker / 'run'}'" in line and "a part of that path is a file" in line
    assert blocker.read_text() == "keep me"


def test_full_disk_while_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, one_thread):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--steps", "4", "--ckpt_every", "2"]) == 0
    real = store._write_file

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store, "_write_file", full)
    assert main(["train", "--out", str(run), "--steps", "6"]) == 2
    line = _one_line(capsys)
    assert "No space left on device; free some space and rerun" in line and str(run / "checkpoints") in line
    monkeypatch.setattr(store, "_write_file", real)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
    assert main(["train", "--out", str(run), "--steps", "6"]) == 0
    assert "continuing run" in capsys.readouterr().err


def test_full_disk_on_the_metrics_log(tmp_path, capsys, monkeypatch, one_thread):
    import fastgan.train as train_mod

    run = tmp_path / "run"
    # a failing write() names no file: the message must still name the log
    _refuse_open(monkeypatch, train_mod, lambda f, mode: f.endswith("metrics.jsonl") and "a" in mode,
                 errno.ENOSPC, "No space left on device")
    assert main(["train", "--out", str(run), *TINY, "--steps", "2"]) == 2
    line = _one_line(capsys)
    assert f"could not append to '{run / 'metrics.jsonl'}': No space left on device" in line


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from helpers import trained_tiny_run
    return trained_tiny_run(tmp_path_factory.mktemp("images") / "run", conditional=False)


@pytest.mark.parametrize("out", ["s.npy", "s.png", "s.npz", "dir/"])
def test_sample_out_on_a_read_only_file_system_keeps_what_was_there(tmp_path, capsys, monkeypatch, image_run, out):
    import fastgan.files as files_mod

    run = image_run
    dest = tmp_path / "out"
    dest.mkdir()
    old = dest / ("dir" if out == "dir/" else out)
    if out == "dir/":
        old.mkdir()
        (old / "0000.png").write_bytes(b"an earlier sample")
    else:
        old.write_bytes(b"an earlier result")

    _refuse_open(monkeypatch, files_mod, lambda f, mode: f.startswith(str(dest)) and mode[0] in "wxa",
                 errno.EROFS, "Read-only file system")
    target = str(dest / out)
    assert main(["sample", "--run", str(run), "--n", "8", "--out", target]) == 2
    line = _one_line(capsys)
    assert f"could not write samples to '{target}': Read-only file system" in line
    if out == "dir/":
        assert (old / "0000.png").read_bytes() == b"an earlier sample"
    else:
        assert old.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in dest.rglob("*")) == sorted(p.name for p in [old, *old.glob("*")])


def test_eval_out_through_a_file_is_one_line(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--steps", "2"]) == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["eval", "--run", str(run), "--metrics", "modes", "--n", "100",
                 "--out", str(blocker / "eval.json")]) == 2
    line = _one_line(capsys)
    assert str(blocker) in line and "a file of that name is in the way" in line


def test_export_out_through_a_file_is_one_line(tmp_path, capsys, point_run):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    assert main(["export", "--run", str(point_run), "--out", str(blocker / "g.onnx")]) == 2
    line = _one_line(capsys)
    assert f"could not write the ONNX file '{blocker / 'g.onnx'}'" in line and "choose another location" in line
    assert blocker.read_text() == "keep me"


def test_full_disk_while_writing_an_onnx_file_keeps_the_earlier_one(tmp_path, monkeypatch):
    import fastgan.files as files_mod
    from fastgan import StorageError
    from fastgan.export.onnx_export import _write_onnx

    old = tmp_path / "g.onnx"
    old.write_bytes(b"an earlier export")
    def full(fd):   # the data does not fit: reported at the latest when it is flushed
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files_mod.os, "fsync", full)
    with pytest.raises(StorageError, match=r"could not write the ONNX file '.*g.onnx': No space left on device; "
                                           r"free some space and rerun"):
        _write_onnx(old, b"a new model")
    assert old.read_bytes() == b"an earlier export" and [p.name for p in tmp_path.iterdir()] == ["g.onnx"]


# ------------------------------------------------------------------ sample counts
@pytest.fixture(scope="module")
def point_run(tmp_path_factory):
    from fastgan import Trainer
    from helpers import tiny_points
    return Trainer(tiny_points(tmp_path_factory.mktemp("points") / "run", steps=2)).fit().run_dir


@pytest.mark.parametrize("out, needle", [
    ("x.png", r"1,000,000,000 samples need 7.5 GiB in memory for a .png file; the most is 2.0 GiB "
              r"\(268,435,456 samples\): write a .npy file or a folder/"),
    ("x.npz", r"need 7.5 GiB in memory for a .npz file"),
    ("x.npy", r"1,000,000,000 samples need about 7.5 GiB at '.*x.npy', but only 1.0 MiB is free there"),
])
def test_a_billion_samples_are_refused_before_anything_is_generated(tmp_path, capsys, monkeypatch, point_run, out,
                                                                    needle):
    import collections

    import fastgan.sample_output as so
    monkeypatch.setattr(so.shutil, "disk_usage", lambda p: collections.namedtuple("u", "total used free")(
        2 << 20, 1 << 20, 1 << 20))
    import fastgan.sampling as sampling

    def never(*a, **k):
        raise AssertionError("samples were generated before the count was checked")
    monkeypatch.setattr(sampling, "generate_batches", lambda *a, **k: map(never, [0]))
    assert main(["sample", "--run", str(point_run), "--n", "1000000000", "--out", str(tmp_path / out)]) == 2
    assert __import__("re").search(needle, _one_line(capsys))
    assert list(tmp_path.iterdir()) == []


def _tracked(batches):
    """Yield the batches, counting how many are alive at once (weak references)."""
    alive, peak = [0], [0]

    def gone():
        alive[0] -= 1

    def gen():
        for b in batches:
            a = np.array(b)
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
            weakref.finalize(a, gone)
            yield a
            del a
    return gen(), peak


@pytest.mark.parametrize("out", ["s.npy", "dir/"])
def test_npy_files_and_folders_are_streamed_batch_by_batch(tmp_path, out):
    from fastgan.sample_output import write_sample_batches

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(40, 1, 4, 4)).astype(np.float32)
    stream, peak = _tracked(x[i:i + 4] for i in range(0, 40, 4))
    written = write_sample_batches(stream, 40, (1, 4, 4), f"{tmp_path}/{out}")
    assert peak[0] <= 2   # never more than the batch being written (and the next being made)
    if out == "s.npy":
        np.save(tmp_path / "ref.npy", x)
        assert (tmp_path / "s.npy").read_bytes() == (tmp_path / "ref.npy").read_bytes()
    else:
        assert [p.name for p in written] == [f"{i:04d}.png" for i in range(40)]
