"""The Trainer: data on the device, one capturable step function, and the loop around it.

Layout of the work:

- ``__init__`` puts everything a step needs on the device: the dataset (uint8),
  one ``torch.Generator`` for every random draw, the networks, optimisers, EMA
  weights and a small buffer of running loss sums.
- :meth:`Trainer.train_step` reads and writes only those tensors: D update(s),
  then the G update reusing the last fake batch, then the EMA update. No
  ``.item()``, no Python branching on tensor values, no data-dependent shapes,
  so the compiled and CUDA-graph modes can wrap it unchanged.
- :meth:`Trainer.reg_step` is the lazy R1 regularisation, a separate step run
  every ``r1_every`` steps so each step function has a fixed shape of work.
- :mod:`fastgan.engine` runs those steps as ``cfg.mode`` asks: eager, with the
  forward + loss pieces compiled, or captured whole in CUDA graphs; it also
  owns mixed precision, memory format and the optimisers' flags.
- :meth:`Trainer.fit` runs the loop; logging, sample grids, evaluation and
  checkpoints happen between steps, reading the loss buffer once per log line.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from . import losses
from .augment import augment as apply_augment
from .checkpoint import (clean_stale_temporaries, latest_checkpoint, load_module_weights, read_models, read_state,
                         save_checkpoint)
from .config import RESOLUTIONS, TrainConfig
from .data import GanData, load_data
from .engine import Engine, EngineOptions, resolve_device, resolve_plan
from .errors import CheckpointError, ConfigError, TrainingError
from .files import atomic_write
from .images import plot_points, save_image_grid
from .kernels import use_impl
from .metrics import check_metrics, evaluate, plot_history
from .models import build_models, r1_in_input_units, score_real_and_fake
from .sampling import generate, recompute_standing_stats
from .stats import RunningStats
from .version import __version__

# The running sums each step function adds (one device buffer, one host read per log line).
STAT_GROUPS = {"train": ("d_loss", "g_loss", "d_real", "d_fake"), "R1": ("r1",)}
_GRID_SEED_OFFSET = 7919      # fixed-noise seed for sample grids: cfg.seed + this
_STANDING_STATS_BATCHES = 16  # batches used to recompute the EMA generator's BN statistics


class Trainer:
    """Trains a GAN as a :class:`TrainConfig` describes.

    Building a Trainer loads the data, builds the networks and optimisers and,
    when ``cfg.out`` already holds a checkpoint, restores it (so rerunning the
    same command continues a run); nothing trains until :meth:`fit`.

    Args:
        cfg: the training configuration (``None``: all defaults).
        data: optional data instead of ``cfg.data``: a uint8 tensor (N, C, H, W),
            a float tensor in [-1, 1], or a torch Dataset yielding such images
            (or ``(image, label)`` pairs).
        generator: optional generator network instead of the built-in one; it
            must map ``(z, labels)`` to samples and may define ``z_dim``.
        discriminator: optional discriminator instead of the built-in one; it
            must map ``(x, labels)`` to one logit per sample.
        resume: restore the latest checkpoint in ``cfg.out`` when there is one.
        engine_options: step-engine settings outside the config (compile
            backend, channel padding, graph warm-up; see
            :class:`fastgan.engine.EngineOptions`).
    """

    def __init__(self, cfg: Optional[TrainConfig] = None, *, data: Any = None,
                 generator: Optional[nn.Module] = None, discriminator: Optional[nn.Module] = None,
                 resume: bool = True, engine_options: Optional[EngineOptions] = None) -> None:
        cfg = (cfg or TrainConfig()).validate()
        self.device = resolve_device(cfg.device)
        # how steps execute; refuses (ConfigError) what this device cannot run, before any loading
        self.engine = Engine(resolve_plan(cfg, self.device, engine_options), self.device)
        self.run_dir = Path(cfg.out)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"out {str(self.run_dir)!r} exists and is not a folder")

        # ---- data (on the training device, uint8 for images)
        if data is not None:
            cfg = dataclasses.replace(cfg, data="<custom>")
        spec = data if data is not None else cfg.data
        res = cfg.resolution if (data is not None or cfg.resolution) else cfg.resolved().resolution
        self.data: GanData = load_data(spec, resolution=res, device=self.device, seed=cfg.seed)
        points = self.data.kind == "points"
        if not points and self.data.resolution not in RESOLUTIONS:
            raise ConfigError(f"image resolution {self.data.resolution} is not supported; "
                              f"choose one of {', '.join(map(str, RESOLUTIONS))}")
        if not points:
            cfg = dataclasses.replace(cfg, resolution=self.data.resolution)
        self.cfg = cfg.resolved(points=points)
        if self.cfg.conditional and self.data.num_classes == 0:
            raise ConfigError("conditional=True needs a labelled dataset (sub-folders per class, or labels)")
        if points and self.cfg.augment_list():
            raise ConfigError("image augmentations do not apply to 2-D point data; leave augment empty")
        self.num_classes = self.data.num_classes if self.cfg.conditional else 0
        if self.cfg.eval_every:
            self._check_eval_metrics()

        # ---- networks (seeded), EMA copy, optimisers
        torch.manual_seed(self.cfg.seed)
        G, D = build_models(self.cfg, channels=self.data.channels, num_classes=self.num_classes, points=points,
                            point_scale=self.data.scale)
        self.G: nn.Module = (generator if generator is not None else G).to(self.device)
        self.D: nn.Module = (discriminator if discriminator is not None else D).to(self.device)
        self.engine.prepare_networks(self.G, self.D)  # memory format, kernels (before the EMA copy)
        self.custom_generator = generator is not None
        self.z_dim = int(getattr(self.G, "z_dim", self.cfg.z_dim))
        self.G_ema: Optional[nn.Module] = None
        if self.cfg.ema_decay > 0:
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (self.cfg.beta1, self.cfg.beta2)
        scheduled = bool(self.cfg.lr_decay)
        self.schedule_steps = self.cfg.steps  # the lr schedule spans the configured run, whatever fit() is asked
        self._lr_factor_set: Optional[float] = 1.0  # the factor the optimisers hold (None: unknown, set it)
        # parameter lists walked once: the step freezes D and updates the EMA through them
        self._g_params = list(self.G.parameters())
        self._d_params = [p for p in self.D.parameters() if p.requires_grad]
        self._ema_params = [] if self.G_ema is None else list(self.G_ema.parameters())
        self.opt_g = self.engine.make_optimizer(self._g_params, lr=self.cfg.lr_g, betas=betas, scheduled=scheduled)
        self.opt_d = self.engine.make_optimizer(self.D.parameters(), lr=self.cfg.lr_d, betas=betas, scheduled=scheduled)
        self.scaler_g = self.engine.make_scaler()   # fp16 only, else None
        self.scaler_d = self.engine.make_scaler()

        # ---- step state on the device
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.cfg.seed)
        self.stats = RunningStats(STAT_GROUPS, self.device)
        self.ema_t = torch.zeros((), device=self.device)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._ema_stats_stale = True
        self._stop_requested = False
        # forward + loss pieces (compiled in compile mode) and the step callables (graph-captured in graph mode)
        self._generate = self.engine.compile(self._g_forward)
        self._d_loss_fn = self.engine.compile(self._d_forward_loss)
        self._g_loss_fn = self.engine.compile(self._g_forward_loss)
        self._step_fn = self.engine.wrap_step(self.train_step, [self.gen], "train")
        self._reg_fn = self.engine.wrap_step(self.reg_step, [self.gen], "R1")

        if resume and latest_checkpoint(self.run_dir) is not None:
            self.load_checkpoint(latest_checkpoint(self.run_dir))

    # ================================================================== the step
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        policy = self.cfg.augment_list()
        if not policy or self.cfg.augment_p == 0:
            return x
        return apply_augment(x, policy, self.cfg.augment_p, generator=self.gen)

    def _labels(self, labels: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return labels if self.num_classes else None

    # Forward + loss pieces: no random draws inside (generators stay out of compiled code).
    def _g_forward(self, z: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        with self.engine.autocast():
            return self.G(z, y)

    def _d_forward_loss(self, real: torch.Tensor, fake: torch.Tensor, y: Optional[torch.Tensor]):
        with self.engine.autocast():
            d_real, d_fake = score_real_and_fake(self.D, real, fake, y)
        return losses.d_loss(self.cfg.loss, d_real, d_fake), d_real, d_fake

    def _g_forward_loss(self, fake: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        with self.engine.autocast():
            logits = self.D(fake, y)
        return losses.g_loss(self.cfg.loss, logits)

    def train_step(self) -> None:
        """One iteration: ``n_critic`` D updates, one G update, the EMA update.

        Reads and writes only device tensors (capturable in a CUDA graph).
        The fake batch of the last D update is reused for the G update.
        """
        cfg, B = self.cfg, self.cfg.batch_size
        fake = y = d_real = d_fake = loss_d = None
        for i in range(cfg.n_critic):
            real, labels = self.data.sample(B, self.gen)
            real = self.engine.to_layout(real)
            y = self._labels(labels)
            z = torch.randn(B, self.z_dim, device=self.device, generator=self.gen)
            with torch.set_grad_enabled(i == cfg.n_critic - 1):  # keep G's graph only for the reused fake
                fake = self._generate(z, y)
            # -- D update: real -> high, fake -> low (augment draws real's randoms first)
            loss_d, d_real, d_fake = self._d_loss_fn(self._augment(real), self._augment(fake.detach()), y)
            if cfg.gp_weight > 0:
                with use_impl("ref"):  # the penalty differentiates a gradient: reference ops support that
                    gp = losses.gradient_penalty(self.D, real, fake.detach(), y, generator=self.gen)
                loss_d = loss_d + cfg.gp_weight * gp
            self.engine.update(loss_d, self.opt_d, self.scaler_d)
        # -- G update on the same fake batch, D frozen
        _set_requires_grad(self._d_params, False)
        try:
            loss_g = self._g_loss_fn(self._augment(fake), y)
            self.engine.update(loss_g, self.opt_g, self.scaler_g)
        finally:
            _set_requires_grad(self._d_params, True)
        self._update_ema()
        self.stats.add("train", loss_d, loss_g, d_real.detach().float().mean(), d_fake.detach().float().mean())

    def reg_step(self) -> None:
        """Lazy R1 regularisation of D on real data (run every ``r1_every`` steps).

        The penalty is scaled by ``r1_every`` so its average strength equals
        ``r1_gamma / 2 * E||grad D(x)||^2`` applied every step. For point data
        the gradient is taken in the MLP's unit-scale coordinates (x / scale),
        so ``r1_gamma`` means the same for every mixture.
        """
        cfg = self.cfg
        real, labels = self.data.sample(cfg.batch_size, self.gen)
        real = self._augment(self.engine.to_layout(real)).detach().requires_grad_(True)
        with use_impl("ref"):  # R1 differentiates a gradient: reference ops support that
            logits = self.D(real, self._labels(labels))
            r1 = r1_in_input_units(self.D, losses.r1_penalty(logits, real))
        self.engine.update(r1 * (cfg.r1_gamma / 2 * cfg.r1_every), self.opt_d, None)  # fp32: no scaler
        self.stats.add("R1", r1)

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
        self._ema_stats_stale = True

    # ================================================================== the loop
    def fit(self, steps: Optional[int] = None) -> "Trainer":
        """Train until ``steps`` generator updates in total (default: ``cfg.steps``).

        Writes into ``cfg.out``: ``config.json``, ``metrics.jsonl``, sample grids
        in ``samples/`` and checkpoints in ``checkpoints/``. Ctrl-C stops after
        the current step and saves a checkpoint (a second Ctrl-C aborts).

        The learning-rate decay (``lr_decay``) spans the ``steps`` the Trainer
        was built with, so stopping early with ``fit(n)`` and resuming later
        follows the same schedule as one uninterrupted run; beyond that run the
        rates stay at ``lr_decay_to`` times their value.

        Args:
            steps: total number of steps to reach (a resumed run continues from its step).

        Returns:
            self, for chaining.
        """
        total = self.cfg.steps if steps is None else int(steps)
        if total < 0:
            raise ConfigError(f"steps must be non-negative, got {total}")
        if steps is not None:
            self.cfg = dataclasses.replace(self.cfg, steps=total)
        self._prepare_run_dir()
        cfg = self.cfg
        start = self.step
        if start >= total:
            self._write_outputs(final=True)
            return self
        self.G.train()
        self.D.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, disable=not cfg.progress,
                   desc=f"fastgan {Path(cfg.out).name}")
        window_t0, window_step = time.perf_counter(), start
        with self._graceful_interrupt():
            while self.step < total and not self._stop_requested:
                self._iteration()
                bar.update(1)
                last = self.step == total or self._stop_requested
                if self.step % cfg.log_every == 0 or last:
                    rec = self._log(window_t0, window_step)
                    if not all(math.isfinite(rec[k]) for k in self.stats.names if k in rec):  # before any
                        # sample or checkpoint of this step
                        bar.close()
                        raise TrainingError(f"losses became non-finite at step {self.step}; the last checkpoint "
                                            "is kept; try a lower learning rate or --amp none")
                    bar.set_postfix(d=f"{rec['d_loss']:.3f}", g=f"{rec['g_loss']:.3f}", refresh=False)
                    window_t0, window_step = time.perf_counter(), self.step
                if cfg.eval_every and self.step % cfg.eval_every == 0 and not last:
                    self._evaluate()
                if cfg.sample_every and self.step % cfg.sample_every == 0 and not last:
                    self.save_samples()
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not last:
                    self.save_checkpoint()
        bar.close()
        if self._stop_requested:
            warnings.warn(f"training interrupted at step {self.step}; checkpoint saved, rerun to continue")
        if cfg.eval_every:
            self._evaluate()
        self._write_outputs(final=True)
        return self

    def _iteration(self) -> None:
        """One training iteration as the engine runs it (plus R1 when due); ``step`` += 1."""
        if self.cfg.lr_decay:  # the schedule follows the step, so a resumed run picks it up where it was
            f = self.cfg.lr_factor(self.step, self.schedule_steps)
            if f != self._lr_factor_set:  # nothing to do (no device write) while the rate is flat
                self.engine.set_lr(self.opt_g, self.cfg.lr_g * f)
                self.engine.set_lr(self.opt_d, self.cfg.lr_d * f)
                self._lr_factor_set = f
        self._step_fn()
        if self.cfg.r1_gamma > 0 and (self.step + 1) % self.cfg.r1_every == 0:
            self._reg_fn()
        self.step += 1
        # Python state lives here, not in the step: a CUDA-graph replay runs no Python
        self._ema_stats_stale = True

    def run_steps(self, n: int = 1) -> None:
        """Run ``n`` training iterations as :meth:`fit` does, without logging, samples or checkpoints.

        The iterations are only queued on a GPU (no synchronisation); losses
        accumulate in ``stats``. For benchmarks and custom loops.

        Args:
            n: iterations to run.
        """
        self.G.train()
        self.D.train()
        for _ in range(int(n)):
            self._iteration()

    @contextlib.contextmanager
    def _graceful_interrupt(self):
        """First Ctrl-C: finish the current step, checkpoint, stop. Second: abort."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(self.run_dir)
        atomic_write(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")

    def _write_outputs(self, final: bool) -> None:
        self.save_samples()
        self.save_checkpoint()
        if final:
            self._plot_history()

    def _log(self, t0: float, step0: int) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        steps = max(self.step - step0, 1)
        rec: dict[str, Any] = {"step": self.step, **self.stats.read()}  # the one host sync per log line
        rec["step_time_ms"] = 1000.0 * dt / steps
        rec["images_per_s"] = self.cfg.batch_size * steps / dt if dt > 0 else float("nan")
        rec["time"] = time.time()
        self.history.append(rec)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec

    def _check_eval_metrics(self) -> None:
        """Refuse unknown or inapplicable ``eval_metrics`` before training, not at the first evaluation."""
        check_metrics(self.data, self.cfg.eval_metrics)

    def _evaluate(self) -> dict[str, Any]:
        metrics = [m.strip() for m in self.cfg.eval_metrics.split(",") if m.strip()]
        result = evaluate(self.ema_generator(), self.data, metrics, seed=self.cfg.seed, device=self.device)
        rec = {"step": self.step, "eval": result, "time": time.time()}
        self.history.append(rec)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return result

    def _plot_history(self) -> None:
        try:
            plot_history(self.run_dir / "metrics.jsonl", self.run_dir / "history.png")
        except Exception as e:  # a plot must never cost a finished run
            warnings.warn(f"could not plot the training history: {e}")

    # ================================================================== sampling
    def _recompute_standing_stats(self) -> None:
        """Give the EMA generator batch-norm statistics of its own weights (once per change of weights)."""
        if self.G_ema is None or not self._ema_stats_stale:
            return
        recompute_standing_stats(self.G_ema, z_dim=self.z_dim, batch_size=self.cfg.batch_size,
                                 num_classes=self.num_classes, seed=self.cfg.seed + _GRID_SEED_OFFSET + 1,
                                 batches=_STANDING_STATS_BATCHES, device=self.device)
        self._ema_stats_stale = False

    def ema_generator(self) -> nn.Module:
        """The generator used for samples: EMA weights when kept, in eval mode."""
        if self.G_ema is not None:
            self._recompute_standing_stats()
            return self.G_ema
        return self.G

    def sample(self, n: int, seed: Optional[int] = None, labels=None, batch_size: int = 256) -> torch.Tensor:
        """Generate ``n`` samples on the CPU: (n, C, H, W) in [-1, 1], or (n, 2) for 2-D data.

        Args:
            n: number of samples.
            seed: noise seed (default: the config's seed); the same seed gives the same samples.
            labels: class labels for a conditional model: an int or ``n`` ints
                (default: classes in turn).
            batch_size: samples generated per forward pass.
        """
        return generate(self.ema_generator(), n, z_dim=self.z_dim,
                        seed=self.cfg.seed if seed is None else seed, labels=labels,
                        num_classes=self.num_classes, device=self.device, batch_size=batch_size)

    def save_samples(self) -> Path:
        """Write the fixed-noise sample grid for the current step into ``samples/``."""
        path = self.run_dir / "samples" / f"step_{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.data.kind == "points":
            x = self.sample(2000, seed=self.cfg.seed + _GRID_SEED_OFFSET)
            plot_points(x, path, modes=self.data.modes)
        else:
            x = self.sample(64, seed=self.cfg.seed + _GRID_SEED_OFFSET)
            save_image_grid(x, path, nrow=8)
        return path

    # ================================================================== checkpoints
    def _metadata(self) -> dict[str, str]:
        meta = {"fastgan_version": __version__, "config": json.dumps(self.cfg.to_dict()),
                "config_hash": self.cfg.config_hash()}
        if not self.custom_generator and hasattr(self.G, "arch_config"):
            meta["generator_class"] = type(self.G).__name__
            meta["generator_arch"] = json.dumps(self.G.arch_config())
        return meta

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step atomically (see :mod:`fastgan.checkpoint`)."""
        if self.G_ema is not None:
            self._recompute_standing_stats()
        state = {
            "step": self.step,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "gen_state": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "stats": self.stats.buffer.detach().cpu(),
            "ema_t": self.ema_t.detach().cpu(),
            "history": json.dumps(self.history[-1000:]),
        }
        for name in ("scaler_g", "scaler_d"):
            if getattr(self, name) is not None:
                state[name] = getattr(self, name).state_dict()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(self.run_dir, self.step, G=self.G, D=self.D, G_ema=self.G_ema, state=state,
                               metadata=self._metadata(), keep=self.cfg.keep_ckpts)

    def load_checkpoint(self, ckpt: Union[str, os.PathLike]) -> None:
        """Restore networks, optimisers, random state and step from a checkpoint folder.

        Args:
            ckpt: a checkpoint folder (``RUN/checkpoints/step_XXXXXXXX``).
        """
        nets, meta = read_models(ckpt)
        try:
            saved_cfg = TrainConfig.from_dict(json.loads(meta.get("config", "{}")))
        except (json.JSONDecodeError, TypeError, ConfigError) as e:
            raise CheckpointError(f"checkpoint '{ckpt}' has an unreadable config ({e})") from None
        diff = self.cfg.incompatible_with(saved_cfg)
        if diff:
            pairs = ", ".join(f"{k} ({getattr(saved_cfg, k)!r} in the checkpoint, {getattr(self.cfg, k)!r} now)"
                              for k in diff)
            raise CheckpointError(f"the checkpoint in '{self.run_dir}' comes from an incompatible config: {pairs}; "
                                  "use another --out or the same settings")
        state = read_state(ckpt)
        load_module_weights(self.G, nets.get("G", {}), "generator")
        load_module_weights(self.D, nets.get("D", {}), "discriminator")
        if self.G_ema is not None:
            load_module_weights(self.G_ema, nets.get("G_ema", {}), "EMA generator")
        try:
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            for opt in (self.opt_g, self.opt_d):
                self.engine.after_optimizer_load(opt)  # the plan's Adam flags; re-capture graphs
            self._lr_factor_set = None  # the checkpoint's learning rates: the schedule sets its own next
            for name in ("scaler_g", "scaler_d"):
                if getattr(self, name) is not None and name in state:
                    getattr(self, name).load_state_dict(state[name])  # fills the scale tensors in place
            self.gen.set_state(state["gen_state"])
            self.stats.buffer.copy_(state["stats"])
            self.ema_t.copy_(state["ema_t"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint '{ckpt}' holds an unusable training state ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.history = json.loads(state.get("history", "[]"))
        self._ema_stats_stale = False  # the checkpoint holds the standing statistics


def _set_requires_grad(params: list[torch.Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)
