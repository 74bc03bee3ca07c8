"""The built-in data: scikit-learn's digits (upscaled, or stacked as RGB) and the 2-D mixtures.

:func:`fastgan.data.load_data` turns these into a :class:`~fastgan.data.GanData`;
the translation demos (:mod:`fastgan.translation_data`) build their domains
from :func:`digits`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STACKED_DIGITS_SIZE = 10_000


def mixture_modes(name: str) -> tuple[torch.Tensor, float]:
    """The mode centres (M, 2) and the standard deviation of the 2-D mixture ``grid25`` or ``ring8``."""
    if name == "grid25":
        v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(v, v), 0.05                            # (25, 2)
    a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return torch.stack([a.cos(), a.sin()], dim=1).float(), 0.01             # (8, 2)


def digits(resolution: int, block_means: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits as (1797, 1, R, R) uint8 (white on black) and (1797,) labels.

    Args:
        resolution: image side R (a multiple of 8).
        block_means: correct the bicubic upscaling so that each (R/8) x (R/8)
            block averages to its original pixel (see :func:`keep_block_means`);
            off by default, the images that stacked digits and the translation
            demos were measured on.
    """
    from sklearn.datasets import load_digits   # imported here: keeps `import fastgan` light

    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0                   # (1797, 1, 8, 8) in [0, 1]
    # Bicubic is visibly sharper than bilinear at 32 px; its overshoot is clipped below.
    up = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False)
    if block_means:
        up = keep_block_means(up, x)
    images = (up * 255).round().clamp(0, 255).to(torch.uint8)               # (1797, 1, R, R)
    return images, torch.from_numpy(d.target).long()


def keep_block_means(up: torch.Tensor, small: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """Shift each block of an upscaled image so that it averages to its source pixel.

    Plain bicubic upscaling mixes neighbouring pixels and its clipped overshoot
    brightens strokes, so the upscaled digits, averaged back to 8x8, are not the
    real digits (pixel-space Fréchet distance 48 at 16 px, docs/quality.md).
    Each (R/r) x (R/r) block becomes ``clip(block + s, 0, 1)`` with the one
    shift ``s`` that gives it its source pixel's mean (found by bisection: the
    mean grows with ``s``), which keeps the smooth bicubic look.

    Args:
        up: (N, C, R, R) upscaled images in [0, 1] (about).
        small: (N, C, r, r) the source images in [0, 1], R a multiple of r.
        steps: bisection steps (16: block means exact to 2^-15).
    """
    n, c, r, big = small.shape[0], small.shape[1], small.shape[-1], up.shape[-1]
    k = big // r
    blocks = up.clamp(0.0, 1.0).reshape(n, c, r, k, r, k)                    # (N, C, r, k, r, k)
    target = small.reshape(n, c, r, 1, r, 1)
    lo, hi = torch.full_like(target, -1.0), torch.full_like(target, 1.0)   # every shift needed lies here
    for _ in range(steps):
        mid = (lo + hi) / 2
        bright = (blocks + mid).clamp(0.0, 1.0).mean(dim=(3, 5), keepdim=True) > target
        lo, hi = torch.where(bright, lo, mid), torch.where(bright, mid, hi)
    return (blocks + (lo + hi) / 2).clamp(0.0, 1.0).reshape(n, c, big, big)


def stacked_digits(resolution: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three random digits as the R, G, B channels: (10000, 3, R, R) uint8, labels 100a+10b+c."""
    images, y = digits(resolution, block_means=False)   # the upscaling its measured figures used
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, images.shape[0], (STACKED_DIGITS_SIZE, 3), generator=g)   # (N, 3)
    images = images[idx.reshape(-1)].reshape(STACKED_DIGITS_SIZE, 3, resolution, resolution)
    labels = (y[idx] * torch.tensor([100, 10, 1])).sum(dim=1)                          # (N,)
    return images, labels
