"""pix2pix and CycleGAN as tasks of the loop: losses by hand, exact resume, engine modes, kernels, outputs."""

import json
import math

import pytest
import torch
from torch import nn

from fastgan import Trainer
from fastgan.engine import EngineOptions
from fastgan.errors import CheckpointError, ConfigError
from fastgan.tasks import CycleGAN, Pix2Pix, TranslationConfig
from helpers import one_thread  # noqa: F401  (a fixture)
from translation_helpers import same_state, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


class Const(nn.Module):
    """A stand-in network: ``fn(x)``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, noise=None):
        return self.fn(x)


def test_pix2pix_losses_against_hand_computed_values(tmp_path):
    task = Trainer(tiny_config(tmp_path, "pix2pix"), resume=False).task
    task.D = Const(lambda x: x[:, -1:])                          # D's logits: the last channel of its input
    a, b, fake = torch.zeros(2, 1, 4, 4), torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)
    loss_d, d_real, d_fake = task._d_forward_loss(a, b, fake)
    # 0.5 * (softplus(-1) [real pair, logit 1] + softplus(-1) [fake pair, logit -1])
    assert math.isclose(float(loss_d), math.log1p(math.exp(-1)), rel_tol=1e-6)
    assert float(d_real.mean()) == 1.0 and float(d_fake.mean()) == -1.0
    loss_g, adv, l1 = task._g_forward_loss(a, b, fake)
    # softplus(1) (the fake pair's logit -1 scored as real) + 100 * |(-1) - 1|
    assert math.isclose(float(adv), math.log1p(math.e), rel_tol=1e-6) and float(l1) == 2.0
    assert math.isclose(float(loss_g), math.log1p(math.e) + 200.0, rel_tol=1e-6)


def test_cyclegan_losses_against_hand_computed_values(tmp_path):
    task = Trainer(tiny_config(tmp_path, "cyclegan"), resume=False).task
    task.G_AB = task.G_BA = Const(lambda x: 0.5 * x)
    task.D_A = task.D_B = Const(lambda x: x[:, :1])              # D's logits: the first channel of its input
    a, b = torch.full((2, 3, 4, 4), 0.8), torch.full((2, 3, 4, 4), -0.4)
    loss_g, adv, cycle, identity, fake_a, fake_b = task._g_forward_loss(a, b)
    # LSGAN G: (D(G_AB(a)) - 1)^2 + (D(G_BA(b)) - 1)^2 = (0.4 - 1)^2 + (-0.2 - 1)^2
    assert math.isclose(float(adv), 0.36 + 1.44, rel_tol=1e-6)
    # cycle: |0.2 - 0.8| + |-0.1 + 0.4|; identity: |-0.2 + 0.4| + |0.4 - 0.8|
    assert math.isclose(float(cycle), 0.9, rel_tol=1e-6) and math.isclose(float(identity), 0.6, rel_tol=1e-6)
    assert math.isclose(float(loss_g), 1.8 + 10 * (0.9 + 0.5 * 0.6), rel_tol=1e-6)
    assert torch.allclose(fake_b, a / 2) and torch.allclose(fake_a, b / 2)
    loss_d, _, _ = task._d_forward_loss(a, b, torch.full_like(a, 0.1), torch.full_like(b, 0.3))
    # 0.5 * ((b: (-0.4 - 1)^2 + 0.3^2) + (a: (0.8 - 1)^2 + 0.1^2))
    assert math.isclose(float(loss_d), 0.5 * (1.96 + 0.09 + 0.04 + 0.01), rel_tol=1e-6)


@pytest.mark.parametrize("task", ["pix2pix", "cyclegan"])
def test_exact_resume(tmp_path, task):
    full = Trainer(tiny_config(tmp_path / "f", task, eval_every=4)).fit()
    Trainer(tiny_config(tmp_path / "p", task, eval_every=4)).fit(3)      # checkpoints at 2 and 3
    resumed = Trainer(tiny_config(tmp_path / "p", task, eval_every=4))
    assert resumed.step == 3
    resumed.fit()
    for name, net in full.task.networks().items():
        assert same_state(net, resumed.task.networks()[name]), name
    for key, opt in full.task.optimizers().items():
        mine = resumed.task.optimizers()[key].state_dict()["state"]
        assert all(torch.equal(s["exp_avg"], mine[i]["exp_avg"]) for i, s in opt.state_dict()["state"].items())
    assert torch.equal(full.task.gen.get_state(), resumed.task.gen.get_state())
    if task == "cyclegan":   # the history buffers came back from the checkpoint and moved on identically
        for pool in ("pool_a", "pool_b"):
            mine, theirs = getattr(resumed.task, pool), getattr(full.task, pool)
            assert torch.equal(mine.images, theirs.images) and int(mine.count) == int(theirs.count) == 3
    logs = [json.loads(line) for line in (tmp_path / "f" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval" in r for r in logs) and all(math.isfinite(r["d_loss"]) for r in logs if "d_loss" in r)


def test_the_config_picks_its_task_and_resolves_defaults(tmp_path):
    tr = Trainer(tiny_config(tmp_path / "a", "pix2pix"), resume=False)
    assert isinstance(tr.task, Pix2Pix) and tr.cfg.loss == "ns" and tr.cfg.d_layers == 2 and tr.cfg.pool_size == 0
    tr = Trainer(tiny_config(tmp_path / "b", "cyclegan"), resume=False)
    assert isinstance(tr.task, CycleGAN) and tr.cfg.loss == "lsgan"
    demo = TranslationConfig(task="cyclegan").resolved()
    assert (demo.data, demo.resolution, demo.pool_size, demo.d_layers, demo.g_width) == ("digits2bold", 32, 50, 3, 16)
    pix = TranslationConfig().resolved()
    assert (pix.task, pix.data, pix.steps, pix.resolution, pix.g_width, pix.batch_size) == \
        ("pix2pix", "edges2photo", 1500, 32, 32, 8)   # as bench/results/translation-pix2pix-edges2photo.json
    folders = TranslationConfig(task="pix2pix", data="x", data_b="y").resolved()
    assert (folders.resolution, folders.batch_size, folders.g_width, folders.g_blocks) == (256, 1, 64, 9)


def test_incompatible_resume_and_bad_configs_are_refused(tmp_path):
    Trainer(tiny_config(tmp_path, "pix2pix", steps=2)).fit()
    with pytest.raises(CheckpointError, match="g_width"):
        Trainer(tiny_config(tmp_path, "pix2pix", g_width=8))
    with pytest.raises(ConfigError, match="pool_size"):
        TranslationConfig(task="pix2pix", pool_size=5).validate()
    with pytest.raises(ConfigError, match="unknown task"):
        TranslationConfig(task="style").validate()
    with pytest.raises(ConfigError, match="flip must be true or false, got str"):   # a JSON "no" is no false
        TranslationConfig.from_dict({"task": "pix2pix", "flip": "no"}).validate()
    with pytest.raises(ConfigError, match="JSON object"):
        TranslationConfig.from_dict(["pix2pix"])
    with pytest.raises(ConfigError, match="multiple of 4"):
        Trainer(tiny_config(tmp_path / "r", "pix2pix", resolution=18), resume=False)
    with pytest.raises(ConfigError, match="multiple of 4"):
        Trainer(tiny_config(tmp_path / "s", "cyclegan", resolution=18), resume=False)
    with pytest.raises(ConfigError, match="identity loss needs"):
        Trainer(tiny_config(tmp_path / "c", "cyclegan", data=tiny_config(tmp_path, "pix2pix").data), resume=False)


def losses_after(cfg, steps=2, **options):
    tr = Trainer(cfg, resume=False, engine_options=EngineOptions(**options) if options else None)
    tr.run_steps(steps)
    return tr.stats.read(), tr


def test_compile_mode_matches_eager(tmp_path):
    # pix2pix only: CycleGAN's pieces are the same kinds of call (compiling them too costs ~20 s of CI)
    eager, tr_e = losses_after(tiny_config(tmp_path / "e", "pix2pix"))
    compiled, tr_c = losses_after(tiny_config(tmp_path / "c", "pix2pix", mode="compile"), compile_backend="aot_eager",
                                  compile_fullgraph=True)
    for k in ("d_loss", "g_loss", "l1"):
        assert math.isclose(eager[k], compiled[k], rel_tol=1e-4), k
    for p, q in zip(tr_e.task.G.parameters(), tr_c.task.G.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_and_fast_mode_run(tmp_path):
    for task in ("pix2pix", "cyclegan"):
        stats, tr = losses_after(tiny_config(tmp_path / task, task, amp="bf16"), steps=1)
        assert all(math.isfinite(v) for v in stats.values())
        assert tr.engine.plan.amp == "bf16"
    _, tr = losses_after(tiny_config(tmp_path / "fast", "pix2pix", mode="fast"), steps=1)
    assert tr.engine.plan.mode == "eager"   # on a CPU


def test_triton_kernels_train_like_the_reference(tmp_path):
    from fastgan.kernels import HAS_TRITON, TRITON_INTERPRETED

    if not (HAS_TRITON and (torch.cuda.is_available() or TRITON_INTERPRETED)):
        pytest.skip("needs triton (a GPU, or the interpreter)")
    ref, _ = losses_after(tiny_config(tmp_path / "r", "pix2pix", kernels="ref", g_width=2, d_width=2), steps=1)
    tri, tr = losses_after(tiny_config(tmp_path / "t", "pix2pix", kernels="triton", g_width=2, d_width=2), steps=1)
    assert tr.engine.plan.kernels == "triton"
    for k in ("d_loss", "g_adv", "l1"):
        assert math.isclose(ref[k], tri[k], rel_tol=1e-4, abs_tol=1e-5), k


def test_samples_and_evaluation(tmp_path):
    tr = Trainer(tiny_config(tmp_path, "cyclegan", steps=1), resume=False).fit()
    assert (tmp_path / "run" / "samples" / "step_00000001.png").exists()
    ev = tr.evaluate()
    assert ev["split"] == "held-out" and ev["n_a"] == 2
    assert {"cycle_a", "cycle_b", "fd_ab", "fd_ba", "fd_ab_identity", "fd_ba_identity"} <= set(ev)
    p = Trainer(tiny_config(tmp_path / "p", "pix2pix", steps=1), resume=False).evaluate()
    assert p["n"] == 2 and p["identity_psnr"] > 0 and p["psnr"] > 0
