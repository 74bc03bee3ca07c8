"""CapturedStep's bookkeeping (warm-up, capture once, replay, reset, fast's fallback) on a stand-in CUDA.

The real capture is tested on a GPU (tests/test_engine_gpu.py); here torch.cuda's
stream and graph objects are replaced by recorders so the logic runs on a CPU.
"""

import contextlib

import pytest
import torch

from fastgan import TrainingError
from fastgan import graph_step


class FakeGraph:
    fail_capture = False

    def __init__(self):
        self.generators, self.replays = [], 0

    def register_generator_state(self, gen):
        self.generators.append(gen)

    def replay(self):
        self.replays += 1


class Recorder:
    """The step: counts eager runs and runs that happen inside a capture."""

    def __init__(self):
        self.eager = self.captured = 0
        self.capturing = False

    def __call__(self):
        if self.capturing:
            self.captured += 1
        else:
            self.eager += 1


@pytest.fixture
def fake_cuda(monkeypatch):
    rec = Recorder()

    @contextlib.contextmanager
    def graph(g):
        rec.capturing = True
        try:
            yield
            if FakeGraph.fail_capture:
                raise RuntimeError("operation not permitted when stream is capturing\ndetails")
        finally:
            rec.capturing = False

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(FakeGraph, "fail_capture", False)
    return rec


def test_warm_up_capture_once_then_replay(fake_cuda):
    gen = torch.Generator()
    step = graph_step.CapturedStep(fake_cuda, [gen], warmup_steps=3, name="train")
    for _ in range(3):
        step()
    assert (fake_cuda.eager, fake_cuda.captured, step.captured) == (3, 0, False)
    step()                                           # capture + the replay that runs this step
    assert step.captured and fake_cuda.captured == 1 and step.graph.replays == 1
    assert step.graph.generators == [gen]
    for _ in range(5):
        step()
    assert (fake_cuda.eager, fake_cuda.captured, step.graph.replays) == (3, 1, 6)
    step.reset()
    assert not step.captured
    for _ in range(4):
        step()
    assert (fake_cuda.eager, fake_cuda.captured, step.graph.replays) == (6, 2, 1)


def test_failed_capture_raises_one_line(fake_cuda, monkeypatch):
    monkeypatch.setattr(FakeGraph, "fail_capture", True)
    step = graph_step.CapturedStep(fake_cuda, [], warmup_steps=1, name="R1")
    step()
    with pytest.raises(TrainingError) as e:
        step()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("CUDA-graph capture of the R1 step failed (RuntimeError: operation")
    assert "--mode eager" in msg


def test_fast_falls_back_to_eager_when_capture_fails(fake_cuda, monkeypatch):
    monkeypatch.setattr(FakeGraph, "fail_capture", True)
    step = graph_step.CapturedStep(fake_cuda, [], warmup_steps=1, allow_eager_fallback=True)
    step()
    with pytest.warns(UserWarning, match="continues with eager steps"):
        step()                                       # the failed capture's step is run eagerly
    assert fake_cuda.eager == 2 and not step.captured and step.fallback_reason
    step()
    assert fake_cuda.eager == 3
