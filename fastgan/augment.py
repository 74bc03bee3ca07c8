"""Differentiable augmentations for GAN training (DiffAugment / ADA style).

The same augmentation is applied to real and generated images before D, and
gradients flow through it into G. Every op draws a fixed number of random
values per sample from the caller's ``torch.Generator``, picks the samples it
changes with a per-sample Bernoulli(p) mask and selects with ``torch.where``:
no Python branch on a random value, no shape that depends on data, no host
sync, so a training step that calls :func:`augment` can be captured in a CUDA
graph. Samples that are not picked come out bitwise unchanged.

Ops (names as in ``TrainConfig.augment``):

- ``color``: brightness (+U(-0.5, 0.5)), saturation (x U(0, 2)) and contrast
  (x U(0.5, 1.5)), as in DiffAugment.
- ``translation``: integer shift of up to 1/8 of each side, zero fill (gather).
- ``cutout``: a square of half the side set to 0 at a random centre (mask).
- ``flip``: horizontal flip.
- ``rot90``: rotation by k * 90 degrees, k uniform in 0..3 (square images).
- ``scale``: isotropic zoom by U(0.9, 1.1) about the centre (bilinear
  ``grid_sample``, zero fill).
- ``shift``: integer shift of up to 1/8 of each side, like ``translation``
  but filled by reflecting the image at its border (as in ADA), so no
  constant band appears (a zero band is mid-grey in [-1, 1]).
- ``rotate``: rotation by U(-15, 15) degrees about the centre (bilinear
  ``grid_sample``, reflection fill).

``shift`` and ``rotate`` change images the way real samples of a class vary
(position, slant) and add no colour or shape that no real image has; they are
the policy to try first for ADA on little data.

:class:`AdaptiveAugment` holds an adaptive probability (ADA): a device tensor
steered by D's overfitting signal, passed to :func:`augment` as ``p``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .config import AUGMENTS
from .errors import ConfigError

TRANSLATION_RATIO = 0.125   # largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5          # side of the cut-out square, as a fraction of the side
SCALE_RANGE = (0.9, 1.1)    # zoom factors for "scale"
ROTATE_DEGREES = 15.0       # largest angle of "rotate"


def parse_policy(policy: Union[str, Sequence[str], None]) -> list[str]:
    """Turn a policy into a list of op names, checking each one.

    Args:
        policy: comma-separated string (``"color,translation"``), a list of
            names, or None / empty for no augmentation.

    Returns:
        The op names in the order they will be applied.
    """
    if policy is None:
        return []
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [n.strip() for n in names if n and n.strip()]
    for n in names:
        if n not in AUGMENTS:
            raise ConfigError(f"unknown augmentation {n!r}; choose from {', '.join(AUGMENTS)}")
    return names


def augment(x: torch.Tensor, policy: Union[str, Sequence[str], None],
            p: Union[float, torch.Tensor],
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Apply the augmentation ops of ``policy`` to a batch of images.

    Args:
        x: (B, C, H, W) float images (any range; [-1, 1] in fastgan).
        policy: op names (see the module docstring), as a list or a
            comma-separated string; applied in the given order.
        p: probability that each op is applied to each sample; a Python
            float, or a 0-dim tensor on x's device (e.g. an adaptive p that
            changes without recapturing a graph).
        generator: torch.Generator on x's device that every random draw uses
            (None: the global RNG of that device).

    Returns:
        (B, C, H, W) augmented images; ``x`` itself when the policy is empty
        or p is the number 0.
    """
    names = parse_policy(policy)
    if not names or (not isinstance(p, torch.Tensor) and p == 0):
        return x
    if x.ndim != 4:
        raise ValueError(f"augment expects (B, C, H, W) images, got shape {tuple(x.shape)}")
    for name in names:
        apply = _coin(x, p, generator)      # (B, 1, 1, 1) bool
        if name == "color":
            y = _color(x, generator)
        elif name == "translation":
            y = _translation(x, generator)
        elif name == "cutout":
            y = _cutout(x, generator)
        elif name == "flip":
            y = x.flip(3)
        elif name == "rot90":
            y = _rot90(x, generator)
        elif name == "shift":
            y = _shift(x, generator)
        elif name == "rotate":
            y = _rotate(x, generator)
        else:  # scale
            y = _scale(x, generator)
        x = torch.where(apply, y, x)
    return x


def _coin(x: torch.Tensor, p: Union[float, torch.Tensor],
          gen: Optional[torch.Generator]) -> torch.Tensor:
    """Per-sample Bernoulli(p) mask, (B, 1, 1, 1) bool."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device)
    return u < p


def _color(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    r = torch.rand(3, x.shape[0], 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)
    y = x + (r[0] - 0.5)                                     # brightness
    m = y.mean(dim=1, keepdim=True)                          # (B, 1, H, W)
    y = (y - m) * (r[1] * 2) + m                             # saturation (no-op for 1 channel)
    m = y.mean(dim=(1, 2, 3), keepdim=True)                  # (B, 1, 1, 1)
    return (y - m) * (r[2] + 0.5) + m                        # contrast


def _translation(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    # out-of-image indices land on a zero row/column padded on each side
    return _integer_shift(F.pad(x, (1, 1, 1, 1)), x.shape, gen, lambda i, n: (i + 1).clamp(0, n + 1))


def _shift(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    return _integer_shift(x, x.shape, gen, _reflect)


def _integer_shift(src: torch.Tensor, shape: torch.Size, gen: Optional[torch.Generator],
                   index: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """Shift each image by up to 1/8 of each side: output pixel (i, j) reads ``src`` at
    ``index(i - ty, h)``, ``index(j - tx, w)``, which maps indices outside the image into ``src``."""
    b, _, h, w = shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen, device=src.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen, device=src.device)
    iy = index(torch.arange(h, device=src.device).view(1, h, 1) - ty, h)             # (B, H, 1)
    ix = index(torch.arange(w, device=src.device).view(1, 1, w) - tx, w)             # (B, 1, W)
    bi = torch.arange(b, device=src.device).view(b, 1, 1)                            # (B, 1, 1)
    return src.permute(0, 2, 3, 1)[bi, iy, ix].permute(0, 3, 1, 2)                   # (B, C, H, W)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected into [0, n) about the first and last pixel (one reflection, n >= 2)."""
    i = torch.where(i < 0, -i, i)
    return torch.where(i > n - 1, 2 * (n - 1) - i, i).clamp(0, n - 1)


def _cutout(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1, 1), generator=gen, device=x.device)
    i = torch.arange(h, device=x.device).view(1, 1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = ((i >= cy - ch // 2) & (i < cy - ch // 2 + ch)
              & (j >= cx - cw // 2) & (j < cx - cw // 2 + cw))                  # (B, 1, H, W)
    return torch.where(inside, torch.zeros((), dtype=x.dtype, device=x.device), x)


def _rot90(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    if x.shape[2] != x.shape[3]:
        raise ConfigError(f"rot90 needs square images, got {x.shape[2]}x{x.shape[3]}")
    k = torch.randint(0, 4, (x.shape[0], 1, 1, 1), generator=gen, device=x.device)
    y = x
    for q in (1, 2, 3):
        y = torch.where(k == q, torch.rot90(x, q, dims=(2, 3)), y)
    return y


def _scale(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    lo, hi = SCALE_RANGE
    s = lo + (hi - lo) * torch.rand(x.shape[0], generator=gen, device=x.device, dtype=torch.float32)
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = 1.0 / s                 # output coordinate u reads input u / s: zoom by s
    theta[:, 1, 1] = 1.0 / s
    return _warp(x, theta, "zeros")


def _rotate(x: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
    b, _, h, w = x.shape
    a = torch.rand(b, generator=gen, device=x.device, dtype=torch.float32)
    a = (a * 2 - 1) * (ROTATE_DEGREES * torch.pi / 180)
    cos, sin = a.cos(), a.sin()
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    # affine_grid works in [-1, 1] on both axes; the aspect ratio keeps the rotation rigid on non-square images
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
    theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
    return _warp(x, theta, "reflection")


def _warp(x: torch.Tensor, theta: torch.Tensor, padding: str) -> torch.Tensor:
    """Resample each image by its (2, 3) affine ``theta`` (bilinear; ``padding``: grid_sample's fill)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)          # (B, H, W, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=False)


# ---------------------------------------------------------------------------- adaptive probability (ADA)
class AdaptiveAugment:
    """The augmentation probability of ADA (Karras et al. 2020), kept in a device tensor.

    D's overfitting signal is ``r = E[sign(D(real))]``: near 0 while D cannot
    tell its training images from fakes, near 1 when it has learned them by
    heart. Every ``interval`` steps ``p`` moves by ``sign(r - target) *
    batch_size * interval / (kimg * 1000)`` (so it can cross [0, 1] in ``kimg``
    thousand real images) and is clipped to [0, 1]; ``p`` starts at 0. Both
    :meth:`observe` and :meth:`update` are a few in-place device ops with no
    host sync, so a step that calls them can be captured in a CUDA graph, and
    ``p`` is read by :func:`augment` as a tensor (no recapture when it moves).

    Args:
        target: the value of ``r`` that ``p`` steers towards (0.6 in the paper).
        interval: steps between updates (the update is its own step function).
        batch_size: real images per step.
        kimg: thousands of real images over which ``p`` can move from 0 to 1.
        device: where ``p`` and the running sums live.
    """

    def __init__(self, target: float, interval: int, batch_size: int, kimg: float,
                 device: Union[str, torch.device] = "cpu"):
        if not 0.0 < target < 1.0:
            raise ConfigError(f"the ADA target must lie in (0, 1), got {target}")
        if interval < 1 or batch_size < 1 or not kimg > 0:
            raise ConfigError(f"ADA needs interval >= 1, batch_size >= 1 and kimg > 0, got {interval}, "
                              f"{batch_size}, {kimg}")
        self.target = float(target)
        self.adjust = batch_size * interval / (kimg * 1000.0)
        self.p = torch.zeros((), device=device)
        self.signal = torch.zeros((), device=device)        # r of the last update (logged)
        self._sums = torch.zeros(2, device=device)          # sum of sign(D(real)), count since the last update

    def observe(self, real_logits: torch.Tensor) -> None:
        """Add a batch of D's logits on real images to the running signal (no host sync).

        Args:
            real_logits: (B,) logits (any float dtype; the graph is not kept).
        """
        s = real_logits.detach().float().sign()
        self._sums[0].add_(s.sum())
        self._sums[1].add_(s.numel())

    def update(self, all_reduce_sum_: Optional[Callable[[torch.Tensor], Any]] = None) -> None:
        """Move ``p`` towards the target from the signal since the last update, then restart the sums.

        Args:
            all_reduce_sum_: sums a tensor over every process in place (data-parallel runs), so that
                every process moves ``p`` alike; None for a single process.
        """
        if all_reduce_sum_ is not None:
            all_reduce_sum_(self._sums)
        r = self._sums[0] / self._sums[1].clamp(min=1.0)
        self.signal.copy_(r)
        self.p.add_(torch.sign(r - self.target) * self.adjust).clamp_(0.0, 1.0)
        self._sums.zero_()

    def state(self) -> torch.Tensor:
        """``p``, the last signal and the running sums in one CPU tensor (for checkpoints)."""
        return torch.cat([self.p.reshape(1), self.signal.reshape(1), self._sums]).detach().cpu()

    def load_state(self, state: torch.Tensor) -> None:
        """Restore what :meth:`state` returned, in place.

        Args:
            state: a (4,) tensor.
        """
        state = torch.as_tensor(state, dtype=torch.float32)
        if state.shape != (4,):
            raise ValueError(f"ADA state must have shape (4,), got {tuple(state.shape)}")
        self.p.copy_(state[0])
        self.signal.copy_(state[1])
        self._sums.copy_(state[2:])

    def load_states(self, states: Sequence[torch.Tensor], keep_sums: bool) -> None:
        """Restore from every process's :meth:`state` of a run saved with another number of processes.

        ``p`` and the signal are alike on every process of a run (each update sums the signal over all of
        them); the running sums since the last update are not. One process takes them all, so that the
        next update counts every saved logit once.

        Args:
            states: the saved processes' (4,) states, in rank order.
            keep_sums: this process takes the sums (rank 0); the others start from none.
        """
        self.load_state(states[0])
        sums = torch.stack([torch.as_tensor(s, dtype=torch.float32)[2:] for s in states]).sum(0)
        self._sums.copy_(sums if keep_sums else torch.zeros_like(sums))
