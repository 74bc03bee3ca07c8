"""Fault injection for the checkpoint protocol: train in a child process that kills itself with
SIGKILL at the k-th step of the protocol, restart in another child, compare with a run never killed.

Children are forked from a fork server that has imported torch and fastgan once (each child then
costs a fork, not an interpreter start) and has run no torch computation, so no thread pool is
forked half-used. Every child trains on one thread, so runs are bit-comparable.
"""

import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path

import torch

from helpers import tiny_points

PRELOAD = ["torch", "torch._dynamo", "fastgan", "fastgan.kernels", "fastgan.train", "fastgan.checkpoint", "fastgan.metrics", "helpers",
           "fault_harness", "tqdm.auto"]


def context():
    """A multiprocessing context whose children fork from a server with torch and fastgan imported."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _pause_at(label: str, flag: str) -> None:
    """Child: at the first protocol step ``label``, create the file ``flag`` and wait until it is deleted."""
    from fastgan import checkpoint_store as store

    real = store._fault_point

    def point(passed: str) -> None:
        real(passed)
        if passed == label:
            store._fault_point = real
            Path(flag).touch()
            while Path(flag).exists():
                time.sleep(0.02)
    store._fault_point = point


def _train(run_dir: str, overrides: dict, kill_at: int, report: str, pause) -> None:
    """Child: train ``tiny_points(run_dir, **overrides)`` to its end; record the start step and the
    protocol steps passed; with ``kill_at`` > 0 the k-th protocol step kills this process; with
    ``pause`` = (label, flag) it waits there (see :func:`_pause_at`)."""
    import fastgan.train
    from fastgan import Trainer
    from fastgan import checkpoint_store as store

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    # the history plot is most of a child's time and no part of the protocol (train.py holds its own binding)
    fastgan.train.plot_history = lambda *a, **k: None
    store.fault_trace = []
    if kill_at:
        os.environ[store.FAULT_ENV] = str(kill_at)
    if pause:
        _pause_at(*pause)
    tr = Trainer(tiny_points(run_dir, **overrides))
    start = tr.step
    tr.fit()
    Path(report).write_text(json.dumps({"start": start, "trace": store.fault_trace}))


def start(ctx, run_dir, overrides=None, kill_at=0, pause=None):
    """Start :func:`_train` in a child; return ``(process, report path)`` for :func:`finish`."""
    report = Path(str(run_dir) + f".report-{kill_at}.json")
    report.unlink(missing_ok=True)
    p = ctx.Process(target=_train, args=(str(run_dir), overrides or {}, kill_at, str(report), pause))
    p.start()
    return p, report


def finish(p, report, timeout=120):
    """Wait for a child of :func:`start`; return ``(exit code, report or None)``."""
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
    return p.exitcode, (json.loads(report.read_text()) if report.exists() else None)


def train(ctx, run_dir, overrides=None, kill_at=0, timeout=120):
    """Run :func:`_train` in a child to its end; return ``(exit code, report or None)``."""
    return finish(*start(ctx, run_dir, overrides, kill_at), timeout)


def training_state(ckpt) -> dict:
    """Every tensor and counter of a checkpoint that training depends on (not times or paths)."""
    from fastgan.checkpoint import read_models, read_state

    nets, _ = read_models(ckpt)
    state = read_state(ckpt)
    flat = {f"{net}.{k}": v for net, sd in nets.items() for k, v in sd.items()}
    for key in ("step", "gen_state", "torch_rng", "stats", "ema_t"):
        flat[key] = state[key]
    for opt in ("opt_g", "opt_d"):
        for pid, s in state[opt]["state"].items():
            for k, v in s.items():
                flat[f"{opt}.{pid}.{k}"] = v
    return flat


def same_state(a: dict, b: dict) -> bool:
    """Bitwise equality of two :func:`training_state` dicts."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True

