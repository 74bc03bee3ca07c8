"""The training loop: :class:`Trainer` runs a task's steps through the engine and keeps the run folder.

The work is split three ways (docs/architecture.md):

- the **task** (:mod:`fastgan.tasks`) says what a step computes: data,
  networks, optimisers, the capturable step functions, samples, metrics and
  its own checkpoint state; :class:`~fastgan.tasks.NoiseToImage` is the default;
- the **engine** (:mod:`fastgan.engine`) says how a step executes: eager,
  compiled or CUDA-graph replays, mixed precision, memory format, optimiser flags;
- the **loop** (here) says when: iterations, the learning-rate schedule, log
  lines (one host read of the running sums each), sample figures, evaluation,
  checkpoints, exact resume, Ctrl-C / signals, the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import nn

from .checkpoint import (clean_stale_temporaries, latest_checkpoint, load_module_weights, read_models, read_state,
                         save_checkpoint)
from .config import TrainConfig
from .engine import Engine, EngineOptions, resolve_device, resolve_plan
from .errors import CheckpointError, ConfigError, TrainingError
from .files import atomic_write
from .metrics import plot_history
from .tasks import NoiseToImage, Step, Task
from .tensorboard_log import TensorBoardLog, require_tensorboard
from .version import __version__


class Trainer:
    """Trains a model as a config describes: the noise-to-image GAN unless another task is given.

    Building a Trainer loads the data, builds the networks and optimisers and,
    when ``cfg.out`` already holds a checkpoint, restores it (so rerunning the
    same command continues a run); nothing trains until :meth:`fit`.
    Attributes the loop does not have are the task's: ``trainer.G`` is
    ``trainer.task.G``, ``trainer.sample(16)`` is ``trainer.task.sample(16)``.

    Args:
        cfg: the training configuration (``None``: ``TrainConfig()``).
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
        task: another model family: called as ``task(cfg, engine, **given)``
            (``given``: those of data, generator, discriminator that are not
            None) and returning a :class:`~fastgan.tasks.Task`; default
            :class:`~fastgan.tasks.NoiseToImage`.
    """

    def __init__(self, cfg: Optional[TrainConfig] = None, *, data: Any = None,
                 generator: Optional[nn.Module] = None, discriminator: Optional[nn.Module] = None,
                 resume: bool = True, engine_options: Optional[EngineOptions] = None,
                 task: Optional[Callable[..., Task]] = None) -> None:
        cfg = (cfg or TrainConfig()).validate()
        if getattr(cfg, "tensorboard", False):
            require_tensorboard()  # a missing optional package: one line now, not after loading and building
        self.device = resolve_device(cfg.device)
        # how steps execute; refuses (ConfigError) what this device cannot run, before any loading
        self.engine = Engine(resolve_plan(cfg, self.device, engine_options), self.device)
        self.run_dir = Path(cfg.out)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"out {str(self.run_dir)!r} exists and is not a folder")
        given = {k: v for k, v in dict(data=data, generator=generator, discriminator=discriminator).items()
                 if v is not None}
        self.task: Task = (task or NoiseToImage)(cfg, self.engine, **given)
        self.stats = self.task.stats
        self.schedule_steps = self.cfg.steps  # the lr schedule spans the configured run, whatever fit() is asked
        self._lr_factor_set: Optional[float] = 1.0  # the factor the optimisers hold (None: unknown, set it)
        # each step callable is the step itself, or its CUDA-graph replay in graph mode
        self._runners: list[tuple[Step, Callable[[], None]]] = [
            (s, self.engine.wrap_step(s.fn, s.generators, s.name)) for s in self.task.steps()]
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._stop_requested = False
        self._tb: Optional[TensorBoardLog] = None  # open during fit() when cfg.tensorboard
        # a later torchrun: only rank 0 writes the run folder
        self.writes = not (torch.distributed.is_available() and torch.distributed.is_initialized()) \
            or torch.distributed.get_rank() == 0
        if resume and latest_checkpoint(self.run_dir) is not None:
            self.load_checkpoint(latest_checkpoint(self.run_dir))

    @property
    def cfg(self):
        """The resolved config (the task's)."""
        return self.task.cfg

    def __getattr__(self, name: str) -> Any:
        if name == "task" or "task" not in self.__dict__:  # during construction: a plain missing attribute
            raise AttributeError(name)
        return getattr(self.__dict__["task"], name)

    # ================================================================== the loop
    def fit(self, steps: Optional[int] = None) -> "Trainer":
        """Train until ``steps`` iterations in total (default: ``cfg.steps``).

        Writes into ``cfg.out``: ``config.json``, ``metrics.jsonl``, sample
        figures in ``samples/`` and checkpoints in ``checkpoints/``. Ctrl-C
        stops after the current step and saves a checkpoint (a second Ctrl-C aborts).

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
            self.task.cfg = dataclasses.replace(self.cfg, steps=total)
        with self._run_folder(), self._tensorboard():
            self._train_to(total)
        return self

    def _train_to(self, total: int) -> None:
        cfg = self.cfg
        if self.step >= total:
            self._write_outputs(final=True)
            return
        self.task.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True, disable=not cfg.progress,
                   desc=f"fastgan {Path(cfg.out).name}")
        window_t0, window_step = time.perf_counter(), self.step
        with self._graceful_interrupt():
            while self.step < total and not self._stop_requested:
                self._iteration()
                bar.update(1)
                last = self.step == total or self._stop_requested
                if self.step % cfg.log_every == 0 or last:
                    rec = self._log(window_t0, window_step)
                    if not all(math.isfinite(rec[k]) for k in self.stats.names if k in rec):
                        bar.close()  # stop before any sample or checkpoint of this step
                        raise TrainingError(f"losses became non-finite at step {self.step}; the last checkpoint "
                                            "is kept; try a lower learning rate or --amp none")
                    bar.set_postfix({k: f"{rec[v]:.3f}" for k, v in self.task.progress_keys.items() if v in rec},
                                    refresh=False)
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

    def _iteration(self) -> None:
        """One training iteration as the engine runs it: every due step; ``step`` += 1."""
        if self.cfg.lr_decay:  # the schedule follows the step, so a resumed run picks it up where it was
            f = self.cfg.lr_factor(self.step, self.schedule_steps)
            if f != self._lr_factor_set:  # nothing to do (no device write) while the rate is flat
                for opt in self.task.optimizers().values():
                    self.engine.scale_lr(opt, f)
                self._lr_factor_set = f
        for step, run in self._runners:
            if (self.step + 1) % step.every == 0:
                run()
        self.step += 1
        self.task.after_iteration()  # Python state lives outside the step: a CUDA-graph replay runs no Python

    def run_steps(self, n: int = 1) -> None:
        """Run ``n`` training iterations as :meth:`fit` does, without logging, samples or checkpoints.

        The iterations are only queued on a GPU (no synchronisation); losses
        accumulate in ``stats``. For benchmarks and custom loops.

        Args:
            n: iterations to run.
        """
        self.task.train()
        for _ in range(int(n)):
            self._iteration()

    @contextlib.contextmanager
    def _graceful_interrupt(self) -> Iterator[None]:
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

    @contextlib.contextmanager
    def _run_folder(self) -> Iterator[None]:
        """The run folder, claimed for one :meth:`fit`: made, cleaned of half-written checkpoints, config saved.

        The one place a run takes its folder and gives it back, so a lock
        held for the whole fit belongs here.
        """
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(self.run_dir)
            atomic_write(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        yield

    @contextlib.contextmanager
    def _tensorboard(self) -> Iterator[None]:
        """TensorBoard event files for one :meth:`fit`, where the loop writes and the config asks for them."""
        if not (self.writes and getattr(self.cfg, "tensorboard", False)):
            yield
            return
        self._tb = TensorBoardLog(self.run_dir, resume_step=self.step)
        try:
            yield
        finally:
            self._tb.close()
            self._tb = None

    def _write_outputs(self, final: bool) -> None:
        self.save_samples()
        self.save_checkpoint()
        if final:
            self._plot_history()

    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.writes:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            if self._tb is not None:
                self._tb.record(rec)

    def _log(self, t0: float, step0: int) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        steps = max(self.step - step0, 1)
        rec: dict[str, Any] = {"step": self.step, **self.stats.read()}  # the one host sync per log line
        rec["step_time_ms"] = 1000.0 * dt / steps
        rec["images_per_s"] = self.cfg.batch_size * steps / dt if dt > 0 else float("nan")
        rec["time"] = time.time()
        self._record(rec)
        return rec

    def _evaluate(self) -> dict[str, Any]:
        result = self.task.evaluate()
        self._record({"step": self.step, "eval": result, "time": time.time()})
        return result

    def _plot_history(self) -> None:
        if not self.writes:
            return
        try:
            plot_history(self.run_dir / "metrics.jsonl", self.run_dir / "history.png")
        except Exception as e:  # a plot must never cost a finished run
            warnings.warn(f"could not plot the training history: {e}")

    def save_samples(self) -> Path:
        """Write the task's sample figure for the current step into ``samples/``."""
        path = self.run_dir / "samples" / f"step_{self.step:08d}.png"
        if self.writes:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.task.save_samples(path)
            if self._tb is not None:
                self._tb.image(path, self.step)
        return path

    # ================================================================== checkpoints
    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step atomically (see :mod:`fastgan.checkpoint`)."""
        self.task.before_checkpoint()
        final = self.run_dir / "checkpoints" / f"step_{self.step:08d}"
        if not self.writes:
            return final
        state: dict[str, Any] = {"step": self.step, "torch_rng": torch.get_rng_state(),
                                 "stats": self.stats.buffer.detach().cpu(),
                                 "history": json.dumps(self.history[-1000:])}
        state.update({k: opt.state_dict() for k, opt in self.task.optimizers().items()})
        state.update({k: sc.state_dict() for k, sc in self.task.scalers().items() if sc is not None})
        state.update(self.task.state_dict())
        meta = {"fastgan_version": __version__, "config": json.dumps(self.cfg.to_dict()),
                "config_hash": self.cfg.config_hash(), **self.task.checkpoint_metadata()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(self.run_dir, self.step, networks=self.task.networks(), state=state,
                               metadata=meta, keep=self.cfg.keep_ckpts)

    def load_checkpoint(self, ckpt: Union[str, os.PathLike]) -> None:
        """Restore networks, optimisers, random state and step from a checkpoint folder.

        Args:
            ckpt: a checkpoint folder (``RUN/checkpoints/step_XXXXXXXX``).
        """
        nets, meta = read_models(ckpt)
        try:
            saved_cfg = type(self.cfg).from_dict(json.loads(meta.get("config", "{}")))
        except (json.JSONDecodeError, TypeError, ConfigError) as e:
            raise CheckpointError(f"checkpoint '{ckpt}' has an unreadable config ({e})") from None
        diff = self.cfg.incompatible_with(saved_cfg)
        if diff:
            pairs = ", ".join(f"{k} ({getattr(saved_cfg, k)!r} in the checkpoint, {getattr(self.cfg, k)!r} now)"
                              for k in diff)
            raise CheckpointError(f"the checkpoint in '{self.run_dir}' comes from an incompatible config: {pairs}; "
                                  "use another --out or the same settings")
        state = read_state(ckpt)
        for name, net in self.task.networks().items():
            if net is not None:
                load_module_weights(net, nets.get(name, {}), self.task.network_labels.get(name, name))
        try:
            for key, opt in self.task.optimizers().items():
                opt.load_state_dict(state[key])
                self.engine.after_optimizer_load(opt)  # the plan's Adam flags; re-capture graphs
            self._lr_factor_set = None  # the checkpoint's learning rates: the schedule sets its own next
            for key, scaler in self.task.scalers().items():
                if scaler is not None and key in state:
                    scaler.load_state_dict(state[key])  # fills the scale tensors in place
            self.task.load_state_dict(state)
            self.stats.buffer.copy_(state["stats"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint '{ckpt}' holds an unusable training state ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.history = json.loads(state.get("history", "[]"))
