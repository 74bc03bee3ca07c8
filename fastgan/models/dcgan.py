"""DCGAN generator and discriminator for square images (16, 32, 64, 128 px).

Width schedule: the feature maps at spatial size r have
``width * min(8, img_size // (2 * r))`` channels, so DCGAN-64 with width w has
8w channels at 4x4, 4w at 8x8, 2w at 16x16 and w at 32x32 (as in Radford et al.).
Normalisation and activation go through fastgan.kernels' BatchNormAct and
BiasAct, so the fused kernels are used wherever they are available.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan.kernels import BatchNormAct, BiasAct

from .common import (IMAGE_SIZES, check_labels, dcgan_init_, first_of_pack, maybe_spectral_norm,
                     minibatch_stddev, pack_samples)
from .conditioning import MAPPING_DIM, ConditionalBatchNormAct, VectorMapping, VectorProjection, check_vectors


def dcgan_channels(img_size: int, width: int, r: int) -> int:
    """Channels of the feature maps at spatial size ``r``.

    Args:
        img_size: output (G) or input (D) image side.
        width: network width (channels at img_size / 2).
        r: spatial size of the feature map (4 .. img_size / 2).
    """
    return width * min(8, img_size // (2 * r))


def _check_common(img_size: int, channels: int, width: int, num_classes: int, vector_dim: int = 0) -> None:
    if img_size not in IMAGE_SIZES:
        raise ValueError(f"img_size must be one of {IMAGE_SIZES}, got {img_size}")
    if channels < 1 or width < 1 or num_classes < 0 or vector_dim < 0:
        raise ValueError(f"need channels >= 1, width >= 1, num_classes >= 0, vector_dim >= 0; got "
                         f"{channels}, {width}, {num_classes}, {vector_dim}")
    if num_classes > 0 and vector_dim > 0:
        raise ValueError("a network is conditioned on classes or on vectors, not both")


class DCGANGenerator(nn.Module):
    """DCGAN generator: z (and a label embedding) -> image in [-1, 1].

    Layout (img_size 64, width w): ConvTranspose 1x1 -> 4x4 (8w) -> BN+ReLU,
    then ConvTranspose(4, 2, 1) + BN+ReLU up to 32x32 (w), then
    ConvTranspose(4, 2, 1) to ``channels`` and bias + tanh.

    Args:
        z_dim: latent size.
        img_size: output side: 16, 32, 64 or 128.
        channels: output channels (1 or 3).
        width: channels of the last hidden layer (ngf).
        num_classes: 0 for unconditional; otherwise the label is embedded and
            concatenated to z (or drives the batch norms: ``class_norm``).
        embed_dim: size of the label embedding (conditional only).
        vector_dim: 0, or the size of a per-sample conditioning vector: a
            mapping network turns it into ``w``, which modulates every batch
            norm (:mod:`fastgan.models.conditioning`).
        class_norm: with classes, the label embedding modulates every batch
            norm (conditional batch norm) instead of being concatenated to z.
    """

    def __init__(self, z_dim: int = 100, img_size: int = 64, channels: int = 3, width: int = 64,
                 num_classes: int = 0, embed_dim: int = 32, vector_dim: int = 0, class_norm: bool = False):
        super().__init__()
        _check_common(img_size, channels, width, num_classes, vector_dim)
        self.z_dim, self.img_size, self.channels, self.width = z_dim, img_size, channels, width
        self.num_classes, self.embed_dim, self.vector_dim = num_classes, embed_dim, vector_dim
        self.class_norm = bool(class_norm) and num_classes > 0
        self.out_shape = (channels, img_size, img_size)
        self.value_range = (-1.0, 1.0)

        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes > 0 else None
        self.mapping = VectorMapping(vector_dim, MAPPING_DIM) if vector_dim > 0 else None
        w_dim = MAPPING_DIM if vector_dim > 0 else (embed_dim if self.class_norm else 0)   # what modulates the norms
        # the condition is concatenated to z only for classes without class_norm: concatenated, it dominates
        # the first batch norm's statistics and G learns to ignore z (docs/applications.md)
        in_dim = z_dim + (embed_dim if num_classes > 0 and not self.class_norm else 0)

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNormAct(c, w_dim) if w_dim else BatchNormAct(c, act="relu")

        c4 = dcgan_channels(img_size, width, 4)
        # Conv biases are off wherever a batch norm follows (its shift replaces them).
        self.stem = nn.ConvTranspose2d(in_dim, c4, 4, 1, 0, bias=False)
        self.stem_norm = norm(c4)
        self.blocks = nn.ModuleList()
        r = 4
        while r < img_size // 2:
            c_in, c_out = dcgan_channels(img_size, width, r), dcgan_channels(img_size, width, 2 * r)
            self.blocks.append(nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), norm(c_out)))
            r *= 2
        self.to_img = nn.ConvTranspose2d(dcgan_channels(img_size, width, r), channels, 4, 2, 1,
                                         bias=False)
        self.out_act = BiasAct(channels, act="tanh")        # holds the last layer's bias
        dcgan_init_(self, embed_std=1.0)                     # label embedding on z's scale
        if self.mapping is not None:
            self.mapping.reset_parameters()
        if w_dim:
            for m in self.modules():
                if isinstance(m, ConditionalBatchNormAct):
                    m.reset_modulation()                     # starts as the unconditional batch norm

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(G)(**G.arch_config())``."""
        kw = dict(z_dim=self.z_dim, img_size=self.img_size, channels=self.channels,
                  width=self.width, num_classes=self.num_classes, embed_dim=self.embed_dim)
        if self.vector_dim:  # only when set: older checkpoints rebuild with the arguments they stored
            kw["vector_dim"] = self.vector_dim
        if self.class_norm:
            kw["class_norm"] = True
        return kw

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generate images.

        Args:
            z: (B, z_dim) latents (a (B, z_dim, 1, 1) view is accepted too).
            labels: (B,) long class indices when num_classes > 0, (B, vector_dim)
                float vectors when vector_dim > 0; ignored otherwise.

        Returns:
            (B, channels, img_size, img_size) images in [-1, 1].
        """
        check_labels(labels, self.num_classes, type(self).__name__)
        check_vectors(labels, self.vector_dim, type(self).__name__)
        h = z.reshape(z.shape[0], -1)                                  # (B, z_dim)
        w = None
        if self.class_norm:
            w = self.embed(labels).to(h.dtype)                         # (B, embed_dim)
        elif self.embed is not None:
            h = torch.cat([h, self.embed(labels).to(h.dtype)], dim=1)  # (B, z_dim + embed_dim)
        if self.mapping is not None:
            w = self.mapping(labels.to(h.dtype))                       # (B, 64)
        if w is not None:
            h = self.stem_norm(self.stem(h[:, :, None, None]), w)      # (B, c4, 4, 4)
            for block in self.blocks:
                h = block[1](block[0](h), w)                           # (B, c_r / 2, 2r, 2r)
            return self.out_act(self.to_img(h))                        # (B, C, S, S)
        h = h[:, :, None, None]                                        # (B, z_dim [+ e], 1, 1)
        h = self.stem_norm(self.stem(h))                               # (B, c4, 4, 4), c4 = 8w at 64 px
        for block in self.blocks:
            h = block(h)                                               # (B, c_r / 2, 2r, 2r)
        return self.out_act(self.to_img(h))                            # (B, C, S, S)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: image -> one logit per (packed) sample.

    Layout (img_size 64, width w): Conv(4, 2, 1) -> LeakyReLU 0.2 (no norm)
    at 32x32 (w), then Conv(4, 2, 1) + BN+LeakyReLU down to 4x4 (8w), then an
    optional minibatch-stddev map and a final 4x4 conv to one logit. With
    ``num_classes > 0`` a projection term <embed(y), sum_hw h> is added
    (Miyato & Koyama 2018); with ``vector_dim > 0`` the same term with a
    learned embedding psi(v) of the sample's vector.

    Args:
        img_size: input side: 16, 32, 64 or 128.
        channels: input channels (1 or 3).
        width: channels of the first hidden layer (ndf).
        num_classes: 0 for unconditional; otherwise a projection discriminator.
        vector_dim: 0, or the size of a per-sample conditioning vector (projection term).
        spectral_norm: spectral normalisation on every conv/embedding; replaces
            batch norm (the layers then use bias + LeakyReLU).
        norm: ``"batch"`` or ``"none"`` (no batch norm: for WGAN-GP and R1,
            whose per-sample gradients batch statistics would mix).
        pack: PacGAN degree: (B, C, H, W) is judged as (B / pack, pack * C, H, W).
        mbstd: append the minibatch standard-deviation feature map before the
            last layer.
    """

    def __init__(self, img_size: int = 64, channels: int = 3, width: int = 64, num_classes: int = 0,
                 spectral_norm: bool = False, norm: str = "batch", pack: int = 1, mbstd: bool = False,
                 vector_dim: int = 0):
        super().__init__()
        _check_common(img_size, channels, width, num_classes, vector_dim)
        self.vector_dim = vector_dim
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        if pack < 1:
            raise ValueError(f"pack must be >= 1, got {pack}")
        self.img_size, self.channels, self.width, self.num_classes = img_size, channels, width, num_classes
        self.spectral_norm, self.norm, self.pack, self.mbstd = spectral_norm, norm, pack, mbstd
        # each logit depends on its own (packed) image alone, so real and fake may be scored in one call
        # (models.score_real_and_fake): no batch norm, minibatch std or spectral-norm power step per call
        self.batch_independent = norm == "none" and not mbstd and not spectral_norm
        use_bn = norm == "batch" and not spectral_norm

        def sn(layer: nn.Module) -> nn.Module:
            return maybe_spectral_norm(layer, spectral_norm)

        r = img_size // 2
        c = dcgan_channels(img_size, width, r)
        self.from_img = nn.Conv2d(pack * channels, c, 4, 2, 1, bias=False)
        self.from_img_act = BiasAct(c, act="lrelu", alpha=0.2)
        self.blocks = nn.ModuleList()
        while r > 4:
            c_out = dcgan_channels(img_size, width, r // 2)
            act = (BatchNormAct(c_out, act="lrelu", alpha=0.2) if use_bn
                   else BiasAct(c_out, act="lrelu", alpha=0.2))
            self.blocks.append(nn.Sequential(nn.Conv2d(c, c_out, 4, 2, 1, bias=False), act))
            c, r = c_out, r // 2
        self.out = nn.Conv2d(c + int(mbstd), 1, 4, 1, 0, bias=True)
        self.embed = nn.Embedding(num_classes, c) if num_classes > 0 else None
        self.project = VectorProjection(vector_dim, c) if vector_dim > 0 else None
        dcgan_init_(self)
        # Spectral norm is applied after init (it reparametrises the initialised weight).
        self.from_img = sn(self.from_img)
        for block in self.blocks:
            block[0] = sn(block[0])
        self.out = sn(self.out)
        if self.embed is not None:
            self.embed = sn(self.embed)
        if self.project is not None:
            self.project.fc1, self.project.fc2 = sn(self.project.fc1), sn(self.project.fc2)

    def arch_config(self) -> dict:
        """Constructor kwargs that rebuild this network: ``type(D)(**D.arch_config())``."""
        return dict(img_size=self.img_size, channels=self.channels, width=self.width,
                    num_classes=self.num_classes, spectral_norm=self.spectral_norm, norm=self.norm,
                    pack=self.pack, mbstd=self.mbstd, **({"vector_dim": self.vector_dim} if self.vector_dim else {}))

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Score images.

        Args:
            x: (B, channels, img_size, img_size) images; B a multiple of pack.
            labels: (B,) long class indices when num_classes > 0, (B, vector_dim)
                float vectors when vector_dim > 0; ignored otherwise. Each pack
                uses the label (vector) of its first sample.

        Returns:
            (B // pack,) float logits.
        """
        check_labels(labels, self.num_classes, type(self).__name__)
        check_vectors(labels, self.vector_dim, type(self).__name__)
        h = pack_samples(x, self.pack)                           # (B', pack*C, S, S), B' = B / pack
        h = self.from_img_act(self.from_img(h))                  # (B', w, S/2, S/2)
        for block in self.blocks:
            h = block(h)                                         # (B', 2 c_r, r/2, r/2)
        feat = h                                                 # (B', c4, 4, 4), c4 = 8w at 64 px
        if self.mbstd:
            h = minibatch_stddev(h)                              # (B', c4 + 1, 4, 4)
        # The 4x4 'valid' conv over a 4x4 map is a dot product with the whole map:
        # run it as a linear layer on the flattened map (same weights, same result).
        # This keeps the last layer out of convolution_backward, which failed (a stride
        # assertion) under torch.compile with channels_last.
        w = self.out.weight                                      # (1, c4 [+1], 4, 4)
        logit = F.linear(h.flatten(1), w.flatten(1), self.out.bias)  # (B', 1)
        logit = logit.squeeze(1)                                 # (B',)
        if self.embed is not None:
            y = first_of_pack(labels, self.pack)                 # (B',)
            pooled = feat.sum(dim=(2, 3))                        # (B', c4)
            logit = logit + (self.embed(y) * pooled).sum(dim=1)   # (B',)
        if self.project is not None:
            v = first_of_pack(labels, self.pack).to(feat.dtype)  # (B', V)
            pooled = feat.sum(dim=(2, 3))                        # (B', c4)
            logit = logit + (self.project(v) * pooled).sum(dim=1)  # (B',)
        return logit.float()
