"""The step engine on CPU: mode/amp checks, fast's fallback, compile vs eager, channels_last, padding.

Tolerances (stated here and in the report): with the ``aot_eager`` backend a
compiled step runs the same ATen ops as eager, so over 50 steps every logged
loss must agree within 1e-4 absolute + 1e-4 relative (it is bitwise equal on
the machine these tests were written on); channels_last and channel padding
change only the order of additions inside convolutions: 1e-4 over 10 steps.
"""

import copy
import dataclasses

import pytest
from helpers import one_thread  # noqa: F401  (fixture)
import torch
import torch.nn.functional as F

from fastgan import ConfigError, Trainer
from fastgan.cli import main as cli_main
from fastgan.engine import EngineOptions, pad_input_channels, resolve_plan
from helpers import state_equal, tiny_images, tiny_points

AOT = EngineOptions(compile_backend="aot_eager", compile_fullgraph=True)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch with one intra-op thread (see helpers.one_thread)."""


def _losses(tr: Trainer, steps: int) -> torch.Tensor:
    """Per-step (d_loss, g_loss) of ``steps`` iterations, read from the stats buffer."""
    out = []
    for _ in range(steps):
        tr.stats.buffer.zero_()
        tr.run_steps(1)
        out.append(torch.stack([tr.stats["d_loss"], tr.stats["g_loss"]]))
    return torch.stack(out)


def _max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


# ---------------------------------------------------------------- what a CPU refuses
@pytest.mark.parametrize("kw, needle", [(dict(mode="graph"), "mode 'graph' needs a CUDA device"),
                                        (dict(amp="fp16"), "amp 'fp16' needs a CUDA device")])
def test_cuda_only_settings_are_refused_on_cpu(tmp_path, kw, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        Trainer(tiny_images(tmp_path / "run", **kw))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_cli_reports_graph_on_cpu_in_one_line(tmp_path, capsys):
    rc = cli_main(["train", "--data", "digits", "--out", str(tmp_path / "r"), "--steps", "1", "--mode", "graph",
                   "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("fastgan: error: mode 'graph' needs a CUDA device") and "\n" not in err


def test_cudagraph_compile_modes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="reduce-overhead"):
        Trainer(tiny_images(tmp_path / "r", mode="compile"),
                engine_options=EngineOptions(compile_mode="reduce-overhead"))


def test_fast_on_cpu_is_the_eager_reference_path(tmp_path):
    fast = Trainer(tiny_images(tmp_path / "fast", mode="fast", amp="bf16", channels_last=True))
    plan = fast.engine.plan
    assert (plan.requested, plan.mode, plan.amp, plan.channels_last, plan.kernels) == \
        ("fast", "eager", "none", False, "ref")
    assert plan.fused_adam and not plan.capturable and not plan.compile_pieces
    assert plan.summary().startswith("fast -> eager, fp32") and plan.notes
    eager = Trainer(tiny_images(tmp_path / "eager"))
    torch.testing.assert_close(_losses(fast, 3), _losses(eager, 3), rtol=0, atol=0)
    assert state_equal(fast.G, eager.G) and state_equal(fast.D, eager.D)


def test_plan_is_json_friendly():
    import json

    from fastgan import TrainConfig
    plan = resolve_plan(TrainConfig(mode="compile"), torch.device("cpu"), AOT)
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["mode"] == "compile" and d["compile_backend"] == "aot_eager" and d["compile_fullgraph"] is True


def test_compile_backend_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_COMPILE_BACKEND", "aot_eager")
    tr = Trainer(tiny_images(tmp_path / "r", mode="compile"))
    assert tr.engine.plan.options.compile_backend == "aot_eager"


# ---------------------------------------------------------------- compile mode
def test_compile_tracks_eager_over_50_steps(tmp_path):
    n = 50
    eager = Trainer(tiny_images(tmp_path / "e", steps=n))
    comp = Trainer(tiny_images(tmp_path / "c", steps=n, mode="compile"), engine_options=AOT)
    assert comp.engine.plan.compile_pieces
    le, lc = _losses(eager, n), _losses(comp, n)
    assert torch.isfinite(lc).all()
    torch.testing.assert_close(lc, le, rtol=1e-4, atol=1e-4)
    assert _max_param_diff(comp.G, eager.G) < 1e-3 and _max_param_diff(comp.D, eager.D) < 1e-3


def test_compile_mode_points_hinge_two_critics(tmp_path):
    kw = dict(loss="hinge", n_critic=2)
    eager = Trainer(tiny_points(tmp_path / "e", **kw))
    comp = Trainer(tiny_points(tmp_path / "c", mode="compile", **kw), engine_options=AOT)
    torch.testing.assert_close(_losses(comp, 6), _losses(eager, 6), rtol=1e-4, atol=1e-4)


def test_compile_mode_fit_checkpoint_and_resume(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_points(run, mode="compile", steps=8)
    Trainer(cfg, engine_options=AOT).fit(4)
    resumed = Trainer(cfg, engine_options=AOT)
    assert resumed.step == 4
    resumed.fit()
    full = Trainer(tiny_points(tmp_path / "full", steps=8)).fit()
    assert state_equal(full.G, resumed.G) and state_equal(full.D, resumed.D)
    assert resumed.sample(3).shape == (3, 2)


def test_compile_bf16_channels_last_has_no_graph_break(tmp_path):
    """fullgraph=True: autocast and channels_last inside the compiled pieces trace in one graph each."""
    comp = Trainer(tiny_images(tmp_path / "c", mode="compile", amp="bf16", channels_last=True), engine_options=AOT)
    eager = Trainer(tiny_images(tmp_path / "e", amp="bf16", channels_last=True))
    torch.testing.assert_close(_losses(comp, 3), _losses(eager, 3), rtol=0, atol=2e-2)


# ---------------------------------------------------------------- precision and layout
def test_channels_last_matches_contiguous(tmp_path):
    cl = Trainer(tiny_images(tmp_path / "cl", channels_last=True))
    ref = Trainer(tiny_images(tmp_path / "ref"))
    convs = [p for p in cl.D.parameters() if p.ndim == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                         for p in convs)
    torch.testing.assert_close(_losses(cl, 10), _losses(ref, 10), rtol=1e-4, atol=1e-4)
    assert _max_param_diff(cl.G, ref.G) < 1e-4 and _max_param_diff(cl.D, ref.D) < 1e-4


def test_channels_last_checkpoint_round_trip(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny_images(run, channels_last=True))
    tr.fit(2)
    back = Trainer(tiny_images(run, channels_last=True))
    assert back.step == 2 and state_equal(back.G, tr.G) and state_equal(back.D, tr.D)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in back.D.parameters() if p.ndim == 4)
    back.fit(4)
    assert back.step == 4


def test_bf16_autocast_runs_on_cpu(tmp_path):
    bf = Trainer(tiny_images(tmp_path / "bf", amp="bf16"))
    ref = Trainer(tiny_images(tmp_path / "ref"))
    lb, lr = _losses(bf, 3), _losses(ref, 3)
    assert torch.isfinite(lb).all()
    # bf16 keeps 8 bits of mantissa: the first losses agree to about 1e-2
    torch.testing.assert_close(lb[0], lr[0], rtol=0, atol=2e-2)
    assert bf.sample(2).dtype == torch.float32


# ---------------------------------------------------------------- channel padding
@pytest.mark.parametrize("channels_last", [False, True])
def test_pad_input_channels_is_the_same_convolution(channels_last):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 4, 2, 1, bias=False)
    padded = torch.nn.Conv2d(3, 5, 4, 2, 1, bias=False)
    padded.load_state_dict(conv.state_dict())
    pad_input_channels(padded, 8)
    assert list(padded.state_dict()) == ["weight"] and padded.weight.shape == (5, 3, 4, 4)
    x = torch.randn(7, 3, 11, 11)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        conv, padded = conv.to(memory_format=torch.channels_last), padded.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = conv(xa), padded(xb)
    assert yb.shape == ya.shape
    if channels_last:
        assert yb.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, (xa, conv.weight), g)
    gb = torch.autograd.grad(yb, (xb, padded.weight), g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_pad_channels_option_trains_like_unpadded(tmp_path):
    pad = Trainer(tiny_images(tmp_path / "pad"), engine_options=EngineOptions(pad_channels=8))
    ref = Trainer(tiny_images(tmp_path / "ref"))
    assert "padded" in pad.engine.plan.summary()
    torch.testing.assert_close(_losses(pad, 10), _losses(ref, 10), rtol=1e-4, atol=1e-4)
    assert pad.D.state_dict().keys() == ref.D.state_dict().keys()


# ---------------------------------------------------------------- optimiser flags and run_steps
def test_optimizer_flags_survive_a_foreign_state_dict(tmp_path):
    tr = Trainer(tiny_images(tmp_path / "r"))
    tr.run_steps(1)
    sd = tr.opt_d.state_dict()
    sd = dict(sd, param_groups=[dict(g, foreach=True, capturable=False) for g in sd["param_groups"]])
    before = {k: tr.opt_d.param_groups[0][k] for k in ("fused", "capturable", "foreach")}
    tr.opt_d.load_state_dict(sd)
    assert tr.opt_d.param_groups[0]["foreach"] is True
    tr.engine.after_optimizer_load(tr.opt_d)
    assert {k: tr.opt_d.param_groups[0][k] for k in before} == before
    steps = [s["step"] for s in tr.opt_d.state.values()]
    assert steps and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in steps)
    tr.run_steps(1)


def test_fused_cpu_adam_matches_the_reference_adam():
    """The fast path (one fused multi-tensor kernel) against torch's reference for-loop Adam."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1))
    ref = copy.deepcopy(net)
    tr_plan = resolve_plan(tiny_points("unused"), torch.device("cpu"))
    from fastgan.engine import Engine
    fast_opt = Engine(tr_plan, torch.device("cpu")).make_optimizer(net.parameters(), lr=2e-3, betas=(0.0, 0.99))
    assert fast_opt.param_groups[0]["fused"]
    ref_opt = torch.optim.Adam(ref.parameters(), lr=2e-3, betas=(0.0, 0.99), foreach=False)
    for i in range(20):
        x = torch.randn(32, 5)
        for m, o in ((net, fast_opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        for a, b in zip(net.parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_set_lr_updates_a_tensor_lr_in_place_and_loading_keeps_its_kind(tmp_path):
    """A captured graph reads the lr tensor it was captured with: it must be filled, never replaced."""
    tr = Trainer(tiny_points(tmp_path / "r"))
    eng, opt = tr.engine, tr.opt_g
    lr_t = torch.tensor(1e-3)
    opt.param_groups[0]["lr"] = lr_t
    eng.set_lr(opt, 5e-4)
    assert opt.param_groups[0]["lr"] is lr_t and lr_t.item() == pytest.approx(5e-4)
    eng._optimizers[id(opt)].tensor_lr = True  # as made by make_optimizer(scheduled=True) in graph mode
    groups = [dict(g, lr=3e-4) for g in opt.state_dict()["param_groups"]]
    opt.load_state_dict(dict(opt.state_dict(), param_groups=groups))
    eng.after_optimizer_load(opt)
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and lr.item() == pytest.approx(3e-4)
    eng._optimizers[id(opt)].tensor_lr = False
    eng.after_optimizer_load(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-4) and not torch.is_tensor(opt.param_groups[0]["lr"])


def test_run_steps_counts_iterations_and_r1(tmp_path):
    tr = Trainer(tiny_images(tmp_path / "r", r1_gamma=1.0, r1_every=2))
    tr.run_steps(4)
    assert tr.step == 4 and tr.stats["_n_train"].item() == 4 and tr.stats["_n_R1"].item() == 2


def test_python_side_state_is_kept_outside_the_step(tmp_path):
    """A CUDA-graph replay runs no Python: per-iteration Python state must be updated by the loop."""
    tr = Trainer(tiny_images(tmp_path / "r"))
    tr.run_steps(1)
    tr.sample(2)                       # recomputes the EMA generator's standing statistics
    assert not tr._ema_stats_stale
    tr._runners[0] = (tr._runners[0][0], lambda: None)   # what a replay looks like from Python
    tr.run_steps(1)
    assert tr._ema_stats_stale and tr.step == 2


def test_engine_is_not_imported_by_import_fastgan():
    import subprocess
    import sys
    code = ("import sys, fastgan; print([m for m in ('fastgan.engine', 'fastgan.benchmark', "
            "'fastgan.graph_step') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_mode_is_not_an_architecture_field(tmp_path):
    """A run trained in one mode can be continued in another (same maths, same checkpoint)."""
    run = tmp_path / "run"
    Trainer(tiny_images(run)).fit(2)
    tr = Trainer(dataclasses.replace(tiny_images(run), mode="fast", channels_last=True))
    assert tr.step == 2
    tr.fit(3)
    assert tr.step == 3
