"""Custom-op glue: a launcher function becomes a torch custom op (what torch.compile traces)
that eager mode calls directly, with its autograd formula attached to both paths.
"""

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .dispatch import HAS_TRITON, TRITON_INTERPRETED

# Tests set this to run the registered custom ops (the torch.compile path) in eager mode too.
FORCE_CUSTOM_OPS = False

DOUBLE_BACKWARD_MESSAGE = (
    "{op}: the Triton backward is not differentiable (gradients of gradients, e.g. R1 or "
    "WGAN-GP, need create_graph=True); run this part with impl=\"ref\" or inside "
    "`with fastgan.kernels.use_impl(\"ref\"):`"
)


def _register(name: str, fn, mutates_args):
    """Register ``fn`` as custom op ``name``.

    On a GPU this is ``torch.library.triton_op``: compile sees the kernels inside. In the
    interpreter kernels cannot be traced, so the op is an opaque ``custom_op`` whose fake
    implementation is ``fn`` itself (its launches do nothing on fake tensors); CPU tests
    still check that compile traces the ops, their mutations and their autograd formulas.
    """
    if TRITON_INTERPRETED:
        op = torch.library.custom_op(name, mutates_args=mutates_args)(fn)
        op.register_fake(fn)
        return op
    return torch.library.triton_op(name, mutates_args=mutates_args)(fn)


class TritonOp:
    """A function that launches Triton kernels, callable two ways.

    While anything traces (torch.compile, AOT autograd's fake/functional modes) or with
    ``FORCE_CUSTOM_OPS``, calls go through the registered custom op, which compile traces
    without a graph break. In eager mode they call the function directly, through a
    plain ``torch.autograd.Function`` once a backward is attached, which skips the custom-op
    dispatcher's Python overhead (about 10 us a call on a CPU). Both share the same
    launchers, setup_context and backward.

    Args:
        name: custom op name, "fastgan::<op>".
        fn: the launcher, fully type-annotated (the op schema is inferred from it).
        mutates_args: names of the arguments ``fn`` writes in place.
    """

    def __init__(self, name: str, fn, mutates_args=()):
        self.fn = fn
        self.op = _register(name, fn, mutates_args) if HAS_TRITON else None
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


def triton_op(name: str, mutates_args=()):
    """Decorator: ``@triton_op("fastgan::x")`` on a launcher makes it a :class:`TritonOp`."""
    return lambda fn: TritonOp(name, fn, mutates_args)


def refuse_double_backward(op: str) -> None:
    """Raise when a Triton backward runs with create_graph=True (its result would not be differentiable)."""
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD_MESSAGE.format(op=op))
