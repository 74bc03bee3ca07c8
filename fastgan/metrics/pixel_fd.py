"""Fréchet distance of digit samples in the digits' native 8x8 pixel space.

The built-in ``digits`` are scikit-learn's 8x8 handwritten digits (integer
pixels 0..16) that :func:`fastgan.data.load_data` scales to [0, 1], upscales
bicubically to the training resolution R, stores as uint8 and serves in
[-1, 1]. This metric undoes that chain: a sample ``x`` in [-1, 1] becomes
``(x + 1) * 8`` on the 0..16 scale, is block-averaged (area downsampling: the
mean of each (R / 8) x (R / 8) block) to 8x8, and the 64-dimensional pixel
vectors are compared with the 1,797 native digits by the Fréchet distance
(:func:`fastgan.metrics.fid.frechet_distance`).

Unlike the classifier-feature ``fd`` it needs no network: it sees exactly
what a person sees at the digits' own resolution, so blur, stroke width,
contrast and missing variety all count. Reference figures for this
implementation (1,000 samples, as ``fastgan eval --metrics pixel_fd --n 1000``
compares) are in docs/quality.md.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..errors import DataError

NATIVE_SIZE = 8        # the scikit-learn digits are 8x8
NATIVE_MAX = 16.0      # ... with integer pixels 0..16


@functools.lru_cache(maxsize=1)
def _native_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits   # imported here: keeps `import fastgan` light

    d = load_digits()
    x = torch.from_numpy(d.images).to(torch.float64).reshape(len(d.images), -1)   # (1797, 64), 0..16
    return x, torch.from_numpy(d.target).long()


def native_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The real digits as the reference of :func:`pixel_frechet_distance`.

    Returns:
        ``(pixels (1797, 64) float64 on the 0..16 scale, labels (1797,) long)``,
        scikit-learn's digits exactly (copies: callers may change them).
    """
    x, y = _native_digits()
    return x.clone(), y.clone()


def to_native_pixels(x) -> torch.Tensor:
    """Map digit images in [-1, 1] to the native 8x8 pixel vectors on the 0..16 scale.

    Args:
        x: (N, 1, R, R) (or (N, R, R)) images in [-1, 1], R a multiple of 8;
            as :meth:`fastgan.data.GanData.sample` and the generators produce them.

    Returns:
        (N, 64) float64: ``(x + 1) * 8`` averaged over each (R / 8) x (R / 8) block.
    """
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or x.shape[0] == 0:
        raise DataError(f"pixel_fd needs one-channel square digit images (N, 1, R, R), got {tuple(x.shape)}")
    r = int(x.shape[-1])
    if r % NATIVE_SIZE:
        raise DataError(f"pixel_fd needs images whose side is a multiple of {NATIVE_SIZE}, got {r}")
    # [-1, 1] -> [0, 1] is how the loader stores digits / 16; times 16 is the native scale
    v = (x.detach().cpu().to(torch.float64) + 1.0) * (NATIVE_MAX / 2.0)
    v = F.avg_pool2d(v, kernel_size=r // NATIVE_SIZE)                             # (N, 1, 8, 8)
    return v.reshape(v.shape[0], -1)                                              # (N, 64)


def pixel_frechet_distance(fake, reference=None) -> float:
    """Fréchet distance between digit samples and the real digits at 8x8, in pixel space.

    Args:
        fake: (N, 1, R, R) generated digits in [-1, 1] (R a multiple of 8), N >= 2.
        reference: (M, 64) real pixel vectors on the 0..16 scale (default: all
            1,797 of scikit-learn's digits, :func:`native_digits`).

    Returns:
        The Fréchet distance in the 64-dimensional pixel space, a float >= 0.
    """
    from .fid import frechet_distance

    real = _native_digits()[0] if reference is None else reference
    return frechet_distance(real, to_native_pixels(fake))
