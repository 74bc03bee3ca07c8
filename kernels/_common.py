"""Shared building blocks of fastgan.kernels: optional Triton import, implementation
choice, activation definitions, launch-size arithmetic and the custom-op glue.

Triton is optional. Without it every op runs its plain-PyTorch reference.
With ``TRITON_INTERPRET=1`` set before Triton is first imported, the Triton
kernels run on CPU tensors (slowly), which is how the tests exercise them on
machines without a GPU.
"""

import contextlib
import functools
from typing import Iterator

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

try:  # Triton is an optional dependency: no Triton -> reference ops only.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None

    class _NoTritonLanguage:
        """Stand-in so kernel signatures (``BLOCK: tl.constexpr``) still parse without Triton."""

        constexpr = "constexpr"

    tl = _NoTritonLanguage()

HAS_TRITON = triton is not None

IMPLS = ("auto", "triton", "ref")
ACTS = ("linear", "relu", "lrelu", "tanh", "sigmoid", "silu")
# Integer codes of the activations inside the Triton kernels (constexpr args).
ACT_CODES = {name: i for i, name in enumerate(ACTS)}

# The process-wide override set by set_default_impl / use_impl ("auto" = none).
_forced_impl = "auto"

DOUBLE_BACKWARD_MESSAGE = (
    "{op}: the Triton backward is not differentiable (gradients of gradients, e.g. R1 or "
    "WGAN-GP, need create_graph=True); run this part with impl=\"ref\" or inside "
    "`with fastgan.kernels.use_impl(\"ref\"):`"
)


def _check_impl(name: str) -> str:
    if name not in IMPLS:
        raise ValueError(f"unknown kernel impl {name!r} (expected one of {', '.join(IMPLS)})")
    return name


def check_act(act: str) -> str:
    """Return ``act`` if it names a supported activation, else raise ValueError."""
    if act not in ACTS:
        raise ValueError(f"unknown activation {act!r} (expected one of {', '.join(ACTS)})")
    return act


def set_default_impl(name: str) -> None:
    """Force every fastgan.kernels op to one implementation, process-wide.

    Args:
        name: "ref" (plain PyTorch everywhere, e.g. for export or double backward),
            "triton" (Triton kernels; CPU tensors only with TRITON_INTERPRET=1) or
            "auto" (remove the override: each call's own ``impl`` decides again).
    """
    global _forced_impl
    _forced_impl = _check_impl(name)


def get_default_impl() -> str:
    """Return the process-wide override ("auto" when none is set)."""
    return _forced_impl


@contextlib.contextmanager
def use_impl(name: str) -> Iterator[None]:
    """Context manager: force an implementation inside a ``with`` block.

    Args:
        name: "ref", "triton" or "auto" (see :func:`set_default_impl`). The previous
            setting is restored on exit, also when the block raises.
    """
    global _forced_impl
    previous = _forced_impl
    _forced_impl = _check_impl(name)
    try:
        yield
    finally:
        _forced_impl = previous


def resolve_impl(impl: str, x: torch.Tensor, op: str) -> str:
    """Decide "triton" or "ref" for one call.

    A process-wide override (set_default_impl / use_impl) wins over the call's own
    ``impl``. "auto" means Triton for CUDA tensors when Triton is importable, else the
    reference. This runs in Python before any tracing, so under torch.compile a CPU
    model traces plain torch ops and a GPU model traces the Triton custom ops.

    Args:
        impl: the call's requested implementation ("auto", "triton" or "ref").
        x: the main input tensor (its device decides "auto").
        op: name of the op, for error messages.
    """
    choice = _forced_impl if _forced_impl != "auto" else _check_impl(impl)
    if choice == "auto":
        return "triton" if (HAS_TRITON and x.is_cuda) else "ref"
    if choice == "triton":
        if not HAS_TRITON:
            raise RuntimeError(f"{op}: impl='triton' requested but triton is not installed; use impl='ref'")
        if not x.is_cuda and not TRITON_INTERPRETED:
            raise RuntimeError(
                f"{op}: impl='triton' on a {x.device.type} tensor needs TRITON_INTERPRET=1 set before "
                "triton is imported; use impl='ref' on CPU"
            )
    return choice


def act_ref(x: torch.Tensor, act: str, alpha: float, inplace: bool = False) -> torch.Tensor:
    """Apply activation ``act`` with plain torch ops (differentiable to any order).

    Args:
        x: input tensor.
        act: one of "linear", "relu", "lrelu", "tanh", "sigmoid", "silu".
        alpha: negative slope of "lrelu" (ignored otherwise).
        inplace: "relu" and "lrelu" (alpha > 0) overwrite ``x``, whose backward
            then reads the output instead of a second copy. Only for a fresh
            tensor nothing else saved for backward, such as a matrix multiply's
            output. The point MLP ensembles use it: their activations outgrow
            the CPU's L2 cache and in place made a step 1.14x faster, same
            results bit for bit (``bench/cpu_ensemble_step.py --inplace-ab``);
            for one 2-D MLP it measured no faster.
    """
    if act == "linear":
        return x
    if act == "relu":
        return F.relu_(x) if inplace else F.relu(x)
    if act == "lrelu":
        return F.leaky_relu_(x, alpha) if inplace and alpha > 0 else F.leaky_relu(x, alpha)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    if act == "silu":
        return F.silu(x)
    raise ValueError(f"unknown activation {act!r} (expected one of {', '.join(ACTS)})")


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (and >= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative integers."""
    return -(-a // b)


def num_sms(device: torch.device) -> int:
    """Number of streaming multiprocessors of a CUDA device (a fixed guess on CPU)."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


# ----------------------------------------------------------------------------- Triton glue
def jit(fn):
    """``triton.jit`` when Triton is importable; otherwise the plain function (never launched)."""
    return triton.jit(fn) if HAS_TRITON else fn


def custom_triton_op(name: str, mutates_args=()):
    """Register a function that launches Triton kernels as a torch custom op.

    On a GPU this is ``torch.library.triton_op``: torch.compile sees the kernels inside.
    In the Triton interpreter (CPU) kernels cannot be traced, so the op is an opaque
    ``torch.library.custom_op`` whose fake implementation is the same function with the
    launches skipped; that still lets CPU tests check that torch.compile traces the
    ops, their mutations and their autograd formulas without a graph break.
    Without Triton the function is returned unchanged (it is never called).
    """
    def wrap(fn):
        if not HAS_TRITON:
            return fn
        if TRITON_INTERPRETED:
            op = torch.library.custom_op(name, mutates_args=mutates_args)(fn)
            op.register_fake(fn)
            return op
        return torch.library.triton_op(name, mutates_args=mutates_args)(fn)

    return wrap


# Tests set this to run the registered custom ops (the torch.compile path) in eager mode too.
FORCE_CUSTOM_OPS = False


class TritonOp:
    """A function that launches Triton kernels, callable two ways.

    While anything traces (torch.compile, AOT autograd's fake/functional modes) or with
    ``FORCE_CUSTOM_OPS``, calls go through a registered custom op (:func:`custom_triton_op`),
    which compile traces without a graph break. In eager mode they call the function
    directly, through a plain ``torch.autograd.Function`` when a backward is attached,
    which skips the custom-op dispatcher's Python overhead (about 10 us a call on a CPU).
    Both share the same launchers, setup_context and backward.

    Args:
        name: custom op name, "fastgan::<op>".
        fn: the launcher, fully type-annotated (the op schema is inferred from it).
        mutates_args: names of the arguments ``fn`` writes in place.
    """

    def __init__(self, name: str, fn, mutates_args=()):
        self.fn = fn
        self.op = custom_triton_op(name, mutates_args)(fn)
        self._eager = fn

    def register_autograd(self, backward, setup_context) -> None:
        """Attach ``backward(ctx, *grads)`` / ``setup_context(ctx, inputs, output)`` to both paths."""
        if HAS_TRITON:
            self.op.register_autograd(backward, setup_context=setup_context)
        fn = self.fn

        def forward(ctx, *args):
            out = fn(*args)
            setup_context(ctx, args, out)
            return out

        function = type(f"{fn.__name__}_function", (torch.autograd.Function,),
                        {"forward": staticmethod(forward), "backward": staticmethod(backward)})
        self._eager = function.apply

    def __call__(self, *args):
        # The registered op whenever something traces: dynamo, or AOT autograd's fake/functional
        # modes (where torch 2.11's is_compiling() is False); the plain function otherwise.
        if FORCE_CUSTOM_OPS or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
            return self.op(*args)
        return self._eager(*args)


def wrap_triton(kernel):
    """``kernel`` made launchable from a custom op's body: write launches as ``wrap_triton(k)[grid](...)``.

    Under tracing (a dispatch mode is active) this is ``torch.library.wrap_triton``, so compile sees
    the kernel; torch also finds the kernels of a ``triton_op`` by reading its body for calls of this
    name, and compile caches key on them. Otherwise (eager, real tensors) it is the kernel itself,
    launched directly. In the interpreter, launches with fake tensors (shape propagation of the
    opaque custom ops, see :func:`custom_triton_op`) do nothing.
    """
    if TRITON_INTERPRETED:
        return _InterpretedLaunch(kernel)
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return torch.library.wrap_triton(kernel)
    return kernel


class _InterpretedLaunch:
    """``kernel[grid](...)`` in the interpreter, skipped when given fake tensors."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            if not any(isinstance(a, FakeTensor) for a in args):
                self.kernel[grid](*args, **kwargs)
        return run


def refuse_double_backward(op: str) -> None:
    """Raise when a Triton backward runs with create_graph=True (its result would not be differentiable)."""
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD_MESSAGE.format(op=op))


class ChannelView:
    """How a tensor's memory maps onto the (O, C, I) view used by every per-channel kernel.

    Element (o, c, i) lives at flat offset ``(o * C + c) * I + i``. An NCHW-contiguous
    (N, C, H, W) tensor with channel dim 1 is (N, C, H*W); a channels_last one is
    (N*H*W, C, 1), i.e. rows of C contiguous values ("rows" mode, ``I == 1``).

    Args:
        x: the tensor; must already be dense in one of those two layouts (see ``dense_for_channels``).
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
        # int64 offsets only when int32 could overflow (saves integer work on the common sizes).
        self.big = self.numel >= 2**31 - 1


def _prod(shape) -> int:
    p = 1
    for s in shape:
        p *= int(s)
    return p


def match_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Return ``t`` with the same strides as ``like`` (copying only when they differ)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


def dense_for_channels(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Return ``x`` if its memory is NCHW-contiguous, or channels_last with channel dim 1; else a contiguous copy."""
    if x.is_contiguous():
        return x
    if dim == 1 and x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    if dim == 1 and x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return x
    return x.contiguous()


class TilePlan:
    """Tile sizes and grid of a kernel over an (O, C, I) view.

    Rows mode (I == 1) uses 2-D tiles [BLOCK_O, BLOCK_C] with C contiguous; planes
    mode uses 3-D tiles [BLOCK_O, BLOCK_C, BLOCK_I] with I contiguous, so small planes
    (4x4, 8x8) still give long contiguous runs (several channels of one sample).

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

    def split_rows(self, target_programs: int) -> tuple[int, int]:
        """Split O into groups for a reduction grid (groups, c_blocks); returns (groups, rows_per_group)."""
        want = max(1, min(self.o_blocks, cdiv(target_programs, self.c_blocks)))
        blocks_per_group = cdiv(self.o_blocks, want)
        rows_per_group = blocks_per_group * self.BLOCK_O
        groups = cdiv(self.o_blocks, blocks_per_group)
        return groups, rows_per_group


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


@jit
def sigmoid(u):
    return 1.0 / (1.0 + tl.exp(-u))


# True when the kernels were built by the Triton interpreter (TRITON_INTERPRET=1 was set
# before triton's first import): then they run on CPU tensors.
TRITON_INTERPRETED = HAS_TRITON and not isinstance(sigmoid, triton.runtime.JITFunction)


@jit
def act_forward(u, alpha, ACT: tl.constexpr):
    """Activation of fp32 ``u``; ACT is the index in ACTS (linear, relu, lrelu, tanh, sigmoid, silu)."""
    if ACT == 0:
        r = u
    elif ACT == 1:
        r = tl.where(u > 0, u, 0.0)
    elif ACT == 2:
        r = tl.where(u > 0, u, u * alpha)
    elif ACT == 3:
        # NOTE: tanh as 2*sigmoid(2u) - 1: no libdevice needed (runs in the interpreter);
        # absolute error ~1e-7, below the bf16/fp16 output rounding.
        r = 2.0 * sigmoid(2.0 * u) - 1.0
    elif ACT == 4:
        r = sigmoid(u)
    else:
        r = u * sigmoid(u)
    return r


@jit
def act_derivative(u, alpha, ACT: tl.constexpr):
    """d act(u) / du for fp32 ``u`` (same conventions as torch at the kinks: relu'(0) = 0, lrelu'(0) = alpha)."""
    if ACT == 0:
        d = tl.full(u.shape, 1.0, tl.float32)
    elif ACT == 1:
        d = tl.where(u > 0, 1.0, 0.0)
    elif ACT == 2:
        d = tl.where(u > 0, 1.0, alpha)
    elif ACT == 3:
        t = 2.0 * sigmoid(2.0 * u) - 1.0
        d = 1.0 - t * t
    elif ACT == 4:
        s = sigmoid(u)
        d = s * (1.0 - s)
    else:
        s = sigmoid(u)
        d = s * (1.0 + u * (1.0 - s))
    return d


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


def sum_partials(part: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Launch :func:`sum_partials_kernel`: ``out`` (K,) = ``part`` (G, K) summed over G."""
    G, K = part.shape
    block_k, block_g = combine_blocks(G, K)
    wrap_triton(sum_partials_kernel)[(cdiv(K, block_k),)](part, out, G, K, BLOCK_G=block_g, BLOCK_K=block_k)
    return out


def combine_blocks(groups: int, k: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_G) of a partial-sum combine over a (groups, k) fp32 buffer."""
    # NOTE: narrow column blocks so several programs share the combine: with one program
    # per 128 columns, a single SM would read all ~500 partial rows alone (several us).
    block_k = min(next_pow2(k), 16)
    return block_k, max(1, min(next_pow2(groups), 4096 // block_k))


def reduction_programs(device: torch.device) -> int:
    """How many programs a reduction pass should launch (several per SM on a GPU; few in the interpreter)."""
    # NOTE: 4 programs per SM keeps every SM busy through the tail of the loop while
    # leaving the partial-sum buffer small (a few hundred rows); not yet tuned on a GPU.
    return 4 * num_sms(device) if device.type == "cuda" else TUNING["interp_programs"]


# Knobs the tests turn down to force several groups / loop iterations on tiny tensors.
# NOTE: first guesses, not yet measured on a GPU (bench/kernels_bandwidth.py measures them):
# a reduction program keeps 2 fp32 accumulator tiles of tile_reduce elements, so 8 warps
# hold 16 elements per thread each; elementwise tiles of 4096 bf16 values are 8 KB per
# program, 32 elements (four 16-byte vectors) per thread with 4 warps.
TUNING = {
    "interp_programs": 4,      # reduction programs in the interpreter
    "tile_reduce": 4096,       # elements per loop iteration of a reduction program
    "warps_reduce": 8,
    "tile_elementwise": 4096,  # elements per program of an elementwise pass
    "warps_elementwise": 4,
    "max_block_c": 128,        # widest channel block in rows (channels_last) mode
}
