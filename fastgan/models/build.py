"""Building the networks a config asks for, and rebuilding a generator from a checkpoint."""

from __future__ import annotations

import torch.nn as nn

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from ..kernels import BatchNormAct, BiasAct, InstanceNormAct
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .mlp import MLPDiscriminator, MLPGenerator

# The gain on the point generator's latents (MLPGenerator z_gain): the best of those tried (docs/defaults.md).
POINT_Z_GAIN = 3.0


def discriminator_norm(cfg: TrainConfig) -> str:
    """The image discriminator's normalisation for a config.

    Batch norm mixes the samples of a batch, which breaks the per-sample
    gradients that WGAN-GP and R1 penalise, so D has no batch norm when either
    is on (spectral norm, when asked for, replaces batch norm anyway).

    Args:
        cfg: the training config.

    Returns:
        ``"none"`` or ``"batch"``.
    """
    return "none" if (cfg.gp_weight > 0 or cfg.r1_gamma > 0) else "batch"


def build_models(cfg: TrainConfig, channels: int, num_classes: int,
                 points: bool, point_scale: float = 1.0, vector_dim: int = 0) -> tuple[nn.Module, nn.Module]:
    """Build the generator and discriminator a config asks for.

    Args:
        cfg: a resolved config (``cfg.resolved()``: no ``None`` sizes).
        channels: image channels of the data (ignored for points).
        num_classes: classes in the data (0 = unlabelled); used only when
            ``cfg.conditional`` is set.
        points: True for 2-D point data (MLP networks), False for images (DCGAN).
        point_scale: coordinate scale of point data (see ``GanData.scale``):
            both MLPs work on points divided by it.
        vector_dim: size of the data's conditioning vectors; used only when
            ``cfg.vector_conditional`` is set.

    Returns:
        (G, D), freshly initialised on the CPU (the global torch RNG draws the
        initial weights: seed it first for reproducible runs).
    """
    if cfg.conditional and num_classes <= 0:
        raise ConfigError("conditional=True needs a labelled dataset, but this one has no labels")
    n = num_classes if cfg.conditional else 0
    v = vector_dim if cfg.vector_conditional else 0
    if cfg.vector_conditional and (points or vector_dim <= 0):
        raise ConfigError("vector_conditional=True needs images with one vector each (an .npz of images and "
                          "vectors, or digits_vectors)")
    if cfg.z_dim is None or cfg.g_width is None or cfg.d_width is None:
        raise ConfigError("build_models needs a resolved config (call cfg.resolved() first)")
    if points:
        G = MLPGenerator(z_dim=cfg.z_dim, out_dim=2, width=cfg.g_width, depth=cfg.g_depth,
                         num_classes=n, scale=point_scale, z_gain=POINT_Z_GAIN)
        D = MLPDiscriminator(in_dim=2, width=cfg.d_width, depth=cfg.d_depth, num_classes=n,
                             spectral_norm=cfg.spectral_norm, pack=cfg.pack, mbstd=cfg.mbstd, scale=point_scale)
        return G, D
    if cfg.resolution is None:
        raise ConfigError("build_models needs a resolved config (call cfg.resolved() first)")
    if channels not in (1, 3):
        raise ConfigError(f"images must have 1 or 3 channels, got {channels}")
    G = DCGANGenerator(z_dim=cfg.z_dim, img_size=cfg.resolution, channels=channels,
                       width=cfg.g_width, num_classes=n, vector_dim=v, class_norm=bool(cfg.class_norm))
    D = DCGANDiscriminator(img_size=cfg.resolution, channels=channels, width=cfg.d_width,
                           num_classes=n, spectral_norm=cfg.spectral_norm,
                           norm=discriminator_norm(cfg), pack=cfg.pack, mbstd=cfg.mbstd, vector_dim=v)
    return G, D


def generator_from_arch(name: str, kwargs: dict) -> nn.Module:
    """Rebuild a generator from its class name and ``arch_config()``.

    Args:
        name: ``"DCGANGenerator"`` or ``"MLPGenerator"``.
        kwargs: the dict returned by the generator's ``arch_config()``.

    Returns:
        A freshly initialised generator (load the weights into it).
    """
    if name == "DCGANGenerator":
        cls = DCGANGenerator
    elif name == "MLPGenerator":
        cls = MLPGenerator
    else:
        raise CheckpointError(f"unknown generator architecture {name!r}; "
                              "expected DCGANGenerator or MLPGenerator")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild {name} from {kwargs!r}: {e}") from None


def set_kernel_impl(module: nn.Module, impl: str) -> nn.Module:
    """Set the fused-kernel implementation of every kernel module in a network.

    Args:
        module: a network built from fastgan.kernels modules.
        impl: ``"auto"``, ``"triton"`` or ``"ref"``.

    Returns:
        ``module`` (changed in place).
    """
    for m in module.modules():
        if isinstance(m, (BatchNormAct, BiasAct, InstanceNormAct)):
            m.impl = impl
    return module
