"""How a run's steps will execute: the request checked against the device, decided once.

:func:`resolve_plan` turns ``TrainConfig.mode`` / ``amp`` / ``channels_last``
/ ``kernels`` and the :class:`EngineOptions` into an :class:`EnginePlan`,
refusing (one-line :class:`~fastgan.ConfigError`) what the device cannot run.
``mode="fast"`` is the one request that may fall back: it picks the quickest
combination the device supports. :class:`fastgan.engine.Engine` applies the plan.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .errors import ConfigError

COMPILE_BACKEND_ENV = "FASTGAN_COMPILE_BACKEND"   # e.g. "aot_eager" for quick CPU tests
COMPILE_MODE_ENV = "FASTGAN_COMPILE_MODE"         # e.g. "max-autotune-no-cudagraphs"
BF16_MIN_CAPABILITY = (8, 0)    # bf16 tensor cores: Ampere and newer
FP16_MIN_CAPABILITY = (7, 0)    # fp16 tensor cores: Volta and newer
# torch.compile modes that add torch's own CUDA graphs: refused, they fail on GAN steps ("accessing tensor
# output of CUDAGraphs that has been overwritten"); fastgan's graph mode captures the whole step itself.
_CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


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


@dataclass(frozen=True)
class EngineOptions:
    """Engine settings that are not part of :class:`~fastgan.TrainConfig`.

    Args:
        compile_backend: ``torch.compile`` backend; ``None`` reads
            ``$FASTGAN_COMPILE_BACKEND`` and defaults to ``"inductor"``
            (``"aot_eager"`` compiles in seconds on a CPU, for tests).
        compile_mode: ``torch.compile`` mode for inductor; ``None`` reads
            ``$FASTGAN_COMPILE_MODE`` and defaults to torch's default mode.
            Modes that add torch's own CUDA graphs are refused.
        compile_fullgraph: compile with ``fullgraph=True`` (a graph break is an
            error instead of a slowdown; the tests use it).
        compile_in_graph: in graph mode, capture compiled forward + loss pieces
            instead of eager ones.
        pad_channels: pad the discriminator's input channels to a multiple of
            this (0 = off) with zero channels and zero weights; same maths,
            lets cuDNN skip its own 3-channel padding pass.
        capturable: force capturable optimisers on CUDA (``None``: only in
            graph mode); an eager run with them is the bitwise twin of a graph run.
        warmup_steps: eager steps, on a side stream, before a graph is captured.
        cudnn_benchmark: let cuDNN time its convolution algorithms on CUDA
            (never when ``torch.backends.cudnn.deterministic`` is set).
        batch_shards: shards of the batch each process draws, each from its own
            random stream (:class:`fastgan.batch_streams.BatchStreams`): one process
            with ``batch_shards=N`` draws exactly the samples of an N-process run,
            which is how a data-parallel run is checked against one process.
    """

    compile_backend: Optional[str] = None
    compile_mode: Optional[str] = None
    compile_fullgraph: bool = False
    compile_in_graph: bool = False
    pad_channels: int = 0
    capturable: Optional[bool] = None
    warmup_steps: int = 3
    cudnn_benchmark: bool = True
    batch_shards: int = 1

    def resolved(self) -> "EngineOptions":
        """A copy with the compile backend and mode filled in (from the environment where unset), checked.

        The one place the ``FASTGAN_COMPILE_*`` environment variables are read.
        """
        backend = self.compile_backend or os.environ.get(COMPILE_BACKEND_ENV) or "inductor"
        mode = self.compile_mode or os.environ.get(COMPILE_MODE_ENV) or None
        if mode in ("default", ""):
            mode = None
        if mode in _CUDAGRAPH_COMPILE_MODES:
            raise ConfigError(f"torch.compile mode {mode!r} adds torch's own CUDA graphs, which break on GAN "
                              "steps; use mode 'graph' (fastgan captures the whole step) or compile mode "
                              "'max-autotune-no-cudagraphs'")
        if self.batch_shards < 1:
            raise ConfigError(f"batch_shards must be >= 1, got {self.batch_shards}")
        if self.pad_channels < 0 or self.warmup_steps < 1:
            raise ConfigError(f"pad_channels must be >= 0 and warmup_steps >= 1, got {self.pad_channels}, "
                              f"{self.warmup_steps}")
        return dataclasses.replace(self, compile_backend=backend, compile_mode=mode)


@dataclass(frozen=True)
class EnginePlan:
    """The resolved way a run's steps execute: the decisions, beside the options they were made from.

    Args:
        requested: the mode the config asked for (``fast`` included).
        mode: ``eager``, ``compile`` or ``graph``.
        amp: ``none``, ``bf16`` or ``fp16``.
        channels_last: networks and image batches in channels_last.
        kernels: fused-kernel implementation the models use: ``triton`` or ``ref``.
        device_type: ``cpu`` or ``cuda``.
        options: the engine options, resolved (:meth:`EngineOptions.resolved`).
        notes: why ``fast`` chose what it chose, or fell back.
        world_size: processes of a data-parallel run (1: a single process).
        backend: their process-group backend (``None`` for a single process).
        sync_bn: batch-norm statistics over every rank's batch (data-parallel runs only).
    """

    requested: str
    mode: str
    amp: str
    channels_last: bool
    kernels: str
    device_type: str
    options: EngineOptions
    notes: tuple[str, ...] = ()
    world_size: int = 1
    backend: Optional[str] = None
    sync_bn: bool = False

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or ``None`` for full precision."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    @property
    def fused_adam(self) -> bool:
        """Fused Adam (one multi-tensor kernel per update): on CUDA and on the CPU."""
        return self.device_type in ("cuda", "cpu")

    @property
    def capturable(self) -> bool:
        """Capturable Adam (its step counter on the device): graph mode, or asked for; torch has it on CUDA only."""
        return self.device_type == "cuda" and (self.mode == "graph" or bool(self.options.capturable))

    @property
    def compile_pieces(self) -> bool:
        """The forward + loss functions go through ``torch.compile``."""
        return self.mode == "compile" or (self.mode == "graph" and self.options.compile_in_graph)

    @property
    def cudnn_benchmark(self) -> bool:
        """cuDNN's algorithm search is switched on."""
        return self.device_type == "cuda" and self.options.cudnn_benchmark

    def summary(self) -> str:
        """One line: what runs, e.g. ``graph, bf16, channels_last, triton kernels, fused capturable Adam``."""
        parts = [self.mode + (f" ({self.options.compile_backend})" if self.compile_pieces else ""),
                 "fp32" if self.amp == "none" else self.amp]
        if self.channels_last:
            parts.append("channels_last")
        parts.append(f"{self.kernels} kernels")
        adam = " ".join(w for w, on in (("fused", self.fused_adam), ("capturable", self.capturable)) if on)
        parts.append(f"{adam} Adam" if adam else "Adam")
        if self.options.pad_channels:
            parts.append(f"D input padded to x{self.options.pad_channels} channels")
        if self.world_size > 1:
            parts.append(f"DDP over {self.world_size} processes ({self.backend}"
                         + (", synchronised batch norm)" if self.sync_bn else ")"))
        text = ", ".join(parts)
        return f"fast -> {text}" if self.requested == "fast" else text

    def to_dict(self) -> dict[str, Any]:
        """The plan as one flat JSON-serialisable dict: the options, then the decisions (which win on a name)."""
        d: dict[str, Any] = dataclasses.asdict(self.options)
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"})
        d.update({k: getattr(self, k) for k in ("fused_adam", "capturable", "compile_pieces", "cudnn_benchmark")})
        d["notes"] = list(self.notes)
        return d


def graph_capture_supported() -> bool:
    """True when this torch can register a custom ``torch.Generator`` with a CUDA graph."""
    return hasattr(torch.cuda.CUDAGraph, "register_generator_state")


def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def _resolved_kernels(requested: str, device: torch.device) -> str:
    from .kernels import HAS_TRITON, TRITON_INTERPRETED

    if requested == "ref":
        return "ref"
    if requested == "triton":
        if not (HAS_TRITON and (device.type == "cuda" or TRITON_INTERPRETED)):
            where = "triton is not installed" if not HAS_TRITON else \
                "this run is on the CPU (only the Triton interpreter, TRITON_INTERPRET=1, runs kernels there)"
            raise ConfigError(f"kernels 'triton' cannot run: {where}; use --kernels auto or ref")
        return "triton"
    return "triton" if (HAS_TRITON and device.type == "cuda") else "ref"


def ddp_capture_problem(backend: Optional[str]) -> Optional[str]:
    """Why a step with DDP collectives cannot be captured in a CUDA graph here, or ``None`` when it can.

    torch's CUDA-graph notes: NCCL >= 2.9.6 lets collectives be captured;
    gloo's run on the host and cannot be.

    Args:
        backend: the process group's backend.
    """
    if backend is None or "nccl" not in backend:
        return f"the {backend} backend's collectives cannot be captured in a CUDA graph (NCCL's can)"
    version = tuple(torch.cuda.nccl.version()) if torch.cuda.is_available() else ()
    if version and version < (2, 9, 6):
        return f"NCCL {'.'.join(map(str, version))} cannot capture collectives in a CUDA graph (2.9.6 or later can)"
    return None


def resolve_plan(cfg, device: torch.device, options: Optional[EngineOptions] = None,
                 parallel=None) -> EnginePlan:
    """Decide how a run's steps execute on ``device``, or refuse with a one-line ConfigError.

    Explicit requests are checked, never silently changed: ``mode="graph"``
    and ``amp="fp16"`` need CUDA, ``amp="bf16"`` on CUDA needs compute
    capability >= 8.0. ``mode="fast"`` picks, on CUDA, graph capture (when
    this torch supports it) with bf16 (fp16 with a gradient scaler below
    capability 8.0, fp32 below 7.0), channels_last, the Triton kernels and
    fused capturable Adam; on the CPU the eager reference path in fp32 (with fused Adam).

    In a data-parallel run, graph mode also needs collectives that a CUDA
    graph can capture (:func:`ddp_capture_problem`): ``graph`` is refused
    without them and ``fast`` then runs eager steps, saying why in ``notes``.

    Args:
        cfg: the :class:`~fastgan.TrainConfig` (its mode, amp, channels_last, kernels, sync_bn).
        device: the training device.
        options: engine options (default: :class:`EngineOptions` and the environment).
        parallel: the :class:`~fastgan.distributed.Parallel` of a data-parallel run (default: one process).

    Returns:
        The :class:`EnginePlan`.
    """
    opts = (options or EngineOptions()).resolved()
    world = parallel.world_size if parallel is not None else 1
    backend = parallel.backend if world > 1 else None
    cuda = device.type == "cuda"
    notes: list[str] = []
    mode, amp, channels_last = cfg.mode, cfg.amp, bool(cfg.channels_last)
    if mode == "fast":
        mode, amp, channels_last = _fast_choice(device, amp, notes)
    elif mode == "graph":
        if not cuda:
            raise ConfigError(f"mode 'graph' needs a CUDA device (it captures the step in a CUDA graph), but this "
                              f"run is on {device.type}; use --mode eager, compile or fast")
        if not graph_capture_supported():
            raise ConfigError(f"mode 'graph' needs torch >= 2.5 (CUDAGraph.register_generator_state); this is "
                              f"torch {torch.__version__}; use --mode eager or compile")
    if world > 1 and mode == "graph" and ddp_capture_problem(backend):
        problem = ddp_capture_problem(backend)
        if cfg.mode == "graph":
            raise ConfigError(f"mode 'graph' with {world} processes: {problem}; use --mode fast (eager steps "
                              "then) or eager")
        mode = "eager"
        notes.append(f"{problem}: eager steps")
    if amp == "fp16" and not cuda:
        raise ConfigError(f"amp 'fp16' needs a CUDA device (its gradient scaler runs there), but this run is on "
                          f"{device.type}; use --amp none or bf16")
    if amp == "bf16" and cuda and _capability(device) < BF16_MIN_CAPABILITY:
        cap = ".".join(map(str, _capability(device)))
        raise ConfigError(f"amp 'bf16' needs a GPU of compute capability >= 8.0, but "
                          f"{torch.cuda.get_device_name(device)} is {cap}; use --amp fp16 or none")
    return EnginePlan(requested=cfg.mode, mode=mode, amp=amp, channels_last=channels_last,
                      kernels=_resolved_kernels(cfg.kernels, device), device_type=device.type, options=opts,
                      notes=tuple(notes), world_size=world, backend=backend,
                      sync_bn=world > 1 and bool(getattr(cfg, "sync_bn", False)))


def _fast_choice(device: torch.device, amp: str, notes: list[str]) -> tuple[str, str, bool]:
    """(mode, amp, channels_last) for ``mode="fast"``; explains its choices in ``notes``."""
    if device.type != "cuda":
        notes.append(f"no CUDA device: the eager reference path in fp32 on {device.type}")
        if amp != "none":
            notes.append(f"amp {amp!r} ignored on {device.type}")
        return "eager", "none", False
    mode = "graph"
    if not graph_capture_supported():
        mode = "eager"
        notes.append(f"torch {torch.__version__} cannot register a generator with a CUDA graph: eager steps")
    cap = _capability(device)
    if amp == "none" or (amp == "bf16" and cap < BF16_MIN_CAPABILITY):
        if cap >= BF16_MIN_CAPABILITY:
            amp = "bf16"
        elif cap >= FP16_MIN_CAPABILITY:
            amp = "fp16"
            notes.append(f"compute capability {cap[0]}.{cap[1]} < 8.0: fp16 with a gradient scaler instead of bf16")
        else:
            amp = "none"
            notes.append(f"compute capability {cap[0]}.{cap[1]} has no tensor cores: fp32")
    return mode, amp, True
