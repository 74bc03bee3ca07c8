"""Mode-collapse metrics: mixture modes for 2-D data, class coverage for labelled data.

Mixture modes follow VEEGAN (Srivastava et al., 2017) as PacGAN (Lin et al.,
2018) computes them for its Table 1 (2D-ring, 2D-grid; 2,500 samples per run):

- each generated sample is assigned to its nearest mode centre;
- it is *high quality* if it lies within ``threshold`` (3) standard deviations
  of that centre (strictly less than, as in PacGAN's code);
- a mode is *captured* if at least one high-quality sample is assigned to it;
- *reverse KL* is KL(p || u), where p is the histogram of high-quality samples
  over the modes (normalised by the number of high-quality samples) and u is
  the uniform distribution over the K modes: sum_{p_i > 0} p_i log(K p_i).
  It is 0 when the good samples are spread evenly and log(K) when they all
  sit at one mode. With no high-quality sample at all it is undefined; we
  report ``inf``.

Class coverage (PacGAN's stacked-MNIST metric) counts the classes a
classifier predicts at least once among generated samples and reports the
reverse KL of the predicted-class histogram against the real class
distribution: KL(p_gen || p_real).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, DataError
from ._checks import as_features, positive_int, same_width


def reverse_kl(counts, reference=None) -> float:
    """KL(p || q) of a histogram ``counts`` (normalised to p) against ``q``.

    Args:
        counts: (K,) non-negative counts (or probabilities) of the generated samples.
        reference: (K,) non-negative counts or probabilities of the reference
            distribution q (normalised here); ``None`` means uniform.

    Returns:
        sum over p_i > 0 of p_i log(p_i / q_i); ``inf`` when p puts mass where
        q has none or when ``counts`` is all zero.
    """
    p = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if p.numel() == 0:
        raise DataError("reverse KL needs at least one bin")
    if (p < 0).any() or not torch.isfinite(p).all():
        raise DataError("histogram counts must be finite and non-negative")
    total = float(p.sum())
    if total == 0:
        return math.inf
    p = p / total
    if reference is None:
        q = torch.full_like(p, 1.0 / p.numel())
    else:
        q = torch.as_tensor(reference, dtype=torch.float64).flatten()
        if q.shape != p.shape:
            raise DataError(f"reference distribution has {q.numel()} bins but the histogram has {p.numel()}")
        if (q < 0).any() or not torch.isfinite(q).all() or float(q.sum()) == 0:
            raise DataError("reference distribution must be finite, non-negative and not all zero")
        q = q / q.sum()
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    return float((p[support] * (p[support] / q[support]).log()).sum())


def mixture_mode_metrics(samples, centres, std: float, threshold: float = 3.0) -> dict:
    """Modes captured, high-quality fraction and reverse KL of samples from a Gaussian mixture.

    Args:
        samples: (N, D) generated points.
        centres: (K, D) mixture centres.
        std: standard deviation of each (isotropic) mixture component.
        threshold: a sample is high quality if its distance to the nearest
            centre is below ``threshold * std``.

    Returns:
        dict with ``modes`` (int, captured modes), ``num_modes`` (K),
        ``high_quality`` (fraction in [0, 1]), ``reverse_kl`` (float) and
        ``counts`` (list of K ints: high-quality samples per mode).
    """
    x = as_features(samples, "generated points")
    c = as_features(centres, "mode centres")
    same_width(x, c, ("generated points", "mode centres"))
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ConfigError(f"mode std must be a positive number, got {std!r}")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ConfigError(f"threshold must be a positive number, got {threshold!r}")
    dist = torch.cdist(x, c)                       # (N, K)
    nearest_d, nearest = dist.min(dim=1)
    good = nearest_d < threshold * std
    counts = torch.bincount(nearest[good], minlength=c.shape[0])
    return {
        "modes": int((counts > 0).sum()),
        "num_modes": int(c.shape[0]),
        "high_quality": float(good.double().mean()),
        "reverse_kl": reverse_kl(counts),
        "counts": counts.tolist(),
    }


def class_coverage(predicted, num_classes: int, reference=None) -> dict:
    """Classes found among generated samples and reverse KL of their histogram.

    Args:
        predicted: (N,) integer class predictions for generated samples
            (from a classifier), each in [0, num_classes).
        num_classes: number of classes K.
        reference: (K,) counts or probabilities of the real class
            distribution; ``None`` means uniform.

    Returns:
        dict with ``classes`` (int: classes predicted at least once),
        ``num_classes`` (K), ``reverse_kl`` (KL(p_gen || p_real)) and
        ``counts`` (list of K ints).
    """
    num_classes = positive_int(num_classes, "num_classes")
    pred = torch.as_tensor(predicted).flatten()
    if pred.numel() == 0:
        raise DataError("class coverage needs at least one prediction")
    if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
        raise DataError(f"class predictions must be integers, got dtype {pred.dtype}")
    pred = pred.to("cpu", torch.long)
    if int(pred.min()) < 0 or int(pred.max()) >= num_classes:
        raise DataError(
            f"class predictions must lie in [0, {num_classes}), got values in "
            f"[{int(pred.min())}, {int(pred.max())}]")
    counts = torch.bincount(pred, minlength=num_classes)
    return {
        "classes": int((counts > 0).sum()),
        "num_classes": num_classes,
        "reverse_kl": reverse_kl(counts, reference),
        "counts": counts.tolist(),
    }
