"""Metrics of image-to-image translation: pixel error against targets, and a Fréchet distance of style.

- :func:`l1_and_psnr`: mean absolute error and PSNR of translated images
  against their targets, both on the [0, 1] pixel scale (peak 1).
- :func:`style_features`: per-image statistics that describe how an image
  looks rather than what it shows: the mean and standard deviation of each
  opponent-colour channel (luminance, red-green, yellow-blue) and of the
  luminance gradient magnitude at full and half resolution (local contrast,
  i.e. texture energy) -- 10 numbers per colour image, 6 per grey image, in
  percent of the full pixel scale. These
  are the first-order colour and texture statistics that style transfer
  matches; they need no trained network, so they mean the same on any CPU and
  on crops as small as 32 px (FID's Inception features need a downloaded file
  and upsample such crops ninefold).
- :func:`style_fd`: the Fréchet distance between two image sets in that
  space (real-vs-real calibration figures are in docs/translation.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .fid import frechet_distance

# opponent colour axes (orthonormal): luminance, red-green, yellow-blue
_OPPONENT = torch.tensor([[1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
                          [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
                          [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)]])


def l1_and_psnr(fake: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Mean absolute error and PSNR (dB) on the [0, 1] scale, averaged over the images.

    PSNR is computed per image (10 log10(1 / MSE)) and averaged, as image-restoration papers report it.

    Args:
        fake: (N, C, H, W) translated images in [-1, 1].
        target: (N, C, H, W) targets in [-1, 1].
    """
    d = (fake.double() - target.double()) / 2.0                       # [0, 1] scale
    mse = d.square().flatten(1).mean(1).clamp(min=1e-12)              # (N,)
    return float(d.abs().mean()), float((10.0 * torch.log10(1.0 / mse)).mean())


def style_features(x: torch.Tensor) -> torch.Tensor:
    """Colour and texture statistics per image, in percent: (N, 10) for colour, (N, 6) for grey images.

    Args:
        x: (N, 1 or 3, H, W) images in [-1, 1], H and W >= 4.
    """
    x = (x.double() + 1.0) / 2.0                                       # [0, 1]
    if x.shape[1] == 3:
        opp = torch.einsum("kc,nchw->nkhw", _OPPONENT.double(), x)      # (N, 3, H, W)
        lum = opp[:, :1] / math.sqrt(3)                               # luminance on [0, 1]
    else:
        opp, lum = x[:, :1], x[:, :1]
    feats = [opp.flatten(2).mean(2), opp.flatten(2).std(2)]           # (N, K) each
    for level in range(2):
        g = lum if level == 0 else F.avg_pool2d(lum, 2)
        gx, gy = g[..., :, 1:] - g[..., :, :-1], g[..., 1:, :] - g[..., :-1, :]
        mag = (gx[..., :-1, :].square() + gy[..., :, :-1].square()).sqrt()   # (N, 1, H-1, W-1)
        feats += [mag.flatten(1).mean(1, keepdim=True), mag.flatten(1).std(1, keepdim=True)]
    return torch.cat(feats, dim=1).float() * 100.0                   # percent of the full scale: readable FDs


def style_fd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between two image sets in :func:`style_features` space.

    Args:
        x: (N, C, H, W) images in [-1, 1], N >= 2.
        y: (M, C, H, W) images in [-1, 1], M >= 2, the same C.
    """
    return frechet_distance(style_features(x), style_features(y))
