"""The step engine on a CUDA GPU: graph replay is bitwise eager, capture safety, fp16 scaling, compile, fast.

Skipped without CUDA. Bitwise comparisons run with
``torch.backends.cudnn.deterministic = True`` (and cuDNN's algorithm search
off) and without augmentations: the backward of their gathers accumulates
with atomics, which is not deterministic even between two eager runs.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from fastgan import Trainer, TrainConfig
from fastgan.engine import EngineOptions
from helpers import state_equal

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cap() -> tuple:
    return torch.cuda.get_device_capability()


def _amp_or_skip(amp: str) -> str:
    if amp == "bf16" and _cap() < (8, 0):
        pytest.skip("bf16 needs compute capability >= 8.0")
    return amp


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g).cuda()


@pytest.fixture
def deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(data="synthetic", out=str(out), steps=10, batch_size=32, resolution=32, g_width=16, d_width=16,
                z_dim=32, log_every=5, sample_every=0, ckpt_every=0, progress=False, device="cuda",
                channels_last=True)
    base.update(kw)
    return TrainConfig(**base)


def _opt_state_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k])


def _assert_same_training_state(x: Trainer, y: Trainer) -> None:
    assert state_equal(x.G, y.G) and state_equal(x.D, y.D)
    if x.G_ema is not None:
        assert state_equal(x.G_ema, y.G_ema)
    assert torch.equal(x.stats.buffer, y.stats.buffer) and torch.equal(x.ema_t, y.ema_t)
    assert _opt_state_equal(x.opt_g, y.opt_g) and _opt_state_equal(x.opt_d, y.opt_d)
    assert torch.equal(x.gen.get_state(), y.gen.get_state())


# ---------------------------------------------------------------- graph == eager, bitwise
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
@pytest.mark.parametrize("extra", [{}, {"r1_gamma": 1.0, "r1_every": 2}, {"loss": "wgan", "gp_weight": 10.0},
                                   {"loss": "hinge", "n_critic": 2}])
def test_graph_replays_bitwise_equal_to_eager(tmp_path, images, deterministic, amp, extra):
    amp = _amp_or_skip(amp)
    n = 10
    eager = Trainer(_cfg(tmp_path / "e", mode="eager", amp=amp, **extra), data=images,
                    engine_options=EngineOptions(capturable=True))
    graph = Trainer(_cfg(tmp_path / "g", mode="graph", amp=amp, **extra), data=images)
    assert eager.engine.plan.capturable and graph.engine.plan.capturable
    eager.run_steps(n)
    graph.run_steps(n)
    torch.cuda.synchronize()
    assert graph.engine.graphs_captured == (2 if extra.get("r1_gamma") else 1)
    _assert_same_training_state(eager, graph)
    if amp == "fp16":
        assert eager.scaler_d.get_scale() == graph.scaler_d.get_scale()
    # sampling reads the in-place-updated weights
    assert torch.equal(eager.sample(8), graph.sample(8))


def test_graph_follows_the_lr_decay_like_eager(tmp_path, images, deterministic):
    """The captured Adam reads its learning rate from a device tensor that the schedule fills in place."""
    eager = Trainer(_cfg(tmp_path / "e", mode="eager", lr_decay=0.8, lr_decay_to=0.0), data=images,
                    engine_options=EngineOptions(capturable=True))
    graph = Trainer(_cfg(tmp_path / "g", mode="graph", lr_decay=0.8, lr_decay_to=0.0), data=images)
    assert torch.is_tensor(graph.opt_g.param_groups[0]["lr"])
    eager.run_steps(10)
    graph.run_steps(10)
    torch.cuda.synchronize()
    assert graph.engine.graphs_captured == 1
    assert graph.opt_g.param_groups[0]["lr"].item() == 0.0
    _assert_same_training_state(eager, graph)


def test_graph_mode_with_every_augmentation_trains(tmp_path, images):
    tr = Trainer(_cfg(tmp_path / "r", mode="graph", amp=_amp_or_skip("bf16"),
                      augment="color,translation,cutout,flip,rot90,scale,shift,rotate", augment_p=0.5), data=images)
    tr.run_steps(8)
    assert tr.engine.graphs_captured == 1
    assert torch.isfinite(tr.stats.buffer).all() and tr.stats["_n_train"].item() == 8


def test_graph_mode_captures_adaptive_augmentation(tmp_path, images):
    """ADA's update is a step of its own: two graphs, and p moves on the device with no recapture."""
    kw = dict(augment="translation,cutout,color", ada_target=0.6, ada_interval=2, ada_kimg=0.1)
    eager = Trainer(_cfg(tmp_path / "e", mode="eager", **kw), data=images)
    graph = Trainer(_cfg(tmp_path / "g", mode="graph", **kw), data=images)
    eager.run_steps(16)
    graph.run_steps(16)
    assert graph.engine.graphs_captured == 2
    steps = float(graph.ada.p) / graph.ada.adjust     # p moves by whole adjustments
    assert float(graph.ada.p) > 0 and abs(steps - round(steps)) < 1e-3
    # random images: D tells them from fakes at once in both modes, so p rose at every update in both
    assert float(graph.ada.p) == pytest.approx(float(eager.ada.p), abs=2 * graph.ada.adjust)
    assert graph.stats["_n_ADA"].item() == 8 and torch.isfinite(graph.stats.buffer).all()


# ---------------------------------------------------------------- checkpoints in graph mode
def test_graph_checkpoint_resume_is_bitwise(tmp_path, images, deterministic):
    full = Trainer(_cfg(tmp_path / "full", mode="graph"), data=images).fit()
    part = Trainer(_cfg(tmp_path / "part", mode="graph"), data=images)
    part.fit(5)
    del part
    resumed = Trainer(_cfg(tmp_path / "part", mode="graph"), data=images)
    assert resumed.step == 5
    assert all(g["capturable"] and g["fused"] for o in (resumed.opt_g, resumed.opt_d) for g in o.param_groups)
    resumed.fit()
    assert resumed.engine.graphs_captured == 1
    assert state_equal(full.G, resumed.G) and state_equal(full.D, resumed.D)
    assert _opt_state_equal(full.opt_d, resumed.opt_d)


def test_loading_a_checkpoint_recaptures(tmp_path, images):
    tr = Trainer(_cfg(tmp_path / "r", mode="graph"), data=images)
    tr.fit(6)
    assert tr.engine.graphs_captured == 1
    ckpt = tr.save_checkpoint()
    tr.load_checkpoint(ckpt)
    assert tr.engine.graphs_captured == 0        # optimizer.load_state_dict rebinds its state tensors
    tr.run_steps(5)
    assert tr.engine.graphs_captured == 1 and torch.isfinite(tr.stats.buffer).all()


def test_eager_run_continues_in_graph_mode(tmp_path, images):
    """A checkpoint from a non-capturable eager run resumes in graph mode (flags and step counters fixed)."""
    run = tmp_path / "run"
    Trainer(_cfg(run, mode="eager"), data=images).fit(3)
    tr = Trainer(_cfg(run, mode="graph"), data=images)
    steps = [s["step"] for s in tr.opt_d.state.values()]
    assert all(t.is_cuda for t in steps) and tr.opt_d.param_groups[0]["capturable"]
    tr.fit(9)
    assert tr.step == 9 and tr.engine.graphs_captured == 1


# ---------------------------------------------------------------- no host syncs, fp16 overflow on the device
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
@pytest.mark.parametrize("extra", [{}, {"augment": "translation,cutout", "ada_target": 0.6, "ada_interval": 2}])
def test_eager_step_makes_no_host_sync(tmp_path, images, amp, extra):
    tr = Trainer(_cfg(tmp_path / "r", mode="eager", amp=_amp_or_skip(amp), r1_gamma=1.0, r1_every=2, **extra),
                 data=images)
    tr.run_steps(2)   # lazy state (optimiser moments, scaler) is created here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        tr.run_steps(4)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_fp16_graph_skips_an_overflowing_step_on_the_device(tmp_path, images):
    tr = Trainer(_cfg(tmp_path / "r", mode="graph", amp="fp16"), data=images)
    tr.run_steps(5)
    assert tr.engine.graphs_captured == 1
    d_before = [p.detach().clone() for p in tr.D.parameters()]
    g_before = [p.detach().clone() for p in tr.G.parameters()]
    tr.scaler_d._scale.fill_(2.0 ** 120)   # the scaled D loss overflows fp16 in backward
    tr.run_steps(1)                        # a replay: the fused Adam kernel sees found_inf and skips
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(d_before, tr.D.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(g_before, tr.G.parameters()))   # G's scaler is fine
    assert tr.scaler_d.get_scale() == 2.0 ** 119                                     # backed off on the device
    tr.scaler_d._scale.fill_(2.0 ** 10)
    tr.run_steps(1)
    assert not all(torch.equal(a, b) for a, b in zip(d_before, tr.D.parameters()))


# ---------------------------------------------------------------- compile and fast on the GPU
def test_compile_inductor_tracks_eager(tmp_path, images):
    """fp32, 10 steps: losses within 1e-3 (inductor fuses pointwise ops, so sums are reordered)."""
    n = 10
    eager = Trainer(_cfg(tmp_path / "e", mode="eager", channels_last=False), data=images)
    comp = Trainer(_cfg(tmp_path / "c", mode="compile", channels_last=False), data=images,
                   engine_options=EngineOptions(compile_backend="inductor", compile_fullgraph=True))
    le, lc = [], []
    for tr, out in ((eager, le), (comp, lc)):
        for _ in range(n):
            tr.stats.buffer.zero_()
            tr.run_steps(1)
            out.append(torch.stack([tr.stats["d_loss"], tr.stats["g_loss"]]))
    torch.testing.assert_close(torch.stack(lc), torch.stack(le), rtol=1e-3, atol=1e-3)


def test_compile_bf16_channels_last_trains(tmp_path, images):
    """A known pitfall: compile + channels_last failed in convolution_backward of D's last conv."""
    tr = Trainer(_cfg(tmp_path / "c", mode="compile", amp=_amp_or_skip("bf16")), data=images,
                 engine_options=EngineOptions(compile_backend="inductor", compile_fullgraph=True))
    tr.run_steps(4)
    assert torch.isfinite(tr.stats.buffer).all()


def test_fast_picks_graph_on_a_gpu(tmp_path, images):
    tr = Trainer(_cfg(tmp_path / "f", mode="fast", channels_last=False), data=images)
    plan = tr.engine.plan
    expect_amp = "bf16" if _cap() >= (8, 0) else ("fp16" if _cap() >= (7, 0) else "none")
    assert (plan.mode, plan.amp, plan.channels_last, plan.kernels) == ("graph", expect_amp, True, "triton")
    assert plan.fused_adam and plan.capturable
    tr.run_steps(6)
    assert tr.engine.graphs_captured == 1 and tr.engine.fallback_reason is None
    assert torch.isfinite(tr.stats.buffer).all()


# ---------------------------------------------------------------- digits demo in every mode
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "compile", "graph", "fast"])
def test_digits_demo_gives_recognisable_samples(tmp_path, mode):
    """The digits demo (default settings, 2000 steps) in each mode gives recognisable digits.

    Thresholds from CPU runs of the same demo (eager / compile, 2000 steps): at 16 px every class
    found, class reverse KL 0.060 / 0.044, classifier-feature FD 1.33 / 1.23 (at 32 px: 0.026 /
    0.035 and 0.62 / 0.57); an untrained generator: 1 class, reverse KL 2.3, FD 104.
    Sample grids and eval.json land in $OUT when set.
    """
    from fastgan.metrics import evaluate

    out = Path(os.environ.get("OUT") or tmp_path) / f"digits_{mode}"
    tr = Trainer(TrainConfig(data="digits", out=str(out), mode=mode, progress=False, device="cuda",
                             sample_every=0, ckpt_every=0))
    tr.fit()
    result = evaluate(tr.ema_generator(), tr.data, ["classes", "fd"], seed=0, device=tr.device)
    (out / "eval.json").write_text(json.dumps({"mode": mode, "plan": tr.engine.plan.summary(), **result}))
    assert result["classes"] == 10 and result["classes_reverse_kl"] < 0.2 and result["fd"] < 10.0, result
