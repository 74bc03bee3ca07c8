"""Conditioning vectors for the digits: the class and four stroke statistics of each image.

The built-in ``digits_vectors`` data set is scikit-learn's digits with one
14-number vector per image: the class one-hot (10 numbers), then the image's
stroke statistics, standardised within its class (0 is the class's average
digit, 1 one standard deviation of that class above it), so that any stroke
part makes sense with any class:

- ``ink``: mean intensity (how much ink, a thick or thin stroke);
- ``width`` and ``height``: the ink's standard deviation along x and y (its extent);
- ``slant``: the ink's x-y covariance over its y variance (how far x moves per
  row: a forward or backward lean).

They are measured on the 8x8 image (generated images are block-averaged to
8x8 first), so the statistics of a sample can be read back and compared with
the vector it was asked for: :func:`measure_strokes`.

Standardising over all digits instead would make a stroke part of zeros an
average over the classes: a "1" as wide as the average digit, which no class
has, and a generator then follows the strokes more than the class.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError

STROKE_NAMES = ("ink", "width", "height", "slant")
NUM_CLASSES = 10
VECTOR_DIM = NUM_CLASSES + len(STROKE_NAMES)


def raw_strokes(x: torch.Tensor) -> torch.Tensor:
    """Unstandardised stroke statistics of digits: (N, 4) float64.

    Args:
        x: (N, 1, R, R) images in [-1, 1] (R a multiple of 8), or (N, 8, 8)
            intensities >= 0 (scikit-learn's 0..16 pixels).
    """
    x = torch.as_tensor(x).to(torch.float64)
    if x.ndim == 4:
        if x.shape[1] != 1 or x.shape[2] != x.shape[3] or x.shape[-1] % 8:
            raise DataError(f"stroke statistics need (N, 1, R, R) digits with R a multiple of 8, got {tuple(x.shape)}")
        x = F.avg_pool2d((x + 1.0) / 2.0, kernel_size=x.shape[-1] // 8)[:, 0]   # (N, 8, 8), ink in [0, 1]
    if x.ndim != 3 or x.shape[1:] != (8, 8):
        raise DataError(f"stroke statistics need (N, 8, 8) or (N, 1, R, R) images, got {tuple(x.shape)}")
    ink = x.clamp(min=0.0)
    mass = ink.sum(dim=(1, 2)).clamp(min=1e-6)                                  # (N,)
    coords = torch.arange(8, dtype=torch.float64)
    yy, xx = coords[:, None], coords[None, :]                                  # rows, columns
    cy = (ink * yy).sum(dim=(1, 2)) / mass
    cx = (ink * xx).sum(dim=(1, 2)) / mass
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]                    # (N, 8, 8)
    var_y = (ink * dy ** 2).sum(dim=(1, 2)) / mass
    var_x = (ink * dx ** 2).sum(dim=(1, 2)) / mass
    cov = (ink * dx * dy).sum(dim=(1, 2)) / mass
    return torch.stack([ink.mean(dim=(1, 2)), var_x.sqrt(), var_y.sqrt(), cov / var_y.clamp(min=1e-6)], dim=1)


@functools.lru_cache(maxsize=1)
def _reference() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: (raw strokes of the native images in [0, 1] ink, labels, per-class mean and std (10, 4))."""
    from sklearn.datasets import load_digits   # imported here: keeps `import fastgan` light

    d = load_digits()
    raw = raw_strokes(torch.from_numpy(d.images.astype(np.float64) / 16.0))
    y = torch.from_numpy(d.target).long()
    mean = torch.stack([raw[y == c].mean(dim=0) for c in range(NUM_CLASSES)])
    std = torch.stack([raw[y == c].std(dim=0) for c in range(NUM_CLASSES)])
    return raw, y, mean, std


def measure_strokes(x: torch.Tensor, labels) -> torch.Tensor:
    """Stroke statistics of digits in the units of the ``digits_vectors`` vectors (standardised within the class): (N, 4).

    Args:
        x: (N, 1, R, R) digits in [-1, 1] (generated or real).
        labels: (N,) the class each digit is (or was asked to be).
    """
    _, _, mean, std = _reference()
    y = torch.as_tensor(labels).long().reshape(-1)
    return (raw_strokes(x) - mean[y]) / std[y]


def digit_vectors() -> tuple[torch.Tensor, torch.Tensor]:
    """The ``digits_vectors`` vectors of scikit-learn's 1,797 digits, in its order.

    Returns:
        ``(vectors (1797, 14) float32, labels (1797,) long)``: class one-hot, then the strokes standardised
        within the class.
    """
    raw, labels, mean, std = _reference()
    onehot = F.one_hot(labels, NUM_CLASSES).to(torch.float64)
    return torch.cat([onehot, (raw - mean[labels]) / std[labels]], dim=1).float(), labels.clone()


def make_vectors(labels, strokes=None) -> torch.Tensor:
    """Vectors for chosen classes and stroke statistics (what to ask a ``digits_vectors`` generator for).

    Args:
        labels: (N,) digits 0..9.
        strokes: (N, 4) ink, width, height, slant in standard deviations of the class
            (default: 0, the class's average digit).

    Returns:
        (N, 14) float32 vectors.
    """
    y = torch.as_tensor(labels).long().reshape(-1)
    s = torch.zeros(len(y), len(STROKE_NAMES)) if strokes is None else torch.as_tensor(strokes, dtype=torch.float32)
    if s.shape != (len(y), len(STROKE_NAMES)):
        raise DataError(f"strokes must have shape ({len(y)}, {len(STROKE_NAMES)}), got {tuple(s.shape)}")
    return torch.cat([F.one_hot(y, NUM_CLASSES).float(), s.float()], dim=1)
