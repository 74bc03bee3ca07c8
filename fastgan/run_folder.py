"""The run folder as a resource: one trainer at a time, and a metrics log that matches the checkpoint.

:class:`RunLock` holds an exclusive ``flock`` on ``RUN/.lock`` while a trainer
writes into ``RUN``. The operating system drops the lock when the process
dies, however it dies, so a killed run never blocks the next one and no stale
lock needs breaking. The lock file stays in place (deleting it would let two
processes lock two different files of the same name); it holds the holder's
pid, host and start time, which a second trainer names in its error.

On platforms without ``fcntl`` (Windows) the lock is not taken.

:func:`rewind_metrics` makes ``metrics.jsonl`` agree with the step a run
resumes from, so lines written after the last checkpoint by a killed run are
not duplicated when the resumed run logs those steps again.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Optional

from .errors import FastGANError, storage_error
from .files import atomic_write

LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class RunLockedError(FastGANError, RuntimeError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release`.

    Usable as a context manager. Locks are per open file, so a second
    ``RunLock`` on the same folder fails even inside the same process.

    Args:
        run_dir: the run folder (created when missing).
    """

    def __init__(self, run_dir: os.PathLike | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting.

        Raises:
            RunLockedError: another process holds it (the message names its pid, host and start time).
            StorageError: the run folder or its lock file cannot be created.
        """
        if self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error(e, "write into the run folder", self.run_dir) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe_holder(fd)
                os.close(fd)
                raise RunLockedError(f"run folder '{self.run_dir}' is in use by another trainer ({holder}); "
                                     "wait for it to finish or use another --out") from None
            except OSError:  # a file system without locks (some network mounts): go on unlocked
                pass
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file releases it); the lock file stays."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its details yet"


def rewind_metrics(run_dir: os.PathLike | str, step: int) -> Optional[Path]:
    """Make ``RUN/metrics.jsonl`` hold only what happened up to ``step``.

    Resuming from step S keeps the lines of steps <= S and drops later ones
    (the resumed run writes them again) and torn lines a kill left half
    written. Starting over (``step`` 0) with a non-empty log renames it to a
    free ``metrics.jsonl.N`` instead, so nothing is lost.

    Args:
        run_dir: the run folder.
        step: the step training continues from (0: from scratch).

    Returns:
        The renamed old log when starting over, else ``None``.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(errors="replace")
        if step <= 0:
            if not text.strip():
                return None
            n = 1
            while path.with_name(f"{METRICS_FILE}.{n}").exists():
                n += 1
            aside = path.with_name(f"{METRICS_FILE}.{n}")
            os.rename(path, aside)
            return aside
        kept = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn by a kill mid-write
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
                kept.append(line + "\n")
        new = "".join(kept)
        if new != text:
            atomic_write(path, new)
    except OSError as e:
        raise storage_error(e, "update", path) from None
    return None
