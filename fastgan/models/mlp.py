"""MLP generator and discriminator for 2-D point data (grid25, ring8, ...).

Bias and activation of every hidden layer go through fastgan.kernels' BiasAct
(ReLU in G, LeakyReLU 0.2 in D); the generator's output layer is linear.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from fastgan.kernels import BiasAct

from .common import (check_labels, dcgan_init_, first_of_pack, maybe_spectral_norm, minibatch_stddev,
                     pack_samples)


def _check_sizes(width: int, depth: int, num_classes: int) -> None:
    if width < 1 or depth < 1 or num_classes < 0:
        raise ValueError(f"need width >= 1, depth >= 1, num_classes >= 0; got {width}, {depth}, "
                         f"{num_classes}")


def _run_hidden(hidden: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """The hidden stack, (Linear without bias, BiasAct) pairs, as ``BiasAct.linear`` calls.

    Same result as ``hidden(h)``; on the CPU each layer is then one ``addmm``
    (bias folded into the matrix multiply) instead of ``mm`` + bias add
    (``bench/cpu_point_step.py`` times it against the module stack).
    NOTE: forward hooks registered on the inner Linear modules do not fire.
    """
    for i in range(0, len(hidden), 2):
        w = hidden[i].weight                                       # (out, in)
        if w.shape[1] <= 4 and h.device.type == "cpu":
            # column-major: autograd then forms the gradient as (in, B) @ (B, out), which the CPU BLAS
            # runs much faster than (out, B) @ (B, in) for in = 2 (docs/defaults.md)
            w = w.t().contiguous().t()
        h = hidden[i + 1].linear(h, w)
    return h


def _check_scale(scale: float, name: str = "scale") -> None:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name} must be a positive finite number, got {scale!r}")


class MLPGenerator(nn.Module):
    """MLP generator: z (and a label embedding) -> point.

    Args:
        z_dim: latent size.
        out_dim: size of each generated point (2 for the built-in data).
        width: hidden units per layer.
        depth: number of hidden layers (Linear + bias + ReLU).
        num_classes: 0 for unconditional; otherwise the label is embedded and
            concatenated to z.
        embed_dim: size of the label embedding (conditional only).
        scale: coordinate scale of the data: the network works in units of
            ``scale`` and multiplies its output by it, so it learns unit-scale
            points whatever the data's extent.
        z_gain: the latents are multiplied by it before the first layer. The
            same function as first-layer weights ``z_gain`` times larger, but
            with Adam (steps of a fixed size per weight) that layer then moves
            ``z_gain`` times faster, so the generator forms the steep
            transitions between separate modes sooner (fastgan uses 3 for point
            data; see ``fastgan.models.POINT_Z_GAIN``).
    """

    def __init__(self, z_dim: int = 2, out_dim: int = 2, width: int = 128, depth: int = 3,
                 num_classes: int = 0, embed_dim: int = 32, scale: float = 1.0, z_gain: float = 1.0):
        super().__init__()
        _check_sizes(width, depth, num_classes)
        _check_scale(scale)
        _check_scale(z_gain, "z_gain")
        self.scale = float(scale)
        self.z_gain = float(z_gain)
        self.z_dim, self.out_dim, self.width, self.depth = z_dim, out_dim, width, depth
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.out_shape = (out_dim,)
        self.value_range = None
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        d = z_dim + (embed_dim if num_classes > 0 else 0)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(d, width, bias=False), BiasAct(width, act="relu", dim=1)]
            d = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(d, out_dim)
        dcgan_init_(self, embed_std=1.0)
        _default_linear_init_(self)

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(G)(**G.arch_config())``."""
        return dict(z_dim=self.z_dim, out_dim=self.out_dim, width=self.width, depth=self.depth,
                    num_classes=self.num_classes, embed_dim=self.embed_dim, scale=self.scale, z_gain=self.z_gain)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generate points.

        Args:
            z: (B, z_dim) latents.
            labels: (B,) long class indices; required when num_classes > 0,
                ignored otherwise.

        Returns:
            (B, out_dim) points (unbounded).
        """
        check_labels(labels, self.num_classes, type(self).__name__)
        h = z.reshape(z.shape[0], -1)                                   # (B, z_dim)
        if self.z_gain != 1.0:
            h = h * self.z_gain
        if self.embed is not None:
            h = torch.cat([h, self.embed(labels).to(h.dtype)], dim=1)   # (B, z_dim + embed_dim)
        x = self.out(_run_hidden(self.hidden, h))                       # (B, out_dim), unit scale
        return x * self.scale if self.scale != 1.0 else x


class MLPDiscriminator(nn.Module):
    """MLP discriminator: point -> one logit per (packed) sample.

    Args:
        in_dim: size of each input point.
        width: hidden units per layer.
        depth: number of hidden layers (Linear + bias + LeakyReLU 0.2).
        num_classes: 0 for unconditional; otherwise a projection term
            <embed(y), h> on the last hidden features is added to the logit.
        spectral_norm: spectral normalisation on every linear/embedding layer.
        pack: PacGAN degree: (B, in_dim) is judged as (B / pack, pack * in_dim).
        mbstd: append the minibatch standard-deviation feature before the output layer.
        scale: coordinate scale of the data: inputs are divided by it, so the
            network sees unit-scale points.
    """

    def __init__(self, in_dim: int = 2, width: int = 128, depth: int = 3, num_classes: int = 0,
                 spectral_norm: bool = False, pack: int = 1, mbstd: bool = False, scale: float = 1.0):
        super().__init__()
        _check_sizes(width, depth, num_classes)
        _check_scale(scale)
        self.scale = float(scale)
        if pack < 1:
            raise ValueError(f"pack must be >= 1, got {pack}")
        self.in_dim, self.width, self.depth, self.num_classes = in_dim, width, depth, num_classes
        self.spectral_norm, self.pack, self.mbstd = spectral_norm, pack, mbstd
        # each logit depends on its own (packed) point alone, so real and fake may be scored in one call
        # (models.score_real_and_fake): no minibatch std or spectral-norm power step per call
        self.batch_independent = not mbstd and not spectral_norm
        d = pack * in_dim
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(d, width, bias=False), BiasAct(width, act="lrelu", alpha=0.2, dim=1)]
            d = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(d + int(mbstd), 1)
        self.embed = nn.Embedding(num_classes, d) if num_classes > 0 else None
        dcgan_init_(self)
        _default_linear_init_(self)
        for m in list(self.modules()):
            if isinstance(m, (nn.Linear, nn.Embedding)):
                maybe_spectral_norm(m, spectral_norm)

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(D)(**D.arch_config())``."""
        return dict(in_dim=self.in_dim, width=self.width, depth=self.depth,
                    num_classes=self.num_classes, spectral_norm=self.spectral_norm, pack=self.pack,
                    mbstd=self.mbstd, scale=self.scale)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Score points.

        Args:
            x: (B, in_dim) points; B a multiple of pack.
            labels: (B,) long class indices; required when num_classes > 0,
                ignored otherwise. Each pack uses the label of its first sample.

        Returns:
            (B // pack,) float logits.
        """
        check_labels(labels, self.num_classes, type(self).__name__)
        if self.scale != 1.0:
            x = x / self.scale                              # unit-scale points
        h = _run_hidden(self.hidden, pack_samples(x, self.pack))  # (B', width), B' = B / pack
        feat = h
        if self.mbstd:
            h = minibatch_stddev(h)                         # (B', width + 1)
        logit = self.out(h).squeeze(1)                      # (B',)
        if self.embed is not None:
            y = first_of_pack(labels, self.pack)            # (B',)
            logit = logit + (self.embed(y) * feat).sum(dim=1)
        return logit.float()


def _default_linear_init_(module: nn.Module) -> None:
    """PyTorch's default (Kaiming-uniform) init for every Linear layer.

    The DCGAN init N(0, 0.02) left the small MLPs stuck on a few grid25 modes
    far more often than PyTorch's default init (bench/quality.py).
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
