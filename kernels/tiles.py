"""Tiles and tuning: how a tensor maps onto kernel programs, the tile sizes, the 1-D grids,
and the shared Triton helpers (tile offsets, per-channel broadcasts, the partial-sum combine).

Every per-channel kernel sees its tensor as an (O, C, I) view: element (o, c, i) lives at
flat offset ``(o * C + c) * I + i``. NCHW (N, C, H, W) with channel dim 1 is (N, C, H*W)
("planes"); channels_last is (N*H*W, C, 1), rows of C contiguous values ("rows").
"""

import functools

import torch

from .dispatch import jit, recording_sm_count, tl, wrap_triton

# NOTE: every value here is unmeasured on a GPU. They are judged from the compiled code alone
# (registers, spills, vector widths, estimated occupancy: bench/compile_check.py, report in
# bench/results/compile-check-compiled-not-run.json); bench/kernels_bandwidth.py measures them
# on a GPU. Tests turn them down to force many programs on tiny tensors.
TUNING = {
    "interp_programs": 4,       # reduction programs in the interpreter
    "tile_reduce": 2048,        # elements per loop iteration of a reduction program (4096: 95+ registers)
    "warps_reduce": 8,
    "tile_elementwise": 4096,   # elements per program of an elementwise pass
    "warps_elementwise": 8,     # 16 elements a thread (4 warps: 32, and 96-128 registers in the BN dx pass)
    "max_block_c": 128,         # widest channel block in rows (channels_last) mode
    "tile_combine": 1024,       # partial sums per loop iteration of a combine (4096: 95-126 registers)
    "loss_per_program": 32768,  # gan_loss: logits per program (a typical batch: one program)
    "loss_block": 1024,         # gan_loss: logits per loop iteration
}

# Tensors with at least this many elements use int64 offsets (tests lower it to run that path).
INT32_NUMEL = 2**31 - 1
# Grids are 1-D (dimensions 1 and 2 are limited to 65,535 blocks); dimension 0 allows this many.
MAX_PROGRAMS = 2**31 - 1


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative integers."""
    return -(-a // b)


def needs_int64(numel: int) -> bool:
    """Whether offsets into ``numel`` elements need int64 (int32 saves integer work on the usual sizes)."""
    return numel >= INT32_NUMEL


def grid_1d(programs: int) -> tuple[int]:
    """The launch grid ``(programs,)``; raises if it exceeds what one launch can hold."""
    if programs > MAX_PROGRAMS:
        raise RuntimeError(f"fastgan.kernels: {programs} programs exceed one launch ({MAX_PROGRAMS}); "
                           "split the tensor")
    return (programs,)


def num_sms(device: torch.device) -> int:
    """Number of streaming multiprocessors of a CUDA device (a fixed guess elsewhere)."""
    recorded = recording_sm_count()
    if recorded is not None:
        return recorded
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def reduction_programs(device: torch.device) -> int:
    """How many programs a reduction pass should launch (several per SM on a GPU; few in the interpreter)."""
    # 4 per SM keeps every SM busy through the loop's tail with a small partial-sum buffer
    if device.type == "cpu" and recording_sm_count() is None:
        return TUNING["interp_programs"]
    return 4 * num_sms(device)


def dense_for_channels(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Return ``x`` if its memory is NCHW-contiguous, or channels_last with channel dim 1; else a contiguous copy."""
    if x.is_contiguous():
        return x
    if dim == 1 and x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    if dim == 1 and x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return x
    return x.contiguous()


def match_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Return ``t`` with the same strides as ``like`` (copying only when they differ)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


class ChannelView:
    """The (O, C, I) view of a tensor already dense in one of the two layouts (``dense_for_channels``).

    Args:
        x: the tensor.
        dim: the channel dimension.
    """

    def __init__(self, x: torch.Tensor, dim: int):
        shape = tuple(x.shape)
        self.C = shape[dim]
        if x.is_contiguous():
            self.O = _prod(shape[:dim])
            self.I = _prod(shape[dim + 1:])
        else:  # channels_last (2-D) / channels_last_3d image tensors, channel dim 1
            self.O = _prod(shape) // max(self.C, 1)
            self.I = 1
        self.rows = self.I == 1
        self.numel = self.O * self.C * self.I
        self.big = needs_int64(self.numel)


def _prod(shape) -> int:
    p = 1
    for s in shape:
        p *= int(s)
    return p


class TilePlan:
    """Tile sizes of a kernel over an (O, C, I) view, and its block counts.

    Rows mode (I == 1) uses 2-D tiles [BLOCK_O, BLOCK_C] with C contiguous; planes mode
    uses 3-D tiles [BLOCK_O, BLOCK_C, BLOCK_I] with I contiguous, so small planes (4x4,
    8x8) still give long contiguous runs (several channels of one sample).

    Args:
        view: the ChannelView.
        tile: target number of elements per tile (a power of two).
        max_block_c: widest channel block in rows mode.
    """

    def __init__(self, view: ChannelView, tile: int, max_block_c: int):
        if view.rows:
            self.BLOCK_I = 1
            self.BLOCK_C = min(next_pow2(view.C), max_block_c, tile)
        else:
            self.BLOCK_I = min(next_pow2(view.I), tile)
            self.BLOCK_C = min(next_pow2(view.C), max(1, tile // self.BLOCK_I))
        self.BLOCK_O = max(1, min(next_pow2(view.O), tile // (self.BLOCK_C * self.BLOCK_I)))
        self.c_blocks = cdiv(view.C, self.BLOCK_C)
        self.o_blocks = cdiv(view.O, self.BLOCK_O)
        self.i_blocks = cdiv(view.I, self.BLOCK_I)

    @property
    def tiles(self) -> int:
        """Number of tiles (programs of an elementwise pass)."""
        return self.o_blocks * self.c_blocks * self.i_blocks

    def split_rows(self, target_programs: int) -> tuple[int, int]:
        """Split O into groups for a reduction over ``groups * c_blocks`` programs: (groups, rows_per_group)."""
        want = max(1, min(self.o_blocks, cdiv(target_programs, self.c_blocks)))
        blocks_per_group = cdiv(self.o_blocks, want)
        rows_per_group = blocks_per_group * self.BLOCK_O
        groups = cdiv(self.o_blocks, blocks_per_group)
        return groups, rows_per_group


@jit
def tile_coords(pid, c_blocks, i_blocks):
    """(o, c, i) block indices of program ``pid`` of a 1-D grid over all tiles, i fastest (memory order)."""
    ib = pid % i_blocks
    rest = pid // i_blocks
    return rest // c_blocks, rest % c_blocks, ib


@jit
def tile_offsets(o0, c0, i0, O, C, I,
                 BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr,
                 ROWS: tl.constexpr, BIG: tl.constexpr):
    """Flat offsets, mask and channel indices of one tile of the (O, C, I) view."""
    o = o0 + tl.arange(0, BLOCK_O)
    c = c0 + tl.arange(0, BLOCK_C)
    if BIG:
        o = o.to(tl.int64)
    if ROWS:
        offs = o[:, None] * C + c[None, :]
        mask = (o[:, None] < O) & (c[None, :] < C)
    else:
        i = i0 + tl.arange(0, BLOCK_I)
        offs = (o[:, None, None] * C + c[None, :, None]) * I + i[None, None, :]
        mask = (o[:, None, None] < O) & (c[None, :, None] < C) & (i[None, None, :] < I)
    return offs, mask, c


@jit
def tile_zeros(BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_I: tl.constexpr, ROWS: tl.constexpr):
    """An fp32 accumulator shaped like one tile."""
    if ROWS:
        r = tl.zeros([BLOCK_O, BLOCK_C], tl.float32)
    else:
        r = tl.zeros([BLOCK_O, BLOCK_C, BLOCK_I], tl.float32)
    return r


@jit
def per_channel(v, ROWS: tl.constexpr):
    """Broadcast a [BLOCK_C] vector against a tile."""
    if ROWS:
        r = v[None, :]
    else:
        r = v[None, :, None]
    return r


@jit
def channel_sum(t, ROWS: tl.constexpr):
    """Sum a tile over everything but the channel axis -> [BLOCK_C]."""
    if ROWS:
        r = tl.sum(t, axis=0)
    else:
        r = tl.sum(tl.sum(t, axis=2), axis=0)
    return r


# ----------------------------------------------------------------------------- partial-sum combine
@jit
def sum_partials_kernel(
    part_ptr,  # fp32 (G, K): per-group partial sums, row-major
    out_ptr,   # (K,): the column sums, written in out_ptr's dtype
    G, K,
    BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Second stage of a deterministic two-stage reduction: out[k] = sum_g part[g, k] in a fixed order."""
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_G, BLOCK_K], tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        m = (g[:, None] < G) & (k[None, :] < K)
        acc += tl.load(part_ptr + g[:, None] * K + k[None, :], mask=m, other=0.0)
    tl.store(out_ptr + k, tl.sum(acc, axis=0), mask=k < K)


def combine_blocks(groups: int, k: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_G) of a partial-sum combine over a (groups, k) fp32 buffer."""
    # narrow column blocks, so that several programs share the combine of a few hundred rows
    block_k = min(next_pow2(k), 16)
    return block_k, max(1, min(next_pow2(groups), TUNING["tile_combine"] // block_k))


def sum_partials(part: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (K,) = ``part`` (G, K) summed over G, in a fixed order."""
    G, K = part.shape
    block_k, block_g = combine_blocks(G, K)
    wrap_triton(sum_partials_kernel)[grid_1d(cdiv(K, block_k))](part, out, G, K, BLOCK_G=block_g, BLOCK_K=block_k)
    return out
