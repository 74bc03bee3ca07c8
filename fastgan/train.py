"""The training loop: :class:`Trainer` runs a task's steps through the engine and keeps the run folder.

The work is split three ways (docs/architecture.md):

- the **task** (:mod:`fastgan.tasks`) says what a step computes: data,
  networks, optimisers, the capturable step functions, samples, metrics and
  its own checkpoint state; :class:`~fastgan.tasks.NoiseToImage` is the default;
- the **engine** (:mod:`fastgan.engine`) says how a step executes: eager,
  compiled or CUDA-graph replays, mixed precision, memory format, optimiser flags;
- the **loop** (here) says when: iterations, the learning-rate schedule, log
  lines (one host read of the running sums each), sample figures, evaluation,
  checkpoints, exact resume, Ctrl-C / signals, the run folder; under torchrun,
  rank 0 alone reads and writes it (:mod:`fastgan.distributed`, docs/distributed.md).
  Saving, reading and applying checkpoints are in :mod:`fastgan.loop_checkpoints`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from .checkpoint import clean_stale_temporaries, latest_checkpoint
from .checkpoint_store import step_of
from .config import TrainConfig
from .distributed import agree_on_config, mark_every_rank, refuse_data_parallel, setup_parallel
from .cpu_threads import AdaptiveThreads
from .engine import Engine, EngineOptions, resolve_device, resolve_plan
from .errors import CheckpointError, ConfigError, StorageError, TrainingError, storage_error
from .files import atomic_write
from .loop_checkpoints import CheckpointLoop
from .metrics import plot_history
from .run_folder import RunLock, rewind_metrics
from .tasks import Step, Task, task_for
from .tensorboard_log import TensorBoardLog, require_tensorboard


class Trainer(CheckpointLoop):
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
            None) and returning a :class:`~fastgan.tasks.Task`; default:
            :func:`fastgan.tasks.task_for` (a ``TranslationConfig``'s pix2pix or
            CycleGAN, else :class:`~fastgan.tasks.NoiseToImage`).
        distributed: train data-parallel (True), alone (False), or decide from
            the environment (None: data-parallel under torchrun with more than
            one process, or when a process group is already set up). Every
            process builds the same Trainer; ``batch_size`` is the global batch.
        cpu_threads: optional :class:`~fastgan.cpu_threads.AdaptiveThreads`
            that :meth:`fit` consults between iterations (``fastgan train``
            passes one on the CPU); torch's count is restored when fit ends.
    """

    def __init__(self, cfg: Optional[TrainConfig] = None, *, data: Any = None,
                 generator: Optional[nn.Module] = None, discriminator: Optional[nn.Module] = None,
                 resume: bool = True, engine_options: Optional[EngineOptions] = None,
                 task: Optional[Callable[..., Task]] = None, distributed: Optional[bool] = None,
                 cpu_threads: Optional[AdaptiveThreads] = None) -> None:
        cfg = (cfg or TrainConfig()).validate()
        if getattr(cfg, "tensorboard", False):
            require_tensorboard()  # a missing optional package: one line now, not after loading and building
        options = (engine_options or EngineOptions()).resolved()
        task = task or task_for(cfg)   # a TranslationConfig names its own: pix2pix or CycleGAN
        if not getattr(task, "data_parallel", True):
            refuse_data_parallel(getattr(task, "task_name", "") or getattr(task, "__name__", "this task"), distributed)
        # data-parallel under torchrun: joins the process group; every rank then holds rank 0's config
        self.parallel = setup_parallel(cfg, distributed, shards_per_rank=options.batch_shards)
        cfg = agree_on_config(self.parallel, cfg)
        self.device = self.parallel.device or resolve_device(cfg.device)
        # how steps execute; refuses (ConfigError) what this device cannot run, before any loading
        self.engine = Engine(resolve_plan(cfg, self.device, options, self.parallel), self.device, self.parallel)
        self.run_dir = Path(cfg.out)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"out {str(self.run_dir)!r} exists and is not a folder")
        given = {k: v for k, v in dict(data=data, generator=generator, discriminator=discriminator).items()
                 if v is not None}
        self.task: Task = task(cfg, self.engine, **given)
        self._check_data_parallel()
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
        self.stopped_by: Optional[str] = None  # the signal that stopped the last fit() early, if one did
        self._saving = False                    # a second signal waits until the checkpoint is written
        self._abort_after_save = False
        self._resumed = resume
        self._stop_agreed = False  # under torchrun a stop request counts once every rank knows of it
        self.writes = self.parallel.writes  # under torchrun only rank 0 touches the run folder
        self.cpu_threads = cpu_threads
        if resume:
            self._resume()

    @property
    def cfg(self):
        """The resolved config (the task's)."""
        return self.task.cfg

    def _check_data_parallel(self) -> None:
        """Refuse a task that would train wrongly data-parallel: same samples on every rank, or no averaging."""
        if not self.parallel.active:
            return
        name = type(self.task).__name__
        ours = {id(g) for g in self.engine.stream_generators}
        if any(id(g) not in ours for s in self.task.steps() for g in s.generators):
            raise mark_every_rank(ConfigError(
                f"task {name} draws from generators not made by engine.batch_streams: every process would draw "
                "the same samples; it cannot train data-parallel"))
        if not self.engine.ddp_modules:
            raise mark_every_rank(ConfigError(f"task {name} wraps no network with engine.data_parallel: gradients "
                                              "would not be averaged; it cannot train data-parallel"))

    def __getattr__(self, name: str) -> Any:
        if name == "task" or "task" not in self.__dict__:  # during construction: a plain missing attribute
            raise AttributeError(name)
        return getattr(self.__dict__["task"], name)

    # ================================================================== the loop
    def fit(self, steps: Optional[int] = None) -> "Trainer":
        """Train until ``steps`` iterations in total (default: ``cfg.steps``).

        Writes into ``cfg.out``: ``config.json``, ``metrics.jsonl``, sample
        figures in ``samples/`` and checkpoints in ``checkpoints/``, holding the
        folder's lock meanwhile (a second trainer on it gets
        :class:`~fastgan.run_folder.RunLockedError`). Ctrl-C or SIGTERM stops
        after the current step and saves a checkpoint, and ``stopped_by`` names
        the signal; a second one aborts (after a checkpoint save in progress).

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
        self._stop_requested, self._stop_agreed, self.stopped_by = False, False, None
        with self._run_folder(), self._tensorboard(), self._graceful_interrupt():
            try:
                self._train_to(total)
            finally:
                if self.cpu_threads is not None:
                    self.cpu_threads.restore()
        return self

    def _train_to(self, total: int) -> None:
        cfg = self.cfg
        if self.step >= total:
            self._write_outputs(final=True)
            return
        self.task.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not cfg.progress or not self.writes, desc=f"fastgan {Path(cfg.out).name}")
        window_t0, window_step = time.perf_counter(), self.step
        while self.step < total and not self._stopping:
            self._iteration()
            if self.cpu_threads is not None:
                self.cpu_threads.tick()
            bar.update(1)
            if self.step % cfg.log_every == 0:
                self._agree_on_stop()
            last = self.step == total or self._stopping
            if self.step % cfg.log_every == 0 or last:
                rec = self._log(window_t0, window_step)
                if not all(math.isfinite(rec[k]) for k in self.stats.names if k in rec):
                    bar.close()  # stop before any sample or checkpoint of this step (every rank sees the sums)
                    raise mark_every_rank(TrainingError(
                        f"losses became non-finite at step {self.step}; the last checkpoint is kept; try a lower "
                        "learning rate or --amp none"))
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
        if self._stopping and self.step < total:  # a grace period is short: the checkpoint, no evaluation
            self.save_checkpoint()
            warnings.warn(f"training stopped by {self.stopped_by} at step {self.step}; checkpoint saved, "
                          "rerun to continue")
            return
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

    @property
    def _stopping(self) -> bool:
        """A stop was asked (a signal): at once for one process; under torchrun once every rank agreed."""
        return self._stop_agreed if self.parallel.active else self._stop_requested

    def _agree_on_stop(self) -> None:
        """Under torchrun, at a log line: share every rank's stop request, so all stop after the same step."""
        if self.parallel.active and not self._stop_agreed:
            self._stop_agreed = self.parallel.any(self._stop_requested)
            if self._stop_agreed and self.stopped_by is None:
                self.stopped_by = "a signal to another process"

    @contextlib.contextmanager
    def _graceful_interrupt(self) -> Iterator[None]:
        """First Ctrl-C or SIGTERM: finish the current step, checkpoint, stop. A second one aborts,
        but never inside a checkpoint save: that finishes first."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if not self._stop_requested:
                self._stop_requested = True
                self.stopped_by = signal.Signals(signum).name
            elif self._saving:
                self._abort_after_save = True
            else:
                raise KeyboardInterrupt

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def _run_folder(self) -> Iterator[None]:
        """The run folder, claimed for one :meth:`fit`: locked, recovered, its log rewound, config saved.

        The lock (:class:`~fastgan.run_folder.RunLock`) is held until the fit
        ends; an operating-system error while writing becomes one line naming
        the path. Under torchrun rank 0 alone claims the folder (and holds the
        lock); when it cannot, every rank raises its error.
        """
        lock = None
        with self.parallel.outcome_of_writer():
            if self.writes:
                lock = self._claim_run_folder()
        try:
            yield
        except StorageError:
            raise
        except OSError as e:
            raise storage_error(e, "write into the run folder", e.filename or self.run_dir) from None
        finally:
            if lock is not None:
                lock.release()

    def _claim_run_folder(self) -> RunLock:
        """Lock the run folder, recover it, rewind its log and save the config; returns the lock, held."""
        lock = RunLock(self.run_dir).acquire()   # RunLockedError when another trainer holds the folder
        try:
            clean_stale_temporaries(self.run_dir)
            newest = latest_checkpoint(self.run_dir)
            if self._resumed and newest is not None and step_of(newest) > self.step:
                raise CheckpointError(f"run folder '{self.run_dir}' now holds {newest.name}, beyond step {self.step} "
                                      "this Trainer started from: another process trained it meanwhile; build a new "
                                      "Trainer to continue from there")
            rewind_metrics(self.run_dir, self.step)   # lines past the checkpoint are written again
            atomic_write(self.run_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        except BaseException as e:
            lock.release()
            if isinstance(e, OSError) and not isinstance(e, StorageError):
                raise storage_error(e, "write into the run folder", e.filename or self.run_dir) from None
            raise
        return lock

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
            path = self.run_dir / "metrics.jsonl"
            try:
                with open(path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            except OSError as e:  # a full disk names no file on write(): name it here
                raise storage_error(e, "append to", path) from None
            if self._tb is not None:
                self._tb.record(rec)

    def _log(self, t0: float, step0: int) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        steps = max(self.step - step0, 1)
        self.parallel.all_reduce_sum_(self.stats.buffer)  # under torchrun: sums and counts of every rank
        rec: dict[str, Any] = {"step": self.step, **self.stats.read()}  # the one host sync per log line
        rec["step_time_ms"] = 1000.0 * dt / steps
        rec["images_per_s"] = self.cfg.batch_size * steps / dt if dt > 0 else float("nan")
        rec["time"] = time.time()
        self._record(rec)
        return rec

    def _evaluate(self) -> dict[str, Any]:
        result = None
        with self.parallel.outcome_of_writer():  # every rank holds the same weights: rank 0 evaluates
            if self.writes:
                result = self.task.evaluate()
        result = self.parallel.broadcast_object(result)
        self._record({"step": self.step, "eval": result, "time": time.time()})
        return result

    def _plot_history(self) -> None:
        with self.parallel.outcome_of_writer():
            if self.writes:
                try:
                    plot_history(self.run_dir / "metrics.jsonl", self.run_dir / "history.png")
                except Exception as e:  # a plot must never cost a finished run
                    warnings.warn(f"could not plot the training history: {e}")

    def save_samples(self) -> Path:
        """Write the task's sample figure for the current step into ``samples/`` (rank 0 under torchrun)."""
        path = self.run_dir / "samples" / f"step_{self.step:08d}.png"
        with self.parallel.outcome_of_writer():
            if self.writes:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.task.save_samples(path)
                if self._tb is not None:
                    self._tb.image(path, self.step)
        return path
