"""instance_norm_act's Triton kernels (launched from instance_norm_act.py).

Forward:  stats pass (partial shifted sums per group of positions) -> combine (mean, rstd per plane)
          -> normalise + activate pass.
Backward: reduction pass (partial sums of du and du * xhat per plane) -> the shared fixed-order
          combine -> dx pass.
x is addressed as planes n * C + c of I positions, at strides sc (channels) and si (positions).
"""

from .activations import act_derivative, act_forward
from .dispatch import jit, tl


@jit
def _plane_tile(n, c0, i0, C, I, sc, si,
                BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr, BIG: tl.constexpr):
    """Offsets, mask and channel indices of the [BLOCK_C, BLOCK_I] tile of sample n at (c0, i0)."""
    c = c0 + tl.arange(0, BLOCK_C)
    i = i0 + tl.arange(0, BLOCK_I)
    if BIG:
        n = n.to(tl.int64)
        i = i.to(tl.int64)
    offs = n * C * I + c[:, None] * sc + i[None, :] * si
    mask = (c[:, None] < C) & (i[None, :] < I)
    return offs, mask, c


@jit
def _affine(w_ptr, b_ptr, c, C, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel weight and bias as fp32 [BLOCK_C] vectors (1 and 0 when absent)."""
    if HAS_W:
        w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    else:
        w = tl.full([BLOCK_C], 1.0, tl.float32)
    if HAS_B:
        b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    else:
        b = tl.zeros([BLOCK_C], tl.float32)
    return w, b


@jit
def _reduce_program(pid, c_blocks, groups):
    """(sample, channel block, group of positions) of a reduction program."""
    return pid // (groups * c_blocks), (pid // groups) % c_blocks, pid % groups


@jit
def _tile_program(pid, c_blocks, i_blocks):
    """(sample, channel block, position block) of an elementwise program, positions fastest."""
    return pid // (i_blocks * c_blocks), (pid // i_blocks) % c_blocks, pid % i_blocks


@jit
def _store_partials(part_ptr, acc1, acc2, g, n, c, C, P):
    """Row g of the (G, 2, P) partial sums: both tiles summed over positions, for planes n * C + c."""
    base = part_ptr + g * 2 * P + n * C + c
    tl.store(base, tl.sum(acc1, axis=1), mask=c < C)
    tl.store(base + P, tl.sum(acc2, axis=1), mask=c < C)


# ----------------------------------------------------------------------------- Triton kernels
@jit
def _in_stats_kernel(
    x_ptr,     # input (N, C, I) planes at strides (C*I, sc, si), any float dtype
    part_ptr,  # fp32 (G, 2, P) out: per-group sum(x - shift) and sum((x - shift)^2), P = N * C planes
    P, C, I, sc, si, c_blocks, groups, per_group,
    BIG: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """Program (n, cb, g): shifted sums of channel block cb of sample n over positions [g * per_group, +per_group).

    The shift is x[n, c, 0] (the same for every group of a plane): it keeps E[(x-s)^2] - E[x-s]^2
    free of the cancellation plain sums suffer when |mean| >> std.
    """
    n, cb, g = _reduce_program(tl.program_id(0), c_blocks, groups)
    c0 = cb * BLOCK_C
    offs0, _, c = _plane_tile(n, c0, 0, C, I, sc, si, BLOCK_C, 1, BIG)
    shift = tl.load(x_ptr + offs0, mask=c[:, None] < C, other=0.0).to(tl.float32)   # [BLOCK_C, 1]
    acc1 = tl.zeros([BLOCK_C, BLOCK_I], tl.float32)
    acc2 = tl.zeros([BLOCK_C, BLOCK_I], tl.float32)
    start = g * per_group
    for i0 in range(start, start + per_group, BLOCK_I):
        offs, mask, c = _plane_tile(n, c0, i0, C, I, sc, si, BLOCK_C, BLOCK_I, BIG)
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        v = tl.where(mask, v - shift, 0.0)
        acc1 += v
        acc2 += v * v
    _store_partials(part_ptr, acc1, acc2, g, n, c, C, P)


@jit
def _in_stats_combine_kernel(
    part_ptr,  # fp32 (G, 2, P) from _in_stats_kernel, P = N * C planes
    x_ptr,     # input (for the shift x[n, c, 0])
    mean_ptr,  # fp32 (P,) out: plane means
    rstd_ptr,  # fp32 (P,) out: 1 / sqrt(biased plane variance + eps)
    G, P, C, I, sc, eps,
    BIG: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Sum the partials in a fixed order (deterministic), then mean and rstd per plane."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    s1 = tl.zeros([BLOCK_G, BLOCK_P], tl.float32)
    s2 = tl.zeros([BLOCK_G, BLOCK_P], tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        m = (g[:, None] < G) & pm[None, :]
        ptr = part_ptr + g[:, None] * 2 * P + p[None, :]
        s1 += tl.load(ptr, mask=m, other=0.0)
        s2 += tl.load(ptr + P, mask=m, other=0.0)
    d = tl.sum(s1, axis=0) / I
    var = tl.maximum(tl.sum(s2, axis=0) / I - d * d, 0.0)
    n = p // C
    if BIG:
        n = n.to(tl.int64)
    shift = tl.load(x_ptr + n * C * I + (p % C) * sc, mask=pm, other=0.0).to(tl.float32)
    tl.store(mean_ptr + p, shift + d, mask=pm)
    tl.store(rstd_ptr + p, tl.rsqrt(var + eps), mask=pm)


@jit
def _in_apply_kernel(
    x_ptr,     # input (N, C, I) planes at strides (C*I, sc, si)
    mean_ptr,  # fp32 (N*C,) plane means
    rstd_ptr,  # fp32 (N*C,) plane rstd
    w_ptr,     # weight (C,); unused when HAS_W is False
    b_ptr,     # bias (C,); unused when HAS_B is False
    y_ptr,     # output, same layout and dtype as x
    C, I, sc, si, alpha, c_blocks, i_blocks,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BIG: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """One tile per program: y = act((x - mean) * rstd * w + b)."""
    n, cb, ib = _tile_program(tl.program_id(0), c_blocks, i_blocks)
    offs, mask, c = _plane_tile(n, cb * BLOCK_C, ib * BLOCK_I, C, I, sc, si, BLOCK_C, BLOCK_I, BIG)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=1.0)
    w, b = _affine(w_ptr, b_ptr, c, C, HAS_W, HAS_B, BLOCK_C)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = (x - mean[:, None]) * (rstd * w)[:, None] + b[:, None]
    tl.store(y_ptr + offs, act_forward(u, alpha, ACT).to(y_ptr.dtype.element_ty), mask=mask)


@jit
def _in_bwd_reduce_kernel(
    dy_ptr,    # upstream gradient, same layout as x
    x_ptr,     # saved input (N, C, I) planes at strides (C*I, sc, si)
    mean_ptr,  # fp32 (N*C,) plane means of the forward
    rstd_ptr,  # fp32 (N*C,) plane rstd of the forward
    w_ptr,     # weight (C,); unused when HAS_W is False
    b_ptr,     # bias (C,); unused when HAS_B is False
    part_ptr,  # fp32 (G, 2, P) out: per-group sum(du) and sum(du * xhat), P = N * C planes
    P, C, I, sc, si, alpha, c_blocks, groups, per_group,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BIG: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """Program (n, cb, g): du = dy * act'(u) recomputed from x; sums du and du * xhat per plane."""
    n, cb, g = _reduce_program(tl.program_id(0), c_blocks, groups)
    c0 = cb * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=1.0)[:, None]
    w, b = _affine(w_ptr, b_ptr, c, C, HAS_W, HAS_B, BLOCK_C)
    acc1 = tl.zeros([BLOCK_C, BLOCK_I], tl.float32)
    acc2 = tl.zeros([BLOCK_C, BLOCK_I], tl.float32)
    start = g * per_group
    for i0 in range(start, start + per_group, BLOCK_I):
        offs, mask, c = _plane_tile(n, c0, i0, C, I, sc, si, BLOCK_C, BLOCK_I, BIG)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        du = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # masked lanes: du = 0
        xhat = (x - mean) * rstd
        if ACT != "linear":
            du = du * act_derivative(xhat * w[:, None] + b[:, None], alpha, ACT)
        acc1 += du
        acc2 += du * xhat
    _store_partials(part_ptr, acc1, acc2, g, n, c, C, P)


@jit
def _in_bwd_dx_kernel(
    dy_ptr,    # upstream gradient, same layout as x
    x_ptr,     # saved input (N, C, I) planes at strides (C*I, sc, si)
    mean_ptr,  # fp32 (N*C,) plane means
    rstd_ptr,  # fp32 (N*C,) plane rstd
    w_ptr,     # weight (C,); unused when HAS_W is False
    b_ptr,     # bias (C,); unused when HAS_B is False
    sums_ptr,  # fp32 (2, P): sum(du) then sum(du * xhat) per plane, P = N * C planes
    dx_ptr,    # out: gradient of x, same layout and dtype as x
    P, C, I, sc, si, alpha, c_blocks, i_blocks,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    BIG: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """One tile per program: dx = rstd * w * (du - mean(du) - xhat * mean(du * xhat)), means over the plane."""
    n, cb, ib = _tile_program(tl.program_id(0), c_blocks, i_blocks)
    offs, mask, c = _plane_tile(n, cb * BLOCK_C, ib * BLOCK_I, C, I, sc, si, BLOCK_C, BLOCK_I, BIG)
    p = n * C + c
    mean = tl.load(mean_ptr + p, mask=c < C, other=0.0)[:, None]
    rstd = tl.load(rstd_ptr + p, mask=c < C, other=1.0)
    m1 = (tl.load(sums_ptr + p, mask=c < C, other=0.0) / I)[:, None]
    m2 = (tl.load(sums_ptr + P + p, mask=c < C, other=0.0) / I)[:, None]
    w, b = _affine(w_ptr, b_ptr, c, C, HAS_W, HAS_B, BLOCK_C)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    du = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xhat = (x - mean) * rstd[:, None]
    if ACT != "linear":
        du = du * act_derivative(xhat * w[:, None] + b[:, None], alpha, ACT)
    dx = (rstd * w)[:, None] * (du - m1 - xhat * m2)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
