"""Point MLP ensembles: E networks stacked into batched weights must train as E standalone networks."""

import copy

import pytest
import torch

import fastgan
from fastgan import losses
from fastgan.config import TrainConfig
from fastgan.models import (MLPDiscriminator, MLPDiscriminatorEnsemble, MLPGenerator, MLPGeneratorEnsemble,
                            build_models, build_point_ensemble)

SCALE = 2.0


def _cfg(**kw):
    return TrainConfig(data="grid25", **kw).resolved(points=True)


def _pair(seeds, **kw):
    return build_point_ensemble(_cfg(**kw), seeds, point_scale=SCALE)


def _block(t, k, b):
    return t[k * b:(k + 1) * b]


def test_members_start_as_standalone_runs_and_forward_their_own_rows():
    G, D = _pair([3, 7, 11])
    assert G.members == D.members == 3 and G.z_dim == 2 and G.out_shape == (2,) and D.scale == SCALE
    torch.manual_seed(7)
    g7, d7 = build_models(_cfg(), channels=0, num_classes=0, points=True, point_scale=SCALE)
    for a, b in ((G.member(1), g7), (D.member(1), d7)):
        assert type(a) is type(b) and a.arch_config() == b.arch_config()
        for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert na == nb and torch.equal(pa, pb), na
    z, x = torch.randn(12, 2), torch.randn(12, 2)
    torch.testing.assert_close(G(z), torch.cat([G.member(k)(_block(z, k, 4)) for k in range(3)]))
    torch.testing.assert_close(D(x), torch.cat([D.member(k)(_block(x, k, 4)) for k in range(3)]))
    assert D(x).dtype == torch.float32 and D(x).shape == (12,)


def test_building_and_taking_members_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    G, D = _pair([1, 2])
    G.member(0), D.member(1)
    assert torch.equal(torch.rand(3), expected)
    assert G.double().member(1).out.weight.dtype == torch.float64


def test_row_counts_that_do_not_divide_are_dealt_in_blocks():
    G, _ = _pair([0, 1, 2])
    z = torch.randn(7, 2)                               # blocks of 3: members 0, 0, 0, 1, 1, 1, 2
    out = G(z)
    assert out.shape == (7, 2)
    torch.testing.assert_close(out[3:6], G.member(1)(z[3:6]))
    torch.testing.assert_close(out[6:], G.member(2)(z[6:]))


def test_d_and_r1_gradients_of_the_batch_mean_equal_each_members_own():
    """The Trainer's losses are means over all E*B rows; each member must get its own loss's gradient."""
    torch.manual_seed(0)
    G, D = _pair([3, 7, 11])
    E, B = 3, 5
    z, x = torch.randn(E * B, 2), torch.randn(E * B, 2)
    fake = G(z).detach()
    xr = x.clone().requires_grad_(True)
    loss = losses.d_loss("ns", D(x), D(fake)) + losses.r1_penalty(D(xr), xr)  # R1: a double backward
    loss.backward()
    for k in range(E):
        m = D.member(k)
        xk = _block(x, k, B).clone().requires_grad_(True)
        lk = losses.d_loss("ns", m(_block(x, k, B)), m(_block(fake, k, B))) + losses.r1_penalty(m(xk), xk)
        lk.backward()
        for i in range(3):
            torch.testing.assert_close(D.weights[i].grad[k], m.hidden[2 * i].weight.grad.t())
            torch.testing.assert_close(D.biases[i].grad[k, 0], m.hidden[2 * i + 1].bias.grad)
        torch.testing.assert_close(D.out_weight.grad[k], m.out.weight.grad)
        torch.testing.assert_close(D.out_bias.grad[k, 0], m.out.bias.grad)


def test_g_gradients_through_a_frozen_d_equal_each_members_own():
    torch.manual_seed(1)
    G, D = _pair([0, 5])
    D.requires_grad_(False)
    E, B = 2, 6
    z = torch.randn(E * B, 2)
    losses.g_loss("ns", D(G(z))).backward()
    for k in range(E):
        g = G.member(k)
        losses.g_loss("ns", D.member(k)(g(_block(z, k, B)))).backward()
        for i in range(3):
            torch.testing.assert_close(G.weights[i].grad[k], g.hidden[2 * i].weight.grad.t())
        torch.testing.assert_close(G.out_weight.grad[k], g.out.weight.grad)
        torch.testing.assert_close(G.out_bias.grad[k, 0], g.out.bias.grad)


def test_a_one_member_ensemble_trains_like_the_standalone_trainer(tmp_path):
    """Same seed, same random draws: every step (D, G, lazy R1, EMA, lr decay) matches the Trainer's own run."""
    kw = dict(data="grid25", seed=4, steps=8, batch_size=32, r1_every=2, lr_decay=0.5, progress=False,
              device="cpu", sample_every=0, ckpt_every=0)
    ref = fastgan.Trainer(TrainConfig(out=str(tmp_path / "a"), **kw), resume=False)
    data = fastgan.data.load_data("grid25", seed=4)
    G, D = build_point_ensemble(ref.cfg, [4], point_scale=data.scale)
    ens = fastgan.Trainer(TrainConfig(out=str(tmp_path / "b"), **kw), generator=G, discriminator=D, resume=False)
    ref.run_steps(8)
    ens.run_steps(8)
    for a, b in ((ens.G.member(0), ref.G), (ens.D.member(0), ref.D), (ens.G_ema.member(0), ref.G_ema)):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(ens.stats.buffer, ref.stats.buffer, rtol=1e-4, atol=1e-5)


def test_an_ensemble_trainer_trains_every_member_and_writes_its_outputs(tmp_path):
    cfg = TrainConfig(data="ring8", seed=0, steps=6, batch_size=3 * 16, progress=False, device="cpu",
                      sample_every=0, ckpt_every=0, out=str(tmp_path / "run"))
    G, D = build_point_ensemble(_cfg(batch_size=16), [0, 1, 2], point_scale=1.0)
    start = [copy.deepcopy(G.member(k).state_dict()) for k in range(3)]
    tr = fastgan.Trainer(cfg, generator=G, discriminator=D, resume=False).fit()
    assert (tmp_path / "run" / "samples" / "step_00000006.png").exists()
    assert tr.D.batch_independent is False                     # real and fake reach D in separate calls
    for k in range(3):
        moved = [not torch.equal(a, b) for a, b in zip(start[k].values(), tr.G.member(k).state_dict().values())]
        assert all(moved)
    assert torch.isfinite(tr.stats.buffer).all()
    assert tr.sample(10).shape == (10, 2)


def test_bad_ensembles_are_refused_clearly():
    with pytest.raises(ValueError, match="at least one"):
        MLPGeneratorEnsemble([])
    with pytest.raises(TypeError, match="MLPGenerator"):
        MLPGeneratorEnsemble([MLPDiscriminator()])
    with pytest.raises(ValueError, match="same architecture"):
        MLPGeneratorEnsemble([MLPGenerator(width=8), MLPGenerator(width=16)])
    for kw in (dict(pack=2), dict(mbstd=True), dict(spectral_norm=True), dict(num_classes=3)):
        with pytest.raises(ValueError, match="supports unconditional"):
            MLPDiscriminatorEnsemble([MLPDiscriminator(width=8, **kw)])
    with pytest.raises(ValueError, match="at least one seed"):
        build_point_ensemble(_cfg(), [])
    G, D = _pair([0, 1])
    with pytest.raises(IndexError, match="out of range"):
        G.member(2)
    with pytest.raises(ValueError, match="rows, features"):
        D(torch.randn(2, 3, 4))
