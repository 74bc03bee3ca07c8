"""The run folder: its lock (two processes), the metrics log rewound to the resumed step, and the loop's
use of both with signals (SIGTERM, Ctrl-C, a second Ctrl-C while a checkpoint is saved)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from fastgan import StorageError
from fastgan.checkpoint_store import step_of   # a staging folder is a valid answer too
from fastgan.run_folder import LOCK_FILE, METRICS_FILE, RunLock, RunLockedError, rewind_metrics
from helpers import one_thread, state_equal, tiny_points  # noqa: F401  (one_thread: a fixture)

HOLD = """
import sys
from fastgan.run_folder import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()   # hold until the test closes stdin (or kills this process)
lock.release()
print("released", flush=True)
sys.stdin.read()
"""


def _holder(run):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_process_gets_one_line_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    p = _holder(run)
    try:
        with pytest.raises(RunLockedError) as e:
            RunLock(run).acquire()
        msg = str(e.value)
        assert "\n" not in msg and f"pid {p.pid} on {socket.gethostname()}, started 20" in msg
        assert str(run) in msg and "another --out" in msg
        p.stdin.close()   # the holder releases
        assert p.stdout.readline().strip() == "released"
        with RunLock(run) as lock:
            assert lock.held
            assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        p.kill()
        p.wait()


def test_a_killed_holder_never_blocks_the_next_run(tmp_path):
    run = tmp_path / "run"
    p = _holder(run)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (run / LOCK_FILE).exists()   # the file stays; the operating system dropped the lock
    lock = RunLock(run).acquire()
    assert lock.held
    lock.release()
    assert not lock.held


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()


def test_unwritable_run_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError) as e:
        RunLock(blocker / "run").acquire()
    assert "\n" not in str(e.value) and f"'{blocker / 'run'}'" in str(e.value) and "is a file" in str(e.value)


def _log(run, records, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    (run / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _steps(run):
    return [json.loads(line)["step"] for line in (run / METRICS_FILE).read_text().splitlines()]


def test_rewind_keeps_lines_up_to_the_resumed_step_and_drops_torn_ones(tmp_path):
    recs = [{"step": 2, "d_loss": 1.0}, {"step": 4, "d_loss": 0.9}, {"step": 4, "eval": {"fd": 3.0}},
            {"step": 6, "d_loss": 0.8}]
    _log(tmp_path, recs, tail='{"step": 8, "d_lo')   # a kill mid-line
    assert rewind_metrics(tmp_path, 4) is None
    assert _steps(tmp_path) == [2, 4, 4]
    before = (tmp_path / METRICS_FILE).read_bytes()
    rewind_metrics(tmp_path, 4)
    assert (tmp_path / METRICS_FILE).read_bytes() == before


def test_rewind_to_zero_moves_the_old_log_aside(tmp_path):
    _log(tmp_path, [{"step": 2}, {"step": 4}])
    first = rewind_metrics(tmp_path, 0)
    assert first == tmp_path / f"{METRICS_FILE}.1" and not (tmp_path / METRICS_FILE).exists()
    _log(tmp_path, [{"step": 2}])
    assert rewind_metrics(tmp_path, 0) == tmp_path / f"{METRICS_FILE}.2"
    assert json.loads(first.read_text().splitlines()[1]) == {"step": 4}   # nothing lost
    assert rewind_metrics(tmp_path, 0) is None and rewind_metrics(tmp_path / "absent", 3) is None


# ------------------------------------------------------------------ the loop: lock, signals, resume
CLI_TINY = ["--data", "grid25", "--batch_size", "32", "--g_width", "32", "--d_width", "32", "--sample_every", "0",
            "--no-progress", "--device", "cpu"]


def _cli_train(out, *args):
    """Train in this process through the command line; returns the exit status."""
    from fastgan.cli import main
    return main(["train", "--out", str(out), *CLI_TINY, *args])


def test_sigterm_stops_after_the_step_saves_and_exits_3_then_a_second_trainer_is_refused(tmp_path, capsys):
    """A scheduler's SIGTERM: the step finishes, a checkpoint is saved, the status says 'stopped early'.
    While the run holds its folder, a second trainer on it gets one line naming the holder."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "fastgan", "train", "--out", str(run), *CLI_TINY, "--steps", "1000000",
                          "--log_every", "5", "--ckpt_every", "0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (run / METRICS_FILE).exists():
            time.sleep(0.1)
        assert (run / METRICS_FILE).exists(), "the run did not start"
        assert _cli_train(run, "--seed", "7") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"is in use by another trainer (pid {p.pid} on {socket.gethostname()}" in err
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 3, stderr
    from fastgan import checkpoint as ckpt_mod
    ck = ckpt_mod.latest_checkpoint(run)
    step = step_of(ck)
    assert 0 < step < 1000000 and f"stopped by SIGTERM at step {step} of 1000000" in stderr
    assert json.loads((run / "config.json").read_text())["seed"] == 0   # the refused trainer wrote nothing
    assert ckpt_mod.select_checkpoint(run) == ck


def _signal_at(trainer, step, sig=signal.SIGINT):
    """Send ``sig`` to this process when the trainer finishes iteration ``step``."""
    after = trainer.task.after_iteration

    def hook():
        after()
        if trainer.step == step:
            os.kill(os.getpid(), sig)
    trainer.task.after_iteration = hook


def test_ctrl_c_stops_with_status_3_and_the_run_resumes_bit_exactly(tmp_path, capsys, monkeypatch, one_thread):
    from fastgan import Trainer
    from fastgan.cli import EXIT_STOPPED
    import fastgan.cli as cli_mod

    made = []
    real = cli_mod.cpu_threads_for

    def arm(trainer):   # the CLI builds the Trainer: arm it as soon as it exists
        made.append(trainer)
        _signal_at(trainer, 3)
        real(trainer)
    monkeypatch.setattr(cli_mod, "cpu_threads_for", arm)
    run = tmp_path / "run"
    assert _cli_train(run, "--steps", "8", "--log_every", "2", "--ckpt_every", "4") == EXIT_STOPPED
    assert "stopped by SIGINT at step 3 of 8" in capsys.readouterr().err
    assert made[0].stopped_by == "SIGINT"
    monkeypatch.setattr(cli_mod, "cpu_threads_for", real)
    assert _cli_train(run) == 0
    full = tmp_path / "full"
    assert _cli_train(full, "--steps", "8", "--log_every", "2", "--ckpt_every", "4") == 0
    assert state_equal(Trainer(tiny_like(run)).G, Trainer(tiny_like(full)).G)
    steps = [r["step"] for r in map(json.loads, (run / METRICS_FILE).read_text().splitlines()) if "d_loss" in r]
    assert steps == [2, 3, 4, 6, 8]   # the log line at the stop, then no step logged twice


def tiny_like(run):
    from fastgan import TrainConfig
    return TrainConfig.from_dict(json.loads((run / "config.json").read_text()))


def test_a_second_ctrl_c_during_pruning_waits_for_the_deletion(tmp_path, monkeypatch, one_thread):
    """The second Ctrl-C arrives while the old checkpoint is being deleted: the save finishes whole
    (no half-deleted folder), then the run aborts."""
    from fastgan import Trainer
    from fastgan import checkpoint as ckpt_mod
    from fastgan import checkpoint_store as store

    run = tmp_path / "run"
    tr = Trainer(tiny_points(run, steps=8, ckpt_every=2, keep_ckpts=1))
    _signal_at(tr, 4)   # first Ctrl-C: stop after step 4, which saves (pruning step 2)
    real = store._fault_point

    def second_ctrl_c(label):
        real(label)
        if label == "renamed step_00000002 to be deleted":
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(store, "_fault_point", second_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000004"]
    assert store.verify(root / "step_00000004", ckpt_mod.REQUIRED_FILES) is None


def test_a_second_ctrl_c_aborts_with_status_130_and_the_rerun_continues(tmp_path, capsys, monkeypatch, one_thread):
    """Two Ctrl-C at once (or SIGTERM then Ctrl-C): no checkpoint of the step in progress, the last one kept."""
    import fastgan.cli as cli_mod
    from fastgan.cli import EXIT_ABORTED

    real = cli_mod.cpu_threads_for

    def arm(trainer):
        after = trainer.task.after_iteration

        def hook():
            after()
            if trainer.step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
        trainer.task.after_iteration = hook
        real(trainer)
    monkeypatch.setattr(cli_mod, "cpu_threads_for", arm)
    run = tmp_path / "run"
    assert _cli_train(run, "--steps", "8", "--log_every", "2", "--ckpt_every", "2") == EXIT_ABORTED
    assert capsys.readouterr().err.strip().endswith("fastgan: interrupted")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"]
    monkeypatch.setattr(cli_mod, "cpu_threads_for", real)
    assert _cli_train(run) == 0
    assert f"continuing run '{run}' from step 2" in capsys.readouterr().err


def test_deleted_checkpoints_start_the_run_over_without_duplicate_log_lines(tmp_path, capsys, one_thread):
    import shutil

    run = tmp_path / "run"
    assert _cli_train(run, "--steps", "6", "--log_every", "2") == 0
    old = (run / METRICS_FILE).read_text()
    shutil.rmtree(run / "checkpoints")
    capsys.readouterr()
    assert _cli_train(run) == 0
    err = capsys.readouterr().err
    assert "continuing run" not in err and "holds no checkpoint: starting it over" in err
    assert [json.loads(x)["step"] for x in (run / METRICS_FILE).read_text().splitlines()] == [2, 4, 6]
    assert (run / f"{METRICS_FILE}.1").read_text() == old


def test_resume_drops_log_lines_written_after_the_checkpoint(tmp_path, one_thread):
    from fastgan import Trainer

    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=8, ckpt_every=4, log_every=2)).fit()
    import shutil
    shutil.rmtree(run / "checkpoints" / "step_00000008")   # as if killed after logging 6 and 8, before saving 8
    with open(run / METRICS_FILE, "a") as f:
        f.write('{"step": 9, "d_lo')                          # and mid-line
    tr = Trainer(tiny_points(run, steps=8, ckpt_every=4, log_every=2))
    assert tr.step == 4
    tr.fit()
    assert [json.loads(x)["step"] for x in (run / METRICS_FILE).read_text().splitlines()] == [2, 4, 6, 8]


def test_a_damaged_newest_checkpoint_is_skipped_at_start_up_with_one_warning(tmp_path, one_thread):
    from fastgan import Trainer

    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=8, ckpt_every=4, keep_ckpts=2)).fit()
    state = run / "checkpoints" / "step_00000008" / "state.pt"
    state.write_bytes(state.read_bytes()[:-10] + b"0123456789")
    with pytest.warns(UserWarning, match=r"skipped damaged checkpoint\(s\) step_00000008 \(state.pt: checksum "
                                         r"mismatch\), kept as damaged-step_00000008; using step_00000004"):
        tr = Trainer(tiny_points(run, steps=8, ckpt_every=4, keep_ckpts=2))
    assert tr.step == 4
    tr.fit()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["damaged-step_00000008", "step_00000004",
                                                                        "step_00000008"]


def test_a_trainer_whose_folder_moved_on_meanwhile_refuses_to_overwrite_it(tmp_path, one_thread):
    from fastgan import CheckpointError, Trainer

    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=4)).fit()
    stale = Trainer(tiny_points(run, steps=8))
    Trainer(tiny_points(run, steps=8)).fit()   # another trainer takes the run to step 8
    with pytest.raises(CheckpointError, match=r"now holds step_00000008, beyond step 4 this Trainer started from"):
        stale.fit()
