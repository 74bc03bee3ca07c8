"""Optional TensorBoard event files beside a run's JSONL log (``--tensorboard``).

The loop hands over what it writes anyway: each ``metrics.jsonl`` record
(log lines become ``train/<name>`` scalars, evaluation results
``eval/<name>``) and each sample figure (the ``samples`` image). Events go to
``RUN/tensorboard/``; ``tensorboard --logdir RUN`` shows them. A resumed run
opens its writer with ``purge_step`` one past its checkpoint's step, so events
an interrupted run wrote after that checkpoint are dropped, not shown twice
(as ``metrics.jsonl`` is rewound to that step).

Writing needs the ``tensorboard`` package (``pip install 'fastgan[tensorboard]'``);
:func:`require_tensorboard` checks for it before anything trains.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from .errors import ConfigError

SUBDIR = "tensorboard"
INSTALL_HINT = "pip install 'fastgan[tensorboard]'"
_NOT_SCALARS = ("step", "time")   # the record's x-axis and wall clock: TensorBoard keeps its own


def require_tensorboard() -> type:
    """The ``SummaryWriter`` class, or one ConfigError line naming the install command.

    Returns:
        ``torch.utils.tensorboard.SummaryWriter``.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's module imports the tensorboard package, which is an optional extra
        raise ConfigError(f"--tensorboard needs the tensorboard package, which is not installed; "
                          f"run: {INSTALL_HINT}") from None
    return SummaryWriter


def scalars_of(rec: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` record as TensorBoard tags.

    A log line ``{"step", "d_loss", ...}`` gives ``train/d_loss``...; an
    evaluation record ``{"step", "eval": {"fd": ...}}`` gives ``eval/fd``...;
    nested dicts add path levels; values that are not numbers are left out.

    Args:
        rec: one record as the loop writes it to ``metrics.jsonl``.
    """
    out: dict[str, float] = {}

    def walk(prefix: str, d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}/", v)
            elif isinstance(v, numbers.Real) and not isinstance(v, bool):
                out[prefix + k] = float(v)

    body = {k: v for k, v in rec.items() if k not in _NOT_SCALARS}
    walk("" if "eval" in body else "train/", body)
    return out


class TensorBoardLog:
    """An open event log in ``RUN/tensorboard/`` for one :meth:`fastgan.Trainer.fit`.

    Args:
        run_dir: the run folder.
        resume_step: the step the run continues from (0 for a new run):
            events after it in earlier files are purged from TensorBoard's
            view (at 0, all of them: the run starts over).
    """

    def __init__(self, run_dir: Path, resume_step: int = 0) -> None:
        writer_cls = require_tensorboard()
        self.log_dir = Path(run_dir) / SUBDIR
        # Everything at resume_step was written before its checkpoint (log, eval, samples, then checkpoint);
        # a run starting over hides all earlier events (they stay in their files), as metrics.jsonl is set aside.
        purge = resume_step + 1 if resume_step > 0 else 0
        self._writer = writer_cls(log_dir=str(self.log_dir), purge_step=purge)

    def record(self, rec: dict[str, Any]) -> None:
        """Write the numbers of one ``metrics.jsonl`` record at its step.

        Args:
            rec: the record (it has a ``step``).
        """
        for tag, value in scalars_of(rec).items():
            self._writer.add_scalar(tag, value, global_step=int(rec["step"]))
        self._writer.flush()   # a log line is seconds apart at least: keep the event file current

    def image(self, path: Path, step: int) -> None:
        """Write a sample figure (the PNG the task saved) at ``step``.

        Args:
            path: the PNG file.
            step: the training step it shows.
        """
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))            # (H, W, 3) uint8
        self._writer.add_image("samples", pixels, global_step=step, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
