"""Fault injection for the checkpoint protocol: train in a child process that kills itself with
SIGKILL at the k-th step of the protocol, restart in another child, compare with a run never killed.

Children are forked from a fork server that has imported torch and fastgan once (each child then
costs a fork, not an interpreter start) and has run no torch computation, so no thread pool is
forked half-used. Every child trains on one thread, so runs are bit-comparable.
"""

import json
import multiprocessing
import os
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


def _train(run_dir: str, overrides: dict, kill_at: int, report: str) -> None:
    """Child: train ``tiny_points(run_dir, **overrides)`` to its end; record the start step and the
    protocol steps passed; with ``kill_at`` > 0 the k-th protocol step kills this process."""
    import fastgan.metrics
    from fastgan import Trainer
    from fastgan import checkpoint_store as store

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    fastgan.metrics.plot_history = lambda *a, **k: None  # 90% of a child's time, and no part of the protocol
    store.fault_trace = []
    if kill_at:
        os.environ[store.FAULT_ENV] = str(kill_at)
    tr = Trainer(tiny_points(run_dir, **overrides))
    start = tr.step
    tr.fit()
    Path(report).write_text(json.dumps({"start": start, "trace": store.fault_trace}))


def train(ctx, run_dir, overrides=None, kill_at=0, timeout=120):
    """Run :func:`_train` in a child; return ``(exit code, report or None)``."""
    report = Path(str(run_dir) + f".report-{kill_at}.json")
    report.unlink(missing_ok=True)
    p = ctx.Process(target=_train, args=(str(run_dir), overrides or {}, kill_at, str(report)))
    p.start()
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
    return p.exitcode, (json.loads(report.read_text()) if report.exists() else None)


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

