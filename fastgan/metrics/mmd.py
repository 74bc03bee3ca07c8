"""Kernel Inception Distance (Bińkowski et al., 2018, "Demystifying MMD GANs").

KID is the squared maximum mean discrepancy between two feature sets under the
polynomial kernel ``k(x, y) = (x . y / d + 1)^3``, estimated without bias on
random subsets and averaged. Unlike the Fréchet distance it has an unbiased
estimator, so values from different sample sizes can be compared.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, DataError
from ._checks import as_features, positive_int, same_width

# Largest kernel matrix (entries) computed whole, to share it across subsets:
# 4,096^2 float64 entries = 128 MiB. Bigger sets are computed subset by subset.
_FULL_KERNEL_LIMIT = 4096 ** 2


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cubic polynomial kernel matrix ``(x @ y.T / d + 1) ** 3``.

    Args:
        x: (N, D) features.
        y: (M, D) features.
    """
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased estimate of MMD^2 between two equal-size samples under :func:`polynomial_kernel`.

    Args:
        x: (m, D) features, m >= 2.
        y: (m, D) features.
    """
    m = x.shape[0]
    kxx = polynomial_kernel(x, x)
    kyy = polynomial_kernel(y, y)
    kxy = polynomial_kernel(x, y)
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kid(real, fake, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation of MMD^2 over random subsets.

    Each subset draws ``subset_size`` rows of ``real`` and of ``fake`` without
    replacement (independently per subset) and computes the unbiased MMD^2.

    Args:
        real: (N, D) features of real samples, N >= subset_size.
        fake: (M, D) features of generated samples, M >= subset_size.
        subset_size: rows per subset (>= 2).
        num_subsets: how many subsets to average.
        seed: seed of the subset draws (the result is deterministic given it).

    Returns:
        ``(mean, std)`` over subsets (std with ddof=0; 0 for one subset). When
        ``subset_size`` equals the size of both sets, every subset is the whole
        of both: the MMD^2 is computed once and the std is NaN (no spread exists).

    Raises:
        DataError: bad shapes, too few samples, or features so large that the kernel overflows float64.
    """
    subset_size = positive_int(subset_size, "subset_size")
    num_subsets = positive_int(num_subsets, "num_subsets")
    if subset_size < 2:
        raise ConfigError("KID needs subset_size >= 2 (the unbiased estimate divides by m - 1)")
    x = as_features(real, "real features")
    y = as_features(fake, "generated features")
    same_width(x, y, ("real features", "generated features"))
    for name, t in (("real", x), ("generated", y)):
        if t.shape[0] < subset_size:
            raise DataError(
                f"KID subset_size={subset_size} needs at least that many {name} samples, "
                f"got {t.shape[0]}; lower subset_size or pass more samples")
    g = torch.Generator().manual_seed(int(seed))
    picks = [(torch.randperm(x.shape[0], generator=g)[:subset_size],
              torch.randperm(y.shape[0], generator=g)[:subset_size]) for _ in range(num_subsets)]
    if subset_size == x.shape[0] == y.shape[0]:  # every subset is the whole of both sets: one value, no spread
        values = torch.tensor([mmd2_unbiased(x, y)], dtype=torch.float64)
    elif max(x.shape[0], y.shape[0]) ** 2 <= _FULL_KERNEL_LIMIT:
        values = _subset_mmd2_from_full_kernels(x, y, picks)
    else:
        values = torch.tensor([mmd2_unbiased(x[ix], y[iy]) for ix, iy in picks], dtype=torch.float64)
    if not torch.isfinite(values).all():
        largest = max(float(x.abs().max()), float(y.abs().max()))
        raise DataError(f"KID of real and fake is beyond float64: the cubic kernel of features up to {largest:.3g} "
                        "overflows; KID expects feature-extractor outputs of moderate size: standardise them")
    if len(values) == 1 and num_subsets > 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(values.std(correction=0))


def _subset_mmd2_from_full_kernels(x: torch.Tensor, y: torch.Tensor, picks) -> torch.Tensor:
    """MMD^2 of every subset from kernel matrices computed once.

    Each subset is a 0/1 column of W, so its kernel sum is ``w.T K w``: one
    matmul ``K @ W`` serves all subsets instead of three kernel matrices per
    subset (for 2,000 x 128-d features and 100 subsets: ~40x less arithmetic).
    """
    m = len(picks[0][0])
    wx = torch.zeros(x.shape[0], len(picks), dtype=torch.float64)
    wy = torch.zeros(y.shape[0], len(picks), dtype=torch.float64)
    for j, (ix, iy) in enumerate(picks):
        wx[ix, j] = 1.0
        wy[iy, j] = 1.0
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sxx = (wx * (kxx @ wx)).sum(0) - kxx.diagonal() @ wx
    syy = (wy * (kyy @ wy)).sum(0) - kyy.diagonal() @ wy
    sxy = (wx * (kxy @ wy)).sum(0)
    return (sxx + syy) / (m * (m - 1)) - 2.0 * sxy / (m * m)
