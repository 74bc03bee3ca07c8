"""How a training step runs: eager, compiled, or captured whole in a CUDA graph.

The Trainer writes its step once (:meth:`fastgan.Trainer.train_step`); this
module decides how that step is executed on the current device:

- :func:`resolve_plan` turns ``TrainConfig.mode`` / ``amp`` / ``channels_last``
  / ``kernels`` into an :class:`EnginePlan`, refusing (one-line
  :class:`~fastgan.ConfigError`) what the device cannot run. ``mode="fast"``
  is the one request that may fall back: it picks the quickest combination
  the device supports.
- :class:`Engine` applies the plan: memory format and kernel choice of the
  networks, optimisers (fused, capturable), gradient scalers, autocast,
  ``torch.compile`` of the forward + loss pieces, and CUDA-graph capture of
  whole step functions (:class:`fastgan.graph_step.CapturedStep`).

Options that are not part of the user's config (compile backend, channel
padding, warm-up length) live in :class:`EngineOptions`; the benchmark and the
tests set them, and two environment variables reach the compile ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

COMPILE_BACKEND_ENV = "FASTGAN_COMPILE_BACKEND"   # e.g. "aot_eager" for quick CPU tests
COMPILE_MODE_ENV = "FASTGAN_COMPILE_MODE"         # e.g. "max-autotune-no-cudagraphs"
BF16_MIN_CAPABILITY = (8, 0)    # bf16 tensor cores: Ampere and newer
FP16_MIN_CAPABILITY = (7, 0)    # fp16 tensor cores: Volta and newer
# torch.compile modes that add torch's own CUDA graphs. They are refused: on a GAN
# step they fail with "accessing tensor output of CUDAGraphs that has been
# overwritten" (DESIGN.md, DCGAN-64); fastgan's graph mode captures the step itself.
_CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


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
    """

    compile_backend: Optional[str] = None
    compile_mode: Optional[str] = None
    compile_fullgraph: bool = False
    compile_in_graph: bool = False
    pad_channels: int = 0
    capturable: Optional[bool] = None
    warmup_steps: int = 3
    cudnn_benchmark: bool = True


@dataclass(frozen=True)
class EnginePlan:
    """The resolved way a run's steps execute (see :func:`resolve_plan`).

    Args:
        requested: the mode the config asked for (``fast`` included).
        mode: ``eager``, ``compile`` or ``graph``.
        amp: ``none``, ``bf16`` or ``fp16``.
        channels_last: networks and image batches in channels_last.
        kernels: fused-kernel implementation the models use: ``triton`` or ``ref``.
        device_type: ``cpu`` or ``cuda``.
        fused_adam: fused Adam (one multi-tensor kernel per update).
        capturable: capturable Adam (its step counter lives on the device).
        compile_pieces: forward + loss functions go through ``torch.compile``.
        compile_backend: backend used when ``compile_pieces``.
        compile_mode: inductor mode, or ``None`` for the default.
        compile_fullgraph: refuse graph breaks.
        pad_channels: discriminator input-channel padding multiple (0 = off).
        warmup_steps: eager steps before a CUDA graph is captured.
        cudnn_benchmark: cuDNN algorithm search is switched on.
        notes: why ``fast`` chose what it chose, or fell back.
    """

    requested: str
    mode: str
    amp: str
    channels_last: bool
    kernels: str
    device_type: str
    fused_adam: bool
    capturable: bool
    compile_pieces: bool
    compile_backend: str
    compile_mode: Optional[str]
    compile_fullgraph: bool
    pad_channels: int
    warmup_steps: int
    cudnn_benchmark: bool
    notes: tuple[str, ...] = ()

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or ``None`` for full precision."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    def summary(self) -> str:
        """One line: what runs, e.g. ``graph, bf16, channels_last, triton kernels, fused capturable Adam``."""
        parts = [self.mode + (f" ({self.compile_backend})" if self.compile_pieces else ""),
                 "fp32" if self.amp == "none" else self.amp]
        if self.channels_last:
            parts.append("channels_last")
        parts.append(f"{self.kernels} kernels")
        adam = " ".join(w for w, on in (("fused", self.fused_adam), ("capturable", self.capturable)) if on)
        parts.append(f"{adam} Adam" if adam else "Adam")
        if self.pad_channels:
            parts.append(f"D input padded to x{self.pad_channels} channels")
        text = ", ".join(parts)
        return f"fast -> {text}" if self.requested == "fast" else text

    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d


# ---------------------------------------------------------------------------- resolution
def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def graph_capture_supported() -> bool:
    """True when this torch can register a custom ``torch.Generator`` with a CUDA graph."""
    return hasattr(torch.cuda.CUDAGraph, "register_generator_state")


def _triton_kernels_possible(device: torch.device) -> bool:
    try:
        from .kernels import HAS_TRITON
        from .kernels._common import TRITON_INTERPRETED
    except ImportError:
        return False
    return HAS_TRITON and (device.type == "cuda" or TRITON_INTERPRETED)


def _resolved_kernels(requested: str, device: torch.device) -> str:
    if requested == "ref":
        return "ref"
    if requested == "triton":
        if not _triton_kernels_possible(device):
            where = "triton is not installed" if device.type == "cuda" else \
                "this run is on the CPU (only the Triton interpreter, TRITON_INTERPRET=1, runs kernels there)"
            raise ConfigError(f"kernels 'triton' cannot run: {where}; use --kernels auto or ref")
        return "triton"
    try:
        from .kernels import HAS_TRITON
    except ImportError:
        return "ref"
    return "triton" if (HAS_TRITON and device.type == "cuda") else "ref"


def _options_from_env(options: Optional[EngineOptions]) -> EngineOptions:
    o = options or EngineOptions()
    backend = o.compile_backend or os.environ.get(COMPILE_BACKEND_ENV) or "inductor"
    mode = o.compile_mode or os.environ.get(COMPILE_MODE_ENV) or None
    if mode in ("default", ""):
        mode = None
    if mode in _CUDAGRAPH_COMPILE_MODES:
        raise ConfigError(f"torch.compile mode {mode!r} adds torch's own CUDA graphs, which break on GAN steps; "
                          "use mode 'graph' (fastgan captures the whole step) or compile mode "
                          "'max-autotune-no-cudagraphs'")
    if o.pad_channels < 0 or o.warmup_steps < 1:
        raise ConfigError(f"pad_channels must be >= 0 and warmup_steps >= 1, got {o.pad_channels}, "
                          f"{o.warmup_steps}")
    return dataclasses.replace(o, compile_backend=backend, compile_mode=mode)


def resolve_plan(cfg, device: torch.device, options: Optional[EngineOptions] = None) -> EnginePlan:
    """Decide how a run's steps execute on ``device``, or refuse with a one-line ConfigError.

    Explicit requests are checked, never silently changed: ``mode="graph"``
    and ``amp="fp16"`` need CUDA, ``amp="bf16"`` on CUDA needs compute
    capability >= 8.0. ``mode="fast"`` picks, on CUDA, graph capture (when
    this torch supports it) with bf16 (fp16 with a gradient scaler below
    capability 8.0, fp32 below 7.0), channels_last, the Triton kernels and
    fused capturable Adam; on the CPU the eager reference path in fp32 (with fused Adam).

    Args:
        cfg: the :class:`~fastgan.TrainConfig` (its mode, amp, channels_last, kernels).
        device: the training device.
        options: engine options (default: :class:`EngineOptions` and the environment).

    Returns:
        The :class:`EnginePlan`.
    """
    opts = _options_from_env(options)
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
    if amp == "fp16" and not cuda:
        raise ConfigError(f"amp 'fp16' needs a CUDA device (its gradient scaler runs there), but this run is on "
                          f"{device.type}; use --amp none or bf16")
    if amp == "bf16" and cuda and _capability(device) < BF16_MIN_CAPABILITY:
        cap = ".".join(map(str, _capability(device)))
        raise ConfigError(f"amp 'bf16' needs a GPU of compute capability >= 8.0, but "
                          f"{torch.cuda.get_device_name(device)} is {cap}; use --amp fp16 or none")
    graph = mode == "graph"
    compile_pieces = mode == "compile" or (graph and opts.compile_in_graph)
    capturable = cuda and bool(graph or opts.capturable)   # torch's capturable Adam is CUDA-only
    return EnginePlan(
        requested=cfg.mode, mode=mode, amp=amp, channels_last=channels_last,
        kernels=_resolved_kernels(cfg.kernels, device), device_type=device.type,
        fused_adam=device.type in ("cuda", "cpu"), capturable=capturable, compile_pieces=compile_pieces,
        compile_backend=opts.compile_backend, compile_mode=opts.compile_mode,
        compile_fullgraph=opts.compile_fullgraph, pad_channels=opts.pad_channels,
        warmup_steps=opts.warmup_steps, cudnn_benchmark=cuda and opts.cudnn_benchmark, notes=tuple(notes))


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


# ---------------------------------------------------------------------------- the engine
class Engine:
    """Applies an :class:`EnginePlan` to a trainer's networks, optimisers and step functions.

    Args:
        plan: the resolved plan.
        device: the training device.
    """

    def __init__(self, plan: EnginePlan, device: torch.device):
        self.plan = plan
        self.device = device
        self._captured: list = []
        # per optimiser (by id): the Adam flags of the plan, and whether its lr lives in a tensor
        self._opt_flags: dict[int, tuple[dict[str, Any], bool]] = {}
        if plan.cudnn_benchmark and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True

    # -------------------------------------------------------------- networks and data
    def prepare_networks(self, G: nn.Module, D: nn.Module) -> None:
        """Set the kernel implementation, memory format and channel padding of G and D in place.

        Args:
            G: the generator (its EMA copy should be made afterwards).
            D: the discriminator.
        """
        from .models import set_kernel_impl

        for net in (G, D):
            set_kernel_impl(net, self.plan.kernels)
            if self.plan.channels_last:
                net.to(memory_format=torch.channels_last)
        if self.plan.pad_channels and isinstance(getattr(D, "from_img", None), nn.Conv2d):
            pad_input_channels(D.from_img, self.plan.pad_channels)

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in the plan's memory format (other tensors unchanged).

        Args:
            x: (B, C, H, W) images or (B, F) points.
        """
        if self.plan.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """The autocast context of the plan's mixed precision (a no-op context for fp32)."""
        dtype = self.plan.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        # NOTE: in graph mode the cast cache is off, as torch's CUDA-graph notes ask;
        # each forward region is its own autocast context, so D's weights are never
        # served stale from the cache after opt_d.step().
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=self.plan.mode != "graph")

    # -------------------------------------------------------------- optimisers
    def make_optimizer(self, params: Iterable[torch.Tensor], lr: float,
                       betas: tuple[float, float], *, scheduled: bool = False) -> torch.optim.Adam:
        """Adam as the plan asks: fused (one multi-tensor kernel) on CUDA and CPU, capturable in graph mode.

        Args:
            params: the parameters to optimise.
            lr: learning rate.
            betas: Adam betas.
            scheduled: the learning rate will change during training (see
                :meth:`set_lr`). A captured CUDA graph bakes a float learning
                rate into its kernels, so capturable Adam then keeps it in a
                device tensor that :meth:`set_lr` updates in place.
        """
        flags: dict[str, Any] = {}
        if self.plan.fused_adam:
            flags["fused"] = True
        if self.plan.device_type == "cuda":
            flags["capturable"] = self.plan.capturable
        lr_arg: Any = lr
        if scheduled and self.plan.capturable:
            lr_arg = torch.tensor(float(lr), dtype=torch.float32, device=self.device)
        opt = torch.optim.Adam(params, lr=lr_arg, betas=betas, **flags)
        self._opt_flags[id(opt)] = ({k: opt.param_groups[0][k] for k in ("fused", "capturable", "foreach")},
                                    torch.is_tensor(lr_arg))
        return opt

    @staticmethod
    def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
        """Set every group's learning rate (in place when it lives in a tensor, so captured graphs see it).

        Args:
            opt: an optimiser made by :meth:`make_optimizer`.
            lr: the new learning rate.
        """
        for group in opt.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def make_scaler(self) -> Optional[torch.amp.GradScaler]:
        """A gradient scaler for fp16 (``None`` otherwise); its state stays on the device.

        With fused Adam, ``GradScaler.step`` hands the scale and the found-inf
        flag to the optimiser's kernel, which skips the update on overflow
        without a host sync, so the scaled step can be captured in a graph.
        """
        if self.plan.amp != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    @staticmethod
    def update(loss: torch.Tensor, opt: torch.optim.Optimizer,
               scaler: Optional[torch.amp.GradScaler]) -> None:
        """Backward ``loss`` and step ``opt`` (through ``scaler`` when given); no host sync.

        Args:
            loss: 0-dim loss.
            opt: the optimiser of the network being trained.
            scaler: fp16 gradient scaler or ``None``.
        """
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
            return
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def after_optimizer_load(self, opt: torch.optim.Optimizer) -> None:
        """Restore the plan's optimiser flags after ``load_state_dict`` (which takes the checkpoint's).

        Moves each ``step`` counter where the flags need it (device for fused or
        capturable Adam, CPU otherwise), then drops captured graphs: loading
        rebinds the optimiser's state tensors, so the next step captures again.

        Args:
            opt: an optimiser made by :meth:`make_optimizer`.
        """
        if id(opt) not in self._opt_flags:
            return
        flags, tensor_lr = self._opt_flags[id(opt)]
        on_device = bool(flags["fused"] or flags["capturable"])
        for group in opt.param_groups:
            group.update(flags)
            lr = float(group["lr"])
            group["lr"] = torch.tensor(lr, dtype=torch.float32, device=self.device) if tensor_lr else lr
            for p in group["params"]:
                st = opt.state.get(p)
                if st and torch.is_tensor(st.get("step")):
                    st["step"] = st["step"].to(device=p.device if on_device else "cpu", dtype=torch.float32)
        self.reset_graphs()

    # -------------------------------------------------------------- step functions
    def compile(self, fn: Callable) -> Callable:
        """``fn`` through ``torch.compile`` when the plan compiles pieces, else ``fn`` itself.

        Args:
            fn: a forward + loss function (no random draws inside: generators
                are kept out of compiled code).
        """
        if not self.plan.compile_pieces:
            return fn
        kwargs: dict[str, Any] = dict(backend=self.plan.compile_backend, dynamic=False,
                                      fullgraph=self.plan.compile_fullgraph)
        if self.plan.compile_mode and self.plan.compile_backend == "inductor":
            kwargs["mode"] = self.plan.compile_mode
        return torch.compile(fn, **kwargs)

    def wrap_step(self, fn: Callable[[], None], generators: Iterable[torch.Generator], name: str) -> Callable[[], None]:
        """The callable that runs one step: ``fn`` itself, or its CUDA-graph replay in graph mode.

        Args:
            fn: the step (reads and writes only device tensors).
            generators: every ``torch.Generator`` the step draws from (registered with the graph).
            name: what the step is, for error messages (``"train"``, ``"R1"``).
        """
        if self.plan.mode != "graph":
            return fn
        from .graph_step import CapturedStep

        step = CapturedStep(fn, list(generators), warmup_steps=self.plan.warmup_steps, name=name,
                            allow_eager_fallback=self.plan.requested == "fast")
        self._captured.append(step)
        return step

    def reset_graphs(self) -> None:
        """Drop captured graphs; each wrapped step warms up and captures again on its next call."""
        for step in self._captured:
            step.reset()

    @property
    def graphs_captured(self) -> int:
        """How many step functions are currently captured (0 outside graph mode)."""
        return sum(1 for s in self._captured if s.captured)

    @property
    def fallback_reason(self) -> Optional[str]:
        """Why mode ``fast`` left graph capture for eager steps, or ``None``."""
        return next((s.fallback_reason for s in self._captured if s.fallback_reason), None)


# ---------------------------------------------------------------------------- channel padding
def pad_input_channels(conv: nn.Conv2d, multiple: int) -> nn.Conv2d:
    """Make ``conv`` pad its input channels (and its weight) with zeros to a multiple of ``multiple``.

    The extra input channels are zero and meet zero weights, so every output
    and every gradient of the real weights and inputs is the same sum as
    without padding (only the order of the additions may change). The weight
    keeps its shape and its state_dict key: the padding happens per call.

    Args:
        conv: a 2-D convolution with ``groups == 1``.
        multiple: channel multiple (e.g. 8: what cuDNN pads 3-channel
            channels_last inputs to for tensor cores).

    Returns:
        ``conv`` (changed in place).
    """
    if conv.padding_mode != "zeros":
        raise ValueError("pad_input_channels supports padding_mode='zeros' only")
    if conv.groups != 1 or multiple <= 1 or conv.in_channels % multiple == 0:
        return conv
    extra = -conv.in_channels % multiple

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = F.pad(x, (0, 0, 0, 0, 0, extra))                 # (B, C + extra, H, W)
        weight = F.pad(weight, (0, 0, 0, 0, 0, extra))       # (O, C + extra, k, k)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    conv._conv_forward = types.MethodType(_conv_forward, conv)
    return conv
