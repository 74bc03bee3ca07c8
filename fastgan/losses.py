"""GAN losses and gradient penalties, as pure functions of logits and inputs.

Loss kinds (``kind``), per logit x, averaged over the batch:

=========  ==================  ==================  ==================
kind       D on real           D on fake           G (on fake)
=========  ==================  ==================  ==================
``ns``     softplus(-x)        softplus(x)         softplus(-x)
``lsgan``  (x - 1)^2           x^2                 (x - 1)^2
``hinge``  relu(1 - x)         relu(1 + x)         -x
``wgan``   -x                  x                   -x
=========  ==================  ==================  ==================

The per-term means go through ``fastgan.kernels.gan_loss``: one fused pass
over the logits with Triton on a GPU, its plain-PyTorch reference elsewhere.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from .config import LOSSES
from .errors import ConfigError

from .kernels import gan_loss as _kernel_gan_loss
from .kernels import use_impl as _use_impl


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ConfigError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")


def _term(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Mean loss of ``logits`` treated as real (True) or fake (False)."""
    return _kernel_gan_loss(logits, real, kind)


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: mean loss on real logits plus mean loss on fake logits.

    Args:
        kind: ``"ns"``, ``"lsgan"``, ``"hinge"`` or ``"wgan"``.
        real_logits: (B,) D's logits on real samples.
        fake_logits: (B,) D's logits on generated samples.

    Returns:
        0-dim float32 loss.
    """
    _check_kind(kind)
    return _term(real_logits, True, kind) + _term(fake_logits, False, kind)


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss on D's logits for generated samples.

    ``ns``: softplus(-x) (non-saturating); ``lsgan``: (x - 1)^2;
    ``hinge`` and ``wgan``: -x; each averaged over the batch.

    Args:
        kind: ``"ns"``, ``"lsgan"``, ``"hinge"`` or ``"wgan"``.
        fake_logits: (B,) D's logits on generated samples.

    Returns:
        0-dim float32 loss.
    """
    _check_kind(kind)
    if kind == "hinge":
        return -fake_logits.float().mean()
    return _term(fake_logits, True, kind)   # ns, lsgan, wgan: the "real" target


def r1_penalty(real_logits: torch.Tensor, real_x: torch.Tensor) -> torch.Tensor:
    """R1 penalty (Mescheder et al. 2018): E ||dD(x)/dx||^2 on real data.

    The gradient is taken with ``create_graph=True`` so the penalty can be
    backpropagated into D. ``real_x`` must require grad and ``real_logits``
    must have been computed from it, with D's kernels in their reference
    implementation (on GPUs, run that D forward inside
    ``fastgan.kernels.use_impl("ref")``: the Triton kernels refuse double
    backward). With PacGAN packing each logit's input is its whole pack, so
    the squared norm is taken per pack. Multiply by gamma / 2 yourself.

    Args:
        real_logits: (B',) D's logits on ``real_x`` (B' = B / pack).
        real_x: (B, ...) the real batch, with ``requires_grad=True``.

    Returns:
        0-dim float32 penalty: sum of squared gradients / B'.
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_x, create_graph=True)
    return grad.float().square().sum() / real_logits.numel()


def gradient_penalty(D: Callable, real: torch.Tensor, fake: torch.Tensor,
                     labels: Optional[torch.Tensor] = None,
                     generator: Optional[torch.Generator] = None,
                     ref_kernels: bool = True) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E (||dD(x_hat)/dx_hat|| - 1)^2.

    x_hat = eps * real + (1 - eps) * fake with eps ~ U(0, 1) drawn once per
    sample from ``generator``; real and fake are detached (the penalty trains
    D only). The gradient is taken with ``create_graph=True``. With PacGAN
    packing the norm is taken over each pack (D's input). Multiply by the
    penalty weight yourself.

    Args:
        D: the discriminator, called as ``D(x_hat, labels)``.
        real: (B, ...) real batch.
        fake: (B, ...) generated batch, same shape.
        labels: (B,) labels passed to D, or None.
        generator: torch.Generator on ``real``'s device for eps (None: global RNG).
        ref_kernels: run D's forward under ``fastgan.kernels.use_impl("ref")``:
            the penalty is differentiated twice, which the Triton kernels refuse.

    Returns:
        0-dim float32 penalty.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake shapes differ: {tuple(real.shape)} vs {tuple(fake.shape)}")
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.ndim - 1), generator=generator, device=real.device,
                     dtype=real.dtype)                                      # (B, 1, 1, 1)
    x_hat = torch.lerp(fake.detach(), real.detach(), eps).requires_grad_(True)   # (B, ...)
    ctx = _use_impl("ref") if ref_kernels else contextlib.nullcontext()
    with ctx:
        logits = D(x_hat, labels)                                           # (B',)
    (grad,) = torch.autograd.grad(logits.float().sum(), x_hat, create_graph=True)
    per = grad.float().reshape(logits.numel(), -1)                          # (B', pack * C*H*W)
    # eps inside the root keeps the norm's gradient finite where the gradient is 0.
    norm = (per.square().sum(dim=1) + 1e-12).sqrt()                         # (B',)
    return (norm - 1).square().mean()
