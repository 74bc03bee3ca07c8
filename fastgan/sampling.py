"""Drawing samples from a generator, batched and seeded."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import torch
from torch import nn

from .errors import ConfigError


def default_class_names(num_classes: int) -> list[str]:
    """Names for classes that have none: zero-padded indices (``"00"`` .. ``"11"``), so they sort as the labels do.

    Args:
        num_classes: number of classes.
    """
    width = len(str(max(num_classes - 1, 0)))
    return [f"{i:0{width}d}" for i in range(num_classes)]


def parse_labels(spec: Union[str, Sequence[Union[str, int]]], class_names: Optional[Sequence[str]] = None) -> list[int]:
    """Class labels written by a person: ``"3,3,7"``, ``["3", "3", "7"]``, or class names (``"cat,dog"``).

    Args:
        spec: comma-separated text, or a sequence of ints / texts (each may hold commas).
        class_names: the generator's class names; a token that is not an
            integer is looked up among them.

    Returns:
        The labels as ints (their range is checked where the class count is known).
    """
    tokens = [spec] if isinstance(spec, (str, int)) else list(spec)
    parts = [t.strip() for tok in tokens for t in str(tok).split(",")]
    if not parts or any(t == "" for t in parts):
        raise ConfigError(f"labels must be comma-separated class indices or names, got {spec!r}")
    names = {name: i for i, name in enumerate(class_names or [])}
    out = []
    for t in parts:
        if t in names:  # a class named "3" is class index names["3"], which is 3 for the digits
            out.append(names[t])
        elif t.lstrip("-").isdigit():
            out.append(int(t))
        else:
            known = f"; classes are {', '.join(list(names)[:12])}{' ...' if len(names) > 12 else ''}" if names else ""
            raise ConfigError(f"label {t!r} is neither a class index nor a class name{known}")
    return out


def per_class_labels(per_class: int, num_classes: int) -> torch.Tensor:
    """``per_class`` labels of each class, class by class: ``[0]*per_class + [1]*per_class + ...``.

    Args:
        per_class: samples of each class.
        num_classes: classes of the generator (must be > 0).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0:
        raise ConfigError(f"per_class must be a positive integer, got {per_class!r}")
    if not num_classes:
        raise ConfigError("per_class needs a class-conditional generator; this one is unconditional")
    return torch.arange(num_classes).repeat_interleave(per_class)


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
    try:
        y = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"labels must be integers, got {labels!r:.80}") from None
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    y = y.to(torch.long).reshape(-1)
    if y.numel() == 1:
        y = y.expand(n).clone()
    if y.numel() != n:
        raise ConfigError(f"expected {n} labels, got {y.numel()}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(f"labels must lie in [0, {num_classes}), got values from {int(y.min())} to {int(y.max())}")
    return y


def generate_batches(G: nn.Module, n: int, *, z_dim: int, seed: int = 0, labels=None, num_classes: int = 0,
                     device: torch.device | str = "cpu", batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Generate ``n`` samples batch by batch on the CPU (memory bounded by one batch, whatever ``n``).

    Arguments are checked now; the batches are drawn as they are consumed.
    The noise is that of :func:`generate` for the same arguments.

    Args:
        G: the generator (put in eval mode while drawing, then restored).
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

    @torch.no_grad()
    def draw() -> Iterator[torch.Tensor]:
        was_training = G.training
        G.eval()
        g = torch.Generator(device=device)
        g.manual_seed(int(seed))
        try:
            for i in range(0, n, batch_size):
                b = min(batch_size, n - i)
                z = torch.randn(b, z_dim, device=device, generator=g)
                yield G(z, None if y is None else y[i:i + b].to(device)).float().cpu()
        finally:
            G.train(was_training)
    return draw()


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
    return torch.cat(list(generate_batches(G, n, z_dim=z_dim, seed=seed, labels=labels, num_classes=num_classes,
                                           device=device, batch_size=batch_size)))


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
