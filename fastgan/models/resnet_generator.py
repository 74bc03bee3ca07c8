"""ResNet generator (CycleGAN): two down-samplings, residual blocks, two up-samplings.

The network of CycleGAN's ``resnet_9blocks`` / ``resnet_6blocks`` (Zhu et al.
2017, after Johnson et al.'s fast style transfer), with instance norm:

    stem   reflect-pad 3, conv 7x7 -> IN + ReLU                     (w,  H,   W)
    down   conv 3x3 / 2 -> IN + ReLU, twice                          (4w, H/4, W/4)
    blocks x + [reflect-pad 1, conv 3x3, IN + ReLU,
                reflect-pad 1, conv 3x3, IN], n_blocks times
    up     conv-transpose 3x3 / 2 -> IN + ReLU, twice                (w,  H,   W)
    head   reflect-pad 3, conv 7x7 + bias -> tanh                    (out_channels)

No convolution followed by an instance norm has a bias (the norm subtracts it).
Any H and W that are multiples of 4 work (ONNX exports keep them dynamic).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fastgan.kernels import BiasAct, InstanceNormAct

from .common import dcgan_init_

N_DOWN = 2   # down-samplings (CycleGAN's choice at every size)


class ResnetBlock(nn.Module):
    """x + (reflect-pad, conv 3x3, IN + ReLU, reflect-pad, conv 3x3, IN)(x).

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 0, bias=False)
        self.norm1 = InstanceNormAct(channels, act="relu")
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 0, bias=False)
        self.norm2 = InstanceNormAct(channels, act="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.conv1(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")))
        return x + self.norm2(self.conv2(nn.functional.pad(h, (1, 1, 1, 1), mode="reflect")))


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: image (B, in_channels, H, W) -> image (B, out_channels, H, W) in [-1, 1].

    Args:
        in_channels: input channels.
        out_channels: output channels.
        width: channels of the stem (ngf, 64 in CycleGAN).
        n_blocks: residual blocks (9 at 256 px, 6 at 128 px in CycleGAN).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, width: int = 64, n_blocks: int = 9):
        super().__init__()
        if min(in_channels, out_channels, width) < 1 or n_blocks < 0:
            raise ValueError(f"need positive channels and width and n_blocks >= 0; got in_channels={in_channels}, "
                             f"out_channels={out_channels}, width={width}, n_blocks={n_blocks}")
        self.in_channels, self.out_channels, self.width, self.n_blocks = in_channels, out_channels, width, n_blocks
        self.value_range = (-1.0, 1.0)
        self.size_multiple = 2 ** N_DOWN
        self.stem = nn.Conv2d(in_channels, width, 7, 1, 0, bias=False)
        self.stem_act = InstanceNormAct(width, act="relu")
        self.down = nn.ModuleList()
        for i in range(N_DOWN):
            c = width * 2 ** i
            self.down.append(nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1, bias=False),
                                           InstanceNormAct(2 * c, act="relu")))
        c = width * 2 ** N_DOWN
        self.blocks = nn.ModuleList([ResnetBlock(c) for _ in range(n_blocks)])
        self.up = nn.ModuleList()
        for i in range(N_DOWN):
            c = width * 2 ** (N_DOWN - i)
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=False),
                                         InstanceNormAct(c // 2, act="relu")))
        self.head = nn.Conv2d(width, out_channels, 7, 1, 0, bias=False)
        self.out_act = BiasAct(out_channels, act="tanh")
        dcgan_init_(self)   # N(0, 0.02) weights, zero biases: the reference's init_type "normal"

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(G)(**G.arch_config())``."""
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, width=self.width,
                    n_blocks=self.n_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate images.

        Args:
            x: (B, in_channels, H, W) in [-1, 1], H and W multiples of 4.

        Returns:
            (B, out_channels, H, W) in [-1, 1].
        """
        h = self.stem_act(self.stem(nn.functional.pad(x, (3, 3, 3, 3), mode="reflect")))   # (B, w, H, W)
        for block in self.down:
            h = block(h)                                       # (B, 2c, H/2, W/2)
        for block in self.blocks:
            h = block(h)                                       # (B, 4w, H/4, W/4)
        for block in self.up:
            h = block(h)                                       # (B, c/2, 2x the size)
        return self.out_act(self.head(nn.functional.pad(h, (3, 3, 3, 3), mode="reflect")))   # (B, C, H, W)
