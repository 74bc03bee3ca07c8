"""pix2pix (Isola et al. 2017): paired translation A -> B with a U-Net G and a PatchGAN D that sees the input.

One training step, as the reference trains it (one forward of G, D updated on
the detached output, then G updated against the frozen D on the same output):

    fake  = G(a, noise)                                 noise: the dropout masks' uniforms
    L_D   = 0.5 * (loss(D(a|b), real) + loss(D(a|fake), fake))
    L_G   = loss(D(a|fake), real) + lambda_l1 * |fake - b|_1

``a|b`` is the channel concatenation. D has instance norm only, so every
logit depends on its own image and the real and fake pairs are scored in one
call. Every random number (indices, flips, dropout) comes from the task's
``torch.Generator``; the step follows the capture rules of docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import losses
from ..errors import ConfigError
from ..metrics.translation import l1_and_psnr, style_fd
from ..models import PatchDiscriminator, UNetGenerator
from ..translation_data import to_float
from .base import Step
from .translation import TranslationTask, set_requires_grad

MAX_UNET_DEPTH = 8


def identity_baseline(a: torch.Tensor, channels: int) -> torch.Tensor:
    """The input returned unchanged, in the output's channels (grey repeated, colour averaged).

    Args:
        a: (N, C, H, W) inputs in [-1, 1].
        channels: output channels.
    """
    if a.shape[1] == channels:
        return a
    return a.expand(-1, channels, -1, -1) if a.shape[1] == 1 else a.mean(1, keepdim=True)


class Pix2Pix(TranslationTask):
    """pix2pix on paired data (see the module docstring); networks ``G`` (U-Net) and ``D`` (PatchGAN).

    Args:
        cfg: a :class:`~fastgan.tasks.translation.TranslationConfig` with ``task="pix2pix"``.
        engine: the engine that runs the step.
        data: optional paired :class:`~fastgan.translation_data.TranslationData`.
    """

    task_name = "pix2pix"
    paired = True
    stat_names = ("d_loss", "g_loss", "g_adv", "l1", "d_real", "d_fake")
    progress_keys = {"d": "d_loss", "adv": "g_adv", "l1": "l1"}
    network_labels = {"G": "generator", "D": "discriminator"}

    def build(self) -> None:
        """U-Net G (in: A's channels, out: B's), PatchGAN D on A|B, their optimisers; compiled pieces."""
        cfg, d = self.cfg, self.data
        # levels: as many halvings as the resolution allows, up to 8 (pix2pix's unet_256): a 1x1 bottleneck at
        # powers of two, e.g. 3x3 at 48 px
        depth = min(MAX_UNET_DEPTH, (cfg.resolution & -cfg.resolution).bit_length() - 1)
        if depth < 2:
            raise ConfigError(f"resolution {cfg.resolution} must be a multiple of 4 for the U-Net")
        self.G = UNetGenerator(d.channels_a, d.channels_b, cfg.resolution, cfg.g_width, depth=depth,
                               dropout=cfg.dropout).to(self.device)
        self.D = PatchDiscriminator(d.channels_a + d.channels_b, cfg.d_width, cfg.d_layers).to(self.device)
        self._d_params = list(self.D.parameters())
        self.make_optimizers(self.G.parameters(), self.D.parameters())
        self._noise_shapes = self.G.noise_shapes(cfg.batch_size, cfg.resolution, cfg.resolution)
        # forward + loss pieces: compiled in compile mode; no random draws inside
        self._generate = self.engine.compile(self._g_forward)
        self._d_loss_fn = self.engine.compile(self._d_forward_loss)
        self._g_loss_fn = self.engine.compile(self._g_forward_loss)

    def networks(self) -> dict[str, Any]:
        """``G`` and ``D``."""
        return {"G": self.G, "D": self.D}

    def translators(self) -> dict[str, Any]:
        """``{"AtoB": G}``."""
        return {"AtoB": self.G}

    def generator_keys(self) -> dict[str, str]:
        """``{"AtoB": "G"}``."""
        return {"AtoB": "G"}

    # ================================================================== the step
    def steps(self) -> list[Step]:
        """The one training step."""
        return [Step("train", self.train_step, (self.gen,))]

    def _g_forward(self, a: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        with self.engine.autocast():
            return self.G(a, noise)

    def _d_forward_loss(self, a: torch.Tensor, b: torch.Tensor, fake: torch.Tensor):
        with self.engine.autocast():
            both = self.D(torch.cat([torch.cat([a, b], 1), torch.cat([a, fake], 1)]))   # (2B, 1, h, w)
        d_real, d_fake = both.chunk(2)
        return 0.5 * losses.d_loss(self.cfg.loss, d_real, d_fake), d_real, d_fake

    def _g_forward_loss(self, a: torch.Tensor, b: torch.Tensor, fake: torch.Tensor):
        with self.engine.autocast():
            logits = self.D(torch.cat([a, fake], 1))
        adv = losses.g_loss(self.cfg.loss, logits)
        l1 = (fake.float() - b).abs().mean()
        return adv + self.cfg.lambda_l1 * l1, adv, l1

    def train_step(self) -> None:
        """One iteration: G forward, D update on the detached output, G update with D frozen (capturable)."""
        cfg, engine = self.cfg, self.engine
        a, b = self.data.sample(cfg.batch_size, self.gen)
        a, b = engine.to_layout(a), engine.to_layout(b)
        noise = [engine.to_layout(torch.rand(s, generator=self.gen, device=self.device)) for s in self._noise_shapes]
        fake = self._generate(a, noise)
        loss_d, d_real, d_fake = self._d_loss_fn(a, b, fake.detach())
        engine.update(loss_d, self.opt_d, self.scaler_d)
        set_requires_grad(self._d_params, False)
        try:
            loss_g, adv, l1 = self._g_loss_fn(a, b, fake)
            engine.update(loss_g, self.opt_g, self.scaler_g)
        finally:
            set_requires_grad(self._d_params, True)
        self.stats.add("train", loss_d, loss_g, adv, l1, d_real.detach().float().mean(),
                       d_fake.detach().float().mean())

    # ================================================================== outputs
    def sample_columns(self) -> list[torch.Tensor]:
        """Input, output, target."""
        a, b = self._grid_inputs["A"], self._grid_inputs["B"]
        return [a, self.translate(a), b]

    def evaluate(self) -> dict[str, Any]:
        """L1, PSNR and style FD of G (eval mode) on the held-out pairs, beside the identity baseline.

        L1 and PSNR on the [0, 1] pixel scale (:func:`fastgan.metrics.translation.l1_and_psnr`);
        ``fd``: the style Fréchet distance of the outputs to the targets
        (:func:`fastgan.metrics.translation.style_fd`: do they have the targets' colours
        and textures, whatever their pixel error). Without held-out pairs the training
        pairs are used (``split`` says which).
        """
        d = self.data
        held_out = len(d.test_a) > 1
        a = to_float(d.test_a if held_out else d.a.cpu())
        b = to_float(d.test_b if held_out else d.b.cpu())
        return {"split": "held-out" if held_out else "train", "n": len(a), **pair_metrics(self.translate(a), b),
                **{f"identity_{k}": v for k, v in pair_metrics(identity_baseline(a, b.shape[1]), b).items()}}


def pair_metrics(out: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """``l1``, ``psnr`` and ``fd`` (style Fréchet distance) of outputs against their targets.

    Args:
        out: (N, C, H, W) outputs in [-1, 1], N >= 2.
        target: (N, C, H, W) targets in [-1, 1].
    """
    l1, psnr = l1_and_psnr(out, target)
    return {"l1": l1, "psnr": psnr, "fd": style_fd(out, target)}
