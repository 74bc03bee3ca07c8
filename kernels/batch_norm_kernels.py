"""batch_norm_act's Triton kernels (launched from batch_norm_act.py).

Forward:  stats pass (partial shifted sums per row group) -> combine (mean, rstd, running-stat
          update) -> normalise + activate pass.
Backward: reduction pass (partial sums of du and du * xhat) -> combine -> dx pass.
x is viewed as (O, C, I): NCHW = (N, C, H*W), channels_last = (N*H*W, C, 1) (see tiles.py).
"""

from .activations import act_derivative, act_forward
from .dispatch import jit, tl
from .tiles import channel_sum, per_channel, tile_coords, tile_offsets, tile_zeros


@jit
def bn_stats_kernel(
    x_ptr,     # input (O, C, I) view, any float dtype
    part_ptr,  # fp32 (G, 2, C): per-group sum(x - shift) and sum((x - shift)^2)
    O, C, I, c_blocks, rows_per_group,
    ROWS: tl.constexpr, BIG: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """Program (g, cb): shifted sums over rows [g * rows_per_group, +rows_per_group) of channel block cb.

    The shift is x[0, c, 0] (the same for every program), which keeps E[(x-s)^2] - E[x-s]^2
    free of the cancellation that plain sum/sum-of-squares suffers when |mean| >> std.
    """
    g = tl.program_id(0) // c_blocks
    c0 = (tl.program_id(0) % c_blocks) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    shift = per_channel(tl.load(x_ptr + c * I, mask=c < C, other=0.0).to(tl.float32), ROWS)
    acc1 = tile_zeros(BLOCK_O, BLOCK_C, BLOCK_I, ROWS)
    acc2 = tile_zeros(BLOCK_O, BLOCK_C, BLOCK_I, ROWS)
    o_start = g * rows_per_group
    for o0 in range(o_start, o_start + rows_per_group, BLOCK_O):
        for i0 in range(0, I, BLOCK_I):
            offs, mask, c = tile_offsets(o0, c0, i0, O, C, I, BLOCK_O, BLOCK_C, BLOCK_I, ROWS, BIG)
            v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            v = tl.where(mask, v - shift, 0.0)
            acc1 += v
            acc2 += v * v
    base = part_ptr + g * 2 * C + c
    tl.store(base, channel_sum(acc1, ROWS), mask=c < C)
    tl.store(base + C, channel_sum(acc2, ROWS), mask=c < C)


@jit
def bn_stats_combine_kernel(
    part_ptr,  # fp32 (G, 2, C) from bn_stats_kernel
    x_ptr,     # input (for the shift x[0, c, 0])
    mean_ptr,  # fp32 (C,) out: batch mean
    rstd_ptr,  # fp32 (C,) out: 1 / sqrt(biased batch variance + eps)
    rm_ptr,    # running mean (C,) with stride rm_stride, updated in place; unused when HAS_RUNNING is False
    rv_ptr,    # running variance (C,) with stride rv_stride, updated in place with the unbiased variance
    G, C, I, n, eps, momentum, rm_stride, rv_stride,
    HAS_RUNNING: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Sum the partials in a fixed order (deterministic), then mean / rstd / running update."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    s1 = tl.zeros([BLOCK_G, BLOCK_C], tl.float32)
    s2 = tl.zeros([BLOCK_G, BLOCK_C], tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        m = (g[:, None] < G) & cm[None, :]
        p = part_ptr + g[:, None] * 2 * C + c[None, :]
        s1 += tl.load(p, mask=m, other=0.0)
        s2 += tl.load(p + C, mask=m, other=0.0)
    d = tl.sum(s1, axis=0) / n
    var = tl.maximum(tl.sum(s2, axis=0) / n - d * d, 0.0)
    mean = tl.load(x_ptr + c * I, mask=cm, other=0.0).to(tl.float32) + d
    tl.store(mean_ptr + c, mean, mask=cm)
    tl.store(rstd_ptr + c, tl.rsqrt(var + eps), mask=cm)
    if HAS_RUNNING:
        rm = tl.load(rm_ptr + c * rm_stride, mask=cm, other=0.0).to(tl.float32)
        rv = tl.load(rv_ptr + c * rv_stride, mask=cm, other=0.0).to(tl.float32)
        unbiased = var * (n / (n - 1.0))
        tl.store(rm_ptr + c * rm_stride, (rm + momentum * (mean - rm)).to(rm_ptr.dtype.element_ty), mask=cm)
        tl.store(rv_ptr + c * rv_stride, (rv + momentum * (unbiased - rv)).to(rv_ptr.dtype.element_ty), mask=cm)


@jit
def _channel_params(mean_ptr, rstd_ptr, w_ptr, b_ptr, c, C, eps,
                    STATS_ARE_VAR: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel mean, rstd, weight, bias as fp32 [BLOCK_C] vectors."""
    cm = c < C
    mean = tl.load(mean_ptr + c, mask=cm, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + c, mask=cm, other=1.0).to(tl.float32)
    if STATS_ARE_VAR:  # eval mode: rstd_ptr holds the running variance
        rstd = tl.rsqrt(rstd + eps)
    if HAS_W:
        w = tl.load(w_ptr + c, mask=cm, other=0.0).to(tl.float32)
    else:
        w = tl.full([BLOCK_C], 1.0, tl.float32)
    if HAS_B:
        b = tl.load(b_ptr + c, mask=cm, other=0.0).to(tl.float32)
    else:
        b = tl.zeros([BLOCK_C], tl.float32)
    return mean, rstd, w, b


@jit
def bn_apply_kernel(
    x_ptr,     # input (O, C, I) view
    mean_ptr,  # fp32 (C,) batch mean, or the running mean (eval)
    rstd_ptr,  # fp32 (C,) batch rstd, or the running variance when STATS_ARE_VAR
    w_ptr,     # weight (C,); unused when HAS_W is False
    b_ptr,     # bias (C,); unused when HAS_B is False
    y_ptr,     # output, same layout and dtype as x
    O, C, I, eps, alpha, o_blocks, c_blocks, i_blocks,
    STATS_ARE_VAR: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    ROWS: tl.constexpr, BIG: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """One tile per program: y = act((x - mean) * rstd * w + b)."""
    ob, cb, ib = tile_coords(tl.program_id(0), c_blocks, i_blocks)
    # NOTE: rows in reverse order: the first tiles read are those the statistics pass read last
    # (likely still in L2); unmeasured on a GPU.
    ob = o_blocks - 1 - ob
    c0 = cb * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    mean, rstd, w, b = _channel_params(mean_ptr, rstd_ptr, w_ptr, b_ptr, c, C, eps, STATS_ARE_VAR, HAS_W, HAS_B,
                                     BLOCK_C)
    scale = per_channel(rstd * w, ROWS)
    offs, mask, c = tile_offsets(ob * BLOCK_O, c0, ib * BLOCK_I, O, C, I, BLOCK_O, BLOCK_C, BLOCK_I, ROWS, BIG)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = (x - per_channel(mean, ROWS)) * scale + per_channel(b, ROWS)
    tl.store(y_ptr + offs, act_forward(u, alpha, ACT).to(y_ptr.dtype.element_ty), mask=mask)


@jit
def bn_bwd_reduce_kernel(
    dy_ptr,    # upstream gradient (O, C, I), same layout as x
    x_ptr,     # saved input (O, C, I)
    mean_ptr,  # fp32 (C,) mean used in the forward
    rstd_ptr,  # fp32 (C,) rstd used in the forward (running variance when STATS_ARE_VAR)
    w_ptr,     # weight (C,); unused when HAS_W is False
    b_ptr,     # bias (C,); unused when HAS_B is False
    part_ptr,  # fp32 (G, 2, C) out: per-group sum(du) and sum(du * xhat)
    dx_ptr,    # gradient of x (eval mode only: WRITE_DX); unused otherwise
    O, C, I, c_blocks, rows_per_group, eps, alpha,
    STATS_ARE_VAR: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    WRITE_DX: tl.constexpr, ROWS: tl.constexpr, BIG: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """Program (g, cb): du = dy * act'(u) recomputed from x; sums du and du * xhat per channel.

    With running statistics (eval) dx = du * w * rstd needs no reduction and is written here too.
    """
    g = tl.program_id(0) // c_blocks
    c0 = (tl.program_id(0) % c_blocks) * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    mean, rstd, w, b = _channel_params(mean_ptr, rstd_ptr, w_ptr, b_ptr, c, C, eps, STATS_ARE_VAR, HAS_W, HAS_B,
                                     BLOCK_C)
    mean_t = per_channel(mean, ROWS)
    rstd_t = per_channel(rstd, ROWS)
    w_t = per_channel(w, ROWS)
    b_t = per_channel(b, ROWS)
    acc1 = tile_zeros(BLOCK_O, BLOCK_C, BLOCK_I, ROWS)
    acc2 = tile_zeros(BLOCK_O, BLOCK_C, BLOCK_I, ROWS)
    o_start = g * rows_per_group
    for o0 in range(o_start, o_start + rows_per_group, BLOCK_O):
        for i0 in range(0, I, BLOCK_I):
            offs, mask, c = tile_offsets(o0, c0, i0, O, C, I, BLOCK_O, BLOCK_C, BLOCK_I, ROWS, BIG)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            du = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # masked lanes: du = 0
            xhat = (x - mean_t) * rstd_t
            if ACT != "linear":
                du = du * act_derivative(xhat * w_t + b_t, alpha, ACT)
            acc1 += du
            acc2 += du * xhat
            if WRITE_DX:
                tl.store(dx_ptr + offs, (du * w_t * rstd_t).to(dx_ptr.dtype.element_ty), mask=mask)
    base = part_ptr + g * 2 * C + c
    tl.store(base, channel_sum(acc1, ROWS), mask=c < C)
    tl.store(base + C, channel_sum(acc2, ROWS), mask=c < C)


@jit
def bn_bwd_dx_kernel(
    dy_ptr,    # upstream gradient, same layout as x
    x_ptr,     # saved input (O, C, I)
    mean_ptr,  # fp32 (C,) batch mean
    rstd_ptr,  # fp32 (C,) batch rstd
    w_ptr,     # weight (C,); unused when HAS_W is False
    b_ptr,     # bias (C,); unused when HAS_B is False
    sums_ptr,  # fp32 (2, C): sum(du) (= dbias) then sum(du * xhat) (= dweight)
    dx_ptr,    # out: gradient of x, same layout and dtype as x
    O, C, I, inv_n, alpha, o_blocks, c_blocks, i_blocks,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
    ROWS: tl.constexpr, BIG: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """One tile per program: dx = rstd * w * (du - mean(du) - xhat * mean(du * xhat))."""
    ob, cb, ib = tile_coords(tl.program_id(0), c_blocks, i_blocks)
    ob = o_blocks - 1 - ob  # reverse row order for L2 reuse, as in bn_apply_kernel
    c0 = cb * BLOCK_C
    c = c0 + tl.arange(0, BLOCK_C)
    mean, rstd, w, b = _channel_params(mean_ptr, rstd_ptr, w_ptr, b_ptr, c, C, 0.0, False, HAS_W, HAS_B, BLOCK_C)
    m1 = tl.load(sums_ptr + c, mask=c < C, other=0.0) * inv_n
    m2 = tl.load(sums_ptr + C + c, mask=c < C, other=0.0) * inv_n
    offs, mask, c = tile_offsets(ob * BLOCK_O, c0, ib * BLOCK_I, O, C, I, BLOCK_O, BLOCK_C, BLOCK_I, ROWS, BIG)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    du = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xhat = (x - per_channel(mean, ROWS)) * per_channel(rstd, ROWS)
    if ACT != "linear":
        du = du * act_derivative(xhat * per_channel(w, ROWS) + per_channel(b, ROWS), alpha, ACT)
    dx = per_channel(rstd * w, ROWS) * (du - per_channel(m1, ROWS) - xhat * per_channel(m2, ROWS))
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
