"""Drawing samples from a generator, batched and seeded."""

from __future__ import annotations

from pathlib import Path
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
                     device: torch.device | str = "cpu", batch_size: int = 256, vectors=None,
                     vector_dim: int = 0) -> Iterator[torch.Tensor]:
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
        vectors: conditioning vectors of a vector-conditioned generator (see :func:`check_vectors`).
        vector_dim: the generator's vector size (0 = not vector-conditioned).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    device = torch.device(device)
    y = check_labels(labels, n, num_classes)
    v = check_vectors(vectors, n, vector_dim)
    if v is not None:  # G's second argument: the labels or the vectors
        y = v

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


def read_vectors(spec: str) -> torch.Tensor:
    """Conditioning vectors named on the command line: a ``.npy`` file, an ``.npz`` file's ``vectors``
    array, or numbers written out (``"0.1,0.2,0.3"``; rows separated by ``;``).

    Args:
        spec: the file name or the numbers.

    Returns:
        A float32 tensor ``(N, V)`` (or ``(V,)`` for one vector); its size is checked by :func:`check_vectors`.
    """
    import numpy as np

    path = Path(spec)
    if path.suffix.lower() in (".npy", ".npz"):
        if not path.is_file():
            raise ConfigError(f"vectors file '{spec}' does not exist")
        try:
            loaded = np.load(path, allow_pickle=False)
            if path.suffix.lower() == ".npz":
                with loaded as f:
                    loaded = f["vectors"]
            arr = np.asarray(loaded)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read vectors from '{spec}' ({type(e).__name__}: {e})") from None
        except KeyError:
            raise ConfigError(f"'{spec}' holds no array named 'vectors'") from None
        if arr.dtype.kind not in "fiu":
            raise ConfigError(f"vectors in '{spec}' must be numbers, got dtype {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    try:
        rows = [[float(t) for t in row.split(",")] for row in spec.split(";") if row.strip()]
    except ValueError:
        raise ConfigError(f"--vectors takes a .npy or .npz file, or numbers such as 0.1,0.2;0.3,0.4; "
                          f"got {spec!r:.60}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise ConfigError(f"vectors written out must be rows of the same length, got {spec!r:.60}")
    return torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float32)


def check_vectors(vectors, n: int, vector_dim: int) -> Optional[torch.Tensor]:
    """Validate conditioning vectors for a vector-conditioned generator.

    Args:
        vectors: ``None`` (refused when ``vector_dim > 0``), one vector ``(V,)``
            for every sample, or ``(n, V)``.
        n: number of samples.
        vector_dim: the generator's vector size V (0 = not vector-conditioned).

    Returns:
        float32 ``(n, V)`` on the CPU, or ``None``.
    """
    if not vector_dim:
        if vectors is not None:
            raise ConfigError("vectors were given but the generator is not conditioned on vectors")
        return None
    if vectors is None:
        raise ConfigError(f"this generator is conditioned on {vector_dim}-number vectors: pass vectors "
                          f"({n}, {vector_dim}) (--vectors FILE.npy on the command line)")
    try:
        v = torch.as_tensor(vectors).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"vectors must be an array of numbers, got {type(vectors).__name__}") from None
    if v.is_complex() or v.dtype == torch.bool or not (v.is_floating_point() or v.dtype.is_signed
                                                       or v.dtype == torch.uint8):
        raise ConfigError(f"vectors must hold numbers, got dtype {v.dtype}")
    if v.ndim == 1:
        v = v.reshape(1, -1)
    if v.ndim != 2 or v.shape[1] != vector_dim:
        raise ConfigError(f"vectors must have {vector_dim} numbers each, got shape {tuple(v.shape)}")
    if v.shape[0] == 1:
        v = v.expand(n, vector_dim)
    if v.shape[0] != n:
        raise ConfigError(f"expected {n} vectors, got {v.shape[0]}")
    v = v.to(torch.float32).contiguous()
    if not torch.isfinite(v).all():
        raise ConfigError(f"vectors hold {int((~torch.isfinite(v)).sum())} NaN or infinite values")
    return v


def generate(G: nn.Module, n: int, *, z_dim: int, seed: int = 0, labels=None, num_classes: int = 0,
             device: torch.device | str = "cpu", batch_size: int = 256, vectors=None,
             vector_dim: int = 0) -> torch.Tensor:
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
        vectors: conditioning vectors of a vector-conditioned generator (see :func:`check_vectors`).
        vector_dim: the generator's vector size (0 = not vector-conditioned).
    """
    return torch.cat(list(generate_batches(G, n, z_dim=z_dim, seed=seed, labels=labels, num_classes=num_classes,
                                           device=device, batch_size=batch_size, vectors=vectors,
                                           vector_dim=vector_dim)))


@torch.no_grad()
def recompute_standing_stats(G: nn.Module, *, z_dim: int, batch_size: int, num_classes: int = 0, seed: int = 0,
                             batches: int = 16, device: torch.device | str = "cpu",
                             vectors: Optional[torch.Tensor] = None) -> None:
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
        vectors: for a vector-conditioned generator, the (N, V) pool its
            conditioning vectors are drawn from (the training data's, on ``device``).
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
        if vectors is not None:
            labels = vectors[torch.randint(len(vectors), (batch_size,), device=device, generator=g)]
        G(z, labels)
    for m, mom in zip(norms, saved):
        m.momentum = mom
    G.eval()
