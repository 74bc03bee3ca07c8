"""Input checks shared by the metric functions.

Every metric takes feature matrices from users (their own extractor, a
generator's raw output), so each one validates its inputs the same way and
fails with a one-line :class:`~fastgan.errors.DataError` naming the problem.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError


def as_features(x, name: str, min_rows: int = 1) -> torch.Tensor:
    """Return ``x`` as a finite float64 CPU tensor of shape (N, D).

    Args:
        x: a torch tensor or numpy array of shape (N, D) (a 1-D array is read
            as N one-dimensional features).
        name: what ``x`` is, for error messages (e.g. ``"real features"``).
        min_rows: the fewest rows the caller can work with.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.shape[0] < min_rows:
        raise DataError(f"{name} has {x.shape[0]} rows; this metric needs at least {min_rows}")
    if x.is_complex() or x.dtype == torch.bool:
        raise DataError(f"{name} must be real numbers, got dtype {x.dtype}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise DataError(f"{name} contain NaN or infinite values ({bad} of {x.shape[0]} rows)")
    return x


def same_width(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise :class:`DataError` unless two feature matrices have the same D.

    Args:
        a: first (N, D) matrix.
        b: second (M, D) matrix.
        names: how to call ``a`` and ``b`` in the message.
    """
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"{names[0]} have {a.shape[1]} dimensions but {names[1]} have {b.shape[1]}; "
            "extract both with the same feature extractor")


def positive_int(value, name: str) -> int:
    """Return ``value`` if it is a positive int, else raise :class:`ConfigError`.

    Args:
        value: the value to check.
        name: the parameter name for the message.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
