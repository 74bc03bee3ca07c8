"""What a model family gives the training loop: the :class:`Task` interface and its :class:`Step`.

The loop (:class:`fastgan.Trainer`) owns the run: when to log, sample,
evaluate and checkpoint, exact resume, signals, the learning-rate schedule.
The engine (:class:`fastgan.engine.Engine`) owns how a step executes. A task
owns what a step computes: its data, networks, optimisers and capturable step
functions, what to sample and plot, what to evaluate and export, and the
training state of its own that a checkpoint must carry. docs/architecture.md
describes the split and the capture rules every step function follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..stats import RunningStats


@dataclass(frozen=True)
class Step:
    """A capturable step function and when the loop runs it.

    Args:
        name: what the step is (``"train"``, ``"R1"``): its group in the
            task's :class:`~fastgan.stats.RunningStats` and its name in errors.
        fn: the step; reads and writes only device tensors (see docs/architecture.md).
        generators: every ``torch.Generator`` the step draws from (a CUDA
            graph registers them, so replays draw fresh numbers).
        every: the loop runs it after the iterations ``i`` (0-based) with
            ``(i + 1) % every == 0``; steps run in the order listed.
    """

    name: str
    fn: Callable[[], None]
    generators: tuple[torch.Generator, ...] = ()
    every: int = 1


class Task:
    """A model family: what the loop trains, samples, evaluates and checkpoints.

    A subclass builds everything its steps touch on ``engine.device`` in its
    constructor, taking ``(cfg, engine)`` first; ``cfg`` is its own config
    dataclass, which carries the loop's fields (see docs/architecture.md).
    Methods without a default raise ``NotImplementedError``.

    Attributes:
        cfg: the resolved config (the loop saves it with every checkpoint).
        engine: the engine that runs the steps.
        stats: running sums the steps add (one group per :class:`Step` name).
        progress_keys: progress-bar label -> name in ``stats`` shown after each log line.
        network_labels: checkpoint name of a network -> what error messages call it.
        data_parallel: False for a family that trains in one process only (the Trainer refuses
            it under torchrun in one line, before joining a process group).
    """

    data_parallel = True

    cfg: Any
    engine: Any
    stats: RunningStats
    progress_keys: dict[str, str] = {}
    network_labels: dict[str, str] = {}

    # ---------------------------------------------------------------- training
    def steps(self) -> list[Step]:
        """The step functions the loop runs each iteration, in order."""
        raise NotImplementedError

    def networks(self) -> dict[str, Optional[nn.Module]]:
        """Networks whose weights a checkpoint holds, by name (``None``: absent in this run)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by their key in the checkpoint state; the loop's schedule scales their learning rates."""
        raise NotImplementedError

    def scalers(self) -> dict[str, Optional[torch.amp.GradScaler]]:
        """Gradient scalers by their key in the checkpoint state (``None``: not used)."""
        return {}

    def train(self) -> None:
        """Put the trained networks in training mode (the loop calls it before stepping)."""
        raise NotImplementedError

    def after_iteration(self) -> None:
        """Python-side bookkeeping after each iteration: a CUDA-graph replay runs no Python, so it goes here."""

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The task's own training state besides networks and optimisers (tensors, numbers, strings)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (``state`` is the whole checkpoint state).

        Args:
            state: the checkpoint's training state.
        """

    def before_checkpoint(self) -> None:
        """Bring derived state up to date before the networks are saved."""

    def checkpoint_metadata(self) -> dict[str, str]:
        """String metadata stored with the weights (what rebuilding an exported network needs)."""
        return {}

    # ---------------------------------------------------------------- outputs
    def save_samples(self, path: Path) -> None:
        """Write this step's sample figure (a PNG) to ``path``.

        Args:
            path: the PNG file (its folder exists).
        """
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any]:
        """The metrics of ``cfg.eval_metrics`` for the current weights (the loop logs them)."""
        raise NotImplementedError
