"""How a call reaches a kernel: the optional Triton import, the implementation switch
("auto" | "triton" | "ref") and the launch path (:func:`wrap_triton`, launch recording).

Without Triton every op runs its plain-PyTorch reference. With ``TRITON_INTERPRET=1``
set before Triton is first imported, the kernels run on CPU tensors (slowly), which is
how the tests exercise them on machines without a GPU.
"""

import contextlib
from typing import Iterator

import torch
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


def jit(fn):
    """``triton.jit`` when Triton is importable; otherwise the plain function (never launched)."""
    return triton.jit(fn) if HAS_TRITON else fn


@jit
def _probe():
    pass


# True when kernels are built by the Triton interpreter (TRITON_INTERPRET=1 was set before
# triton's first import): then they run on CPU tensors.
TRITON_INTERPRETED = HAS_TRITON and not isinstance(_probe, triton.runtime.JITFunction)

# ----------------------------------------------------------------------------- implementation switch
# The process-wide override set by set_default_impl / use_impl ("auto" = none).
_forced_impl = "auto"


def _check_impl(name: str) -> str:
    if name not in IMPLS:
        raise ValueError(f"unknown kernel impl {name!r} (expected one of {', '.join(IMPLS)})")
    return name


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
        return "triton" if (HAS_TRITON and (x.is_cuda or _recorder is not None)) else "ref"
    if choice == "triton":
        if not HAS_TRITON:
            raise RuntimeError(f"{op}: impl='triton' requested but triton is not installed; use impl='ref'")
        if not x.is_cuda and not TRITON_INTERPRETED and _recorder is None:
            raise RuntimeError(
                f"{op}: impl='triton' on a {x.device.type} tensor needs TRITON_INTERPRET=1 set before "
                "triton is imported; use impl='ref' on CPU"
            )
    return choice


# ----------------------------------------------------------------------------- launch path
def wrap_triton(kernel):
    """``kernel`` made launchable from a custom op's body: write every launch ``wrap_triton(k)[grid](...)``.

    While something traces (a dispatch mode is active: compile's fake and functional
    passes) this is ``torch.library.wrap_triton``, so the kernel becomes a graph node.
    torch also finds a ``triton_op``'s kernels by reading its body for calls of this
    name (compile caches key on them). In eager mode it is the kernel itself. In the
    interpreter, launches on fake tensors (the opaque custom ops' shape propagation)
    do nothing. Inside :func:`record_launches`, launches are recorded, not run.
    """
    if _recorder is not None:
        return _recorder.launcher(kernel)
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


class LaunchRecorder:
    """The launches seen inside :func:`record_launches`: ``(kernel, grid, args, kwargs)`` tuples."""

    def __init__(self, sm_count: int):
        self.sm_count = sm_count
        self.launches = []

    def launcher(self, kernel):
        recorder = self

        class _Grid:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: recorder.launches.append((kernel, tuple(grid), args, kwargs))
        return _Grid()


_recorder = None


@contextlib.contextmanager
def record_launches(sm_count: int = 132) -> Iterator[LaunchRecorder]:
    """Record the kernel launches of the ops run inside, without running any kernel.

    Meant for fake or meta tensors (nothing is computed; outputs stay uninitialised):
    ``impl="auto"`` picks Triton on any device inside, and launch sizes are planned
    as for a GPU with ``sm_count`` multiprocessors. ``bench/compile_check.py`` uses
    it to list the kernel specialisations a model launches.

    Args:
        sm_count: multiprocessor count to plan reduction grids for (132: an H100 SXM).
    """
    global _recorder
    previous = _recorder
    _recorder = LaunchRecorder(sm_count)
    try:
        yield _recorder
    finally:
        _recorder = previous


def recording_sm_count() -> int | None:
    """The SM count launches are planned for inside :func:`record_launches`, else None."""
    return None if _recorder is None else _recorder.sm_count
