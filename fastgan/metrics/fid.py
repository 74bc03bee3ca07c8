"""Fréchet distance between two sets of features (the "F" of FID).

Each set is summarised by a Gaussian (mean, covariance); the distance is

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).

``S_a S_b`` is not symmetric, and a general square root of it (what
``scipy.linalg.sqrtm`` computes) can pick up imaginary parts and lose
precision when the covariances are rank-deficient, as they are whenever there
are fewer samples than dimensions. We use the identity

    tr((S_a S_b)^{1/2}) = tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}),

where the inner matrix is symmetric positive semi-definite: two symmetric
eigendecompositions in float64, eigenvalues clipped at zero, and no complex
numbers anywhere.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError
from ._checks import as_features, same_width

# Largest magnitudes used as they are; others are scaled by a power of two first (see _pow2_exponent).
_UNSCALED_RANGE = (2.0 ** -64, 2.0 ** 64)


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of a feature set, in float64.

    Args:
        features: (N, D) tensor or array with N >= 2.

    Returns:
        ``(mu (D,), cov (D, D))`` as float64 CPU tensors.
    """
    x = as_features(features, "features", min_rows=2)
    mu = x.mean(dim=0)
    xc = x - mu
    cov = xc.T @ xc / (x.shape[0] - 1)
    return mu, cov


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def trace_sqrt_product(cov_a: torch.Tensor, cov_b: torch.Tensor) -> float:
    """``tr((cov_a @ cov_b)^{1/2})`` for two covariance matrices, computed stably.

    Args:
        cov_a: (D, D) symmetric PSD matrix.
        cov_b: (D, D) symmetric PSD matrix.
    """
    root_a = _sqrt_psd(cov_a.to(torch.float64))
    m = root_a @ cov_b.to(torch.float64) @ root_a
    w = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(w.clamp(min=0).sqrt().sum())


def _check_covariance(c: torch.Tensor, name: str) -> None:
    """Refuse a matrix that is not a covariance: asymmetric, or with a clearly negative eigenvalue.

    The tolerances (1e-4 of the largest entry / eigenvalue) leave room for the
    rounding of covariances computed in float32 (about 1e-7 relative) or fp16.
    """
    scale = float(c.abs().max())
    asym = float((c - c.T).abs().max())
    if asym > 1e-4 * scale:
        raise DataError(f"{name} is not symmetric (largest |{name} - {name}.T| = {asym:.3g}, "
                        f"largest entry {scale:.3g}); pass a covariance matrix")
    w = torch.linalg.eigvalsh((c + c.T) / 2)
    if float(w[0]) < -1e-4 * max(float(w.abs().max()), 1e-300):
        raise DataError(f"{name} is not positive semi-definite (eigenvalue {float(w[0]):.3g}, largest "
                        f"{float(w[-1]):.3g}); pass a covariance matrix")


def _pow2_exponent(largest: float) -> int:
    """e such that ``largest * 2**-e`` is near 1 when ``largest`` is far from 1 (else 0).

    Scaling by a power of two is exact, so it changes no digit of a result; it
    only keeps squares and products of huge (or tiny) values inside float64.
    """
    if largest == 0.0 or _UNSCALED_RANGE[0] <= largest <= _UNSCALED_RANGE[1]:
        return 0
    return math.frexp(largest)[1]


def _scaled_result(value: float, e: int, what: str) -> float:
    """``value * 2**(2e)``, or a DataError naming ``what`` when that is beyond float64."""
    try:
        out = math.ldexp(value, 2 * e)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise DataError(f"the Fréchet distance of {what} is beyond float64 (about 2^{math.frexp(value)[1] + 2 * e}); "
                        "the features are far larger than any feature extractor gives: rescale them")
    return out


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between Gaussians N(mu_a, cov_a) and N(mu_b, cov_b).

    Args:
        mu_a: (D,) mean of the first set.
        cov_a: (D, D) covariance of the first set (symmetric positive semi-definite).
        mu_b: (D,) mean of the second set.
        cov_b: (D, D) covariance of the second set.

    Returns:
        The squared Fréchet (2-Wasserstein) distance, a float >= 0.

    Raises:
        DataError: shapes that do not match, non-finite values, a covariance
            that is not symmetric positive semi-definite, or a distance beyond float64.
    """
    mu_a = as_features(torch.as_tensor(mu_a).reshape(1, -1), "mu_a")[0]
    mu_b = as_features(torch.as_tensor(mu_b).reshape(1, -1), "mu_b")[0]
    cov_a = as_features(torch.as_tensor(cov_a), "cov_a")
    cov_b = as_features(torch.as_tensor(cov_b), "cov_b")
    d = mu_a.shape[0]
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        if c.shape != (d, d):
            raise DataError(f"{name} has shape {tuple(c.shape)}; expected ({d}, {d}) to match the means")
    if mu_b.shape[0] != d:
        raise DataError(f"mu_a has {d} dimensions but mu_b has {mu_b.shape[0]}")
    # means scale like features, covariances like their squares: one power of two for all four
    largest = max(float(mu_a.abs().max()), float(mu_b.abs().max()),
                  math.sqrt(float(cov_a.abs().max())), math.sqrt(float(cov_b.abs().max())))
    e = _pow2_exponent(largest)
    f = math.ldexp(1.0, -e)   # 2**-e in float64 (2**-2e may not be: apply it twice)
    mu_a, mu_b, cov_a, cov_b = mu_a * f, mu_b * f, cov_a * f * f, cov_b * f * f
    _check_covariance(cov_a, "cov_a")
    _check_covariance(cov_b, "cov_b")
    return _scaled_result(_frechet(mu_a, cov_a, mu_b, cov_b), e, "mu_a, cov_a and mu_b, cov_b")


def _frechet(mu_a, cov_a, mu_b, cov_b) -> float:
    diff = mu_a - mu_b
    value = float(diff @ diff) + float(cov_a.trace() + cov_b.trace()) - 2.0 * trace_sqrt_product(cov_a, cov_b)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between two feature sets (FID when they are Inception features).

    Args:
        features_a: (N, D) features of one set (e.g. real images), N >= 2.
        features_b: (M, D) features of the other set (e.g. generated), M >= 2.

    Returns:
        The distance as a float >= 0 (0 for identical sets).

    Raises:
        DataError: bad shapes, non-finite values, or a distance beyond float64.
    """
    a = as_features(features_a, "features_a", min_rows=2)
    b = as_features(features_b, "features_b", min_rows=2)
    same_width(a, b, ("features_a", "features_b"))
    e = _pow2_exponent(max(float(a.abs().max()), float(b.abs().max())))
    a, b = a * math.ldexp(1.0, -e), b * math.ldexp(1.0, -e)
    mu_a, cov_a = feature_stats(a)
    mu_b, cov_b = feature_stats(b)
    return _scaled_result(_frechet(mu_a, cov_a, mu_b, cov_b), e, "features_a and features_b")
