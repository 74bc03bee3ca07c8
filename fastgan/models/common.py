"""Pieces shared by the DCGAN and MLP networks.

DCGAN weight initialisation, optional spectral normalisation, PacGAN packing
and the minibatch standard-deviation feature. All of them work on static
shapes only (batch size, channels), never on tensor values, so a network built
from them can be captured in a CUDA graph.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from fastgan.kernels import BatchNormAct, BiasAct

# Resolutions the DCGAN networks are built for (square images).
IMAGE_SIZES = (16, 32, 64, 128)
# Group size of the minibatch standard-deviation feature (StyleGAN uses 4).
MBSTD_GROUP = 4


def dcgan_init_(module: nn.Module, embed_std: float = 0.02) -> None:
    """Initialise a network in place the DCGAN way.

    Convolution and linear weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02),
    every bias 0, embeddings ~ N(0, embed_std).

    Args:
        module: the network; every sub-module is visited.
        embed_std: standard deviation of ``nn.Embedding`` weights.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (BatchNormAct, nn.BatchNorm1d, nn.BatchNorm2d)):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, BiasAct):
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, embed_std)


def maybe_spectral_norm(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``layer``'s weight in spectral normalisation when ``enabled``.

    Uses ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration
    per training forward; u and v are buffers updated in place).

    Args:
        layer: a conv, linear or embedding layer, already initialised.
        enabled: apply spectral normalisation or return the layer untouched.
    """
    return _spectral_norm(layer) if enabled else layer


def pack_samples(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN packing: fold ``pack`` consecutive samples into the feature axis.

    Args:
        x: (B, C, H, W) images or (B, F) features; B must be a multiple of pack.
        pack: samples per packed input (1 = no packing).

    Returns:
        (B // pack, pack * C, H, W) or (B // pack, pack * F).
    """
    if pack == 1:
        return x
    if x.shape[0] % pack != 0:
        raise ValueError(f"batch size {x.shape[0]} is not a multiple of pack={pack}")
    return x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


def first_of_pack(labels: Optional[torch.Tensor], pack: int) -> Optional[torch.Tensor]:
    """The label (or conditioning vector) of the first sample of each pack.

    Args:
        labels: (B,) long class indices, (B, V) vectors, or None.
        pack: samples per packed input.

    Returns:
        (B // pack,) labels or (B // pack, V) vectors, or None.
    """
    if labels is None or pack == 1:
        return labels
    return labels.reshape(-1, pack, *labels.shape[1:])[:, 0]


def mbstd_group_size(batch: int, group: int = MBSTD_GROUP) -> int:
    """Group size of the minibatch stddev: min(group, batch), lowered to a divisor of batch.

    Args:
        batch: (static) batch size seen by the layer.
        group: preferred group size.
    """
    g = max(1, min(group, batch))
    while batch % g != 0:
        g -= 1
    return g


def minibatch_stddev(x: torch.Tensor, group: int = MBSTD_GROUP, eps: float = 1e-8) -> torch.Tensor:
    """Append the minibatch standard-deviation feature (StyleGAN / ProGAN).

    Samples are split into groups of ``mbstd_group_size(B)`` (sample i belongs
    to group i mod (B / g)); within a group the std of every feature is taken
    over the samples, averaged over all features, and appended to each sample of
    the group as one constant feature map. Only static shapes are used.

    Args:
        x: (B, C, H, W) feature maps or (B, F) features.
        group: preferred group size.
        eps: added to the variance before the square root (keeps the gradient finite).

    Returns:
        (B, C + 1, H, W) or (B, F + 1).
    """
    b = x.shape[0]
    g = mbstd_group_size(b, group)
    y = x.reshape(g, b // g, *x.shape[1:])                 # (g, B/g, C, H, W)
    y = y - y.mean(dim=0)
    std = (y.square().mean(dim=0) + eps).sqrt()             # (B/g, C, H, W)
    s = std.reshape(b // g, -1).mean(dim=1)                 # (B/g,)
    s = s.repeat(g)                                         # (B,)  sample i -> group i mod B/g
    if x.ndim == 4:
        feat = s.reshape(b, 1, 1, 1).expand(b, 1, x.shape[2], x.shape[3])   # (B, 1, H, W)
    else:
        feat = s.reshape(b, 1)                                              # (B, 1)
    return torch.cat([x, feat.to(x.dtype)], dim=1)


def check_labels(labels: Optional[torch.Tensor], num_classes: int, who: str) -> None:
    """Raise a clear error when a conditional network gets no labels.

    Args:
        labels: the labels passed to forward.
        num_classes: the network's class count (0 = unconditional).
        who: class name for the message.
    """
    if num_classes > 0 and labels is None:
        raise ValueError(f"{who} is class-conditional (num_classes={num_classes}); pass labels")


def score_real_and_fake(D: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                        labels: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits on a real and a fake batch.

    A discriminator whose ``batch_independent`` is true (no logit depends on
    another sample: no batch norm, minibatch std or spectral-norm power step
    per call) scores both in one call over their concatenation: half the
    calls, the same per-sample logits; any other D is called twice.

    Args:
        D: the discriminator, called as ``D(x, labels)``.
        real: (B, ...) real batch.
        fake: (B, ...) generated batch.
        labels: (B,) labels for both batches, or None.

    Returns:
        (logits on real, logits on fake).
    """
    if getattr(D, "batch_independent", False):
        both = None if labels is None else torch.cat([labels, labels])
        d_real, d_fake = D(torch.cat([real, fake]), both).chunk(2)
        return d_real, d_fake
    return D(real, labels), D(fake, labels)


def r1_in_input_units(D: nn.Module, r1: torch.Tensor) -> torch.Tensor:
    """An R1 penalty taken in the coordinates D works in.

    A point MLP divides its input by ``D.scale``, so gradients with respect
    to the data are 1 / scale of those with respect to its own input; the
    penalty is multiplied back by scale**2, and ``r1_gamma`` means the same
    for every mixture. Other discriminators have no scale: ``r1`` unchanged.

    Args:
        D: the discriminator.
        r1: the penalty measured in data coordinates.
    """
    unit = float(getattr(D, "scale", 1.0)) ** 2
    return r1 * unit if unit != 1.0 else r1
