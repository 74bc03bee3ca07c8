"""Capture a whole training-step function in a CUDA graph once, then replay it.

The recipe (torch's CUDA-graph notes):

1. Warm up: the first ``warmup_steps`` calls run the step eagerly on a side
   stream. They are real training steps (same maths as a replay); they let
   lazy state appear outside the graph: optimiser moments, cuBLAS/cuDNN
   handles and algorithm choices, Triton's compiled kernels, the gradient
   scaler's tensors, compiled functions.
2. Capture: the next call registers the step's ``torch.Generator`` with a new
   ``torch.cuda.CUDAGraph`` (so every replay draws fresh random numbers and
   advances the generator exactly as eager calls would), captures one call of
   the step, and replays it once (capturing runs nothing).
3. Replay: every later call is ``graph.replay()``: no Python, no launches.

Everything the step touches must keep its address between replays:
parameters, optimiser state, the data on the device, the task's ``stats``
and EMA counter are updated in place; gradients are allocated inside the
capture (``zero_grad(set_to_none=True)``) and live in the graph's private pool.
Anything that rebinds those tensors (``optimizer.load_state_dict``) must call
:meth:`CapturedStep.reset`, after which the step warms up and captures again.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import torch

from .errors import TrainingError


class CapturedStep:
    """A step function run through a CUDA graph after a short eager warm-up.

    Args:
        fn: the step; reads and writes only device tensors, no host syncs.
        generators: every ``torch.Generator`` the step draws from.
        warmup_steps: eager calls (on a side stream) before the capture.
        name: the step's name, for messages (``"train"``, ``"R1"``).
        allow_eager_fallback: when the capture fails, warn and run ``fn``
            eagerly from then on (mode ``fast``); otherwise raise TrainingError.
    """

    def __init__(self, fn: Callable[[], None], generators: Sequence[torch.Generator], *, warmup_steps: int = 3,
                 name: str = "train", allow_eager_fallback: bool = False):
        self.fn = fn
        self.generators = list(generators)
        self.warmup_steps = int(warmup_steps)
        self.name = name
        self.allow_eager_fallback = allow_eager_fallback
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.warmed = 0
        self.fallback_reason: Optional[str] = None
        self._side_stream: Optional[torch.cuda.Stream] = None

    @property
    def captured(self) -> bool:
        """True once the graph exists (calls are replays)."""
        return self.graph is not None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.fallback_reason is not None:
            self.fn()
        elif self.warmed < self.warmup_steps:
            self._warm_up()
        else:
            self._capture()

    def reset(self) -> None:
        """Forget the graph (and its memory pool); the next calls warm up and capture again."""
        self.graph = None
        self.warmed = 0

    def _warm_up(self) -> None:
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream()
        side, main = self._side_stream, torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            self.fn()
        main.wait_stream(side)
        self.warmed += 1

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        for gen in self.generators:
            graph.register_generator_state(gen)
        try:
            with torch.cuda.graph(graph):  # synchronises, then captures on its own stream
                self.fn()
        except Exception as e:  # what a capture can raise is not a closed set of types
            del graph
            first = (str(e).strip().splitlines() or [""])[0][:200]
            reason = f"CUDA-graph capture of the {self.name} step failed ({type(e).__name__}: {first})"
            if not self.allow_eager_fallback:
                raise TrainingError(f"{reason}; use --mode eager or --mode compile") from e
            warnings.warn(f"{reason}; mode 'fast' continues with eager steps")
            self.fallback_reason = reason
            torch.cuda.synchronize()
            self.fn()
            return
        self.graph = graph
        graph.replay()  # the capture recorded the step without running it
