"""The loop's checkpoints: saving, reading, resuming and applying them (a part of :class:`~fastgan.train.Trainer`).

Files and the protocol that keeps them complete are :mod:`fastgan.checkpoint`'s;
what belongs in them is the task's (:meth:`~fastgan.tasks.Task.state_dict`, its
networks and optimisers); this mixin holds the loop's part: the step, the
history, the random state, and under torchrun rank 0 writing for every rank
and sending what it read to the others.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from .checkpoint import (clean_stale_temporaries, load_module_weights, read_models, read_state, save_checkpoint,
                         select_checkpoint)
from .errors import CheckpointError, ConfigError, StorageError
from .run_folder import RunLock
from .version import __version__


class CheckpointLoop:
    """Checkpoint methods of :class:`~fastgan.train.Trainer` (which provides ``task``, ``engine``,
    ``parallel``, ``run_dir``, ``step``, ``history``, ``stats`` and the signal flags)."""

    def _resume(self) -> None:
        """Load the newest intact checkpoint, once what an interrupted save left is recovered (under the lock).

        Under torchrun rank 0 reads it and sends it to the others.
        """
        self._load_on_writer(self._read_newest)

    def _read_newest(self) -> Optional[tuple[str, dict, dict]]:
        if not self.run_dir.is_dir():
            return None
        try:
            lock = RunLock(self.run_dir).acquire()
        except StorageError:  # a folder this process cannot write: read it as it is, recover nothing
            lock = None
        try:
            if lock is not None:
                clean_stale_temporaries(self.run_dir)
            ckpt = select_checkpoint(self.run_dir, set_aside=lock is not None)
            return self._read_checkpoint(ckpt) if ckpt is not None else None
        finally:
            if lock is not None:
                lock.release()

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step atomically (see :mod:`fastgan.checkpoint`).

        Under torchrun every rank calls it: rank 0 gathers each rank's own
        state (random streams, running sums), writes, and the others wait for
        it, so a kill of any process at any moment leaves the last complete checkpoint.
        """
        final = self.run_dir / "checkpoints" / f"step_{self.step:08d}"
        ranks = self.parallel.gather_object(self._rank_state())  # [rank 0's, rank 1's, ...] on rank 0
        with self.parallel.outcome_of_writer():
            if self.writes:
                final = self._write_checkpoint(ranks)
        return final

    def _write_checkpoint(self, ranks: list[dict[str, Any]]) -> Path:
        self.task.before_checkpoint()
        state: dict[str, Any] = {"step": self.step, **ranks[0], "history": json.dumps(self.history[-1000:])}
        state.update({k: opt.state_dict() for k, opt in self.task.optimizers().items()})
        state.update({k: sc.state_dict() for k, sc in self.task.scalers().items() if sc is not None})
        if self.parallel.shards > 1:
            state.update(world_size=self.parallel.world_size, shards=self.parallel.shards, other_ranks=ranks[1:])
        meta = {"fastgan_version": __version__, "config": json.dumps(self.cfg.to_dict()),
                "config_hash": self.cfg.config_hash(), **self.task.checkpoint_metadata()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._saving = True
        try:
            return save_checkpoint(self.run_dir, self.step, networks=self.task.networks(), state=state,
                                   metadata=meta, keep=self.cfg.keep_ckpts)
        finally:
            self._saving = False
            if self._abort_after_save:  # the second Ctrl-C / SIGTERM came during the save
                self._abort_after_save = False
                raise KeyboardInterrupt

    def _rank_state(self) -> dict[str, Any]:
        """What differs between the ranks of a run: the global RNG, the running sums and the task's own state."""
        return {"torch_rng": torch.get_rng_state(), "stats": self.stats.buffer.detach().cpu(),
                **self.task.state_dict()}

    def load_checkpoint(self, ckpt: Union[str, os.PathLike]) -> None:
        """Restore networks, optimisers, random state and step from a checkpoint folder.

        Under torchrun every rank calls it: rank 0 reads the folder and sends
        its content to the others (no shared file system needed).

        Args:
            ckpt: a checkpoint folder (``RUN/checkpoints/step_XXXXXXXX``).
        """
        self._load_on_writer(lambda: self._read_checkpoint(Path(ckpt)))

    def _load_on_writer(self, read: Callable[[], Optional[tuple[str, dict, dict]]]) -> None:
        """Rank 0 reads a checkpoint with ``read`` (``None``: there is none); every rank applies what it read."""
        loaded = None
        with self.parallel.outcome_of_writer():
            if self.writes:
                loaded = read()
        loaded = self.parallel.broadcast_object(loaded)
        if loaded is not None:
            self._apply_checkpoint(*loaded)

    def _read_checkpoint(self, ckpt: Path) -> tuple[str, dict, dict]:
        """(folder, weights per network, training state) of a checkpoint this config can resume."""
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
        return str(ckpt), nets, read_state(ckpt)

    def _apply_checkpoint(self, ckpt: str, nets: dict, state: dict) -> None:
        for name, net in self.task.networks().items():
            if net is not None:
                load_module_weights(net, nets.get(name, {}), self.task.network_labels.get(name, name))
        try:
            own = self._own_rank_state(state)
            for key, opt in self.task.optimizers().items():
                opt.load_state_dict(state[key])
                self.engine.after_optimizer_load(opt)  # the plan's Adam flags; re-capture graphs
            self._lr_factor_set = None  # the checkpoint's learning rates: the schedule sets its own next
            for key, scaler in self.task.scalers().items():
                if scaler is not None and key in state:
                    scaler.load_state_dict(state[key])  # fills the scale tensors in place
            self.task.load_state_dict({**state, **(own or {})})
            if own is not None:
                self.stats.buffer.copy_(own["stats"])
                torch.set_rng_state(own["torch_rng"])
            else:  # another world size: the streams restart, rank 0 carries every rank's unlogged sums
                self.engine.restart_streams(int(state["step"]))
                sums = self.parallel.saved_per_rank(state, "stats")
                self.stats.buffer.copy_(torch.stack(sums).sum(0) if self.writes else torch.zeros_like(sums[0]))
            step = int(state["step"])
            history = json.loads(state.get("history", "[]"))
            if not isinstance(history, list):
                raise TypeError(f"history is a {type(history).__name__}, not a list")
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as e:
            # any of these from a state.pt of the wrong structure (a missing key, a list for a dict, ...)
            detail = str(e).splitlines()[0] if str(e) else ""
            raise CheckpointError(f"checkpoint '{ckpt}' holds an unusable training state ({type(e).__name__}: "
                                  f"{detail[:200]})") from None
        self.step = step
        self.history = history

    def _own_rank_state(self, state: dict) -> Optional[dict]:
        """This rank's saved state when the checkpoint has the same layout of shards, else ``None`` (and a warning)."""
        if self.parallel.saved_alike(state):
            return state if self.parallel.rank == 0 else state["other_ranks"][self.parallel.rank - 1]
        world, shards = int(state.get("world_size", 1)), int(state.get("shards", 1))
        if self.writes:
            warnings.warn(f"resuming a run of {world} process(es) ({shards} batch shards) on "
                          f"{self.parallel.world_size} ({self.parallel.shards}): weights, optimisers and step carry "
                          "over; the random streams restart from (seed, shard, step)")
        return None
