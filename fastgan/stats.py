"""Running sums of what the step functions measure, on the device, read once per log line."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch


class RunningStats:
    """Named running sums in one device tensor, grouped by the step function that adds them.

    Each group holds its names followed by a count of the steps that added
    to it, so a group's means are its sums over its own count (the R1 step
    runs less often than the training step). A step adds with one small
    kernel and never syncs, so it can be captured in a CUDA graph; the loop
    reads every sum with one host transfer per log line.

    Args:
        groups: step name -> the names it adds, in the order :meth:`add` takes them.
        device: where the sums live.
    """

    def __init__(self, groups: Mapping[str, Sequence[str]], device: torch.device | str):
        self._spans: dict[str, tuple[int, int]] = {}
        names: list[str] = []
        for group, members in groups.items():
            start = len(names)
            names += [*members, f"_n_{group}"]
            self._spans[group] = (start, len(names))
        self.names = tuple(names)
        self.buffer = torch.zeros(len(names), device=device)   # a checkpoint stores it as it is
        self._one = torch.ones((), device=device)

    def add(self, group: str, *values: torch.Tensor) -> None:
        """Add one step's values to ``group`` and count the step (no host sync).

        Args:
            group: the step's group name.
            values: 0-dim tensors, one per name of the group, in its order.
        """
        start, end = self._spans[group]
        self.buffer[start:end].add_(torch.stack([*(v.detach().float() for v in values), self._one]))

    def __getitem__(self, name: str) -> torch.Tensor:
        """The running sum ``name`` as a 0-dim view of the device buffer (no host sync)."""
        return self.buffer[self.names.index(name)]

    def read(self) -> dict[str, float]:
        """Means per name since the last read (groups that ran no step are left out), then zero the sums.

        One host transfer: the log line's synchronisation point.
        """
        values = self.buffer.tolist()
        self.buffer.zero_()
        means: dict[str, float] = {}
        for start, end in self._spans.values():
            n = values[end - 1]
            if n:
                means.update({self.names[i]: values[i] / n for i in range(start, end - 1)})
        return means
