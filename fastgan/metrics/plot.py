"""Training curves: losses and evaluation metrics from a run's ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Union

from ..errors import DataError

# Keys of log records that are bookkeeping, not curves.
_SKIP = {"step", "time", "epoch"}
# Panels drawn from the loss records, in this order, when present.
_LOSS_PANELS = (("losses", ("d_loss", "g_loss", "r1")), ("D outputs", ("d_real", "d_fake")),
                ("adaptive augmentation", ("augment_p", "ada_signal")), ("speed", ("images_per_s",)))


def _read_history(path: Path) -> tuple[dict[str, list], dict[str, list]]:
    """Split a metrics log into training curves and evaluation curves: name -> [(step, value)]."""
    train: dict[str, list] = {}
    evals: dict[str, list] = {}
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: skip it, keep the rest
            if not isinstance(rec, dict):
                continue
            step = rec.get("step", i)
            nested = rec.get("eval")
            source, target = (nested, evals) if isinstance(nested, dict) else (rec, train)
            for k, v in source.items():
                if k in _SKIP or isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                if math.isfinite(v):
                    target.setdefault(k, []).append((step, float(v)))
    return train, evals


def plot_history(jsonl_path: Union[str, os.PathLike], png_path: Union[str, os.PathLike]) -> Path:
    """Plot losses and metrics over training into a PNG.

    Reads one JSON object per line: training records (``step``, ``d_loss``,
    ``g_loss``, ...) and evaluation records (``step`` and a nested ``eval``
    dict of metric values); every numeric field becomes a curve against
    ``step``. Unreadable lines are skipped.

    Args:
        jsonl_path: the run's ``metrics.jsonl``.
        png_path: where to write the figure.

    Returns:
        The path of the PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    src, dst = Path(jsonl_path), Path(png_path)
    if not src.is_file():
        raise DataError(f"no metrics log at '{src}'")
    train, evals = _read_history(src)
    panels: list[tuple[str, dict[str, list]]] = []
    used = set()
    for title, keys in _LOSS_PANELS:
        curves = {k: train[k] for k in keys if k in train}
        if curves:
            panels.append((title, curves))
            used.update(curves)
    panels += [(k, {k: v}) for k, v in sorted(train.items()) if k not in used and k != "step_time_ms"]
    panels += [(f"eval: {k}", {k: v}) for k, v in sorted(evals.items())
               if not k.startswith("num_")]  # constant totals (num_modes) are not curves
    if not panels:
        raise DataError(f"'{src}' holds no numeric records to plot")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, curves) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, pts in curves.items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, linewidth=1.2, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst)
    return dst
