"""Data-parallel training across processes: torchrun, one random stream per batch shard, rank 0 writes.

``torchrun --nproc_per_node N -m fastgan train ...`` starts N processes; each
builds the same :class:`~fastgan.Trainer`, which finds torchrun's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), joins the process group (NCCL on
GPUs, gloo on CPUs) and trains its share of every global batch. This module
holds what that takes and knows nothing of GANs:

- :func:`setup_parallel`: detect the environment, refuse bad set-ups in one
  line, pick the device (``cuda:LOCAL_RANK``) and the backend, join the group,
  and agree on the config (rank 0's, with the same ``out`` on every rank);
- :class:`Parallel`: the process's place in the run and the few collectives
  the loop needs (all-reduce of running sums, stop agreement, gather of
  per-rank state, broadcast of a loaded checkpoint, rank-0-only sections whose
  errors every rank raises);
- and :mod:`fastgan.batch_streams` draws a process's part of every global
  batch, one random stream per shard.

docs/distributed.md describes the behaviour (resume on the same or another
world size, what is averaged, the communication model).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from .errors import ConfigError, FastGANError, TrainingError

BACKENDS = ("auto", "nccl", "gloo")
ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def mark_every_rank(error: BaseException) -> BaseException:
    """Mark an error that every rank raises alike, so the command line prints it once (on rank 0).

    Args:
        error: the exception about to be raised.
    """
    error.every_rank = True  # type: ignore[attr-defined]
    return error


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 outside torchrun)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def refuse_data_parallel(name: str, distributed: Optional[bool]) -> None:
    """Refuse, before any process group, a run of a task that trains in one process only, started data-parallel.

    Args:
        name: what the error calls the task (``pix2pix``).
        distributed: the Trainer's ``distributed`` argument (None: decided by torchrun's environment).
    """
    env = _torchrun_env() if distributed is not False else None
    if distributed or (env is not None and env[0] > 1):
        raise mark_every_rank(ConfigError(f"{name} trains in one process, not data-parallel: start it without "
                                          "torchrun (and without distributed=True)"))


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; start the processes with "
                          "torchrun, which sets it") from None


def _torchrun_env() -> Optional[tuple[int, int, int]]:
    """(world size, rank, local rank) when torchrun's variables are set, else None."""
    if "WORLD_SIZE" not in os.environ:
        return None
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} is not; start the processes with torchrun")
    world, rank, local = (_env_int(v) for v in ENV_VARS)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"inconsistent torchrun environment: WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local}")
    return world, rank, local


# ---------------------------------------------------------------------------- the process's place in the run
@dataclass(frozen=True)
class Parallel:
    """Where this process stands in a data-parallel run (the defaults: a single process).

    Args:
        world_size: number of processes.
        rank: this process's rank (0 writes the run folder).
        local_rank: its rank on this machine (its GPU index).
        backend: the process group's backend (``None`` for a single process).
        shards_per_rank: shards of the global batch each process draws
            (see :class:`~fastgan.batch_streams.BatchStreams`).
        device: this process's training device (``None``: the config's device decides).
        joined: True when fastgan joined the process group itself (it then leaves it in :meth:`close`).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: Optional[str] = None
    shards_per_rank: int = 1
    device: Optional[torch.device] = None
    joined: bool = False

    @property
    def active(self) -> bool:
        """True when more than one process trains (collectives are needed)."""
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """True on the process that writes the run folder (rank 0)."""
        return self.rank == 0

    @property
    def shards(self) -> int:
        """Shards the global batch is cut into: world size x shards per process."""
        return self.world_size * self.shards_per_rank

    def saved_alike(self, state: dict) -> bool:
        """Whether a checkpoint's training state was saved by as many processes and batch shards as this run has.

        Args:
            state: the training state (``world_size`` and ``shards`` are absent from a one-shard run's).
        """
        return (int(state.get("world_size", 1)), int(state.get("shards", 1))) == (self.world_size, self.shards)

    @staticmethod
    def saved_per_rank(state: dict, key: str) -> list:
        """``state[key]`` of every process that saved a checkpoint, in rank order (rank 0's is at the top level).

        Args:
            state: the checkpoint's full training state.
            key: a per-process entry, such as the unlogged loss sums.
        """
        return [state[key], *(r[key] for r in state.get("other_ranks", []))]

    def local_shards(self) -> list[int]:
        """The indices of the shards this process draws."""
        k = self.shards_per_rank
        return list(range(self.rank * k, (self.rank + 1) * k))

    def shard_size(self, global_batch: int, pack: int = 1) -> int:
        """Samples per shard of a global batch; refuses (one line, alike on every rank) one that does not divide.

        Args:
            global_batch: the global batch size (``batch_size``).
            pack: PacGAN packing degree: a shard must hold whole packs.
        """
        where = (f"the world size ({self.world_size})" if self.shards_per_rank == 1 else
                 f"world size x shards per process ({self.world_size} x {self.shards_per_rank})")
        if global_batch % self.shards:
            raise mark_every_rank(ConfigError(
                f"batch_size ({global_batch}) is the global batch and must be divisible by {where}; "
                f"use e.g. --batch_size {max(self.shards, global_batch - global_batch % self.shards)}"))
        size = global_batch // self.shards
        if size % pack:
            raise mark_every_rank(ConfigError(
                f"each rank's share of the batch ({size}) must be a multiple of pack ({pack})"))
        return size

    # -------------------------------------------------------------- collectives (no-ops for a single process)
    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over every rank, in place.

        Args:
            tensor: a tensor on this process's device.
        """
        if self.active:
            torch.distributed.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any rank.

        Args:
            flag: this rank's flag.
        """
        if not self.active:
            return bool(flag)
        return bool(max(self.all_gather_object(bool(flag))))

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank.

        Args:
            obj: a picklable object.
        """
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather_object(self, obj: Any) -> Optional[list[Any]]:
        """Every rank's ``obj`` in rank order on rank 0, ``None`` on the others.

        Args:
            obj: a picklable object (tensors travel on the CPU).
        """
        if not self.active:
            return [obj]
        out: Optional[list[Any]] = [None] * self.world_size if self.writes else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank.

        Args:
            obj: a picklable object (only rank 0's is read).
        """
        if not self.active:
            return obj
        box = [obj if self.writes else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group fastgan joined, once every rank gets here (a group the caller made stays).

        A process that exits with its gloo group still open can abort while the interpreter shuts
        down (SIGABRT, "terminate called without an active exception"), so ``fastgan train`` calls
        this when a torchrun run ends on every rank, trained to the end or stopped.
        """
        if self.active and self.joined and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()   # a second call finds no group: a no-op

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        if self.active:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def outcome_of_writer(self) -> Iterator[None]:
        """A section whose work rank 0 does (``if parallel.writes:`` inside); every rank leaves it together.

        When rank 0's part fails, every rank raises: rank 0 its own error,
        the others the same fastgan error type with the same message, so no
        rank waits forever for a peer that has stopped. A single process just
        runs the body.
        """
        if not self.active:
            yield
            return
        failure: Optional[BaseException] = None
        try:
            yield
        except Exception as e:  # shared with the other ranks below, then re-raised here
            failure = e
        report = None
        if failure is not None and self.writes:
            report = (type(failure).__name__, str(failure).splitlines()[0] if str(failure) else "")
        report = self.broadcast_object(report)
        if failure is not None:
            raise mark_every_rank(failure) if report is not None else failure
        if report is not None:
            kind, message = report
            cls = _fastgan_error_class(kind)
            if cls is None:
                cls, message = TrainingError, f"rank 0 failed ({kind}: {message})"
            raise mark_every_rank(cls(message)) from None


SINGLE_PROCESS = Parallel()


def _fastgan_error_class(name: str) -> Optional[type]:
    """The fastgan error class called ``name`` (any module's subclass of FastGANError), or ``None``."""
    todo = [FastGANError]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        todo += cls.__subclasses__()
    return None


# ---------------------------------------------------------------------------- set-up
def setup_parallel(cfg, distributed: Optional[bool] = None, *, shards_per_rank: int = 1) -> Parallel:
    """Find out whether this run is data-parallel, check it, and join the process group.

    Data-parallel when ``distributed`` is True, or when it is None and either
    torchrun's environment says ``WORLD_SIZE`` > 1 or a process group is
    already set up. Refuses, in one line raised alike on every rank: a
    ``batch_size`` that does not divide into equal shards, a backend the
    device cannot use, a GPU index shared by the ranks of one machine.
    Joins the group (``init_process_group``) unless the caller already did.

    Args:
        cfg: the validated config (its ``batch_size``, ``pack``, ``device``, ``dist_backend``).
        distributed: True / False to force; None to detect.
        shards_per_rank: shards of the global batch each process draws.

    Returns:
        The :class:`Parallel` (a single process when not data-parallel).
    """
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    env = _torchrun_env()
    if distributed is None:
        distributed = initialized or (env is not None and env[0] > 1)
    if not distributed:
        return _checked(cfg, Parallel(shards_per_rank=shards_per_rank))
    if not torch.distributed.is_available():
        raise mark_every_rank(ConfigError("this torch build has no torch.distributed; data-parallel training "
                                          "cannot run"))
    if initialized:
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        local = env[2] if env is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    elif env is not None:
        world, rank, local = env
    else:
        raise ConfigError("distributed=True needs a process group: start the processes with torchrun, or call "
                          "torch.distributed.init_process_group before building the Trainer")
    device = training_device(cfg.device, local, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    backend = _backend(getattr(cfg, "dist_backend", "auto"), device,
                       torch.distributed.get_backend() if initialized else None)
    par = _checked(cfg, Parallel(world, rank, local, backend, shards_per_rank, device, joined=not initialized))
    if not initialized:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        kwargs = {"device_id": device} if backend == "nccl" else {}
        torch.distributed.init_process_group(backend=backend, **kwargs)
    return par


def _checked(cfg, par: Parallel) -> Parallel:
    """``par`` once the global batch (when the config gives it) divides into its shards."""
    if cfg.batch_size is not None:
        par.shard_size(cfg.batch_size, int(getattr(cfg, "pack", 1) or 1))
    return par


def training_device(name: str, local_rank: int, local_world: int) -> torch.device:
    """The device of the process with local rank ``local_rank``: ``cuda:LOCAL_RANK`` on GPUs.

    Args:
        name: the config's device (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).
        local_rank: the process's rank on its machine.
        local_world: processes on its machine.
    """
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise mark_every_rank(ConfigError(f"device {name!r} requested but CUDA is not available on this machine; "
                                          "use --device cpu"))
    if name.startswith("cuda:"):
        if local_world > 1:
            raise mark_every_rank(ConfigError(
                f"device {name!r} names one GPU for all {local_world} processes of this machine; use --device "
                "cuda (each process takes cuda:LOCAL_RANK)"))
        return torch.device(name)
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"LOCAL_RANK {local_rank} has no GPU: this machine shows {count}; start at most {count} "
                          "processes per machine (--nproc_per_node)")
    return torch.device("cuda", local_rank)


def _backend(requested: str, device: torch.device, existing: Optional[str]) -> str:
    """The process-group backend for ``device``: refuses one it cannot use, in one line."""
    if requested not in BACKENDS:
        raise mark_every_rank(ConfigError(f"unknown dist_backend {requested!r}; choose one of {', '.join(BACKENDS)}"))
    if existing is not None:  # the caller's group: e.g. "gloo", "nccl" or "cpu:gloo,cuda:nccl"
        backend = str(existing).lower()
        if requested != "auto" and requested not in backend:
            raise mark_every_rank(ConfigError(f"dist_backend {requested!r} asked, but the process group set up "
                                              f"before the Trainer uses {backend!r}; leave dist_backend at auto"))
    else:
        backend = requested if requested != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if device.type != "cuda" and "gloo" not in backend:
        raise mark_every_rank(ConfigError(f"backend {backend!r} needs CUDA tensors, but this run trains on "
                                          f"{device.type}; use --dist_backend gloo (or auto) on CPUs"))
    if existing is None and backend == "nccl" and not torch.distributed.is_nccl_available():
        raise mark_every_rank(ConfigError("backend 'nccl' is not built into this torch; use --dist_backend gloo"))
    if existing is None and backend == "gloo" and not torch.distributed.is_gloo_available():
        raise mark_every_rank(ConfigError("backend 'gloo' is not built into this torch; use --dist_backend nccl"))
    return backend


def agree_on_config(par: Parallel, cfg):
    """Rank 0's config for every rank, once every rank names the same run folder.

    Every process of a torchrun command gets the same flags, but a rank whose
    machine does not see the run folder cannot read a continued run's saved
    config; rank 0's is the run's. The ``out`` folders must match (one line
    otherwise, on every rank).

    Args:
        par: the process's place in the run.
        cfg: this rank's config.

    Returns:
        Rank 0's config (``cfg`` itself for a single process).
    """
    if not par.active:
        return cfg
    outs = par.all_gather_object(str(cfg.out))
    if len(set(outs)) > 1:
        listed = ", ".join(f"rank {r}: {o!r}" for r, o in enumerate(outs))
        raise mark_every_rank(ConfigError(f"the out folder differs between ranks ({listed}); give every rank the "
                                          "same --out"))
    return par.broadcast_object(cfg)
