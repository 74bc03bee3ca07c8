"""pix2pix and CycleGAN on a CUDA GPU: graph replays bitwise equal to eager steps, no host sync, graph resume.

Skipped without CUDA (the CPU tests cover the same steps in eager and compile modes).
"""

import pytest
import torch

from fastgan import Trainer
from fastgan.engine import EngineOptions
from translation_helpers import same_state, tiny_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TASKS = ("pix2pix", "cyclegan")


@pytest.fixture
def deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _cfg(tmp_path, task, **kw):
    return tiny_config(tmp_path, task, device="cuda", resolution=32, g_width=8, d_width=8, batch_size=4,
                       channels_last=True, ckpt_every=0, **kw)


def _amp(amp):
    if amp == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 needs compute capability >= 8.0")
    return amp


def _same(x: Trainer, y: Trainer) -> None:
    for name, net in x.task.networks().items():
        assert same_state(net, y.task.networks()[name]), name
    assert torch.equal(x.stats.buffer, y.stats.buffer)
    assert torch.equal(x.task.gen.get_state(), y.task.gen.get_state())
    if hasattr(x.task, "pool_a"):
        assert torch.equal(x.task.pool_a.images, y.task.pool_a.images)
        assert torch.equal(x.task.pool_b.count, y.task.pool_b.count)


@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize("task", TASKS)
def test_graph_replays_bitwise_equal_to_eager(tmp_path, deterministic, task, amp):
    amp = _amp(amp)
    eager = Trainer(_cfg(tmp_path / "e", task, mode="eager", amp=amp), engine_options=EngineOptions(capturable=True))
    graph = Trainer(_cfg(tmp_path / "g", task, mode="graph", amp=amp))
    eager.run_steps(8)
    graph.run_steps(8)
    torch.cuda.synchronize()
    assert graph.engine.graphs_captured == 1
    _same(eager, graph)


@pytest.mark.parametrize("task", TASKS)
def test_eager_step_makes_no_host_sync(tmp_path, task):
    tr = Trainer(_cfg(tmp_path, task, mode="eager", kernels="triton"))
    tr.run_steps(2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tr.run_steps(3)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("task", TASKS)
def test_graph_run_resumes_exactly(tmp_path, deterministic, task):
    full = Trainer(_cfg(tmp_path / "f", task, mode="graph", steps=8)).fit()
    Trainer(_cfg(tmp_path / "p", task, mode="graph", steps=8)).fit(5)
    resumed = Trainer(_cfg(tmp_path / "p", task, mode="graph", steps=8))
    assert resumed.step == 5
    resumed.fit()
    _same(full, resumed)
