"""batch_norm_act: batch normalisation + activation in one op (training and eval mode).

Training mode normalises with the batch statistics (biased variance) and, when
running buffers are given, updates them in place like ``nn.BatchNorm2d``
(running_var gets the unbiased variance). Eval mode uses the running buffers.

Triton path, in passes over the activation (x is viewed as (O, C, I): NCHW is
(N, C, H*W), channels_last is (N*H*W, C, 1) with rows of C contiguous values):

- forward: a statistics pass (fp32 partial sums per group of rows, no atomics),
  a tiny combine (mean, rstd, running-stat update), then one normalise +
  activate pass. Only x and the per-channel mean/rstd are saved.
- backward (training): one reduction pass computing sum(du) and sum(du * xhat)
  per channel, du = dy * act'(u) recomputed from x, a tiny combine (these sums
  are dbias and dweight), then one elementwise pass for dx. In eval mode dx
  needs no reduction and is written by the reduction pass itself.

The reductions are two-stage with a fixed order, so results are bitwise
reproducible run to run.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .activations import act_ref, check_act
from .batch_norm_kernels import (bn_apply_kernel, bn_bwd_dx_kernel, bn_bwd_reduce_kernel, bn_stats_combine_kernel,
                                 bn_stats_kernel)
from .dispatch import resolve_impl, wrap_triton
from .ops import refuse_double_backward, triton_op
from .tiles import (TUNING, ChannelView, TilePlan, cdiv, combine_blocks, dense_for_channels, grid_1d, match_layout,
                    reduction_programs, sum_partials)


def _check_args(x, weight, bias, running_mean, running_var, training):
    if x.ndim < 2:
        raise ValueError(f"batch_norm_act: expected input with >= 2 dims (N, C, ...), got shape {tuple(x.shape)}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and (t.ndim != 1 or t.shape[0] != c):
            raise ValueError(f"batch_norm_act: {name} of shape {tuple(t.shape)} does not match {c} channels")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm_act: pass both running_mean and running_var, or neither")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if training and t is not None and t.shape[0] > 1 and t.stride(0) == 0:
            raise ValueError(f"batch_norm_act: {name} is an expanded view (its elements overlap in memory) and "
                             "cannot be updated in place; pass a buffer of its own")
    if (training or running_mean is None) and x.numel() // max(c, 1) <= 1:
        raise ValueError(f"batch_norm_act: expected more than 1 value per channel when training, got input "
                         f"of shape {tuple(x.shape)}")


# ----------------------------------------------------------------------------- reference
def batch_norm_act_ref(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool,
                       momentum: float = 0.1, eps: float = 1e-5, act: str = "relu",
                       alpha: float = 0.2) -> torch.Tensor:
    """Plain-PyTorch batch norm + activation: the oracle, the CPU path and the export path.

    Computes in float32 (float64 stays float64) and returns ``x.dtype``;
    differentiable to any order.

    Args:
        x: input (N, C, ...), contiguous or channels_last.
        weight: per-channel scale (C,) or None (= 1).
        bias: per-channel shift (C,) or None (= 0).
        running_mean: running mean buffer (C,) or None; updated in place when training.
        running_var: running variance buffer (C,) or None; updated in place (unbiased) when training.
        training: use batch statistics (True) or the running buffers (False; batch
            statistics are used when no buffers are given).
        momentum: weight of the new batch statistic in the running update.
        eps: added to the variance before the square root.
        act: "linear", "relu", "lrelu", "tanh", "sigmoid" or "silu".
        alpha: negative slope of "lrelu".
    """
    check_act(act)
    _check_args(x, weight, bias, running_mean, running_var, training)
    cdt = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(cdt)
    # Dense copies of the (C,) vectors it only reads: torch 2.13's CPU channels_last batch_norm backward
    # reads a strided weight, bias or (eval) running variance as if dense.
    w = None if weight is None else weight.to(cdt).contiguous()
    b = None if bias is None else bias.to(cdt).contiguous()
    if not training and running_mean is not None:
        running_mean, running_var = running_mean.contiguous(), running_var.contiguous()
    buffers_match = running_mean is None or (running_mean.dtype == cdt and running_var.dtype == cdt)
    if buffers_match:
        y = F.batch_norm(xf, running_mean, running_var, w, b, training or running_mean is None, momentum, eps)
    else:  # e.g. float64 input with float32 buffers: same maths, spelt out
        y = _batch_norm_explicit(xf, w, b, running_mean, running_var, training, momentum, eps)
    return act_ref(y, act, alpha).to(x.dtype)


def _batch_norm_explicit(xf, w, b, running_mean, running_var, training, momentum, eps):
    dims = [0] + list(range(2, xf.ndim))
    shape = [1, -1] + [1] * (xf.ndim - 2)
    if training:
        mean = xf.mean(dims)
        var = xf.var(dims, unbiased=False)
        with torch.no_grad():
            n = xf.numel() // xf.shape[1]
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            running_var.lerp_((var.detach() * (n / (n - 1))).to(running_var.dtype), momentum)
    else:
        mean = running_mean.to(xf.dtype)
        var = running_var.to(xf.dtype)
    y = (xf - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + eps)
    if w is not None:
        y = y * w.reshape(shape)
    if b is not None:
        y = y + b.reshape(shape)
    return y


# ----------------------------------------------------------------------------- public op -> custom ops -> kernels
def batch_norm_act(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool,
                   momentum: float = 0.1, eps: float = 1e-5, act: str = "relu", alpha: float = 0.2,
                   impl: str = "auto") -> torch.Tensor:
    """Fused batch norm + activation; float32 statistics for float32/bfloat16/float16 input.

    On the Triton path the statistics op runs on ``x.detach()``; the normalise op's
    backward includes the gradient through the batch statistics, so autograd gives the
    full batch-norm gradient.

    Args:
        x: input (N, C, ...); NCHW-contiguous or channels_last (kept in the output).
        weight: per-channel scale (C,) or None (= 1).
        bias: per-channel shift (C,) or None (= 0).
        running_mean: running mean buffer (C,) float32 or None; updated in place when training.
        running_var: running variance buffer (C,) float32 or None; updated in place when training
            (with the unbiased variance, like ``nn.BatchNorm2d``).
        training: batch statistics (True) or running statistics (False).
        momentum: weight of the new batch statistic in the running update.
        eps: added to the variance before the square root.
        act: "linear", "relu", "lrelu", "tanh", "sigmoid" or "silu".
        alpha: negative slope of "lrelu".
        impl: "auto", "triton" or "ref" (see ``fastgan.kernels.use_impl``).
    """
    check_act(act)
    if resolve_impl(impl, x, "batch_norm_act") == "ref" or x.dtype == torch.float64:
        return batch_norm_act_ref(x, weight, bias, running_mean, running_var, training, momentum, eps, act, alpha)
    _check_args(x, weight, bias, running_mean, running_var, training)
    x = dense_for_channels(x, 1)
    # The kernels index per-channel vectors densely: strided or expanded views cost a C-value copy.
    # The running stats are written in place, with their own strides (see bn_stats_combine_kernel).
    weight = None if weight is None else weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    batch_stats = training or running_mean is None
    if batch_stats:
        update = training and running_mean is not None
        mean, rstd = _bn_stats(x.detach(), running_mean if update else None, running_var if update else None,
                               float(momentum), float(eps))
    else:  # the kernels turn the running variance into rstd
        mean, rstd = running_mean.contiguous(), running_var.contiguous()
    return _bn_act_fwd(x, mean, rstd, weight, bias, float(eps), batch_stats, act, float(alpha))


def _reduce_plan(x: torch.Tensor, view: ChannelView):
    plan = TilePlan(view, TUNING["tile_reduce"], TUNING["max_block_c"])
    groups, rows_per_group = plan.split_rows(reduction_programs(x.device))
    return plan, groups, rows_per_group


@triton_op("fastgan::batch_norm_stats", mutates_args=("running_mean", "running_var"))
def _bn_stats(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
              momentum: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    view = ChannelView(x, 1)
    mean = torch.empty(view.C, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    plan, groups, rows_per_group = _reduce_plan(x, view)
    part = torch.empty((groups, 2, view.C), device=x.device, dtype=torch.float32)
    wrap_triton(bn_stats_kernel)[grid_1d(groups * plan.c_blocks)](
        x, part, view.O, view.C, view.I, plan.c_blocks, rows_per_group,
        ROWS=view.rows, BIG=view.big, BLOCK_O=plan.BLOCK_O, BLOCK_C=plan.BLOCK_C, BLOCK_I=plan.BLOCK_I,
        num_warps=TUNING["warps_reduce"])
    block_c, block_g = combine_blocks(groups, view.C)
    has_running = running_mean is not None
    wrap_triton(bn_stats_combine_kernel)[grid_1d(cdiv(view.C, block_c))](
        part, x, mean, rstd, running_mean if has_running else mean, running_var if has_running else rstd,
        groups, view.C, view.I, float(view.O * view.I), eps, momentum,
        running_mean.stride(0) if has_running else 1, running_var.stride(0) if has_running else 1,
        HAS_RUNNING=has_running, BLOCK_G=block_g, BLOCK_C=block_c)
    return mean, rstd


@triton_op("fastgan::batch_norm_act")
def _bn_act_fwd(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor | None,
                bias: torch.Tensor | None, eps: float, batch_stats: bool, act: str, alpha: float) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    view = ChannelView(x, 1)
    plan = TilePlan(view, TUNING["tile_elementwise"], TUNING["max_block_c"])
    wrap_triton(bn_apply_kernel)[grid_1d(plan.tiles)](
        x, mean, rstd, mean if weight is None else weight, mean if bias is None else bias, y,
        view.O, view.C, view.I, eps, alpha, plan.o_blocks, plan.c_blocks, plan.i_blocks,
        STATS_ARE_VAR=not batch_stats, HAS_W=weight is not None, HAS_B=bias is not None, ACT=act,
        ROWS=view.rows, BIG=view.big, BLOCK_O=plan.BLOCK_O, BLOCK_C=plan.BLOCK_C, BLOCK_I=plan.BLOCK_I,
        num_warps=TUNING["warps_elementwise"])
    return y


@triton_op("fastgan::batch_norm_act_backward")
def _bn_act_bwd(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, batch_stats: bool,
                act: str, alpha: float, need_dx: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (dx, sums) with sums (2, C) fp32 = (dbias, dweight); dx is empty when not needed."""
    dy = match_layout(dy, x)
    view = ChannelView(x, 1)
    write_dx_here = need_dx and not batch_stats
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    if x.numel() == 0:
        return dx, torch.zeros(2, view.C, device=x.device, dtype=torch.float32)
    plan, groups, rows_per_group = _reduce_plan(x, view)
    part = torch.empty((groups, 2, view.C), device=x.device, dtype=torch.float32)
    w_arg = mean if weight is None else weight
    b_arg = mean if bias is None else bias
    wrap_triton(bn_bwd_reduce_kernel)[grid_1d(groups * plan.c_blocks)](
        dy, x, mean, rstd, w_arg, b_arg, part, dx if write_dx_here else part,
        view.O, view.C, view.I, plan.c_blocks, rows_per_group, eps, alpha,
        STATS_ARE_VAR=not batch_stats, HAS_W=weight is not None, HAS_B=bias is not None, ACT=act,
        WRITE_DX=write_dx_here, ROWS=view.rows, BIG=view.big,
        BLOCK_O=plan.BLOCK_O, BLOCK_C=plan.BLOCK_C, BLOCK_I=plan.BLOCK_I, num_warps=TUNING["warps_reduce"])
    sums = sum_partials(part.view(groups, 2 * view.C), torch.empty(2, view.C, device=x.device, dtype=torch.float32))
    if need_dx and batch_stats:
        ew = TilePlan(view, TUNING["tile_elementwise"], TUNING["max_block_c"])
        wrap_triton(bn_bwd_dx_kernel)[grid_1d(ew.tiles)](
            dy, x, mean, rstd, w_arg, b_arg, sums, dx,
            view.O, view.C, view.I, 1.0 / (view.O * view.I), alpha, ew.o_blocks, ew.c_blocks, ew.i_blocks,
            HAS_W=weight is not None, HAS_B=bias is not None, ACT=act, ROWS=view.rows, BIG=view.big,
            BLOCK_O=ew.BLOCK_O, BLOCK_C=ew.BLOCK_C, BLOCK_I=ew.BLOCK_I, num_warps=TUNING["warps_elementwise"])
    return dx, sums


def _bn_act_setup_context(ctx, inputs, output):
    x, mean, rstd, weight, bias, eps, batch_stats, act, alpha = inputs
    ctx.save_for_backward(x, mean, rstd, weight, bias)
    ctx.args = (eps, batch_stats, act, alpha)


def _bn_act_grads(ctx, dy):
    refuse_double_backward("batch_norm_act")
    x, mean, rstd, weight, bias = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    dx, sums = _bn_act_bwd(dy, x, mean, rstd, weight, bias, *ctx.args, need_dx)
    dweight = sums[1].to(weight.dtype) if (weight is not None and ctx.needs_input_grad[3]) else None
    dbias = sums[0].to(bias.dtype) if (bias is not None and ctx.needs_input_grad[4]) else None
    return (dx if need_dx else None), None, None, dweight, dbias, None, None, None, None


_bn_act_fwd.register_autograd(_bn_act_grads, _bn_act_setup_context)


# ----------------------------------------------------------------------------- module
class BatchNormAct(nn.Module):
    """BatchNorm2d + activation in one module; state_dict keys identical to ``nn.BatchNorm2d``.

    Args:
        num_features: number of channels C.
        act: activation name (see ``batch_norm_act``).
        alpha: negative slope of "lrelu".
        momentum: running-statistics momentum (a float, as in ``nn.BatchNorm2d``).
        eps: added to the variance before the square root.
        impl: "auto", "triton" or "ref"; may be changed at any time via ``module.impl``.
    """

    def __init__(self, num_features: int, act: str = "relu", alpha: float = 0.2, momentum: float = 0.1,
                 eps: float = 1e-5, impl: str = "auto"):
        super().__init__()
        if momentum is None or not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNormAct: momentum must be a float in [0, 1], got {momentum!r}")
        self.num_features = int(num_features)
        self.act = check_act(act)
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.bias = nn.Parameter(torch.zeros(self.num_features))
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        """Reset running mean/var to 0/1 and the batch counter to 0."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return batch_norm_act(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                              self.momentum, self.eps, self.act, self.alpha, self.impl)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, act={self.act!r}, alpha={self.alpha}, momentum={self.momentum}, "
                f"eps={self.eps}, impl={self.impl!r}")
