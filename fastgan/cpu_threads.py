"""CPU threads for training that stays steady when other programs share the cores.

torch runs each operation on all usable cores through OpenMP, and every
operation ends at a barrier that waits for the slowest thread. On an idle
machine that is what a user wants. When other processes keep the cores busy,
one of fastgan's threads is often descheduled, so every one of the thousands of
small operations in a training step waits a scheduler time slice for it (and
the other thread spins meanwhile): a small CPU run becomes tens of times slower
instead of the few times its share of the machine would explain.

:class:`AdaptiveThreads` keeps torch's thread count while the cores are free
and drops to one thread, which never waits at a barrier, while other processes
use the cores fastgan would need; it looks again every few seconds and goes
back when they stop. It reads the machine-wide CPU time from ``/proc/stat``
(Linux) and subtracts this process's own, so fastgan's own threads never count
as load. Where ``/proc/stat`` is missing it does nothing.

``fastgan train`` uses it on the CPU unless ``OMP_NUM_THREADS`` or
``MKL_NUM_THREADS`` is set (a number chosen by the user always wins) or the data
asks for a fixed count (the 2-D mixtures: one thread). The Python API leaves
torch's threads alone; a pipeline can pass ``AdaptiveThreads()`` to
:class:`~fastgan.train.Trainer` as ``cpu_threads``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Optional

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def user_chose_threads() -> Optional[str]:
    """The environment variable through which the user fixed the thread count, or ``None``."""
    return next((k for k in THREAD_ENV if os.environ.get(k)), None)


def machine_busy_seconds(path: str = "/proc/stat") -> Optional[float]:
    """CPU seconds all processes have spent running since boot (``None`` where ``/proc/stat`` is missing).

    Args:
        path: the kernel's statistics file (a parameter for tests).
    """
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)   # idle + iowait
    busy = sum(ticks[:8]) - idle                             # guest time is already inside user time
    return busy / os.sysconf("SC_CLK_TCK")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def own_cpu_seconds() -> float:
    """CPU seconds this process's threads have used (user + system)."""
    t = os.times()
    return t.user + t.system


class AdaptiveThreads:
    """One torch thread while other processes keep the cores busy, torch's count otherwise.

    Call :meth:`tick` from the training thread between steps (torch's thread
    count belongs to the thread that sets it); it costs one clock read except
    once per ``interval`` seconds, when it compares the machine's CPU time with
    this process's over the last interval.

    With ``C`` usable cores and other processes using ``X`` cores' worth of
    CPU, it runs ``C - ceil(X - tolerance)`` threads (at least one, at most
    ``max_threads``): on 2 cores, any outside program keeping most of a core
    busy means one thread; on 16 cores, one such program costs one thread.

    Args:
        max_threads: the count used on a free machine (default: torch's current count).
        interval: seconds between looks at the machine's load.
        tolerance: cores' worth of outside CPU use ignored (daemons, a terminal).
        cores: usable cores (default: this process's CPU affinity).
        clock, machine, own, set_threads: injectable for tests (monotonic
            seconds, machine busy seconds, own CPU seconds, torch.set_num_threads).
    """

    def __init__(self, max_threads: Optional[int] = None, interval: float = 2.0, tolerance: float = 0.5,
                 cores: Optional[int] = None,
                 clock: Optional[Callable[[], float]] = None,
                 machine: Optional[Callable[[], Optional[float]]] = None,
                 own: Optional[Callable[[], float]] = None,
                 set_threads: Optional[Callable[[int], None]] = None) -> None:
        import torch

        self.max_threads = int(max_threads or torch.get_num_threads())
        self.interval, self.tolerance = float(interval), float(tolerance)
        self.cores = int(cores or usable_cores())
        self._clock = clock or time.monotonic
        self._machine = machine or machine_busy_seconds
        self._own = own or own_cpu_seconds
        self._set = set_threads or torch.set_num_threads
        self.threads = self.max_threads
        self.switches = 0          # how often the count changed (reported at the end of a run)
        self._last = self._sample()

    def _sample(self) -> tuple[float, Optional[float], float]:
        return self._clock(), self._machine(), self._own()

    @property
    def active(self) -> bool:
        """Whether there is anything to adapt (several threads, and a readable ``/proc/stat``)."""
        return self.max_threads > 1 and self._last[1] is not None

    def others_cores(self, now: tuple[float, Optional[float], float]) -> Optional[float]:
        """Cores' worth of CPU other processes used since the last look (``None``: unknown).

        Args:
            now: a sample as taken by the last look (clock, machine busy seconds, own CPU seconds).
        """
        (t0, m0, o0), (t1, m1, o1) = self._last, now
        if m0 is None or m1 is None or t1 <= t0:
            return None
        return max(0.0, ((m1 - m0) - (o1 - o0)) / (t1 - t0))

    def tick(self) -> int:
        """Look at the load if ``interval`` has passed and set torch's threads; returns the count in use."""
        if not self.active or self._clock() - self._last[0] < self.interval:
            return self.threads
        now = self._sample()
        others = self.others_cores(now)
        self._last = now
        if others is not None:
            want = min(self.max_threads, max(1, self.cores - math.ceil(others - self.tolerance)))
            if want != self.threads:
                self._set(want)
                self.threads = want
                self.switches += 1
        return self.threads

    def restore(self) -> None:
        """Give torch back the count it had (end of training)."""
        if self.threads != self.max_threads:
            self._set(self.max_threads)
            self.threads = self.max_threads
