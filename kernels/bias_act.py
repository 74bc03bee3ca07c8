"""bias_act: bias add + activation (+ gain, + clamp) in one pass, forward and backward.

y = clamp(act(x + b) * gain, -clamp, clamp), with b broadcast along ``dim``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .activations import act_derivative, act_forward, act_ref, check_act
from .dispatch import jit, resolve_impl, tl, wrap_triton
from .ops import refuse_double_backward, triton_op
from .tiles import (TUNING, ChannelView, TilePlan, cdiv, channel_sum, dense_for_channels, grid_1d, match_layout,
                    next_pow2, per_channel, reduction_programs, sum_partials, tile_coords, tile_offsets, tile_zeros)


# ----------------------------------------------------------------------------- reference
def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", alpha: float = 0.2,
                 gain: float | None = None, clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """Plain-PyTorch bias + activation: the oracle, the CPU path and the export path.

    Computes in float32 (float64 for float64 input) and returns ``x.dtype``.
    Differentiable to any order.

    Args:
        x: input tensor of any shape.
        b: optional 1-D bias with ``x.shape[dim]`` entries.
        act: "linear", "relu", "lrelu", "tanh", "sigmoid" or "silu".
        alpha: negative slope of "lrelu".
        gain: optional scale applied after the activation (None = 1).
        clamp: optional bound: the result is clamped to [-clamp, clamp].
        dim: dimension of ``x`` the bias runs along.
    """
    check_act(act)
    cdt = torch.promote_types(x.dtype, torch.float32)
    z = x.to(cdt)
    if b is not None:
        dim = dim % x.ndim
        _check_bias(x, b, dim)
        shape = [1] * x.ndim
        shape[dim] = -1
        z = z + b.to(cdt).reshape(shape)
    z = act_ref(z, act, alpha)
    if gain is not None and gain != 1:
        z = z * float(gain)
    if clamp is not None:
        z = z.clamp(-float(clamp), float(clamp))
    return z.to(x.dtype)


def _check_bias(x: torch.Tensor, b: torch.Tensor, dim: int) -> None:
    if b.ndim != 1 or b.shape[0] != x.shape[dim]:
        raise ValueError(f"bias_act: bias of shape {tuple(b.shape)} does not match x.shape[{dim}] = {x.shape[dim]}")


# ----------------------------------------------------------------------------- Triton kernels
@jit
def _value(u, alpha, gain, clamp, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr):
    """clamp(act(u) * gain) of fp32 ``u``."""
    y = act_forward(u, alpha, ACT) * gain
    if HAS_CLAMP:
        y = tl.minimum(tl.maximum(y, -clamp), clamp)
    return y


@jit
def _dz(dy_ptr, x_ptr, dx_ptr, offs, mask, b, alpha, gain, clamp,
        HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, NEED_DX: tl.constexpr):
    """dz = dy * d/du clamp(act(u) * gain), u = x + b, on one tile (``b`` broadcast against it); stores
    it as dx when NEED_DX and returns it (for the bias gradient)."""
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # masked lanes: dz = 0
    if ACT == "linear" and not HAS_CLAMP:
        dz = dy * gain
    else:
        u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            u = u + b
        d = act_derivative(u, alpha, ACT) * gain
        if HAS_CLAMP:  # torch.clamp passes the gradient where |y| <= clamp (bounds included)
            d = tl.where(tl.abs(act_forward(u, alpha, ACT) * gain) <= clamp, d, 0.0)
        dz = dy * d
    if NEED_DX:
        tl.store(dx_ptr + offs, dz.to(dx_ptr.dtype.element_ty), mask=mask)
    return dz


@jit
def _bias_act_fwd_kernel(
    x_ptr,  # input, dense (O, C, I) view, any float dtype
    b_ptr,  # bias (C,), any float dtype; unused when HAS_BIAS is False
    y_ptr,  # output, same layout and dtype as x
    O, C, I, c_blocks, i_blocks, alpha, gain, clamp,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
    ROWS: tl.constexpr, BIG: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """One tile per program: y = clamp(act(x + b) * gain)."""
    ob, cb, ib = tile_coords(tl.program_id(0), c_blocks, i_blocks)
    offs, mask, c = tile_offsets(ob * BLOCK_O, cb * BLOCK_C, ib * BLOCK_I, O, C, I,
                                 BLOCK_O, BLOCK_C, BLOCK_I, ROWS, BIG)
    u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        u = u + per_channel(tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32), ROWS)
    tl.store(y_ptr + offs, _value(u, alpha, gain, clamp, ACT, HAS_CLAMP).to(y_ptr.dtype.element_ty), mask=mask)


@jit
def _bias_act_bwd_kernel(
    dy_ptr,    # upstream gradient, same layout as x
    x_ptr,     # saved input (O, C, I); unused when the derivative is a constant (linear, no clamp)
    b_ptr,     # bias (C,); unused when HAS_BIAS is False
    dx_ptr,    # output gradient of x, same layout and dtype as x; unused when NEED_DX is False
    part_ptr,  # fp32 (G, C): per-group partial sums of dz (for the bias gradient); unused when NEED_DB is False
    O, C, I, c_blocks, rows_per_group, alpha, gain, clamp,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
    NEED_DX: tl.constexpr, NEED_DB: tl.constexpr,
    ROWS: tl.constexpr, BIG: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """Program (g, cb) walks rows [g * rows_per_group, +rows_per_group) of channel block cb:
    writes dx = dz and sums dz per channel."""
    g = tl.program_id(0) // c_blocks
    c0 = (tl.program_id(0) % c_blocks) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    b = per_channel(tl.load(b_ptr + c, mask=(c < C) & HAS_BIAS, other=0.0).to(tl.float32), ROWS)
    acc = tile_zeros(BLOCK_O, BLOCK_C, BLOCK_I, ROWS)
    o_start = g * rows_per_group
    for o0 in range(o_start, o_start + rows_per_group, BLOCK_O):
        for i0 in range(0, I, BLOCK_I):
            offs, mask, c = tile_offsets(o0, c0, i0, O, C, I, BLOCK_O, BLOCK_C, BLOCK_I, ROWS, BIG)
            dz = _dz(dy_ptr, x_ptr, dx_ptr, offs, mask, b, alpha, gain, clamp, HAS_BIAS, ACT, HAS_CLAMP, NEED_DX)
            if NEED_DB:
                acc += dz
    if NEED_DB:
        tl.store(part_ptr + g * C + c, channel_sum(acc, ROWS), mask=c < C)


# Rows narrower than one 16-byte vector (an RGB image in channels_last, a 2-D point): a [rows, C]
# tile would pad C to a power of two (idle lanes) and load row by row (2-byte loads), so these
# kernels see the tensor as flat and find each element's channel as offset % C.
@jit
def _bias_act_flat_fwd_kernel(
    x_ptr,  # input: n elements, rows of C contiguous channels
    b_ptr,  # bias (C,); unused when HAS_BIAS is False
    y_ptr,  # output, like x
    n, alpha, gain, clamp,
    C: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
    BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    """BLOCK contiguous elements per program: y = clamp(act(x + b) * gain)."""
    pid = tl.program_id(0)
    if BIG:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    u = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        u = u + tl.load(b_ptr + offs % C).to(tl.float32)  # C values: served from L1
    tl.store(y_ptr + offs, _value(u, alpha, gain, clamp, ACT, HAS_CLAMP).to(y_ptr.dtype.element_ty), mask=mask)


@jit
def _bias_act_flat_bwd_kernel(
    dy_ptr,    # upstream gradient, like x
    x_ptr,     # saved input: n elements, rows of C contiguous channels
    b_ptr,     # bias (C,); unused when HAS_BIAS is False
    dx_ptr,    # output gradient of x; unused when NEED_DX is False
    part_ptr,  # fp32 (G, C): per-group partial sums of dz; unused when NEED_DB is False
    n, per_group, alpha, gain, clamp,
    C: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_CLAMP: tl.constexpr,
    NEED_DX: tl.constexpr, NEED_DB: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program g walks elements [g * per_group, +per_group) in steps of a whole number of rows, so each
    lane keeps one channel (per_group is a multiple of the step); sums dz per lane, then per channel.
    BLOCK >= 16 * C."""
    STEP: tl.constexpr = BLOCK // (16 * C) * (16 * C)  # whole rows, and 16-element aligned for vector loads
    g = tl.program_id(0)
    if BIG:
        g = g.to(tl.int64)
    lane = tl.arange(0, BLOCK)
    ch = lane % C
    b = tl.load(b_ptr + ch, mask=HAS_BIAS, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK], tl.float32)
    start = g * per_group
    for s in range(start, start + per_group, STEP):
        offs = s + lane
        mask = (lane < STEP) & (offs < n)
        dz = _dz(dy_ptr, x_ptr, dx_ptr, offs, mask, b, alpha, gain, clamp, HAS_BIAS, ACT, HAS_CLAMP, NEED_DX)
        if NEED_DB:
            acc += dz
    if NEED_DB:
        for k in tl.static_range(C):
            tl.store(part_ptr + g * C + k, tl.sum(tl.where(ch == k, acc, 0.0), axis=0))


# ----------------------------------------------------------------------------- public op -> custom ops -> kernels
def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", alpha: float = 0.2,
             gain: float | None = None, clamp: float | None = None, dim: int = 1,
             impl: str = "auto") -> torch.Tensor:
    """Fused bias + activation (+ gain, + clamp), forward and backward in one pass each.

    Args:
        x: input tensor of any shape (contiguous or channels_last is fastest).
        b: optional 1-D bias with ``x.shape[dim]`` entries.
        act: "linear", "relu", "lrelu", "tanh", "sigmoid" or "silu".
        alpha: negative slope of "lrelu".
        gain: optional scale applied after the activation (None = 1).
        clamp: optional bound: the result is clamped to [-clamp, clamp].
        dim: dimension of ``x`` the bias runs along.
        impl: "auto" (Triton on CUDA tensors when available, else reference),
            "triton" or "ref". A process-wide ``use_impl`` override wins.
    """
    check_act(act)
    if resolve_impl(impl, x, "bias_act") == "ref" or x.dtype == torch.float64:
        return bias_act_ref(x, b, act, alpha, gain, clamp, dim)
    dim = dim % x.ndim
    if b is not None:
        _check_bias(x, b, dim)
        b = b.contiguous()  # the kernels index the bias densely; a strided or expanded view costs a C-value copy
    return _bias_act_fwd(dense_for_channels(x, dim), b, act, float(alpha), 1.0 if gain is None else float(gain),
                         None if clamp is None else float(clamp), dim)


@triton_op("fastgan::bias_act")
def _bias_act_fwd(x: torch.Tensor, b: torch.Tensor | None, act: str, alpha: float, gain: float,
                  clamp: float | None, dim: int) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    view = ChannelView(x, dim)
    if _flat(view, x):
        block = TUNING["tile_elementwise"]
        wrap_triton(_bias_act_flat_fwd_kernel)[grid_1d(cdiv(view.numel, block))](
            x, x if b is None else b, y, view.numel, alpha, gain, 0.0 if clamp is None else clamp,
            C=view.C, HAS_BIAS=b is not None, ACT=act, HAS_CLAMP=clamp is not None, BIG=view.big, BLOCK=block,
            num_warps=TUNING["warps_elementwise"])
        return y
    plan = TilePlan(view, TUNING["tile_elementwise"], TUNING["max_block_c"])
    wrap_triton(_bias_act_fwd_kernel)[grid_1d(plan.tiles)](
        x, x if b is None else b, y, view.O, view.C, view.I, plan.c_blocks, plan.i_blocks, alpha, gain,
        0.0 if clamp is None else clamp,
        HAS_BIAS=b is not None, ACT=act, HAS_CLAMP=clamp is not None, ROWS=view.rows, BIG=view.big,
        BLOCK_O=plan.BLOCK_O, BLOCK_C=plan.BLOCK_C, BLOCK_I=plan.BLOCK_I, num_warps=TUNING["warps_elementwise"])
    return y


@triton_op("fastgan::bias_act_backward")
def _bias_act_bwd(dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, act: str, alpha: float,
                  gain: float, clamp: float | None, dim: int, need_dx: bool,
                  need_db: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dy = match_layout(dy, x)
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    db = torch.empty_like(b) if (need_db and b is not None) else x.new_empty(0)
    if x.numel() == 0 or not (need_dx or db.numel()):
        return dx, db
    view = ChannelView(x, dim)
    if _flat(view, x):
        block = max(TUNING["tile_reduce"], next_pow2(16 * view.C))
        step = block // (16 * view.C) * (16 * view.C)
        per_group = cdiv(view.numel, reduction_programs(x.device) * step) * step
        groups = cdiv(view.numel, per_group)
        part = torch.empty((groups, view.C) if db.numel() else (0,), device=x.device, dtype=torch.float32)
        wrap_triton(_bias_act_flat_bwd_kernel)[grid_1d(groups)](
            dy, x, x if b is None else b, dx if need_dx else dy, part if db.numel() else dy,
            view.numel, per_group, alpha, gain, 0.0 if clamp is None else clamp,
            C=view.C, HAS_BIAS=b is not None, ACT=act, HAS_CLAMP=clamp is not None, NEED_DX=need_dx,
            NEED_DB=bool(db.numel()), BIG=view.big, BLOCK=block, num_warps=TUNING["warps_reduce"])
        if db.numel():
            sum_partials(part, db)
        return dx, db
    plan = TilePlan(view, TUNING["tile_reduce"], TUNING["max_block_c"])
    groups, rows_per_group = plan.split_rows(reduction_programs(x.device))
    if not db.numel():  # no reduction: one tile per program
        groups, rows_per_group = plan.o_blocks, plan.BLOCK_O
    part = torch.empty((groups, view.C) if db.numel() else (0,), device=x.device, dtype=torch.float32)
    wrap_triton(_bias_act_bwd_kernel)[grid_1d(groups * plan.c_blocks)](
        dy, x, x if b is None else b, dx if need_dx else dy, part if db.numel() else dy,
        view.O, view.C, view.I, plan.c_blocks, rows_per_group, alpha, gain, 0.0 if clamp is None else clamp,
        HAS_BIAS=b is not None, ACT=act, HAS_CLAMP=clamp is not None, NEED_DX=need_dx,
        NEED_DB=bool(db.numel()), ROWS=view.rows, BIG=view.big,
        BLOCK_O=plan.BLOCK_O, BLOCK_C=plan.BLOCK_C, BLOCK_I=plan.BLOCK_I, num_warps=TUNING["warps_reduce"])
    if db.numel():
        sum_partials(part, db)
    return dx, db


def _flat(view: ChannelView, x: torch.Tensor) -> bool:
    """Rows narrower than a 16-byte vector: the flat kernels (see _bias_act_flat_fwd_kernel)."""
    return view.rows and view.C * x.element_size() < 16


def _bias_act_setup_context(ctx, inputs, output):
    x, b, act, alpha, gain, clamp, dim = inputs
    ctx.save_for_backward(x, b)
    ctx.args = (act, alpha, gain, clamp, dim)


def _bias_act_grads(ctx, dy):
    refuse_double_backward("bias_act")
    x, b = ctx.saved_tensors
    need_dx, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx, db = _bias_act_bwd(dy, x, b, *ctx.args, need_dx, need_db)
    return (dx if need_dx else None), (db if need_db else None), None, None, None, None, None


_bias_act_fwd.register_autograd(_bias_act_grads, _bias_act_setup_context)


# ----------------------------------------------------------------------------- module
class BiasAct(nn.Module):
    """Learned bias + activation module (``bias_act`` with a bias parameter).

    Args:
        num_channels: size of the bias along ``dim``; None for no bias (activation only).
        act: activation name (see ``bias_act``).
        alpha: negative slope of "lrelu".
        gain: optional scale after the activation.
        clamp: optional clamp bound.
        dim: dimension of the input the bias runs along.
        impl: "auto", "triton" or "ref"; may be changed at any time via ``module.impl``.
    """

    def __init__(self, num_channels: int | None, act: str = "linear", alpha: float = 0.2,
                 gain: float | None = None, clamp: float | None = None, dim: int = 1, impl: str = "auto"):
        super().__init__()
        self.act = check_act(act)
        self.alpha = float(alpha)
        self.gain = gain
        self.clamp = clamp
        self.dim = dim
        self.impl = impl
        if num_channels is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.zeros(int(num_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, self.act, self.alpha, self.gain, self.clamp, self.dim, self.impl)

    def linear(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``self(F.linear(x, weight))``: a bias-free linear layer followed by this module.

        On the reference path (CPU tensors, or ``impl="ref"``) with a float32/64
        input, no autocast, no gain, no clamp and ``dim`` the last dimension,
        the bias goes into the matrix multiply (one ``addmm`` instead of ``mm`` +
        add; forward and backward match the two-step form up to float rounding).
        Otherwise the linear runs first and the (fused) bias + activation after it.

        Args:
            x: (..., in_features) input.
            weight: (out_features, in_features) weight; ``out_features`` must equal
                the bias size.
        """
        if self.bias is not None and weight.shape[0] != self.bias.shape[0]:
            raise ValueError(f"bias_act: linear weight of shape {tuple(weight.shape)} does not match the bias of "
                             f"{self.bias.shape[0]} entries")
        last = self.dim % x.ndim == x.ndim - 1
        if (self.bias is not None and last and self.gain in (None, 1) and self.clamp is None
                and x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype
                and not torch.is_autocast_enabled(x.device.type)
                and (x.dtype == torch.float64 or resolve_impl(self.impl, x, "bias_act") == "ref")):
            return act_ref(F.linear(x, weight, self.bias.to(x.dtype)), self.act, self.alpha)
        return self(F.linear(x, weight))

    def extra_repr(self) -> str:
        n = None if self.bias is None else self.bias.shape[0]
        return (f"{n}, act={self.act!r}, alpha={self.alpha}, gain={self.gain}, clamp={self.clamp}, "
                f"dim={self.dim}, impl={self.impl!r}")
