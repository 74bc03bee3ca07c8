"""The Trainer: data on the device, one capturable step function, and the loop around it.

Layout of the work (see DESIGN.md, "The training step"):

- ``__init__`` puts everything a step needs on the device: the dataset (uint8),
  one ``torch.Generator`` for every random draw, the networks, optimisers, EMA
  weights and a small buffer of running loss sums.
- :meth:`Trainer.train_step` reads and writes only those tensors: D update(s),
  then the G update reusing the last fake batch, then the EMA update. No
  ``.item()``, no Python branching on tensor values, no data-dependent shapes,
  so the compiled and CUDA-graph modes can wrap it unchanged.
- :meth:`Trainer.reg_step` is the lazy R1 regularisation, a separate step run
  every ``r1_every`` steps so each step function has a fixed shape of work.
- :mod:`fastgan.engine` decides how those steps execute (``cfg.mode``): eager,
  with the forward + loss pieces compiled, or captured whole in CUDA graphs;
  it also owns mixed precision, memory format and the optimisers' flags.
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
from .checkpoint import (clean_stale_temporaries, latest_checkpoint, load_module_weights, read_models,
                         read_run_config, read_state, save_checkpoint)
from .config import RESOLUTIONS, TrainConfig
from .data import GanData, load_data
from .engine import Engine, EngineOptions, resolve_plan
from .errors import CheckpointError, ConfigError, TrainingError
from .images import plot_points, save_image_grid
from .models import build_models, generator_from_arch
from .sampling import generate

# Order of the running sums kept on the device (one host read per log line).
STAT_NAMES = ("d_loss", "g_loss", "d_real", "d_fake", "_n", "r1", "_n_reg")
_GRID_SEED_OFFSET = 7919      # fixed-noise seed for sample grids: cfg.seed + this
_STANDING_STATS_BATCHES = 16  # batches used to recompute the EMA generator's BN statistics


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda[:N]`` into a device, with a clear error when CUDA is absent.

    Args:
        name: device name from the config.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        # R1 in D's own input units: an MLP that divides points by its scale s sees gradients s times larger
        self._r1_unit = float(getattr(self.D, "scale", 1.0)) ** 2
        # D scores real and fake in one batch when no logit depends on other samples (no batch norm,
        # minibatch std or spectral-norm power step per call): the D declares it (custom Ds: off)
        self._d_one_pass = bool(getattr(self.D, "batch_independent", False))
        # parameter lists walked once: the step freezes D and updates the EMA through them (walking the
        # module tree every step costs ~2% of a 2-D step on the CPU)
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
        self.stats = torch.zeros(len(STAT_NAMES), device=self.device)
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
            if self._d_one_pass:  # one forward over real + fake: half the calls, same per-sample logits
                yy = None if y is None else torch.cat([y, y])
                d_real, d_fake = self.D(torch.cat([real, fake]), yy).chunk(2)
            else:
                d_real = self.D(real, y)
                d_fake = self.D(fake, y)
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
                with _reference_kernels():
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
        # d_loss, g_loss, mean D(real), mean D(fake), step count: few small kernels (they add up in a graph)
        self.stats[:4].add_(torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                                         d_real.detach().float().mean(), d_fake.detach().float().mean()]))
        self.stats[4].add_(1.0)

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
        with _reference_kernels():  # R1 differentiates a gradient: reference ops support that
            logits = self.D(real, self._labels(labels))
            r1 = losses.r1_penalty(logits, real)
        if self._r1_unit != 1.0:
            r1 = r1 * self._r1_unit
        self.engine.update(r1 * (cfg.r1_gamma / 2 * cfg.r1_every), self.opt_d, None)  # fp32: no scaler
        zero = torch.zeros((), device=self.device)
        self.stats.add_(torch.stack([zero, zero, zero, zero, zero, r1.detach().float(), zero + 1]))

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
                    if not math.isfinite(rec["d_loss"]):  # before any sample or checkpoint of this step
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
        _atomic_write_text(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")

    def _write_outputs(self, final: bool) -> None:
        self.save_samples()
        self.save_checkpoint()
        if final:
            self._plot_history()

    def _log(self, t0: float, step0: int) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        s = self.stats.tolist()  # the one host sync per log line
        self.stats.zero_()
        vals = dict(zip(STAT_NAMES, s))
        n, n_reg = max(vals["_n"], 1.0), vals["_n_reg"]
        steps = max(self.step - step0, 1)
        rec: dict[str, Any] = {"step": self.step}
        for k in ("d_loss", "g_loss", "d_real", "d_fake"):
            rec[k] = vals[k] / n
        if n_reg:
            rec["r1"] = vals["r1"] / n_reg
        rec["step_time_ms"] = 1000.0 * dt / steps
        rec["images_per_s"] = self.cfg.batch_size * steps / dt if dt > 0 else float("nan")
        rec["time"] = time.time()
        self.history.append(rec)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec

    def _check_eval_metrics(self) -> None:
        """Refuse unknown or inapplicable ``eval_metrics`` before training, not at the first evaluation."""
        try:
            from .metrics import check_metrics
        except ImportError:
            return  # _evaluate warns and skips
        check_metrics(self.data, self.cfg.eval_metrics)

    def _evaluate(self) -> Optional[dict[str, Any]]:
        try:
            from .metrics import evaluate
        except ImportError:
            warnings.warn("fastgan.metrics is unavailable; skipping evaluation")
            return None
        metrics = [m.strip() for m in self.cfg.eval_metrics.split(",") if m.strip()]
        result = evaluate(self.ema_generator(), self.data, metrics, seed=self.cfg.seed, device=self.device)
        rec = {"step": self.step, "eval": result, "time": time.time()}
        self.history.append(rec)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return result

    def _plot_history(self) -> None:
        try:
            from .metrics import plot_history
        except ImportError:
            return
        try:
            plot_history(self.run_dir / "metrics.jsonl", self.run_dir / "history.png")
        except Exception as e:  # a plot must never cost a finished run
            warnings.warn(f"could not plot the training history: {e}")

    # ================================================================== sampling
    @torch.no_grad()
    def _recompute_standing_stats(self) -> None:
        """Give the EMA generator batch-norm statistics of its own weights.

        The EMA weights never ran forward during training, so their BN running
        statistics are recomputed from fixed-seed noise (cumulative average over
        a few batches); the training random state is not touched.
        """
        G = self.G_ema
        if G is None or not self._ema_stats_stale:
            return
        norms = [m for m in G.modules() if getattr(m, "running_mean", None) is not None and hasattr(m, "momentum")]
        if norms:
            saved = [m.momentum for m in norms]
            for m in norms:
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
            g = torch.Generator(device=self.device)
            g.manual_seed(self.cfg.seed + _GRID_SEED_OFFSET + 1)
            G.train()
            labels = None
            for i in range(_STANDING_STATS_BATCHES):
                for m in norms:
                    m.momentum = 1.0 / (i + 1)
                z = torch.randn(self.cfg.batch_size, self.z_dim, device=self.device, generator=g)
                if self.num_classes:
                    labels = torch.randint(self.num_classes, (self.cfg.batch_size,), device=self.device, generator=g)
                G(z, labels)
            for m, mom in zip(norms, saved):
                m.momentum = mom
            G.eval()
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
        from . import __version__

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
            "stats": self.stats.detach().cpu(),
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
            self.stats.copy_(state["stats"])
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


@contextlib.contextmanager
def _reference_kernels():
    """Route ops through their plain-PyTorch reference (double backward works there)."""
    try:
        from .kernels import use_impl
    except ImportError:
        yield
        return
    with use_impl("ref"):
        yield


def load_generator(run: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                   ema: bool = True) -> nn.Module:
    """Load a trained generator from a run folder or a checkpoint folder.

    Args:
        run: a run folder (its latest checkpoint is used) or one checkpoint folder.
        device: where to put the network.
        ema: use the EMA weights when the run kept them.

    Returns:
        The generator, in eval mode, with ``z_dim``, ``out_shape`` and ``num_classes`` attributes.
    """
    p = Path(run)
    if not p.exists():
        raise CheckpointError(f"no run or checkpoint at '{p}'")
    if (p / "models.safetensors").exists() or p.is_file():
        ckpt = p
    else:
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise CheckpointError(f"'{p}' holds no checkpoint (train first: fastgan train --out {p})")
    nets, meta = read_models(ckpt)
    if "generator_class" not in meta:
        raise CheckpointError(f"'{ckpt}' holds a user-supplied generator: rebuild it yourself and load "
                              "its weights with fastgan.checkpoint.read_models")
    try:
        arch = json.loads(meta["generator_arch"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"'{ckpt}' has unreadable generator metadata") from None
    G = generator_from_arch(meta["generator_class"], arch)
    key = "G_ema" if ema and "G_ema" in nets else "G"
    load_module_weights(G, nets[key], "generator")
    G.fastgan_metadata = dict(meta)  # config hash etc., for exports
    return G.to(device).eval().requires_grad_(False)
