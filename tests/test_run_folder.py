"""The run-folder lock (two processes) and the metrics log rewound to the resumed step."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from fastgan import StorageError
from fastgan.run_folder import LOCK_FILE, METRICS_FILE, RunLock, RunLockedError, rewind_metrics

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
    assert "\n" not in str(e.value) and str(blocker / "run" / LOCK_FILE) in str(e.value)


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
