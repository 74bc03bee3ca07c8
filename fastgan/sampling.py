"""Drawing samples from a generator, batched and seeded."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .errors import ConfigError


def check_labels(labels, n: int, num_classes: int) -> Optional[torch.Tensor]:
    """Validate class labels for a conditional generator (``None`` -> classes in turn).

    Args:
        labels: ``None``, an int, or a sequence/tensor of ``n`` ints.
        n: number of samples.
        num_classes: classes of the generator (0 = unconditional).
    """
    if not num_classes:
        if labels is not None:
            raise ConfigError("labels were given but the generator is not conditional")
        return None
    if labels is None:
        return torch.arange(n) % num_classes
    y = torch.as_tensor(labels)
    if y.is_floating_point():
        raise ConfigError("labels must be integers")
    y = y.to(torch.long).reshape(-1)
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.numel() != n:
        raise ConfigError(f"expected {n} labels, got {y.numel()}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(f"labels must lie in [0, {num_classes}), got values from {int(y.min())} to {int(y.max())}")
    return y


@torch.no_grad()
def generate(G: nn.Module, n: int, *, z_dim: int, seed: int = 0, labels=None, num_classes: int = 0,
             device: torch.device | str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """Generate ``n`` samples on the CPU with a seeded noise generator on ``device``.

    Args:
        G: the generator (put in eval mode for the call, then restored).
        n: number of samples.
        z_dim: latent size.
        seed: noise seed; the same seed gives the same samples.
        labels: class labels for a conditional generator (see :func:`check_labels`).
        num_classes: classes of the generator (0 = unconditional).
        device: device the generator lives on.
        batch_size: samples per forward pass.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    device = torch.device(device)
    y = check_labels(labels, n, num_classes)
    was_training = G.training
    G.eval()
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    out = []
    try:
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            z = torch.randn(b, z_dim, device=device, generator=g)
            out.append(G(z, None if y is None else y[i:i + b].to(device)).float().cpu())
    finally:
        G.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def recompute_standing_stats(G: nn.Module, *, z_dim: int, batch_size: int, num_classes: int = 0, seed: int = 0,
                             batches: int = 16, device: torch.device | str = "cpu") -> None:
    """Give a generator batch-norm statistics of its own weights (used for the EMA generator).

    EMA weights never run forward during training, so their running
    statistics are recomputed from seeded noise, as a cumulative average over
    ``batches`` forward passes in training mode. The global random state is
    not touched; ``G`` is left in eval mode.

    Args:
        G: the generator (changed in place; nothing happens without batch norm).
        z_dim: latent size.
        batch_size: samples per forward pass.
        num_classes: classes of a conditional generator (0 = unconditional); labels are drawn uniformly.
        seed: noise seed.
        batches: forward passes averaged.
        device: device the generator lives on.
    """
    norms = [m for m in G.modules() if getattr(m, "running_mean", None) is not None and hasattr(m, "momentum")]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    G.train()
    labels = None
    for i in range(batches):
        for m in norms:
            m.momentum = 1.0 / (i + 1)  # cumulative average: batch i weighs as much as each before it
        z = torch.randn(batch_size, z_dim, device=device, generator=g)
        if num_classes:
            labels = torch.randint(num_classes, (batch_size,), device=device, generator=g)
        G(z, labels)
    for m, mom in zip(norms, saved):
        m.momentum = mom
    G.eval()
