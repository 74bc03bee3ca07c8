"""The first task: a generator maps noise (and a class label) to an image or a 2-D point; one discriminator.

Everything a step needs lives on the device before the first step: the data
(uint8 images), the random streams of this process's shards of the batch (one
``torch.Generator`` each; one in a single process), the networks, optimisers,
EMA weights and the running sums. Under torchrun the trained networks run
through the engine's DDP wrappers where gradients must be averaged. :meth:`NoiseToImage.train_step`
(D update(s), then the G update on the same fake batch, then the EMA update)
and :meth:`NoiseToImage.reg_step` (lazy R1) follow the capture rules of
docs/architecture.md, so the engine can run them eagerly, compiled or as
CUDA-graph replays.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .. import losses
from ..augment import AdaptiveAugment
from ..augment import augment as apply_augment
from ..config import DIGITS_UPSCALES, RESOLUTIONS, TrainConfig
from ..data import GanData, load_data
from ..errors import ConfigError
from ..images import plot_points, save_image_grid
from ..kernels import use_impl
from ..metrics import check_metrics, evaluate
from ..models import build_models, r1_in_input_units, score_real_and_fake
from ..models.contract import check_networks, require_module
from ..sampling import default_class_names, generate, recompute_standing_stats
from ..stats import RunningStats
from .base import Step, Task

GRID_SEED_OFFSET = 7919       # fixed-noise seed for sample grids: cfg.seed + this
STANDING_STATS_BATCHES = 16   # batches used to recompute the EMA generator's BN statistics


class NoiseToImage(Task):
    """GAN training from noise to samples: DCGAN for images, MLPs for 2-D points, or your own networks.

    Args:
        cfg: the training configuration (validated; resolved here once the data is known).
        engine: the engine that runs the steps (its device is the training device).
        data: optional data instead of ``cfg.data`` (see :class:`fastgan.Trainer`).
        generator: optional generator network instead of the built-in one.
        discriminator: optional discriminator network instead of the built-in one.
    """

    progress_keys = {"d": "d_loss", "g": "g_loss"}
    network_labels = {"G": "generator", "D": "discriminator", "G_ema": "EMA generator"}

    def __init__(self, cfg: TrainConfig, engine, *, data: Any = None, generator: Optional[nn.Module] = None,
                 discriminator: Optional[nn.Module] = None) -> None:
        self.engine = engine
        self.device = device = engine.device
        require_module(generator, "generator")   # before any loading: generator="dcgan" is one line
        require_module(discriminator, "discriminator")
        # ---- data (on the training device, uint8 for images), then the config resolved for it
        if data is not None:
            cfg = dataclasses.replace(cfg, data="<custom>")
        spec = data if data is not None else cfg.data
        res = cfg.resolution if (data is not None or cfg.resolution) else cfg.resolved().resolution
        self.data: GanData = load_data(spec, resolution=res, device=device, seed=cfg.seed,
                                       digits_upscale=cfg.digits_upscale or DIGITS_UPSCALES[0])
        points = self.data.kind == "points"
        if not points and self.data.resolution not in RESOLUTIONS:
            raise ConfigError(f"image resolution {self.data.resolution} is not supported; "
                              f"choose one of {', '.join(map(str, RESOLUTIONS))}")
        if not points:
            cfg = dataclasses.replace(cfg, resolution=self.data.resolution)
        self.cfg = cfg = cfg.resolved(points=points)
        if cfg.conditional and self.data.num_classes == 0:
            raise ConfigError("conditional=True needs a labelled dataset (sub-folders per class, or labels)")
        if points and cfg.augment_list():
            raise ConfigError("image augmentations do not apply to 2-D point data; leave augment empty")
        self.num_classes = self.data.num_classes if cfg.conditional else 0
        self.vector_dim = self.data.vector_dim if cfg.vector_conditional else 0
        if cfg.vector_conditional and not self.vector_dim:
            raise ConfigError("vector_conditional=True needs a vector per image: an .npz holding images and "
                              "vectors, or the built-in digits_vectors")
        self._condition = "vectors" if self.vector_dim else "labels"   # what data.sample returns beside images
        if cfg.eval_every:  # unknown or inapplicable metrics are refused now, not at the first evaluation
            check_metrics(self.data, cfg.eval_metrics)

        # ---- networks (seeded), EMA copy, optimisers
        torch.manual_seed(cfg.seed)
        G, D = build_models(cfg, channels=self.data.channels, num_classes=self.num_classes, points=points,
                            point_scale=self.data.scale, vector_dim=self.vector_dim)
        self.G: nn.Module = (generator if generator is not None else G).to(device)
        self.D: nn.Module = (discriminator if discriminator is not None else D).to(device)
        if generator is not None or discriminator is not None:  # networks the user brought: their shapes, once
            check_networks(self.G, self.D, z_dim=int(getattr(self.G, "z_dim", cfg.z_dim)),
                           num_classes=self.num_classes, pack=cfg.pack, device=device, vector_dim=self.vector_dim,
                           sample_shape=(2,) if points else (self.data.channels, cfg.resolution, cfg.resolution))
        engine.prepare_networks(self.G, self.D)  # memory format, kernels (before the EMA copy)
        self.custom_generator = generator is not None
        self.z_dim = int(getattr(self.G, "z_dim", cfg.z_dim))
        self.G_ema: Optional[nn.Module] = None
        if cfg.ema_decay > 0:
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # the networks as the steps call them where gradients flow into them: DDP wrappers under torchrun
        self._G_train = engine.data_parallel(self.G)
        self._D_train = engine.data_parallel(self.D)
        # parameter lists walked once: the step freezes D and updates the EMA through them
        self._g_params = list(self.G.parameters())
        self._d_params = [p for p in self.D.parameters() if p.requires_grad]
        self._ema_params = [] if self.G_ema is None else list(self.G_ema.parameters())
        betas, scheduled = (cfg.beta1, cfg.beta2), bool(cfg.lr_decay)
        self.opt_g = engine.make_optimizer(self._g_params, lr=cfg.lr_g, betas=betas, scheduled=scheduled)
        self.opt_d = engine.make_optimizer(self.D.parameters(), lr=cfg.lr_d, betas=betas, scheduled=scheduled)
        self.scaler_g = engine.make_scaler()   # fp16 only, else None
        self.scaler_d = engine.make_scaler()

        # ---- step state on the device; every random draw comes from this process's shard streams
        self.streams = engine.batch_streams(cfg.seed, cfg.batch_size, cfg.pack)
        self.gen = self.streams.generators[0]
        groups = {"train": ("d_loss", "g_loss", "d_real", "d_fake"), "R1": ("r1",)}
        self.ada: Optional[AdaptiveAugment] = None
        if cfg.ada_target > 0:
            self.ada = AdaptiveAugment(cfg.ada_target, cfg.ada_interval, cfg.batch_size, cfg.ada_kimg, device)
            groups["ADA"] = ("augment_p", "ada_signal")
        self.stats = RunningStats(groups, device)
        self.ema_t = torch.zeros((), device=device)
        self._ema_stats_stale = True
        # forward + loss pieces: compiled in compile mode, no random draws inside
        self._generate = engine.compile(self._g_forward)
        self._d_loss_fn = engine.compile(self._d_forward_loss)
        self._g_loss_fn = engine.compile(self._g_forward_loss)

    # ================================================================== the steps
    def steps(self) -> list[Step]:
        """The training step, and the lazy R1 step every ``r1_every`` iterations when ``r1_gamma > 0``."""
        gens = self.streams.generators
        out = [Step("train", self.train_step, gens)]
        if self.cfg.r1_gamma > 0:
            out.append(Step("R1", self.reg_step, gens, every=self.cfg.r1_every))
        if self.ada is not None:
            out.append(Step("ADA", self.ada_step, (), every=self.cfg.ada_interval))
        return out

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        policy = self.cfg.augment_list()
        # ADA's p is a device tensor: the step reads its current value, captured or not
        p = self.ada.p if self.ada is not None else self.cfg.augment_p
        if self.ada is None and (not policy or p == 0):
            return x
        return self.streams.each(lambda part, g: apply_augment(part, policy, p, generator=g), x)

    def _real_batch(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        real, labels = self.streams.draw(lambda n, g: self.data.sample(n, g, self._condition))
        return self.engine.to_layout(real), labels

    def _noise(self) -> torch.Tensor:
        return self.streams.draw(lambda n, g: torch.randn(n, self.z_dim, device=self.device, generator=g))

    def _labels(self, y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The condition G and D take: the labels or vectors ``data.sample`` drew, or None when unconditional."""
        return y if (self.num_classes or self.vector_dim) else None

    def _g_forward(self, z: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        with self.engine.autocast():
            return self._G_train(z, y)

    def _d_forward_loss(self, real: torch.Tensor, fake: torch.Tensor, y: Optional[torch.Tensor]):
        with self.engine.autocast():
            d_real, d_fake = score_real_and_fake(self._D_train, real, fake, y)
        return losses.d_loss(self.cfg.loss, d_real, d_fake), d_real, d_fake

    def _g_forward_loss(self, fake: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        with self.engine.autocast():
            logits = self.D(fake, y)  # D itself, frozen: through DDP it would wait for gradients it never gets
        return losses.g_loss(self.cfg.loss, logits)

    def train_step(self) -> None:
        """One iteration: ``n_critic`` D updates, one G update, the EMA update.

        Reads and writes only device tensors (capturable in a CUDA graph).
        The fake batch of the last D update is reused for the G update.
        """
        cfg, engine = self.cfg, self.engine
        fake = y = d_real = d_fake = loss_d = None
        for i in range(cfg.n_critic):
            real, labels = self._real_batch()
            y = self._labels(labels)
            z = self._noise()
            with torch.set_grad_enabled(i == cfg.n_critic - 1):  # keep G's graph only for the reused fake
                fake = self._generate(z, y)
            # -- D update: real -> high, fake -> low (augment draws real's randoms first)
            loss_d, d_real, d_fake = self._d_loss_fn(self._augment(real), self._augment(fake.detach()), y)
            if self.ada is not None:
                self.ada.observe(d_real)
            if cfg.gp_weight > 0:
                loss_d = loss_d + cfg.gp_weight * self._gradient_penalty(real, fake.detach(), y)
            engine.update(loss_d, self.opt_d, self.scaler_d)
        # -- G update on the same fake batch, D frozen
        _set_requires_grad(self._d_params, False)
        try:
            loss_g = self._g_loss_fn(self._augment(fake), y)
            engine.update(loss_g, self.opt_g, self.scaler_g)
        finally:
            _set_requires_grad(self._d_params, True)
        self._update_ema()
        self.stats.add("train", loss_d, loss_g, d_real.detach().float().mean(), d_fake.detach().float().mean())

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        """WGAN-GP on this process's batch, the mean of its shards' penalties (one shard: the penalty itself).

        Through D itself: its gradient joins the DDP-averaged D loss's in one backward.
        """
        def penalty(r, f, labels, g):
            with use_impl("ref"):  # the penalty differentiates a gradient: reference ops support that
                return losses.gradient_penalty(self.D, r, f, labels, generator=g).reshape(1)

        return self.streams.each(penalty, real, fake, y).mean()

    def reg_step(self) -> None:
        """Lazy R1 regularisation of D on real data (run every ``r1_every`` steps).

        The penalty is scaled by ``r1_every`` so its average strength equals
        ``r1_gamma / 2 * E||grad D(x)||^2`` applied every step. For point data
        the gradient is taken in the MLP's unit-scale coordinates (x / scale),
        so ``r1_gamma`` means the same for every mixture.
        """
        cfg = self.cfg
        real, labels = self._real_batch()
        real = self._augment(real).detach().requires_grad_(True)
        with use_impl("ref"):  # R1 differentiates a gradient: reference ops support that
            # D itself, not its DDP wrapper: R1 never reaches D's last bias, and DDP would wait for that gradient
            logits = self.D(real, self._labels(labels))
            r1 = r1_in_input_units(self.D, losses.r1_penalty(logits, real))
        self.engine.update(r1 * (cfg.r1_gamma / 2 * cfg.r1_every), self.opt_d, None,  # fp32: no scaler
                           average_grads=True)
        self.stats.add("R1", r1)

    @torch.no_grad()
    def ada_step(self) -> None:
        """Move the adaptive augmentation probability by the overfitting signal since the last update (ADA)."""
        self.ada.update(self.engine.parallel.all_reduce_sum_)   # under torchrun: every rank's logits, one p
        self.stats.add("ADA", self.ada.p, self.ada.signal)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        # decay ramps up from 0.1 so early samples are not dominated by the random init
        t = self.ema_t
        beta = torch.clamp((1.0 + t) / (10.0 + t), max=self.cfg.ema_decay)
        torch._foreach_mul_(self._ema_params, beta)
        torch._foreach_add_(self._ema_params, torch._foreach_mul(self._g_params, 1.0 - beta))
        self.ema_t.add_(1.0)

    def train(self) -> None:
        """G and D in training mode (the EMA generator stays in eval mode)."""
        self.G.train()
        self.D.train()

    def after_iteration(self) -> None:
        """The EMA weights moved: their batch-norm statistics must be recomputed before use."""
        self._ema_stats_stale = True

    # ================================================================== checkpoints
    def networks(self) -> dict[str, Optional[nn.Module]]:
        """``G``, ``D`` and ``G_ema`` (``None`` without EMA)."""
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``opt_g`` and ``opt_d``."""
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def scalers(self) -> dict[str, Optional[torch.amp.GradScaler]]:
        """``scaler_g`` and ``scaler_d`` (``None`` unless fp16)."""
        return {"scaler_g": self.scaler_g, "scaler_d": self.scaler_d}

    def state_dict(self) -> dict[str, Any]:
        """The random streams' states (``gen_state``, then ``gen_state.1``, ... for more shards), the EMA counter,
        and ADA's probability and running signal."""
        gens = {f"gen_state.{i}" if i else "gen_state": g.get_state() for i, g in enumerate(self.streams.generators)}
        state = {**gens, "ema_t": self.ema_t.detach().cpu()}
        if self.ada is not None:
            state["ada"] = self.ada.state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the random streams, the EMA counter and ADA; the checkpoint holds the standing statistics.

        Args:
            state: the checkpoint's training state.
        """
        self.gen.set_state(state["gen_state"])
        for i, g in enumerate(self.streams.generators[1:], 1):  # absent when the shards per process changed:
            if f"gen_state.{i}" in state:                         # the loop then restarts the streams
                g.set_state(state[f"gen_state.{i}"])
        self.ema_t.copy_(state["ema_t"])
        if self.ada is not None:
            par = self.engine.parallel
            if par.saved_alike(state):
                self.ada.load_state(state["ada"])
            else:  # saved by another number of processes: rank 0 carries their running sums, as the loop's stats
                self.ada.load_states(par.saved_per_rank(state, "ada"), keep_sums=par.writes)
        self._ema_stats_stale = False

    def before_checkpoint(self) -> None:
        """Standing batch-norm statistics of the EMA generator, saved with its weights."""
        self._recompute_standing_stats()

    def checkpoint_metadata(self) -> dict[str, str]:
        """Generator class and constructor arguments, so :func:`fastgan.load_generator` can rebuild it,
        and the class names of a conditional generator (what samples and exports are labelled with)."""
        meta = {}
        if self.num_classes:
            meta["class_names"] = json.dumps(self.class_names)
        if self.custom_generator or not hasattr(self.G, "arch_config"):
            return meta
        return {**meta, "generator_class": type(self.G).__name__, "generator_arch": json.dumps(self.G.arch_config())}

    @property
    def class_names(self) -> list[str]:
        """Names of the classes a conditional generator takes (index = label); empty when unconditional."""
        if not self.num_classes:
            return []
        names = self.data.class_names
        return list(names) if names and len(names) == self.num_classes else default_class_names(self.num_classes)

    # ================================================================== samples and metrics
    def _recompute_standing_stats(self) -> None:
        """Give the EMA generator batch-norm statistics of its own weights (once per change of weights)."""
        if self.G_ema is None or not self._ema_stats_stale:
            return
        recompute_standing_stats(self.G_ema, z_dim=self.z_dim, batch_size=self.cfg.batch_size,
                                 num_classes=self.num_classes, seed=self.cfg.seed + GRID_SEED_OFFSET + 1,
                                 batches=STANDING_STATS_BATCHES, device=self.device,
                                 vectors=self.data.vectors if self.vector_dim else None)
        self._ema_stats_stale = False

    def ema_generator(self) -> nn.Module:
        """The generator used for samples: EMA weights when kept, in eval mode."""
        if self.G_ema is not None:
            self._recompute_standing_stats()
            return self.G_ema
        return self.G

    def sample(self, n: int, seed: Optional[int] = None, labels=None, batch_size: int = 256,
               vectors=None) -> torch.Tensor:
        """Generate ``n`` samples on the CPU: (n, C, H, W) in [-1, 1], or (n, 2) for 2-D data.

        Args:
            n: number of samples.
            seed: noise seed (default: the config's seed); the same seed gives the same samples.
            labels: class labels for a conditional model: an int or ``n`` ints
                (default: classes in turn).
            batch_size: samples generated per forward pass.
            vectors: for a vector-conditioned model (required): ``(n, V)``
                vectors, or one ``(V,)`` vector for every sample.
        """
        return generate(self.ema_generator(), n, z_dim=self.z_dim,
                        seed=self.cfg.seed if seed is None else seed, labels=labels,
                        num_classes=self.num_classes, device=self.device, batch_size=batch_size,
                        vectors=vectors, vector_dim=self.vector_dim)

    def save_samples(self, path: Path) -> None:
        """A fixed-noise grid of 64 images, or a scatter plot of 2,000 points over the mixture's centres.

        Args:
            path: the PNG file.
        """
        if self.data.kind == "points":
            plot_points(self.sample(2000, seed=self.cfg.seed + GRID_SEED_OFFSET), path, modes=self.data.modes)
        else:
            vectors = None
            if self.vector_dim:  # the vectors of 64 training images spread through the data
                vectors = self.data.vectors[torch.linspace(0, len(self.data) - 1, 64).long().to(self.device)]
            save_image_grid(self.sample(64, seed=self.cfg.seed + GRID_SEED_OFFSET, vectors=vectors), path, nrow=8)

    def evaluate(self) -> dict[str, Any]:
        """``cfg.eval_metrics`` of the EMA generator against the training data (:func:`fastgan.metrics.evaluate`)."""
        metrics = [m.strip() for m in self.cfg.eval_metrics.split(",") if m.strip()]
        return evaluate(self.ema_generator(), self.data, metrics, seed=self.cfg.seed, device=self.device)


def _set_requires_grad(params: list[torch.Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)
