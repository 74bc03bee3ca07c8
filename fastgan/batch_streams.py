"""Random streams for data-parallel batches: one ``torch.Generator`` per shard of the global batch.

A global batch is cut into equal shards, and shard s is always drawn by the
stream seeded from (seed, s), whichever process draws it: so a run on one
process asked for two shards draws exactly the samples of a two-rank run, and a
run resumed on another world size draws what it would have drawn.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence

import torch


def stream_seed(seed: int, shard: int, step: int = 0) -> int:
    """The seed of shard ``shard``'s random stream: ``seed`` itself for shard 0 at step 0, else a hash of all three.

    Shard 0 keeps the plain seed, so a single-process run draws exactly what it
    always did; ``step`` > 0 is used when a run resumes on another world size.

    Args:
        seed: the run's seed.
        shard: the shard's index in the global batch.
        step: the step the stream starts at.
    """
    if shard == 0 and step == 0:
        return int(seed)
    digest = hashlib.sha256(f"fastgan-stream:{int(seed)}:{int(shard)}:{int(step)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class BatchStreams:
    """The random streams that draw this process's part of every global batch: one ``torch.Generator`` per shard.

    A global batch of B samples is cut into S equal shards (S = world size x
    shards per process); shard s is always drawn by the stream seeded with
    :func:`stream_seed` (seed, s). Each process draws its shards and
    concatenates them, so a single process asked for two shards per process
    draws exactly the samples of a two-rank run. With one shard
    :meth:`draw` is ``fn(B, generator)``: a single-process run is unchanged.

    Args:
        seed: the run's seed.
        shards: the global indices of the shards this process draws.
        shard_size: samples per shard.
        device: where the generators live.
    """

    def __init__(self, seed: int, shards: Sequence[int], shard_size: int, device: torch.device):
        self.seed = int(seed)
        self.shards = tuple(int(s) for s in shards)
        self.shard_size = int(shard_size)
        self.generators = tuple(torch.Generator(device=device) for _ in self.shards)
        self.restart(0)

    @property
    def size(self) -> int:
        """Samples this process draws per batch (its local batch)."""
        return self.shard_size * len(self.shards)

    def restart(self, step: int) -> None:
        """Seed every stream from (seed, shard, ``step``) (``step`` 0: the run's first draws).

        Args:
            step: the step the streams start at.
        """
        for gen, shard in zip(self.generators, self.shards):
            gen.manual_seed(stream_seed(self.seed, shard, step))

    def draw(self, fn: Callable[[int, torch.Generator], Any]) -> Any:
        """``fn(shard_size, generator)`` for each of this process's shards, concatenated along dim 0.

        Args:
            fn: draws ``n`` samples from a generator; returns a tensor, ``None``
                or a tuple of those.
        """
        if len(self.generators) == 1:
            return fn(self.shard_size, self.generators[0])
        return _concat([fn(self.shard_size, g) for g in self.generators])

    def each(self, fn: Callable[..., Any], *batches: Optional[torch.Tensor]) -> Any:
        """``fn(*shard_parts, generator)`` on each shard of local ``batches``, concatenated along dim 0.

        Args:
            fn: takes one shard of each batch (``None`` stays ``None``) and the shard's generator.
            batches: local batches, split into this process's shards along dim 0.
        """
        if len(self.generators) == 1:
            return fn(*batches, self.generators[0])
        n = len(self.generators)
        parts = [b.chunk(n) if b is not None else (None,) * n for b in batches]
        return _concat([fn(*(p[i] for p in parts), g) for i, g in enumerate(self.generators)])


def _concat(outs: list[Any]) -> Any:
    first = outs[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        return tuple(_concat([o[i] for o in outs]) for i in range(len(first)))
    return torch.cat(outs)
