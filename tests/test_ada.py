"""Adaptive augmentation (ADA): the controller, its direction on a D that overfits and one that cannot,
exact resume, no host sync in its pieces, and the config checks."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fastgan import Trainer
from fastgan.augment import AdaptiveAugment, augment
from fastgan.data import load_data
from fastgan.errors import CheckpointError, ConfigError
from helpers import one_thread, state_equal, tiny_images  # noqa: F401  (a fixture)

ADA = dict(augment="translation,cutout", ada_target=0.6)


# ----------------------------------------------------------------------------- the controller
def test_p_rises_while_d_is_sure_of_the_reals_and_falls_while_it_is_not():
    ada = AdaptiveAugment(0.6, interval=4, batch_size=50, kimg=1.0)
    assert ada.adjust == pytest.approx(0.2) and float(ada.p) == 0.0
    for k in range(1, 8):
        for _ in range(4):
            ada.observe(torch.full((50,), 3.0))          # every real image scored real: r = 1 > 0.6
        ada.update()
        assert float(ada.p) == pytest.approx(min(0.2 * k, 1.0)) and float(ada.signal) == 1.0
    logits = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5])  # r = 1/5 < 0.6
    for k in range(1, 8):
        ada.observe(logits)
        ada.update()
        assert float(ada.p) == pytest.approx(max(1.0 - 0.2 * k, 0.0), abs=1e-6)
        assert float(ada.signal) == pytest.approx(0.2)


def test_update_uses_only_the_logits_since_the_last_update_and_state_round_trips():
    ada = AdaptiveAugment(0.6, interval=1, batch_size=10, kimg=0.1)
    ada.observe(torch.ones(10))
    ada.update()
    ada.observe(-torch.ones(4))
    ada.observe(torch.ones(6))               # r = 0.2 over these ten, whatever came before
    state = ada.state()
    assert state.tolist() == pytest.approx([0.1, 1.0, 2.0, 10.0])
    other = AdaptiveAugment(0.6, interval=1, batch_size=10, kimg=0.1)
    other.load_state(state)
    other.update()
    assert float(other.signal) == pytest.approx(0.2) and float(other.p) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="target must lie in"):
        AdaptiveAugment(1.0, 4, 8, 1.0)


class SyncDetector(TorchDispatchMode):
    """Records ops that read a tensor's value on the host (what .item(), bool() and float() dispatch to)."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def test_ada_pieces_read_no_value_on_the_host():
    ada = AdaptiveAugment(0.6, interval=1, batch_size=4, kimg=0.01)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    with SyncDetector() as d:
        y = augment(x, "translation,cutout,color", ada.p, generator=g)
        ada.observe(torch.randn(4))
        ada.update()
        y = augment(y, "translation,cutout,color", ada.p, generator=g)
    assert d.syncs == [] and y.shape == x.shape
    with SyncDetector() as d:   # the detector itself sees a host read
        float(ada.p)
    assert d.syncs


# ----------------------------------------------------------------------------- in training
class RealDigits(nn.Module):
    """A generator whose samples are real digits: D cannot tell them from the training images."""

    def __init__(self, pool: torch.Tensor):
        super().__init__()
        self.register_buffer("pool", pool)
        self.w = nn.Parameter(torch.zeros(()))   # something for G's optimiser
        self.z_dim = 8

    def forward(self, z, labels=None):
        idx = (z[:, 0].abs() * 1e4).long() % len(self.pool)
        return self.pool[idx] + 0.0 * self.w


def test_p_rises_on_a_d_that_overfits(tmp_path, one_thread):
    few = load_data("digits", resolution=16).images[:16]          # 16 images, a D with a high rate
    tr = Trainer(tiny_images(tmp_path / "r", steps=60, lr_d=2e-3, lr_g=1e-6, ada_interval=2, ada_kimg=0.4,
                             log_every=20, **ADA), data=few)
    tr.fit()
    p = [h["augment_p"] for h in tr.history if "augment_p" in h]
    assert p[0] > 0 and p[-1] > 0.5 and float(tr.ada.p) > 0.5
    assert all(h["ada_signal"] > 0.6 for h in tr.history[1:] if "ada_signal" in h)


def test_p_falls_on_a_d_that_cannot_overfit(tmp_path, one_thread):
    data = load_data("digits", resolution=16)
    pool = data.images.float().div(127.5).sub(1.0)
    tr = Trainer(tiny_images(tmp_path / "r", steps=60, batch_size=32, ada_interval=2, ada_kimg=0.4, log_every=20,
                             **ADA), data=data.images, generator=RealDigits(pool))
    tr.ada.p.fill_(0.5)
    tr.fit()
    assert float(tr.ada.p) < 0.2
    signals = [h["ada_signal"] for h in tr.history if "ada_signal" in h]
    assert sum(signals) / len(signals) < 0.6


def test_resume_with_ada_is_bit_exact(tmp_path, one_thread):
    # checkpoints at steps 2 and 4 fall between ADA updates (every 3 steps): the running sums must be saved
    kw = dict(steps=8, ada_interval=3, ada_kimg=0.05, ckpt_every=2, **ADA)
    full = Trainer(tiny_images(tmp_path / "full", **kw)).fit()
    part = Trainer(tiny_images(tmp_path / "part", **kw))
    part.fit(5)
    del part
    resumed = Trainer(tiny_images(tmp_path / "part", **kw))
    assert resumed.step == 5 and 0 < float(resumed.ada.p)
    resumed.fit()
    assert torch.equal(full.ada.state(), resumed.ada.state()) and float(full.ada.p) > 0
    assert state_equal(full.G, resumed.G) and state_equal(full.D, resumed.D)
    # the EMA copy's num_batches_tracked counts standing-statistics passes (one per checkpoint or sample), not steps
    ema_a, ema_b = full.G_ema.state_dict(), resumed.G_ema.state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a if not k.endswith("num_batches_tracked"))
    assert torch.equal(full.stats.buffer, resumed.stats.buffer)
    logged = [h["augment_p"] for h in resumed.history if "augment_p" in h]
    assert logged == [h["augment_p"] for h in full.history if "augment_p" in h]


def test_a_run_saved_by_two_processes_resumed_on_one_counts_both_running_sums(tmp_path, one_thread):
    kw = dict(steps=8, ada_interval=3, ada_kimg=0.05, ckpt_every=0, **ADA)
    saved = Trainer(tiny_images(tmp_path / "a", **kw))
    saved.fit(5)                                    # steps 4-5 observed since the update at step 3
    ckpt = tmp_path / "a" / "checkpoints" / "step_00000005"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["ada"][3] > 0                      # running sums to carry over
    other = {k: state[k] for k in ("torch_rng", "stats", "gen_state", "ema_t")}
    other["ada"] = state["ada"].clone()
    other["ada"][2:] = torch.tensor([-3.0, 10.0])   # the second process's own sums
    state.update(world_size=2, shards=2, other_ranks=[other])   # as two processes would have saved it
    torch.save(state, ckpt / "state.pt")
    one = Trainer(tiny_images(tmp_path / "b", **kw))
    with pytest.warns(UserWarning, match="random streams restart"):
        one.load_checkpoint(ckpt)
    assert one.step == 5 and float(one.ada.p) == float(state["ada"][0]) > 0
    torch.testing.assert_close(one.ada.state()[2:], state["ada"][2:] + torch.tensor([-3.0, 10.0]), rtol=0, atol=0)
    ada = AdaptiveAugment(0.6, interval=1, batch_size=10, kimg=0.1)
    ada.load_states([state["ada"], other["ada"]], keep_sums=False)   # any rank but 0 starts from none
    assert float(ada.p) == float(state["ada"][0]) and torch.equal(ada.state()[2:], torch.zeros(2))


def test_ada_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="give augmentations too"):
        tiny_images(tmp_path, ada_target=0.6).validate()
    with pytest.raises(ConfigError, match=r"ada_target must be in \[0, 1\)"):
        tiny_images(tmp_path, ada_target=1.0, augment="flip").validate()
    with pytest.raises(ConfigError, match="ada_kimg must be a non-negative number"):
        tiny_images(tmp_path, ada_kimg=-1.0, **ADA).validate()
    Trainer(tiny_images(tmp_path / "r", steps=2, **ADA)).fit()
    with pytest.raises(CheckpointError, match="ada_target"):
        Trainer(tiny_images(tmp_path / "r", steps=4, augment="translation,cutout"))

