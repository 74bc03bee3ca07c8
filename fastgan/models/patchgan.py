"""PatchGAN discriminator (pix2pix, CycleGAN): one logit per overlapping patch of the input.

CycleGAN's and pix2pix's ``basic`` discriminator (70x70 receptive field with
``n_layers=3``), with instance norm:

    conv 4x4 / 2 + bias -> LeakyReLU 0.2                          (w)
    conv 4x4 / 2 -> IN + LeakyReLU 0.2, n_layers - 1 times         (w * min(2^n, 8))
    conv 4x4 / 1 -> IN + LeakyReLU 0.2                             (w * min(2^n_layers, 8))
    conv 4x4 / 1 + bias                                            (1 channel: the patch logits)

pix2pix's D sees the input and the (real or translated) output concatenated
along the channels. The reference pix2pix trains with batch norm at batch
size 1, which normalises each channel over one image: instance norm computes
exactly that at any batch size, keeps every logit dependent on its own image
only (so real and fake are scored in one call), and has no running statistics
to drift between training and use.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fastgan.kernels import BiasAct, InstanceNormAct

from .common import dcgan_init_


def patch_output_size(size: int, n_layers: int) -> int:
    """Side of the logit map for an input side ``size``.

    Args:
        size: input height or width.
        n_layers: strided layers of the discriminator.
    """
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    return size - 2   # two stride-1 4x4 convolutions with padding 1: -1 each


def min_patch_input(n_layers: int) -> int:
    """Smallest input side for which every instance norm sees more than one value per channel.

    Args:
        n_layers: strided layers of the discriminator.
    """
    size = 2 ** n_layers
    while patch_output_size(size, n_layers) + 1 < 2:   # the last norm runs on the map one larger than the output
        size += 2 ** n_layers
    return size


class PatchDiscriminator(nn.Module):
    """PatchGAN: image (B, in_channels, H, W) -> patch logits (B, 1, h, w).

    Args:
        in_channels: input channels (pix2pix: input + output channels).
        width: channels of the first layer (ndf, 64 in the papers).
        n_layers: strided layers (3: the 70x70 PatchGAN).
    """

    def __init__(self, in_channels: int = 6, width: int = 64, n_layers: int = 3):
        super().__init__()
        if in_channels < 1 or width < 1 or n_layers < 1:
            raise ValueError(f"need in_channels, width and n_layers >= 1; got {in_channels}, {width}, {n_layers}")
        self.in_channels, self.width, self.n_layers = in_channels, width, n_layers
        # every logit depends on its own image only: real and fake batches may be scored in one call
        self.batch_independent = True
        self.first = nn.Conv2d(in_channels, width, 4, 2, 1, bias=False)
        self.first_act = BiasAct(width, act="lrelu", alpha=0.2)
        layers = []
        c = width
        for n in range(1, n_layers + 1):
            c_out = width * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1, bias=False), InstanceNormAct(c_out, act="lrelu", alpha=0.2)]
            c = c_out
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, 1, 4, 1, 1, bias=True)
        dcgan_init_(self)   # N(0, 0.02) weights, zero biases: the reference's init_type "normal"

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(D)(**D.arch_config())``."""
        return dict(in_channels=self.in_channels, width=self.width, n_layers=self.n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score every patch.

        Args:
            x: (B, in_channels, H, W) images in [-1, 1].

        Returns:
            (B, 1, h, w) float logits, h = :func:`patch_output_size` (H, n_layers).
        """
        h = self.first_act(self.first(x))                      # (B, w, H/2, W/2)
        h = self.body(h)                                       # (B, c, H/2^n - 1, ...)
        return self.out(h).float()                             # (B, 1, h, w)
