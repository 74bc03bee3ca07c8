"""What training needs from a generator and a discriminator, checked once before the first step.

A generator maps ``(z, labels)`` with ``z`` of shape (B, z_dim) to samples of
the data's shape, (B, C, H, W) images or (B, 2) points. A discriminator maps
``(x, labels)`` to one logit per sample, (B,) or (B, 1); with PacGAN packing
(``pack`` = k) one logit per group of k samples. Networks the user brings are
run once on a small batch, so a wrong shape is one clear error naming the
network instead of a torch error in the middle of training, or, worse, a
(B, 2) or (B, 1, 4, 4) output that the losses would silently average.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..errors import ConfigError


def require_module(net: Any, name: str) -> None:
    """Refuse anything but an ``nn.Module`` (e.g. ``generator="dcgan"``) in one line.

    Args:
        net: what the user passed.
        name: ``"generator"`` or ``"discriminator"``.
    """
    if net is not None and not isinstance(net, nn.Module):
        raise ConfigError(f"{name} must be a torch.nn.Module, got {type(net).__name__} {net!r:.40}; the built-in "
                          f"networks come from the config: leave {name} out to use them")


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


@torch.no_grad()
def check_networks(G: nn.Module, D: nn.Module, *, z_dim: int, num_classes: int, sample_shape: tuple[int, ...],
                   pack: int = 1, device: Optional[torch.device] = None, vector_dim: int = 0) -> None:
    """Run G and D once on a small batch and check every shape against the contract above.

    Nothing changes: both run in eval mode (restored afterwards), without
    gradients, on latents from their own seeded generator, and the global
    random state is restored.

    Args:
        G: the generator.
        D: the discriminator.
        z_dim: latent size the training will draw.
        num_classes: classes of a conditional model (0: unconditional, no labels).
        sample_shape: shape of one sample, (C, H, W) or (2,).
        pack: PacGAN packing degree (D gives one logit per ``pack`` samples).
        device: where both networks live.
        vector_dim: size of the conditioning vectors of a vector-conditioned model (0: none).

    Raises:
        ConfigError: a network fails on the batch or returns the wrong shape.
    """
    device = torch.device(device or "cpu")
    B = 2 * pack
    modes = (G.training, D.training)
    G.eval()
    D.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            g = torch.Generator(device=device).manual_seed(0)
            z = torch.randn(B, z_dim, device=device, generator=g)
            y = torch.arange(B, device=device) % num_classes if num_classes else None
            given = f"latents of shape {tuple(z.shape)}" + (f" and {B} labels" if y is not None else "")
            if vector_dim:
                y = torch.randn(B, vector_dim, device=device, generator=g)
                given = f"latents of shape {tuple(z.shape)} and vectors of shape {tuple(y.shape)}"

            try:
                x = G(z, y)
            except Exception as e:  # any failure of user code: said in one line
                raise ConfigError(f"the generator fails on {given} ({_first_line(e)}); its input size must be "
                                  f"z_dim={z_dim}: set z_dim or give the generator a z_dim attribute") from None
            want = (B, *sample_shape)
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape) != want:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                kind = "images (B, C, H, W)" if len(sample_shape) == 3 else "points (B, 2)"
                raise ConfigError(f"the generator returned {got} for {given}; this data needs float {kind} of "
                                  f"shape {want}: check its output size and channels")
            try:
                logits = D(x, y)
            except Exception as e:
                raise ConfigError(f"the discriminator fails on samples of shape {want} ({_first_line(e)})") from None
            n = B // pack
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) not in ((n,), (n, 1)):
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                per = "sample" if pack == 1 else f"group of {pack} samples (pack={pack})"
                raise ConfigError(f"the discriminator returned {got} for {B} samples; it must return one logit per "
                                  f"{per}: shape ({n},) or ({n}, 1)")
    finally:
        G.train(modes[0])
        D.train(modes[1])
