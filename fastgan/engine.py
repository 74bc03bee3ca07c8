"""How a training step runs: eager, compiled, or captured whole in a CUDA graph.

A step is written once, as a function that reads and writes device tensors
only; the :class:`Engine` runs it as its :class:`~fastgan.engine_plan.EnginePlan`
says: it sets the networks' memory format and kernel choice, makes the
optimisers (fused, capturable) and gradient scalers, opens autocast, passes
forward + loss functions through ``torch.compile`` and captures whole step
functions in CUDA graphs (:class:`fastgan.graph_step.CapturedStep`). In a
data-parallel run (:mod:`fastgan.distributed`) it also wraps the trained
networks in DistributedDataParallel, averages the gradients of a backward
that bypasses DDP, and hands each task the random streams of its shards of
the global batch. It knows nothing of GANs. The plan itself (what the device can run, what ``fast``
picks) is decided in :mod:`fastgan.engine_plan`, whose names are importable
from here too.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .batch_streams import BatchStreams
from .distributed import SINGLE_PROCESS, Parallel
from .engine_plan import EngineOptions, EnginePlan, graph_capture_supported, resolve_device, resolve_plan
from .graph_step import CapturedStep

# torch's CUDA-graph notes: capture a step with DDP collectives after at least 11 DDP-enabled eager iterations
DDP_GRAPH_WARMUP_STEPS = 11

__all__ = ["Engine", "EngineOptions", "EnginePlan", "resolve_plan", "resolve_device", "graph_capture_supported",
           "pad_input_channels"]


# ---------------------------------------------------------------------------- the engine
@dataclass
class _OptimizerRecord:
    flags: dict[str, Any]   # the plan's Adam flags (load_state_dict takes the checkpoint's; they are put back)
    tensor_lr: bool         # the learning rate lives in a device tensor that captured graphs read
    base_lr: float          # the learning rate it was made with: the schedule scales this one


class Engine:
    """Applies an :class:`EnginePlan` to a task's networks, optimisers and step functions.

    Args:
        plan: the resolved plan.
        device: the training device.
        parallel: this process's place in a data-parallel run (default: a single process).
    """

    def __init__(self, plan: EnginePlan, device: torch.device, parallel: Parallel = SINGLE_PROCESS):
        self.plan = plan
        self.device = device
        self.parallel = parallel
        self._captured: list = []
        self._optimizers: dict[int, _OptimizerRecord] = {}   # by id(): what make_optimizer decided
        self._streams: list[BatchStreams] = []
        self.ddp_modules: list[nn.Module] = []   # what data_parallel wrapped
        if plan.cudnn_benchmark and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True

    # -------------------------------------------------------------- networks and data
    def prepare_networks(self, *networks: nn.Module) -> None:
        """Set the kernel implementation, memory format and input-channel padding of networks in place.

        Make copies (an EMA generator) afterwards, so they share the choices.

        Args:
            networks: the networks; one whose images enter through a ``from_img``
                convolution gets its input channels padded when the plan asks.
        """
        from .models import set_kernel_impl

        pad = self.plan.options.pad_channels
        for net in networks:
            set_kernel_impl(net, self.plan.kernels)
            if self.plan.channels_last:
                net.to(memory_format=torch.channels_last)
            if pad and isinstance(getattr(net, "from_img", None), nn.Conv2d):
                pad_input_channels(net.from_img, pad)

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in the plan's memory format (other tensors unchanged).

        Args:
            x: (B, C, H, W) images or (B, F) points.
        """
        if self.plan.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # -------------------------------------------------------------- data parallel
    def batch_streams(self, seed: int, batch_size: int, pack: int = 1) -> BatchStreams:
        """The random streams that draw this process's part of every global batch of ``batch_size``.

        Every random draw of a step goes through them, so that each rank
        draws its own shards (a single process: one stream seeded with ``seed``).

        Args:
            seed: the run's seed.
            batch_size: the global batch size.
            pack: PacGAN packing degree (a shard holds whole packs).
        """
        par = self.parallel
        streams = BatchStreams(seed, par.local_shards(), par.shard_size(batch_size, pack), self.device)
        self._streams.append(streams)
        return streams

    def restart_streams(self, step: int) -> None:
        """Seed every stream made by :meth:`batch_streams` from (seed, shard, ``step``).

        Args:
            step: the step training continues from.
        """
        for streams in self._streams:
            streams.restart(step)

    @property
    def stream_generators(self) -> list[torch.Generator]:
        """Every generator of the streams made by :meth:`batch_streams`."""
        return [g for s in self._streams for g in s.generators]

    def data_parallel(self, module: nn.Module) -> nn.Module:
        """The network as a step should call it so that backward averages its gradients over the ranks.

        A single process gets ``module`` itself. Under data parallelism: its
        batch norms become :class:`~fastgan.sync_batch_norm.SyncBatchNormAct`
        when the plan says ``sync_bn``, then it is wrapped in
        DistributedDataParallel (built on a side stream on CUDA, as graph
        capture needs; buffers are not broadcast: batch-norm statistics stay
        per rank). Call the wrapper where gradients flow into the network's
        parameters; call ``module`` itself where they do not (a frozen D in
        G's step: DDP would wait for gradients that never come) or where the
        backward differentiates a gradient (R1; then :meth:`update` with
        ``average_grads=True``). Make copies (an EMA generator) before calling this.

        Args:
            module: a network on the training device (after :meth:`prepare_networks`).
        """
        if not self.parallel.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if self.plan.sync_bn:
            from .sync_batch_norm import convert_sync_batch_norm
            convert_sync_batch_norm(module)
        # buffers (batch-norm running statistics) are not synchronised at each forward: they stay per rank
        sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _ddp_arguments()
                else {"broadcast_buffers": False})   # torch < 2.13 knows only the older name
        if self.device.type != "cuda":
            ddp = DistributedDataParallel(module, **sync)
        else:  # built on a side stream (torch's CUDA-graph notes for capturing DDP's backward)
            main, side = torch.cuda.current_stream(self.device), torch.cuda.Stream(device=self.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                ddp = DistributedDataParallel(module, device_ids=[self.device.index], **sync)
            main.wait_stream(side)
        self.ddp_modules.append(ddp)
        return ddp

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over the ranks with one all-reduce (no-op for a single process).

        For a backward that did not run through a DDP wrapper. A parameter
        without a gradient (R1 never reaches D's last bias) has none on any
        rank and is left out.

        Args:
            params: parameters, in the same order on every rank.
        """
        if not self.parallel.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat.div_(self.parallel.world_size)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view(g.shape))

    def autocast(self):
        """The autocast context of the plan's mixed precision (a no-op context for fp32)."""
        dtype = self.plan.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        # captured regions must not use autocast's cache of cast weights (torch's CUDA-graph notes)
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
        self._optimizers[id(opt)] = _OptimizerRecord(
            {k: opt.param_groups[0][k] for k in ("fused", "capturable", "foreach")}, torch.is_tensor(lr_arg),
            float(lr))
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

    def scale_lr(self, opt: torch.optim.Optimizer, factor: float) -> None:
        """Set the learning rate to ``factor`` times the one ``opt`` was made with (see :meth:`set_lr`).

        Args:
            opt: an optimiser made by :meth:`make_optimizer`.
            factor: the schedule's factor for the coming iteration.
        """
        self.set_lr(opt, self._optimizers[id(opt)].base_lr * factor)

    def make_scaler(self) -> Optional[torch.amp.GradScaler]:
        """A gradient scaler for fp16 (``None`` otherwise); its state stays on the device.

        With fused Adam, ``GradScaler.step`` hands the scale and the found-inf
        flag to the optimiser's kernel, which skips the update on overflow
        without a host sync, so the scaled step can be captured in a graph.
        """
        if self.plan.amp != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def update(self, loss: torch.Tensor, opt: torch.optim.Optimizer,
               scaler: Optional[torch.amp.GradScaler], *, average_grads: bool = False) -> None:
        """Backward ``loss`` and step ``opt`` (through ``scaler`` when given); no host sync.

        Args:
            loss: 0-dim loss.
            opt: the optimiser of the network being trained.
            scaler: fp16 gradient scaler or ``None``.
            average_grads: average the gradients over the ranks before the step
                (:meth:`average_gradients`), for a backward that bypassed DDP.
        """
        opt.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if average_grads:
            self.average_gradients(p for group in opt.param_groups for p in group["params"])
        if scaler is None:
            opt.step()
            return
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
        record = self._optimizers.get(id(opt))
        if record is None:
            return
        flags, tensor_lr = record.flags, record.tensor_lr
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
        o = self.plan.options
        kwargs: dict[str, Any] = dict(backend=o.compile_backend, dynamic=False, fullgraph=o.compile_fullgraph)
        if o.compile_mode and o.compile_backend == "inductor":
            kwargs["mode"] = o.compile_mode
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
        warmup = self.plan.options.warmup_steps
        if self.parallel.active:
            warmup = max(warmup, DDP_GRAPH_WARMUP_STEPS)
        step = CapturedStep(fn, list(generators), warmup_steps=warmup, name=name,
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


def _ddp_arguments() -> set[str]:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    return set(inspect.signature(DistributedDataParallel.__init__).parameters)


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
