"""What both ``fastgan train`` paths share (noise-to-image in :mod:`fastgan.cli`, translation in
:mod:`fastgan.translation_cli`): config flags, the start and stop messages, the exit statuses."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
import warnings
from typing import Optional

from .config import TrainConfig

# Exit statuses (docs/run-folder.md): 0 done; 2 an error the user can fix (one line); 3 training stopped
# early by Ctrl-C or SIGTERM after saving a checkpoint (rerun to continue); 130 aborted by a second Ctrl-C.
EXIT_ERROR = 2
EXIT_STOPPED = 3
EXIT_ABORTED = 130


def add_config_flags(p: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """Add one ``--field`` flag per field of a config dataclass (booleans as ``--x`` / ``--no-x``).

    Args:
        p: the parser.
        cls: the config class (TrainConfig or TranslationConfig).
    """
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        base = typing.get_args(t)[0] if typing.get_origin(t) is typing.Union else t
        d = getattr(defaults, f.name)
        h = f"{f.metadata['help']} (default: {'auto' if d is None else d})".replace("%", "%%")
        if base is bool:
            p.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=h)
        else:
            p.add_argument(f"--{f.name}", type=base, default=argparse.SUPPRESS, metavar=f.name.upper(), help=h)


def announce_start(trainer, out: str, saved: Optional[dict], say=print) -> None:
    """Say on stderr whether ``fastgan train`` continues a run or starts one over.

    Args:
        trainer: the Trainer built for the run (resumed from its newest checkpoint if any).
        out: the run folder as given.
        saved: the folder's saved config, or ``None`` for a new run.
        say: ``print``, or a silent stand-in on the ranks other than 0 under torchrun.
    """
    if trainer.step > 0:
        say(f"fastgan: continuing run '{out}' from step {trainer.step}", file=sys.stderr)
    elif saved is not None:
        say(f"fastgan: run '{out}' holds no checkpoint: starting it over with its saved config "
            "(an old metrics.jsonl is kept as metrics.jsonl.N)", file=sys.stderr)


def fit_to_end(trainer, out: str, say=print) -> bool:
    """``trainer.fit()``; False (after saying so on stderr) when Ctrl-C or SIGTERM stopped it early.

    Args:
        trainer: the Trainer to run.
        out: the run folder as given.
        say: ``print``, or a silent stand-in on the ranks other than 0 under torchrun.
    """
    if trainer.step >= trainer.cfg.steps:
        say(f"fastgan: run '{out}' already reached step {trainer.step} (raise --steps to train more)",
            file=sys.stderr)
    with warnings.catch_warnings():   # the line below says it, with the exit status
        warnings.filterwarnings("ignore", message="training stopped by")
        trainer.fit()
    if trainer.cpu_threads is not None and trainer.cpu_threads.switches:
        say("fastgan: other programs kept the CPU busy: trained on one thread while they did "
            "(OMP_NUM_THREADS=N fixes the count)", file=sys.stderr)
    if trainer.stopped_by and trainer.step < trainer.cfg.steps:
        say(f"fastgan: stopped by {trainer.stopped_by} at step {trainer.step} of {trainer.cfg.steps}; checkpoint "
            f"saved: rerun the same command to continue", file=sys.stderr)
        return False
    return True


def cpu_threads_for(trainer):
    """CPU threads for a command-line run of any task: the user's (``OMP_NUM_THREADS``), the data's, or adaptive.

    Returns the :class:`~fastgan.cpu_threads.AdaptiveThreads` the loop consults, or ``None``.
    """
    from .cpu_threads import AdaptiveThreads, user_chose_threads

    if trainer.device.type != "cpu" or user_chose_threads():
        return None
    fixed = getattr(getattr(trainer, "data", None), "cpu_threads", None)
    if fixed:
        import torch

        torch.set_num_threads(fixed)
        return None
    adaptive = AdaptiveThreads()
    return adaptive if adaptive.active else None
