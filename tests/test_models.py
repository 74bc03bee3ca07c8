"""Shapes, variants, init and rebuilding of the DCGAN and MLP networks."""

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan.config import TrainConfig
from fastgan.errors import CheckpointError, ConfigError
from fastgan.kernels import BatchNormAct, BiasAct
from fastgan.models import (POINT_Z_GAIN, DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                            build_models, generator_from_arch, set_kernel_impl)
from fastgan.models.common import mbstd_group_size, minibatch_stddev
from fastgan.models.dcgan import dcgan_channels

Z = 8


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    G = DCGANGenerator(z_dim=Z, img_size=size, channels=channels, width=4)
    D = DCGANDiscriminator(img_size=size, channels=channels, width=4)
    x = G(torch.randn(3, Z))
    assert x.shape == (3, channels, size, size)
    assert x.abs().max() <= 1.0 and x.std() > 0
    assert G.out_shape == (channels, size, size) and G.value_range == (-1.0, 1.0)
    logits = D(x)
    assert logits.shape == (3,) and logits.dtype == torch.float32


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_dcgan_variants_shapes(size):
    G = DCGANGenerator(z_dim=Z, img_size=size, channels=3, width=4, num_classes=5)
    D = DCGANDiscriminator(img_size=size, channels=3, width=4, num_classes=5, pack=2, mbstd=True,
                           spectral_norm=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    x = G(torch.randn(6, Z), y)
    assert x.shape == (6, 3, size, size)
    assert D(x, y).shape == (3,)


def test_width_schedule_dcgan64():
    w = 8
    assert [dcgan_channels(64, w, r) for r in (4, 8, 16, 32)] == [8 * w, 4 * w, 2 * w, w]
    G = DCGANGenerator(z_dim=Z, img_size=64, channels=3, width=w)
    assert G.stem.out_channels == 8 * w
    assert [b[0].out_channels for b in G.blocks] == [4 * w, 2 * w, w]
    D = DCGANDiscriminator(img_size=64, channels=3, width=w)
    assert D.from_img.out_channels == w
    assert [b[0].out_channels for b in D.blocks] == [2 * w, 4 * w, 8 * w]
    # 128 px caps at 8w: 8w at 4x4 and 8x8
    assert [dcgan_channels(128, w, r) for r in (4, 8, 16, 32, 64)] == [8 * w, 8 * w, 4 * w, 2 * w, w]


def test_intermediate_shapes_dcgan32():
    G = DCGANGenerator(z_dim=Z, img_size=32, channels=1, width=4)
    shapes = []
    for b in G.blocks:
        b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    G(torch.randn(2, Z))
    assert shapes == [(2, 8, 8, 8), (2, 4, 16, 16)]


def test_conv_bias_off_before_norm_and_kernel_modules_used():
    G = DCGANGenerator(z_dim=Z, img_size=32, channels=3, width=4)
    D = DCGANDiscriminator(img_size=32, channels=3, width=4)
    for net in (G, D):
        mods = list(net.modules())
        for a, b in zip(mods, mods[1:]):
            if isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(b, (BatchNormAct, BiasAct)):
                assert a.bias is None, a
    assert sum(isinstance(m, BatchNormAct) for m in G.modules()) == 3
    assert sum(isinstance(m, BatchNormAct) for m in D.modules()) == 2
    assert isinstance(G.out_act, BiasAct) and G.out_act.act == "tanh"


@pytest.mark.parametrize("kw", [dict(norm="none"), dict(spectral_norm=True)])
def test_discriminator_without_batch_norm(kw):
    D = DCGANDiscriminator(img_size=16, channels=3, width=4, **kw)
    assert not any(isinstance(m, BatchNormAct) for m in D.modules())
    acts = [m for m in D.modules() if isinstance(m, BiasAct)]
    assert len(acts) == 2 and all(a.act == "lrelu" and a.alpha == 0.2 for a in acts)
    if kw.get("spectral_norm"):
        convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 3 and all(hasattr(c, "parametrizations") for c in convs)
        # the spectral norm of every effective weight is ~1 after a few power iterations
        for _ in range(15):
            D(torch.randn(2, 3, 16, 16))
        w = D.out.weight.flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=1e-3)


def test_dcgan_init_statistics():
    G = DCGANGenerator(z_dim=100, img_size=64, channels=3, width=32)
    w = G.stem.weight
    assert 0.018 < w.std().item() < 0.022 and abs(w.mean().item()) < 1e-3
    bn = G.stem_norm
    assert 0.01 < bn.weight.std().item() < 0.03 and abs(bn.weight.mean().item() - 1) < 0.01
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(G.out_act.bias, torch.zeros(3))


def test_final_layer_equals_4x4_conv():
    D = DCGANDiscriminator(img_size=16, channels=1, width=4, norm="none")
    feats = []
    D.blocks[-1].register_forward_hook(lambda m, i, o: feats.append(o))
    x = torch.randn(5, 1, 16, 16)
    logits = D(x)
    ref = F.conv2d(feats[0], D.out.weight, D.out.bias).flatten()
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-6)


def test_conditional_generator_uses_labels():
    G = DCGANGenerator(z_dim=Z, img_size=16, channels=1, width=4, num_classes=3).eval()
    z = torch.randn(2, Z)
    a, b = G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1]))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="labels"):
        G(z)


def test_projection_discriminator_and_pack_labels():
    D = DCGANDiscriminator(img_size=16, channels=1, width=4, num_classes=3, norm="none", pack=2)
    nn.init.normal_(D.embed.weight, 0, 1.0)
    x = torch.randn(4, 1, 16, 16)
    base = D(x, torch.tensor([0, 1, 2, 2]))
    # only the first label of each pack matters
    torch.testing.assert_close(D(x, torch.tensor([0, 2, 2, 0])), base, rtol=0, atol=0)
    assert (D(x, torch.tensor([1, 1, 2, 2])) - base).abs()[0] > 1e-6
    # projection = <embed(y), sum of the last features>
    feats = []
    D.blocks[-1].register_forward_hook(lambda m, i, o: feats.append(o))
    out = D(x, torch.tensor([1, 0, 0, 0]))
    plain = F.conv2d(feats[0], D.out.weight, D.out.bias).flatten()
    proj = (D.embed(torch.tensor([1, 0])) * feats[0].sum(dim=(2, 3))).sum(1)
    torch.testing.assert_close(out, plain + proj, rtol=1e-5, atol=1e-6)


def test_pack_reshapes_consecutive_samples():
    D = DCGANDiscriminator(img_size=16, channels=1, width=4, norm="none", pack=2)
    D1 = DCGANDiscriminator(img_size=16, channels=2, width=4, norm="none")
    D1.load_state_dict(D.state_dict())
    x = torch.randn(6, 1, 16, 16)
    torch.testing.assert_close(D(x), D1(x.reshape(3, 2, 16, 16)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of pack"):
        D(torch.randn(5, 1, 16, 16))


def test_minibatch_stddev_values():
    x = torch.tensor([[0.0, 2.0], [2.0, 2.0], [4.0, 2.0], [6.0, 2.0]])   # (4, 2): one group of 4
    out = minibatch_stddev(x, eps=0.0)
    # feature 0: values 0, 2, 4, 6 -> biased std sqrt(5); feature 1: std 0 -> mean sqrt(5)/2
    torch.testing.assert_close(out[:, 2], torch.full((4,), 5 ** 0.5 / 2))
    torch.testing.assert_close(out[:, :2], x, rtol=0, atol=0)
    # batch 6: group 3; samples i and i+2 and i+4 form a group
    y = torch.zeros(6, 1)
    y[[0, 2, 4], 0] = torch.tensor([1.0, 2.0, 3.0])
    s = minibatch_stddev(y, eps=0.0)[:, 1]
    torch.testing.assert_close(s, torch.tensor([(2 / 3) ** 0.5, 0.0] * 3))
    assert [mbstd_group_size(b) for b in (1, 2, 3, 4, 5, 6, 8, 64)] == [1, 2, 3, 4, 1, 3, 4, 4]
    img = torch.randn(8, 3, 4, 4)
    m = minibatch_stddev(img)
    assert m.shape == (8, 4, 4, 4) and torch.all(m[:, 3] == m[:, 3, :1, :1])


def test_mbstd_discriminator_depends_on_batch():
    D = DCGANDiscriminator(img_size=16, channels=1, width=4, norm="none", mbstd=True)
    nn.init.normal_(D.out.weight, 0, 1.0)
    x = torch.randn(4, 1, 16, 16)
    x2 = x.clone()
    x2[1:] = torch.randn(3, 1, 16, 16) * 3
    assert (D(x)[0] - D(x2)[0]).abs() > 1e-6     # sample 0's logit sees the other samples


def test_gradients_reach_every_parameter():
    G = DCGANGenerator(z_dim=Z, img_size=16, channels=3, width=4, num_classes=2)
    D = DCGANDiscriminator(img_size=16, channels=3, width=4, num_classes=2, mbstd=True)
    y = torch.tensor([0, 1, 1, 0])
    D(G(torch.randn(4, Z), y), y).sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls,kw", [
    (DCGANGenerator, dict(z_dim=Z, img_size=16, channels=1, width=4, num_classes=3)),
    (MLPGenerator, dict(z_dim=3, width=16, depth=2, num_classes=4)),
    (MLPGenerator, dict(z_dim=2, width=16, depth=2, scale=2.5)),
])
def test_rebuild_from_arch_config(cls, kw):
    G = cls(**kw)
    G2 = generator_from_arch(type(G).__name__, G.arch_config())
    assert type(G2) is cls and G2.arch_config() == G.arch_config()
    G2.load_state_dict(G.state_dict())
    G.eval(), G2.eval()
    z, y = torch.randn(2, G.z_dim), torch.tensor([0, 1])
    torch.testing.assert_close(G(z, y), G2(z, y), rtol=0, atol=0)


def test_rebuild_discriminators():
    for D in (DCGANDiscriminator(img_size=16, channels=3, width=4, num_classes=2, spectral_norm=True,
                                 pack=2, mbstd=True),
              MLPDiscriminator(width=8, depth=2, num_classes=2, spectral_norm=True, pack=2, mbstd=True)):
        D2 = type(D)(**D.arch_config())
        D2.load_state_dict(D.state_dict())


def test_generator_from_arch_errors():
    with pytest.raises(CheckpointError, match="unknown generator"):
        generator_from_arch("ResNetGenerator", {})
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        generator_from_arch("DCGANGenerator", {"img_size": 48})


def test_mlp_shapes_and_variants():
    G = MLPGenerator(z_dim=2, width=16, depth=3)
    x = G(torch.randn(8, 2))
    assert x.shape == (8, 2) and G.out_shape == (2,) and G.value_range is None
    assert x.abs().max() > 0
    D = MLPDiscriminator(width=16, depth=3, pack=4, mbstd=True, spectral_norm=True, num_classes=5)
    y = torch.randint(0, 5, (8,))
    assert D(x, y).shape == (2,)
    assert D.hidden[0].in_features == 8 and D.out.in_features == 17
    layers = [m for m in D.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert len(layers) == 5 and all(hasattr(m, "parametrizations") for m in layers)
    acts = [m.act for m in G.modules() if isinstance(m, BiasAct)]
    assert acts == ["relu"] * 3
    assert [m.act for m in D.modules() if isinstance(m, BiasAct)] == ["lrelu"] * 3
    Gc = MLPGenerator(z_dim=2, width=16, num_classes=5)
    assert Gc(torch.randn(8, 2), y).shape == (8, 2)


def test_mlp_scale_is_a_change_of_units():
    """scale s: G outputs s times the unit-scale network, D judges x / s."""
    torch.manual_seed(0)
    G1, D1 = MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2)
    Gs, Ds = MLPGenerator(width=16, depth=2, scale=2.5), MLPDiscriminator(width=16, depth=2, scale=2.5)
    Gs.load_state_dict(G1.state_dict())
    Ds.load_state_dict(D1.state_dict())
    z, x = torch.randn(8, 2), 3 * torch.randn(8, 2)
    torch.testing.assert_close(Gs(z), 2.5 * G1(z))
    torch.testing.assert_close(Ds(x), D1(x / 2.5))
    assert Ds.arch_config()["scale"] == 2.5 and type(Ds)(**Ds.arch_config()).scale == 2.5
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            MLPGenerator(scale=bad)
        with pytest.raises(ValueError, match="scale"):
            MLPDiscriminator(scale=bad)


@pytest.mark.parametrize("net", ["G", "D"])
def test_mlp_fast_hidden_path_matches_the_modules(net):
    """The MLPs run their hidden stack through BiasAct.linear (bias folded into addmm, a column-major
    copy of the 2-wide input layer); outputs, weight gradients and the R1 double backward equal those
    of the plain module stack, ``hidden(h)``."""
    from fastgan.models import mlp
    torch.manual_seed(0)
    m = (MLPGenerator(width=16, depth=3) if net == "G" else MLPDiscriminator(width=16, depth=3)).double()
    for b in m.modules():
        if isinstance(b, BiasAct):
            torch.nn.init.normal_(b.bias)          # non-zero biases: their gradients must match too
    x = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)

    def run(hidden_fn):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(mlp, "_run_hidden", hidden_fn)
            y = m(x)
            gx, = torch.autograd.grad(y.square().sum(), x, create_graph=True)   # R1-style: grad of grad
            grads = torch.autograd.grad(gx.square().sum() + y.sum(), list(m.parameters()))
        return [y, gx, *grads]

    fast = run(mlp._run_hidden)
    plain = run(lambda hidden, h: hidden(h))
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b)


def test_mlp_z_gain_is_a_first_layer_gain():
    """z_gain k: the same function as k-times larger first-layer weights; kept by arch_config."""
    torch.manual_seed(0)
    G1, Gk = MLPGenerator(width=16, depth=2), MLPGenerator(width=16, depth=2, z_gain=3.0)
    Gk.load_state_dict(G1.state_dict())
    with torch.no_grad():
        G1.hidden[0].weight.mul_(3.0)
    z = torch.randn(8, 2)
    torch.testing.assert_close(Gk(z), G1(z))
    assert Gk.arch_config()["z_gain"] == 3.0 and type(Gk)(**Gk.arch_config()).z_gain == 3.0
    # an older arch_config without z_gain rebuilds the gain-1 network it was saved from
    old = {k: v for k, v in G1.arch_config().items() if k != "z_gain"}
    assert MLPGenerator(**old).z_gain == 1.0
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="z_gain"):
            MLPGenerator(z_gain=bad)


def test_build_models():
    cfg = TrainConfig(data="digits", g_width=4, d_width=4, resolution=16).resolved()
    G, D = build_models(cfg, channels=1, num_classes=10, points=False)
    assert isinstance(G, DCGANGenerator) and G.num_classes == 0 and G.out_shape == (1, 16, 16)
    assert D.norm == "none"                                 # the digits' default R1 penalises D's gradients
    _, D = build_models(dataclasses.replace(cfg, r1_gamma=0.0), channels=1, num_classes=10, points=False)
    assert D.norm == "batch"
    cfg = TrainConfig(data="digits", g_width=4, d_width=4, resolution=16, conditional=True,
                      gp_weight=10.0, loss="wgan", pack=2, mbstd=True).resolved()
    G, D = build_models(cfg, channels=1, num_classes=10, points=False)
    assert G.num_classes == 10 and D.num_classes == 10 and D.norm == "none"
    assert D.pack == 2 and D.mbstd
    with pytest.raises(ConfigError, match="labelled"):
        build_models(cfg, channels=1, num_classes=0, points=False)
    G, D = build_models(TrainConfig(data="ring8").resolved(), channels=0, num_classes=8, points=True)
    assert isinstance(G, MLPGenerator) and isinstance(D, MLPDiscriminator) and G.z_dim == 2
    assert G.z_gain == POINT_Z_GAIN > 1
    assert G.scale == D.scale == 1.0
    G, D = build_models(TrainConfig(data="ring8").resolved(), channels=0, num_classes=8, points=True,
                        point_scale=0.5)
    assert G.scale == D.scale == 0.5


def test_set_kernel_impl():
    G = DCGANGenerator(z_dim=Z, img_size=16, channels=1, width=4)
    set_kernel_impl(G, "ref")
    impls = {m.impl for m in G.modules() if isinstance(m, (BatchNormAct, BiasAct))}
    assert impls == {"ref"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="img_size"):
        DCGANGenerator(img_size=48)
    with pytest.raises(ValueError, match="norm"):
        DCGANDiscriminator(norm="layer")
