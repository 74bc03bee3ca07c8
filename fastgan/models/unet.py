"""U-Net generator with skip connections (pix2pix), its dropout drawn from noise the caller passes.

The network of pix2pix's ``unet_256`` / ``unet_128`` (Isola et al. 2017, and
the pytorch-CycleGAN-and-pix2pix code), written as an explicit encoder /
decoder instead of nested blocks. With ``depth`` = log2(img_size) levels and
``w`` = width, level ``l`` has ``w * min(2**l, max_mult)`` channels:

    encoder  a0 = lrelu(conv(x) + b)                    (S/2)
             al = lrelu(IN(conv(a(l-1))))                (S/2^(l+1)), l = 1 .. depth-2
             h  = relu(conv(a(depth-2)) + b)             (S/2^depth: 1x1 at img_size)
    decoder  u  = relu(IN(convT(h)))
             u  = relu(IN(convT(cat(relu(al), u))))      back up the levels
             y  = tanh(convT(cat(relu(a0), u)) + b)      (S)

(The reference applies its LeakyReLU in place, so its skips carry the
activated features, and its ReLU after each concatenation: the maths above.)
Instance norm + activation go through :class:`fastgan.kernels.InstanceNormAct`,
bias + activation through :class:`fastgan.kernels.BiasAct`: fused kernels on a GPU.

Dropout (pix2pix's only noise) follows the reference: after the instance norm
of the ``dropout_blocks`` decoder levels above the first one out of the
bottleneck (3 at 256 px, where the reference has them). A CUDA graph can only replay random numbers
drawn from a registered ``torch.Generator``, and ``F.dropout`` takes none, so
the masks come from uniform ``noise`` tensors the training step draws with its
generator (:meth:`UNetGenerator.noise_shapes`); without ``noise`` a training
network draws them from the global RNG like ``nn.Dropout``, and an evaluating
one uses none (deterministic translation and ONNX export).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan.kernels import BiasAct, InstanceNormAct

from .common import dcgan_init_


def unet_channels(width: int, level: int, max_mult: int = 8) -> int:
    """Channels of encoder level ``level`` (0 = the first, at half the input size).

    Args:
        width: channels of level 0 (ngf).
        level: encoder level.
        max_mult: cap on the multiple of ``width``.
    """
    return width * min(2 ** level, max_mult)


class UNetGenerator(nn.Module):
    """pix2pix's U-Net: image (B, in_channels, H, W) -> image (B, out_channels, H, W) in [-1, 1].

    H and W may be any multiple of ``2**depth`` (the training size is ``img_size``).

    Args:
        in_channels: input channels (1 for grey, 3 for colour).
        out_channels: output channels.
        img_size: training image side; ``depth`` defaults to log2 of it (a 1x1 bottleneck).
        width: channels of the first level (ngf, 64 in pix2pix).
        depth: down-sampling levels (``None``: log2(img_size); pix2pix uses 8 at 256 px).
        dropout: dropout probability of the decoder levels listed by ``dropout_blocks``.
        dropout_blocks: how many decoder levels drop out, counted from the second one out of the
            bottleneck (at most depth - 2).
        max_mult: cap on the channel multiple of ``width`` (8 in pix2pix).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, img_size: int = 256, width: int = 64,
                 depth: Optional[int] = None, dropout: float = 0.5, dropout_blocks: int = 3, max_mult: int = 8):
        super().__init__()
        if depth is None:
            depth = int(img_size).bit_length() - 1
            if 2 ** depth != img_size:
                raise ValueError(f"img_size must be a power of two when depth is not given, got {img_size}")
        if depth < 2 or in_channels < 1 or out_channels < 1 or width < 1:
            raise ValueError(f"need depth >= 2 and positive channels and width; got depth={depth}, "
                             f"in_channels={in_channels}, out_channels={out_channels}, width={width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels, self.img_size, self.width = in_channels, out_channels, img_size, width
        self.depth, self.dropout, self.max_mult = depth, float(dropout), max_mult
        self.dropout_blocks = min(int(dropout_blocks), depth - 2) if dropout > 0 else 0
        self.value_range = (-1.0, 1.0)
        self.size_multiple = 2 ** depth
        ch = [unet_channels(width, lvl, max_mult) for lvl in range(depth)]

        # encoder: conv(4, 2, 1) per level; biases only where no instance norm follows
        self.enc = nn.ModuleList([nn.Conv2d(in_channels, ch[0], 4, 2, 1, bias=False)])
        self.enc_act = nn.ModuleList([BiasAct(ch[0], act="lrelu", alpha=0.2)])
        for lvl in range(1, depth - 1):
            self.enc.append(nn.Conv2d(ch[lvl - 1], ch[lvl], 4, 2, 1, bias=False))
            self.enc_act.append(InstanceNormAct(ch[lvl], act="lrelu", alpha=0.2))
        self.enc.append(nn.Conv2d(ch[depth - 2], ch[depth - 1], 4, 2, 1, bias=False))
        self.enc_act.append(BiasAct(ch[depth - 1], act="relu"))        # the bottleneck
        # decoder, deepest first: dec[k] turns level depth-1-k's features into level depth-2-k's size
        self.dec = nn.ModuleList([nn.ConvTranspose2d(ch[depth - 1], ch[depth - 2], 4, 2, 1, bias=False)])
        self.dec_act = nn.ModuleList([InstanceNormAct(ch[depth - 2], act="relu")])
        for lvl in range(depth - 2, 0, -1):
            self.dec.append(nn.ConvTranspose2d(2 * ch[lvl], ch[lvl - 1], 4, 2, 1, bias=False))
            self.dec_act.append(InstanceNormAct(ch[lvl - 1], act="relu"))
        self.to_img = nn.ConvTranspose2d(2 * ch[0], out_channels, 4, 2, 1, bias=False)
        self.out_act = BiasAct(out_channels, act="tanh")
        dcgan_init_(self)   # N(0, 0.02) weights, zero biases: the reference's init_type "normal"

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(G)(**G.arch_config())``."""
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, img_size=self.img_size,
                    width=self.width, depth=self.depth, dropout=self.dropout, dropout_blocks=self.dropout_blocks,
                    max_mult=self.max_mult)

    def noise_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, ...]]:
        """Shapes of the uniform noise tensors :meth:`forward` takes (one per dropout level, deepest first).

        Args:
            batch: batch size.
            height: input height.
            width: input width.
        """
        shapes = []
        for k in range(1, self.dropout_blocks + 1):
            lvl = self.depth - 2 - k                            # dec[k] outputs level `lvl`'s size
            c = unet_channels(self.width, lvl, self.max_mult)
            shapes.append((batch, c, height >> (lvl + 1), width >> (lvl + 1)))
        return shapes

    def _drop(self, u: torch.Tensor, k: int, noise: Optional[Sequence[torch.Tensor]]) -> torch.Tensor:
        if not 1 <= k <= self.dropout_blocks:
            return u
        if noise is not None:   # keep where noise >= p: a mask from the caller's generator
            return u * (noise[k - 1] >= self.dropout).to(u.dtype) * (1.0 / (1.0 - self.dropout))
        return F.dropout(u, self.dropout, self.training)

    def forward(self, x: torch.Tensor, noise: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Translate images.

        Args:
            x: (B, in_channels, H, W) in [-1, 1], H and W multiples of ``size_multiple``.
            noise: uniform [0, 1) tensors shaped as :meth:`noise_shapes` says, giving the dropout
                masks; ``None``: ``nn.Dropout`` behaviour (global RNG when training, none in eval).

        Returns:
            (B, out_channels, H, W) in [-1, 1].
        """
        skips = []
        h = x
        for conv, act in zip(self.enc, self.enc_act):
            h = act(conv(h))                                   # (B, ch[l], H/2^(l+1), W/2^(l+1))
            skips.append(h)
        skips.pop()                                            # the bottleneck has no skip
        h = self._drop(self.dec_act[0](self.dec[0](h)), 0, noise)   # (B, ch[d-2], H/2^(d-1), ...)
        for k in range(1, len(self.dec)):
            h = torch.cat([F.relu(skips.pop()), h], dim=1)     # (B, 2 ch[l], ...)
            h = self._drop(self.dec_act[k](self.dec[k](h)), k, noise)   # (B, ch[l-1], 2x the size)
        h = torch.cat([F.relu(skips.pop()), h], dim=1)         # (B, 2 ch[0], H/2, W/2)
        return self.out_act(self.to_img(h))                    # (B, out_channels, H, W)
