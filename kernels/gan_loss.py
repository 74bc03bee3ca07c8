"""gan_loss: GAN losses from logits, mean-reduced, with the gradient computed in the same pass.

kind   real target     fake target
ns     softplus(-x)    softplus(x)      (non-saturating logistic / BCE with logits)
lsgan  (x - 1)^2       x^2
hinge  relu(1 - x)     relu(1 + x)
wgan   -x              x
"""

import torch
import torch.nn.functional as F

from fastgan.config import LOSSES as LOSS_KINDS  # the one list of loss names (config is light: no torch)

from .activations import sigmoid
from .dispatch import jit, resolve_impl, tl, wrap_triton
from .ops import refuse_double_backward, triton_op
from .tiles import TUNING, cdiv, grid_1d, needs_int64, next_pow2


def _check_kind(kind: str) -> str:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown GAN loss kind {kind!r} (expected one of {', '.join(LOSS_KINDS)})")
    return kind


# ----------------------------------------------------------------------------- reference
def gan_loss_ref(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Plain-PyTorch GAN loss: mean over all logits, computed in float32 (float64 stays float64).

    Args:
        logits: discriminator outputs, any shape.
        real: True for the "real" target, False for "fake".
        kind: "ns", "lsgan", "hinge" or "wgan" (definitions in the module docstring).
    """
    _check_kind(kind)
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if kind == "ns":
        per = F.softplus(-x) if real else F.softplus(x)
    elif kind == "lsgan":
        per = (x - 1.0).square() if real else x.square()
    elif kind == "hinge":
        per = F.relu(1.0 - x) if real else F.relu(1.0 + x)
    else:  # wgan
        per = -x if real else x
    return per.mean()


# ----------------------------------------------------------------------------- Triton kernels
@jit
def _loss_and_grad(x, REAL: tl.constexpr, KIND: tl.constexpr):
    """Per-element loss and d loss / dx for fp32 logits x (KIND: a name in LOSS_KINDS)."""
    if KIND == "ns":  # softplus(-x) / softplus(x), softplus(t) = max(t, 0) + log(1 + exp(-|t|))
        t = -x if REAL else x
        loss = tl.maximum(t, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(t)))
        grad = -sigmoid(t) if REAL else sigmoid(t)
    elif KIND == "lsgan":
        r = x - 1.0 if REAL else x
        loss = r * r
        grad = 2.0 * r
    elif KIND == "hinge":  # relu'(0) = 0, as torch
        m = 1.0 - x if REAL else 1.0 + x
        loss = tl.maximum(m, 0.0)
        if REAL:
            grad = tl.where(m > 0, -1.0, 0.0)
        else:
            grad = tl.where(m > 0, 1.0, 0.0)
    else:
        tl.static_assert(KIND == "wgan", "gan_loss: a loss kind without a kernel branch")
        loss = -x if REAL else x
        grad = tl.full(x.shape, -1.0 if REAL else 1.0, tl.float32)
    return loss, grad


@jit
def _gan_loss_kernel(
    x_ptr,     # logits, flat (n,), any float dtype
    grad_ptr,  # out: d mean-loss / d logits (n,), logits' dtype; unused when WRITE_GRAD is False
    part_ptr,  # out: fp32 (G,) partial loss sums, or the final mean loss (1,) when G == 1
    n, per_program, inv_n,
    REAL: tl.constexpr, KIND: tl.constexpr, WRITE_GRAD: tl.constexpr, FINAL: tl.constexpr,
    BIG: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program g reads logits [g * per_program, +per_program) once: writes their gradient and a loss sum."""
    g = tl.program_id(0)
    if BIG:
        g = g.to(tl.int64)
    acc = tl.zeros([BLOCK], tl.float32)
    start = g * per_program
    for s in range(start, start + per_program, BLOCK):
        offs = s + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        loss, grad = _loss_and_grad(x, REAL, KIND)
        acc += tl.where(mask, loss, 0.0)
        if WRITE_GRAD:
            tl.store(grad_ptr + offs, (grad * inv_n).to(grad_ptr.dtype.element_ty), mask=mask)
    total = tl.sum(acc, axis=0)
    if FINAL:
        total = total * inv_n
    tl.store(part_ptr + g, total)


@jit
def _gan_loss_combine_kernel(
    part_ptr,  # fp32 (G,) partial loss sums
    out_ptr,   # fp32 (1,) out: mean loss
    G, inv_n,
    BLOCK: tl.constexpr,
):
    """Sum the partials in a fixed order (deterministic) and scale by 1/n."""
    acc = tl.zeros([BLOCK], tl.float32)
    for s in range(0, G, BLOCK):
        offs = s + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + offs, mask=offs < G, other=0.0)
    tl.store(out_ptr, tl.sum(acc, axis=0) * inv_n)


# ----------------------------------------------------------------------------- public op -> custom op -> kernels
def gan_loss(logits: torch.Tensor, real: bool, kind: str, impl: str = "auto") -> torch.Tensor:
    """Mean GAN loss of ``logits`` against the real or fake target; a 0-dim float32 tensor.

    The Triton path reads the logits once: the forward kernel also writes the
    gradient, so the backward is a single scale by the incoming gradient.

    Args:
        logits: discriminator outputs, any shape (float32, bfloat16, float16 or float64).
        real: True for the "real" target, False for "fake".
        kind: "ns", "lsgan", "hinge" or "wgan".
        impl: "auto", "triton" or "ref" (see ``fastgan.kernels.use_impl``).
    """
    _check_kind(kind)
    if resolve_impl(impl, logits, "gan_loss") == "ref" or logits.dtype == torch.float64:
        return gan_loss_ref(logits, real, kind)
    loss, _ = _gan_loss_fwd(logits, bool(real), kind, logits.requires_grad and torch.is_grad_enabled())
    return loss


@triton_op("fastgan::gan_loss")
def _gan_loss_fwd(logits: torch.Tensor, real: bool, kind: str,
                  need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (mean loss as a 0-dim fp32 tensor, gradient of it w.r.t. logits or an empty tensor)."""
    x = logits.contiguous().view(-1)
    n = x.numel()
    grad = torch.empty_like(x) if need_grad else x.new_empty(0)
    block = TUNING["loss_block"]
    groups = max(1, cdiv(n, TUNING["loss_per_program"]))
    per_program = cdiv(max(n, 1), groups * block) * block
    out = torch.empty(1, device=x.device, dtype=torch.float32)
    part = out if groups == 1 else torch.empty(groups, device=x.device, dtype=torch.float32)
    inv_n = 1.0 / n if n else float("nan")  # mean of nothing is nan, as in torch
    wrap_triton(_gan_loss_kernel)[grid_1d(groups)](
        x, grad if need_grad else x, part, n, per_program, inv_n,
        REAL=real, KIND=kind, WRITE_GRAD=need_grad, FINAL=groups == 1, BIG=needs_int64(groups * per_program),
        BLOCK=block)
    if groups > 1:
        wrap_triton(_gan_loss_combine_kernel)[(1,)](part, out, groups, inv_n, BLOCK=min(1024, next_pow2(groups)))
    return out.reshape(()), grad.reshape(logits.shape) if need_grad else grad


def _gan_loss_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _gan_loss_grads(ctx, dloss, dgrad):
    refuse_double_backward("gan_loss")
    (grad,) = ctx.saved_tensors
    return grad * dloss, None, None, None


_gan_loss_fwd.register_autograd(_gan_loss_grads, _gan_loss_setup_context)
