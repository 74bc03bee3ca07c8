"""Activations: plain-PyTorch references and their Triton twins (value and derivative).

Inside kernels the activation is a string constexpr (``ACT="lrelu"``), so each one
compiles to its own specialisation and the names are listed once, in :data:`ACTS`.
"""

import torch
import torch.nn.functional as F

from .dispatch import jit, tl

ACTS = ("linear", "relu", "lrelu", "tanh", "sigmoid", "silu")


def check_act(act: str) -> str:
    """Return ``act`` if it names a supported activation, else raise ValueError."""
    if act not in ACTS:
        raise ValueError(f"unknown activation {act!r} (expected one of {', '.join(ACTS)})")
    return act


def act_ref(x: torch.Tensor, act: str, alpha: float, inplace: bool = False) -> torch.Tensor:
    """Apply activation ``act`` with plain torch ops (differentiable to any order).

    Args:
        x: input tensor.
        act: one of "linear", "relu", "lrelu", "tanh", "sigmoid", "silu".
        alpha: negative slope of "lrelu" (ignored otherwise).
        inplace: "relu" and "lrelu" (alpha > 0) overwrite ``x``, whose backward then
            reads the output instead of a second copy. Only for a fresh tensor that
            nothing else saved for backward, such as a matrix multiply's output (the
            point MLP ensembles use it; see ``bench/cpu_ensemble_step.py --inplace-ab``).
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


@jit
def sigmoid(u):
    return 1.0 / (1.0 + tl.exp(-u))


@jit
def act_forward(u, alpha, ACT: tl.constexpr):
    """Activation ``ACT`` (a name in ACTS) of fp32 ``u``."""
    if ACT == "linear":
        r = u
    elif ACT == "relu":
        r = tl.where(u > 0, u, 0.0)
    elif ACT == "lrelu":
        r = tl.where(u > 0, u, u * alpha)
    elif ACT == "tanh":
        # as 2*sigmoid(2u) - 1: no libdevice, so it runs in the interpreter; error ~1e-7
        r = 2.0 * sigmoid(2.0 * u) - 1.0
    elif ACT == "sigmoid":
        r = sigmoid(u)
    else:  # silu
        r = u * sigmoid(u)
    return r


@jit
def act_derivative(u, alpha, ACT: tl.constexpr):
    """d act(u) / du for fp32 ``u`` (torch's conventions at the kinks: relu'(0) = 0, lrelu'(0) = alpha)."""
    if ACT == "linear":
        d = tl.full(u.shape, 1.0, tl.float32)
    elif ACT == "relu":
        d = tl.where(u > 0, 1.0, 0.0)
    elif ACT == "lrelu":
        d = tl.where(u > 0, 1.0, alpha)
    elif ACT == "tanh":
        t = 2.0 * sigmoid(2.0 * u) - 1.0
        d = 1.0 - t * t
    elif ACT == "sigmoid":
        s = sigmoid(u)
        d = s * (1.0 - s)
    else:  # silu
        s = sigmoid(u)
        d = s * (1.0 + u * (1.0 - s))
    return d
