"""Batch norm (+ activation) whose training statistics span the global batch of a data-parallel run.

By default each rank normalises with the statistics of its own share of the
batch (the fused :class:`fastgan.kernels.BatchNormAct`). ``sync_bn=True``
replaces every batch norm of the trained networks with
:class:`SyncBatchNormAct`, which all-reduces the per-channel sums, so every
rank normalises with the statistics of the whole global batch, as one process
holding that batch would. torch's ``nn.SyncBatchNorm`` runs on GPUs only;
this one is plain PyTorch on any device, so the CPU tests check it with gloo.
It costs two all-reduces of C values in the forward pass and two in the
backward pass per layer, and gives up the fused kernel in training.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .kernels import BatchNormAct, batch_norm_act
from .kernels.activations import act_ref


class SyncBatchNormAct(nn.Module):
    """Batch norm + activation with statistics over every rank's batch; state_dict keys as ``nn.BatchNorm2d``.

    Every rank must pass batches of the same size (fastgan's shards are).
    In eval mode, or without a process group, it is :func:`fastgan.kernels.batch_norm_act`.

    Args:
        source: the batch norm it replaces (``BatchNormAct``, ``nn.BatchNorm1d`` or
            ``nn.BatchNorm2d``); its parameters and buffers are shared, not copied,
            so optimisers holding them stay valid.
        group: the process group (``None``: the default group).
    """

    def __init__(self, source: nn.Module, group: Optional[object] = None):
        super().__init__()
        self.num_features = int(source.num_features)
        self.act = getattr(source, "act", "linear")
        self.alpha = float(getattr(source, "alpha", 0.2))
        self.momentum = float(source.momentum if source.momentum is not None else 0.1)
        self.eps = float(source.eps)
        self.impl = getattr(source, "impl", "auto")
        self.group = group
        self.weight = source.weight
        self.bias = source.bias
        self.register_buffer("running_mean", source.running_mean)
        self.register_buffer("running_var", source.running_var)
        self.register_buffer("num_batches_tracked", source.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = torch.distributed
        world = dist.get_world_size(self.group) if dist.is_available() and dist.is_initialized() else 1
        if not self.training or world == 1:
            if self.training:
                self.num_batches_tracked.add_(1)
            return batch_norm_act(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                                  self.momentum, self.eps, self.act, self.alpha, self.impl)
        from torch.distributed.nn.functional import all_reduce  # differentiable: its backward all-reduces

        self.num_batches_tracked.add_(1)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        n = x.numel() // self.num_features * world         # samples per channel in the global batch
        xf = x.float()
        mean = all_reduce(xf.sum(dims), group=self.group) / n                    # (C,)
        centred = xf - mean.view(shape)
        var = all_reduce(centred.square().sum(dims), group=self.group) / n     # (C,) biased, two-pass
        with torch.no_grad():  # running statistics as nn.BatchNorm2d keeps them (unbiased variance)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return act_ref(y, self.act, self.alpha).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, act={self.act!r}, alpha={self.alpha}, momentum={self.momentum}, eps={self.eps}"


def convert_sync_batch_norm(module: nn.Module, group: Optional[object] = None) -> int:
    """Replace, in place, every batch norm inside ``module`` by a :class:`SyncBatchNormAct` sharing its tensors.

    Args:
        module: a network (its own class is kept; only children are replaced).
        group: the process group (``None``: the default group).

    Returns:
        How many layers were replaced.
    """
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, (BatchNormAct, nn.BatchNorm1d, nn.BatchNorm2d)) and child.running_mean is not None:
            setattr(module, name, SyncBatchNormAct(child, group))
            count += 1
        else:
            count += convert_sync_batch_norm(child, group)
    return count
