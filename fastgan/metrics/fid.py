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

import torch

from ..errors import DataError
from ._checks import as_features, same_width


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


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between Gaussians N(mu_a, cov_a) and N(mu_b, cov_b).

    Args:
        mu_a: (D,) mean of the first set.
        cov_a: (D, D) covariance of the first set.
        mu_b: (D,) mean of the second set.
        cov_b: (D, D) covariance of the second set.

    Returns:
        The squared Fréchet (2-Wasserstein) distance, a float >= 0.
    """
    mu_a = as_features(torch.as_tensor(mu_a).reshape(1, -1), "mean a")[0]
    mu_b = as_features(torch.as_tensor(mu_b).reshape(1, -1), "mean b")[0]
    cov_a = as_features(torch.as_tensor(cov_a), "covariance a")
    cov_b = as_features(torch.as_tensor(cov_b), "covariance b")
    d = mu_a.shape[0]
    for name, c in (("covariance a", cov_a), ("covariance b", cov_b)):
        if c.shape != (d, d):
            raise DataError(f"{name} has shape {tuple(c.shape)}; expected ({d}, {d}) to match the means")
    if mu_b.shape[0] != d:
        raise DataError(f"mean a has {d} dimensions but mean b has {mu_b.shape[0]}")
    diff = mu_a - mu_b
    value = float(diff @ diff) + float(cov_a.trace() + cov_b.trace()) \
        - 2.0 * trace_sqrt_product(cov_a, cov_b)
    return max(value, 0.0)


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between two feature sets (FID when they are Inception features).

    Args:
        features_a: (N, D) features of one set (e.g. real images), N >= 2.
        features_b: (M, D) features of the other set (e.g. generated), M >= 2.

    Returns:
        The distance as a float >= 0 (0 for identical sets).
    """
    a = as_features(features_a, "first features", min_rows=2)
    b = as_features(features_b, "second features", min_rows=2)
    same_width(a, b, ("first features", "second features"))
    mu_a, cov_a = feature_stats(a)
    mu_b, cov_b = feature_stats(b)
    return frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b)
