"""CycleGAN (Zhu et al. 2017): unpaired translation with two ResNet generators and two PatchGAN discriminators.

Names: ``G_AB`` maps domain A to B, ``G_BA`` maps B to A; ``D_A`` judges
domain A images, ``D_B`` domain B images. (The reference calls them G_A, G_B,
D_B, D_A.) One training step, in the reference's order (the generators first,
against frozen discriminators, then the discriminators on the same generated
images, drawn through the history buffers):

    fake_b = G_AB(a),  rec_a = G_BA(fake_b),  fake_a = G_BA(b),  rec_b = G_AB(fake_a)
    L_G = loss(D_B(fake_b), real) + loss(D_A(fake_a), real)
          + lambda_cycle * (|rec_a - a|_1 + |rec_b - b|_1)
          + lambda_cycle * lambda_identity * (|G_AB(b) - b|_1 + |G_BA(a) - a|_1)
    L_D = 0.5 * (loss(D_B(b), real) + loss(D_B(pool_b(fake_b)), fake))
        + 0.5 * (loss(D_A(a), real) + loss(D_A(pool_a(fake_a)), fake))

Instance norm makes every network per-sample, so the six generator passes run
as three (G_AB on [a, b], G_BA on [b, a, fake_b], G_AB on fake_a) and each D
scores real and fake in one call: the same maths with fewer, larger kernels.
Both history buffers (:class:`fastgan.image_history.ImageHistory`) live on the
device, draw from the step's generator and are saved in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import losses
from ..errors import ConfigError
from ..image_history import ImageHistory
from ..metrics.translation import style_fd
from ..models import PatchDiscriminator, ResnetGenerator
from ..translation_data import to_float
from .base import Step
from .translation import TranslationTask, set_requires_grad


class CycleGAN(TranslationTask):
    """CycleGAN on unpaired data (see the module docstring); networks ``G_AB``, ``G_BA``, ``D_A``, ``D_B``.

    Args:
        cfg: a :class:`~fastgan.tasks.translation.TranslationConfig` with ``task="cyclegan"``.
        engine: the engine that runs the step.
        data: optional unpaired :class:`~fastgan.translation_data.TranslationData`.
    """

    task_name = "cyclegan"
    paired = False
    stat_names = ("d_loss", "g_loss", "g_adv", "cycle", "identity", "d_real", "d_fake")
    progress_keys = {"d": "d_loss", "adv": "g_adv", "cyc": "cycle"}
    network_labels = {"G_AB": "A->B generator", "G_BA": "B->A generator", "D_A": "domain A discriminator",
                      "D_B": "domain B discriminator"}

    def build(self) -> None:
        """Two ResNet generators, two PatchGAN discriminators, one optimiser each side, two history buffers."""
        cfg, d, dev = self.cfg, self.data, self.device
        if cfg.lambda_identity > 0 and d.channels_a != d.channels_b:   # the identity loss feeds B to G_AB
            raise ConfigError(f"the identity loss needs domains with equal channels (A has {d.channels_a}, B has "
                              f"{d.channels_b}); set lambda_identity 0")
        self.G_AB = ResnetGenerator(d.channels_a, d.channels_b, cfg.g_width, cfg.g_blocks).to(dev)
        self.G_BA = ResnetGenerator(d.channels_b, d.channels_a, cfg.g_width, cfg.g_blocks).to(dev)
        self.D_A = PatchDiscriminator(d.channels_a, cfg.d_width, cfg.d_layers).to(dev)
        self.D_B = PatchDiscriminator(d.channels_b, cfg.d_width, cfg.d_layers).to(dev)
        self._d_params = [*self.D_A.parameters(), *self.D_B.parameters()]
        self.make_optimizers([*self.G_AB.parameters(), *self.G_BA.parameters()], self._d_params)
        s = cfg.resolution
        self.pool_a = ImageHistory(cfg.pool_size, (d.channels_a, s, s), dev)
        self.pool_b = ImageHistory(cfg.pool_size, (d.channels_b, s, s), dev)
        self._g_loss_fn = self.engine.compile(self._g_forward_loss)
        self._d_loss_fn = self.engine.compile(self._d_forward_loss)

    def networks(self) -> dict[str, Any]:
        """``G_AB``, ``G_BA``, ``D_A``, ``D_B``."""
        return {"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}

    def translators(self) -> dict[str, Any]:
        """``{"AtoB": G_AB, "BtoA": G_BA}``."""
        return {"AtoB": self.G_AB, "BtoA": self.G_BA}

    def generator_keys(self) -> dict[str, str]:
        """``{"AtoB": "G_AB", "BtoA": "G_BA"}``."""
        return {"AtoB": "G_AB", "BtoA": "G_BA"}

    # ================================================================== the step
    def steps(self) -> list[Step]:
        """The one training step."""
        return [Step("train", self.train_step, (self.gen,))]

    def _g_forward_loss(self, a: torch.Tensor, b: torch.Tensor):
        cfg, n = self.cfg, a.shape[0]
        with self.engine.autocast():
            fake_b, idt_b = self.G_AB(torch.cat([a, b])).split(n)                 # G_AB(a), G_AB(b)
            fake_a, idt_a, rec_a = self.G_BA(torch.cat([b, a, fake_b])).split(n)  # G_BA(b), G_BA(a), G_BA(G_AB(a))
            rec_b = self.G_AB(fake_a)                                             # G_AB(G_BA(b))
            adv = losses.g_loss(cfg.loss, self.D_B(fake_b)) + losses.g_loss(cfg.loss, self.D_A(fake_a))
        cycle = l1(rec_a, a) + l1(rec_b, b)
        identity = l1(idt_b, b) + l1(idt_a, a) if cfg.lambda_identity > 0 else adv.new_zeros(())
        loss = adv + cfg.lambda_cycle * (cycle + cfg.lambda_identity * identity)
        return loss, adv, cycle, identity, fake_a, fake_b

    def _d_forward_loss(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor):
        kind = self.cfg.loss
        with self.engine.autocast():
            real_a, judged_a = self.D_A(torch.cat([a, fake_a])).chunk(2)
            real_b, judged_b = self.D_B(torch.cat([b, fake_b])).chunk(2)
        loss = 0.5 * (losses.d_loss(kind, real_b, judged_b) + losses.d_loss(kind, real_a, judged_a))
        d_real = 0.5 * (real_a.detach().float().mean() + real_b.detach().float().mean())
        d_fake = 0.5 * (judged_a.detach().float().mean() + judged_b.detach().float().mean())
        return loss, d_real, d_fake

    def train_step(self) -> None:
        """One iteration: both generators against frozen Ds, then both Ds on history-buffered fakes (capturable)."""
        cfg, engine = self.cfg, self.engine
        a, b = self.data.sample(cfg.batch_size, self.gen)
        a, b = engine.to_layout(a), engine.to_layout(b)
        set_requires_grad(self._d_params, False)
        try:
            loss_g, adv, cycle, identity, fake_a, fake_b = self._g_loss_fn(a, b)
            engine.update(loss_g, self.opt_g, self.scaler_g)
        finally:
            set_requires_grad(self._d_params, True)
        fake_a = engine.to_layout(self.pool_a.query(fake_a.detach(), self.gen))
        fake_b = engine.to_layout(self.pool_b.query(fake_b.detach(), self.gen))
        loss_d, d_real, d_fake = self._d_loss_fn(a, b, fake_a, fake_b)
        engine.update(loss_d, self.opt_d, self.scaler_d)
        self.stats.add("train", loss_d, loss_g, adv, cycle, identity, d_real, d_fake)

    # ================================================================== checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The step generator and both history buffers."""
        return {**super().state_dict(), "pool_a": self.pool_a.state_dict(), "pool_b": self.pool_b.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step generator and both history buffers (in place).

        Args:
            state: the checkpoint's training state.
        """
        super().load_state_dict(state)
        self.pool_a.load_state_dict(state["pool_a"])
        self.pool_b.load_state_dict(state["pool_b"])

    # ================================================================== outputs
    def sample_columns(self) -> list[torch.Tensor]:
        """A, G_AB(A), G_BA(G_AB(A)), then B, G_BA(B), G_AB(G_BA(B))."""
        a, b = self._grid_inputs["A"], self._grid_inputs["B"]
        fake_b, fake_a = self.translate(a, "AtoB"), self.translate(b, "BtoA")
        return [a, fake_b, self.translate(fake_b, "BtoA"), b, fake_a, self.translate(fake_a, "AtoB")]

    def evaluate(self) -> dict[str, Any]:
        """Cycle error and style Fréchet distance, both directions, on the held-out images.

        ``cycle_a``: mean |G_BA(G_AB(a)) - a| on the [0, 1] scale (``cycle_b`` likewise);
        ``fd_ab``: style FD (:func:`fastgan.metrics.translation.style_fd`) of G_AB(held-out A)
        to every B image (the target domain); ``fd_ab_identity``: the same for held-out A
        untranslated; ``fd_ba`` / ``fd_ba_identity`` the other way round.
        """
        d = self.data
        held_out = min(len(d.test_a), len(d.test_b)) >= 2
        a = to_float(d.test_a if held_out else d.a.cpu())
        b = to_float(d.test_b if held_out else d.b.cpu())
        every_a, every_b = to_float(torch.cat([d.a.cpu(), d.test_a])), to_float(torch.cat([d.b.cpu(), d.test_b]))
        fake_b, fake_a = self.translate(a, "AtoB"), self.translate(b, "BtoA")
        out: dict[str, Any] = {"split": "held-out" if held_out else "train", "n_a": len(a), "n_b": len(b),
                               "cycle_a": float((self.translate(fake_b, "BtoA") - a).abs().mean() / 2),
                               "cycle_b": float((self.translate(fake_a, "AtoB") - b).abs().mean() / 2)}
        if a.shape[1] == b.shape[1]:   # the style space needs the same channels on both sides
            out.update(fd_ab=style_fd(fake_b, every_b), fd_ab_identity=style_fd(a, every_b),
                       fd_ba=style_fd(fake_a, every_a), fd_ba_identity=style_fd(b, every_a))
        return out


def l1(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference in float32.

    Args:
        x: the prediction.
        target: the target.
    """
    return (x.float() - target.float()).abs().mean()

