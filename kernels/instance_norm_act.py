"""instance_norm_act: instance normalisation + activation in one op (the translation networks' norm layer).

Every (sample, channel) plane of x (N, C, *spatial) is normalised by its own
mean and biased variance, optionally scaled and shifted per channel, then
activated: y = act((x - mean[n, c]) * rstd[n, c] * w[c] + b[c]). There are no
running statistics (``nn.InstanceNorm2d(track_running_stats=False)``), so
training and evaluation compute the same thing and nothing is updated in place.

Triton path. x is addressed as planes p = n * C + c with I = prod(spatial)
elements each, at stride ``sc`` between channels and ``si`` between spatial
positions: NCHW-contiguous (sc = I, si = 1) and channels_last (sc = 1, si = C)
are the same kernels with other strides; tiles are [BLOCK_C, BLOCK_I] of one
sample, long along whichever axis is contiguous.

- forward: a statistics pass (fp32 partial shifted sums per group of spatial
  positions, no atomics), a tiny combine (mean, rstd per plane), then one
  normalise + activate pass. Only x and the per-plane mean/rstd are saved.
- backward: one reduction pass computing sum(du) and sum(du * xhat) per plane,
  du = dy * act'(u) recomputed from x, the fixed-order partial-sum combine,
  then one elementwise pass for dx. dbias / dweight are those per-plane sums
  added over the samples.

The reductions are two-stage with a fixed order, so results are bitwise
reproducible run to run. The backward is not differentiable: double backward
is refused (use ``use_impl("ref")``, as for every fastgan kernel). The Triton
kernels themselves are in instance_norm_kernels.py.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .activations import act_ref, check_act
from .dispatch import resolve_impl, wrap_triton
from .instance_norm_kernels import (_in_apply_kernel, _in_bwd_dx_kernel, _in_bwd_reduce_kernel,
                                    _in_stats_combine_kernel, _in_stats_kernel)
from .ops import refuse_double_backward, triton_op
from .tiles import (TUNING, cdiv, combine_blocks, dense_for_channels, grid_1d, match_layout, needs_int64, next_pow2,
                    reduction_programs, sum_partials)


def _check_args(x, weight, bias):
    if x.ndim < 3:
        raise ValueError(f"instance_norm_act: expected input with >= 3 dims (N, C, spatial...), got shape "
                         f"{tuple(x.shape)}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.ndim != 1 or t.shape[0] != c):
            raise ValueError(f"instance_norm_act: {name} of shape {tuple(t.shape)} does not match {c} channels")
    if x.numel() // max(x.shape[0] * c, 1) <= 1 and x.numel() > 0:
        raise ValueError(f"instance_norm_act: expected more than 1 spatial element per plane, got input of shape "
                         f"{tuple(x.shape)}")


# ----------------------------------------------------------------------------- reference
def instance_norm_act_ref(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                          eps: float = 1e-5, act: str = "relu", alpha: float = 0.2) -> torch.Tensor:
    """Plain-PyTorch instance norm + activation: the oracle, the CPU path and the export path.

    Computes in float32 (float64 stays float64) and returns ``x.dtype``;
    differentiable to any order; exports to ONNX ``InstanceNormalization``.

    Args:
        x: input (N, C, *spatial), any strides.
        weight: per-channel scale (C,) or None (= 1).
        bias: per-channel shift (C,) or None (= 0).
        eps: added to the variance before the square root.
        act: "linear", "relu", "lrelu", "tanh", "sigmoid" or "silu".
        alpha: negative slope of "lrelu".
    """
    check_act(act)
    _check_args(x, weight, bias)
    cdt = torch.promote_types(x.dtype, torch.float32)
    w = None if weight is None else weight.to(cdt).contiguous()
    b = None if bias is None else bias.to(cdt).contiguous()
    y = F.instance_norm(x.to(cdt), None, None, w, b, use_input_stats=True, eps=eps)
    return act_ref(y, act, alpha).to(x.dtype)


# ----------------------------------------------------------------------------- geometry
class _Planes:
    """How the kernels address x (already dense in one of the two layouts): planes, strides, tile sizes.

    Args:
        x: (N, C, *spatial), NCHW-contiguous or channels_last(_3d).
        tile: target elements per tile (a power of two).
    """

    def __init__(self, x: torch.Tensor, tile: int):
        self.N, self.C = int(x.shape[0]), int(x.shape[1])
        self.I = x.numel() // max(self.N * self.C, 1)
        self.rows = not x.is_contiguous()            # channels_last: rows of C contiguous values
        self.sc, self.si = (1, self.C) if self.rows else (self.I, 1)
        if self.rows:
            self.BLOCK_C = min(next_pow2(self.C), TUNING["max_block_c"], tile)
            self.BLOCK_I = max(1, min(next_pow2(self.I), tile // self.BLOCK_C))
        else:
            self.BLOCK_I = min(next_pow2(self.I), tile)
            # capped like rows mode: 256 channels of 4x4 planes took 114 registers in the dx pass (sm_90a)
            self.BLOCK_C = max(1, min(next_pow2(self.C), tile // self.BLOCK_I, TUNING["max_block_c"]))
        self.c_blocks = cdiv(self.C, self.BLOCK_C)
        self.i_blocks = cdiv(self.I, self.BLOCK_I)
        self.big = needs_int64(x.numel())

    def split(self, device: torch.device) -> tuple[int, int]:
        """(groups, positions per group): the spatial axis split so a reduction pass fills the device."""
        want = max(1, min(self.i_blocks, cdiv(reduction_programs(device), self.N * self.c_blocks)))
        per_group = cdiv(self.i_blocks, want) * self.BLOCK_I
        return cdiv(self.I, per_group), per_group


# ----------------------------------------------------------------------------- public op -> custom ops -> kernels
def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      eps: float = 1e-5, act: str = "relu", alpha: float = 0.2, impl: str = "auto") -> torch.Tensor:
    """Fused instance norm + activation; float32 statistics for float32/bfloat16/float16 input.

    On the Triton path the statistics op runs on ``x.detach()``; the normalise op's
    backward includes the gradient through the plane statistics, so autograd gives the
    full instance-norm gradient. Inputs in neither dense layout are copied to NCHW first.

    Args:
        x: input (N, C, *spatial) with more than one spatial element; NCHW-contiguous or
            channels_last (kept in the output).
        weight: per-channel scale (C,) or None (= 1).
        bias: per-channel shift (C,) or None (= 0).
        eps: added to the variance before the square root.
        act: "linear", "relu", "lrelu", "tanh", "sigmoid" or "silu".
        alpha: negative slope of "lrelu".
        impl: "auto", "triton" or "ref" (see ``fastgan.kernels.use_impl``).
    """
    check_act(act)
    if resolve_impl(impl, x, "instance_norm_act") == "ref" or x.dtype == torch.float64:
        return instance_norm_act_ref(x, weight, bias, eps, act, alpha)
    _check_args(x, weight, bias)
    x = dense_for_channels(x, 1)
    # The kernels index per-channel vectors densely: strided or expanded views cost a C-value copy.
    weight = None if weight is None else weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    mean, rstd = _in_stats(x.detach(), float(eps))
    return _in_act_fwd(x, mean, rstd, weight, bias, act, float(alpha))


@triton_op("fastgan::instance_norm_stats")
def _in_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    geo = _Planes(x, TUNING["tile_reduce"])
    planes = geo.N * geo.C
    mean = torch.empty(planes, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        return mean, rstd
    groups, per_group = geo.split(x.device)
    part = torch.empty((groups, 2, planes), device=x.device, dtype=torch.float32)
    wrap_triton(_in_stats_kernel)[grid_1d(geo.N * geo.c_blocks * groups)](
        x, part, planes, geo.C, geo.I, geo.sc, geo.si, geo.c_blocks, groups, per_group,
        BIG=geo.big, BLOCK_C=geo.BLOCK_C, BLOCK_I=geo.BLOCK_I, num_warps=TUNING["warps_reduce"])
    block_p, block_g = combine_blocks(groups, planes)
    wrap_triton(_in_stats_combine_kernel)[grid_1d(cdiv(planes, block_p))](
        part, x, mean, rstd, groups, planes, geo.C, geo.I, geo.sc, eps,
        BIG=geo.big, BLOCK_G=block_g, BLOCK_P=block_p)
    return mean, rstd


@triton_op("fastgan::instance_norm_act")
def _in_act_fwd(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor | None,
                bias: torch.Tensor | None, act: str, alpha: float) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    geo = _Planes(x, TUNING["tile_elementwise"])
    wrap_triton(_in_apply_kernel)[grid_1d(geo.N * geo.c_blocks * geo.i_blocks)](
        x, mean, rstd, mean if weight is None else weight, mean if bias is None else bias, y,
        geo.C, geo.I, geo.sc, geo.si, alpha, geo.c_blocks, geo.i_blocks,
        HAS_W=weight is not None, HAS_B=bias is not None, ACT=act,
        BIG=geo.big, BLOCK_C=geo.BLOCK_C, BLOCK_I=geo.BLOCK_I, num_warps=TUNING["warps_elementwise"])
    return y


@triton_op("fastgan::instance_norm_act_backward")
def _in_act_bwd(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                weight: torch.Tensor | None, bias: torch.Tensor | None, act: str, alpha: float,
                need_dx: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (dx, sums) with sums (2, N*C) fp32 = per-plane sum(du), sum(du * xhat); dx is empty when not needed."""
    dy = match_layout(dy, x)
    geo = _Planes(x, TUNING["tile_reduce"])
    planes = geo.N * geo.C
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    if x.numel() == 0:
        return dx, torch.zeros(2, planes, device=x.device, dtype=torch.float32)
    groups, per_group = geo.split(x.device)
    part = torch.empty((groups, 2, planes), device=x.device, dtype=torch.float32)
    w_arg = mean if weight is None else weight
    b_arg = mean if bias is None else bias
    wrap_triton(_in_bwd_reduce_kernel)[grid_1d(geo.N * geo.c_blocks * groups)](
        dy, x, mean, rstd, w_arg, b_arg, part,
        planes, geo.C, geo.I, geo.sc, geo.si, alpha, geo.c_blocks, groups, per_group,
        HAS_W=weight is not None, HAS_B=bias is not None, ACT=act,
        BIG=geo.big, BLOCK_C=geo.BLOCK_C, BLOCK_I=geo.BLOCK_I, num_warps=TUNING["warps_reduce"])
    sums = sum_partials(part.view(groups, 2 * planes), torch.empty(2 * planes, device=x.device, dtype=torch.float32))
    if need_dx:
        # half an elementwise tile: at 4096, 128 channels x 32 positions spilled 8 bytes on sm_90a
        ew = _Planes(x, TUNING["tile_elementwise"] // 2)
        wrap_triton(_in_bwd_dx_kernel)[grid_1d(ew.N * ew.c_blocks * ew.i_blocks)](
            dy, x, mean, rstd, w_arg, b_arg, sums, dx,
            planes, ew.C, ew.I, ew.sc, ew.si, alpha, ew.c_blocks, ew.i_blocks,
            HAS_W=weight is not None, HAS_B=bias is not None, ACT=act,
            BIG=ew.big, BLOCK_C=ew.BLOCK_C, BLOCK_I=ew.BLOCK_I, num_warps=TUNING["warps_elementwise"])
    return dx, sums.view(2, planes)


def _in_act_setup_context(ctx, inputs, output):
    x, mean, rstd, weight, bias, act, alpha = inputs
    ctx.save_for_backward(x, mean, rstd, weight, bias)
    ctx.args = (act, alpha)


def _in_act_grads(ctx, dy):
    refuse_double_backward("instance_norm_act")
    x, mean, rstd, weight, bias = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    dx, sums = _in_act_bwd(dy, x, mean, rstd, weight, bias, *ctx.args, need_dx)
    per_channel = sums.view(2, x.shape[0], x.shape[1]).sum(1)   # (2, C): dbias, dweight
    dweight = per_channel[1].to(weight.dtype) if (weight is not None and ctx.needs_input_grad[3]) else None
    dbias = per_channel[0].to(bias.dtype) if (bias is not None and ctx.needs_input_grad[4]) else None
    return (dx if need_dx else None), None, None, dweight, dbias, None, None


_in_act_fwd.register_autograd(_in_act_grads, _in_act_setup_context)


# ----------------------------------------------------------------------------- module
class InstanceNormAct(nn.Module):
    """Instance norm + activation in one module (``nn.InstanceNorm2d`` without running statistics, then ``act``).

    With ``affine=True`` its state_dict keys are those of ``nn.InstanceNorm2d(affine=True)``.

    Args:
        num_features: number of channels C.
        act: activation name (see ``instance_norm_act``).
        alpha: negative slope of "lrelu".
        eps: added to the variance before the square root.
        affine: learn a per-channel scale and shift (the translation networks, like the
            pix2pix/CycleGAN papers' code, use none).
        impl: "auto", "triton" or "ref"; may be changed at any time via ``module.impl``.
    """

    def __init__(self, num_features: int, act: str = "relu", alpha: float = 0.2, eps: float = 1e-5,
                 affine: bool = False, impl: str = "auto"):
        super().__init__()
        self.num_features = int(num_features)
        self.act = check_act(act)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.affine = bool(affine)
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(self.num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm_act(x, self.weight, self.bias, self.eps, self.act, self.alpha, self.impl)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, act={self.act!r}, alpha={self.alpha}, eps={self.eps}, affine={self.affine}, "
                f"impl={self.impl!r}")
