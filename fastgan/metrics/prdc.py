"""Improved precision and recall (Kynkäänniemi et al., 2019).

Each set approximates its manifold by the union of balls around its samples,
each ball reaching the sample's k-th nearest neighbour in the same set.
Precision is the fraction of generated samples inside the real manifold
(quality); recall is the fraction of real samples inside the generated
manifold (coverage). A collapsed generator keeps its precision and loses
its recall.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError
from ._checks import as_features, positive_int, same_width
from .fid import _pow2_exponent

# Rows of a distance matrix computed at once: bounds memory at
# _CHUNK * N * 8 bytes (40 MB for N = 5,000) whatever the set sizes.
_CHUNK = 1024


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (len(a), len(b)) in float64."""
    return torch.cdist(a, b)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row.

    Args:
        x: (N, D) float64 features with N > k.
        k: neighbour rank (1 = nearest other sample).
    """
    radii = torch.empty(x.shape[0], dtype=x.dtype)
    for s in range(0, x.shape[0], _CHUNK):
        d = _pairwise(x[s:s + _CHUNK], x)
        # the k+1 smallest include the sample itself (distance 0)
        radii[s:s + _CHUNK] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def coverage_fraction(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of ``points`` inside at least one ball (centre, radius).

    Args:
        points: (M, D) query points.
        centres: (N, D) ball centres.
        radii: (N,) ball radii.
    """
    inside = 0
    for s in range(0, points.shape[0], _CHUNK):
        d = _pairwise(points[s:s + _CHUNK], centres)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of generated samples against real ones.

    Args:
        real: (N, D) real features, N > k.
        fake: (M, D) generated features, M > k.
        k: the neighbour that sets each ball's radius (3 in the paper).

    Returns:
        ``(precision, recall)``, both in [0, 1].
    """
    k = positive_int(k, "k")
    x = as_features(real, "real features")
    y = as_features(fake, "generated features")
    same_width(x, y, ("real features", "generated features"))
    for name, t in (("real", x), ("generated", y)):
        if t.shape[0] <= k:
            raise DataError(f"precision/recall with k={k} needs more than {k} {name} samples, got {t.shape[0]}")
    # Both fractions are unchanged when both sets are scaled alike; a power of two (exact) keeps squared
    # distances of huge or tiny features inside float64 (beyond it every radius was inf or 0).
    e = _pow2_exponent(max(float(x.abs().max()), float(y.abs().max())))
    x, y = x * math.ldexp(1.0, -e), y * math.ldexp(1.0, -e)
    precision = coverage_fraction(y, x, knn_radii(x, k))
    recall = coverage_fraction(x, y, knn_radii(y, k))
    return precision, recall
