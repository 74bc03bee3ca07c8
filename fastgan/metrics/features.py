"""Feature spaces and labellers for each kind of data.

- 2-D points: the raw coordinates.
- ``digits``: the digits classifier's 128-d penultimate layer.
- ``stacked_digits``: the same features of each channel, concatenated (384-d);
  the mode of an image is ``100 a + 10 b + c`` for the digits a, b, c the
  classifier reads in its R, G, B channels.
- any other images: InceptionV3 pool features (2048-d) from the file the user
  supplies (see :mod:`fastgan.metrics.inception`).
- or any callable ``x -> (N, D)`` the user passes.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from ..errors import ConfigError, DataError
from .classifier import load_digits_classifier

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
_BATCH = 500


def data_family(data) -> str:
    """``"points"``, ``"digits"``, ``"stacked_digits"`` or ``"images"`` for a GanData.

    Args:
        data: a :class:`fastgan.data.GanData`.
    """
    if data.kind == "points":
        return "points"
    if data.name in ("digits", "digits_vectors") and data.channels == 1 and data.num_classes == 10:
        return "digits"
    if data.name == "stacked_digits" and data.channels == 3 and data.num_classes == 1000:
        return "stacked_digits"
    return "images"


def _batched(fn: FeatureFn, x: torch.Tensor, device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[s:s + _BATCH].to(device)).float().cpu() for s in range(0, len(x), _BATCH)])


def digits_features(x: torch.Tensor, device="cpu") -> torch.Tensor:
    """Classifier features of digit images, per channel and concatenated: (N, 128 * C).

    Args:
        x: (N, C, H, W) images in [-1, 1]; each channel is one digit.
        device: where the classifier runs.
    """
    clf = load_digits_classifier(device)
    return torch.cat([_batched(clf.features, x[:, c:c + 1], device) for c in range(x.shape[1])], dim=1)


def digits_labels(x: torch.Tensor, device="cpu") -> torch.Tensor:
    """Predicted class of digit images: the digit (C = 1) or ``100 a + 10 b + c`` (C = 3).

    Args:
        x: (N, C, H, W) images in [-1, 1].
        device: where the classifier runs.
    """
    clf = load_digits_classifier(device)
    out = torch.zeros(len(x), dtype=torch.long)
    for c in range(x.shape[1]):
        out = out * 10 + _batched(lambda b: clf(b).argmax(1), x[:, c:c + 1], device).long()
    return out


def feature_fn(data, features: Union[None, str, FeatureFn] = None, device="cpu") -> FeatureFn:
    """The function mapping samples of ``data``'s kind to (N, D) features.

    Args:
        data: the reference :class:`fastgan.data.GanData`.
        features: ``None``/``"auto"`` (by data kind, see the module doc),
            ``"raw"`` (flattened samples), ``"digits"``, ``"inception"``, or a
            callable ``x -> (N, D)``.
        device: where feature networks run.
    """
    if callable(features):
        user = features
        return lambda x: _batched(lambda b: torch.as_tensor(user(b)).reshape(len(b), -1), x, device)
    choice = features or "auto"
    if choice == "auto":
        choice = {"points": "raw", "digits": "digits", "stacked_digits": "digits"}.get(data_family(data), "inception")
    if choice == "raw":
        return lambda x: x.reshape(len(x), -1).float().cpu()
    if choice == "digits":
        return lambda x: digits_features(x, device)
    if choice == "inception":
        from .inception import load_inception

        net = load_inception(device=device)
        return lambda x: net(x)
    raise ConfigError(f"unknown features {features!r}; use auto, raw, digits, inception or a callable")


def check_samples(x: torch.Tensor, data, what: str) -> torch.Tensor:
    """Check generated or real samples fit ``data`` (shape, finiteness); return them as float CPU.

    Args:
        x: (N, 2) points or (N, C, H, W) images.
        data: the reference :class:`fastgan.data.GanData`.
        what: how to name ``x`` in messages.
    """
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception:
            raise DataError(f"{what} must be a tensor or array, got {type(x).__name__}") from None
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{what} are empty")
    want: Optional[tuple] = (2,) if data.kind == "points" else (data.channels, data.resolution, data.resolution)
    if tuple(x.shape[1:]) != want:
        raise DataError(f"{what} have shape {tuple(x.shape[1:])} per sample but the data have {want}")
    x = x.detach().float().cpu()
    bad = (~torch.isfinite(x)).reshape(len(x), -1).any(dim=1)
    if bad.any():
        raise DataError(f"{what} hold NaN or infinite values ({int(bad.sum())} of {len(x)} samples)")
    return x
