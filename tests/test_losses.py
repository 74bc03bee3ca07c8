"""GAN losses against hand-computed values; R1 and WGAN-GP on discriminators with known gradients."""

import math

import pytest
from kernel_helpers import needs_triton
import torch

from fastgan import losses
from fastgan.errors import ConfigError
from fastgan.losses import d_loss, g_loss, gradient_penalty, r1_penalty

REAL = torch.tensor([-1.0, 0.0, 2.0])
FAKE = torch.tensor([0.5, -2.0, 1.0])


def sp(v):
    """softplus(v) = log(1 + e^v), in plain Python."""
    return math.log1p(math.exp(v))


# Expected values worked out by hand from the formulas in fastgan.losses:
D_EXPECTED = {
    # mean softplus(-r) + mean softplus(f)
    "ns": (sp(1.0) + sp(0.0) + sp(-2.0)) / 3 + (sp(0.5) + sp(-2.0) + sp(1.0)) / 3,   # 1.5158679
    # mean (r - 1)^2 = (4 + 1 + 1) / 3 ; mean f^2 = (0.25 + 4 + 1) / 3
    "lsgan": 6 / 3 + 5.25 / 3,
    # mean relu(1 - r) = (2 + 1 + 0) / 3 ; mean relu(1 + f) = (1.5 + 0 + 2) / 3
    "hinge": 3 / 3 + 3.5 / 3,
    # mean(-r) + mean(f) = -1/3 + (-0.5)/3
    "wgan": -1 / 3 - 0.5 / 3,
}
G_EXPECTED = {
    "ns": (sp(-0.5) + sp(2.0) + sp(-1.0)) / 3,    # 0.9714222
    "lsgan": (0.25 + 9.0 + 0.0) / 3,
    "hinge": 0.5 / 3,                             # -mean(f) = -(-0.5 / 3)
    "wgan": 0.5 / 3,
}


@pytest.fixture(params=["ref", pytest.param("triton", marks=needs_triton)])
def path(request):
    """Run each loss test through the reference and the Triton kernel (the interpreter on CPU)."""
    from fastgan.kernels import use_impl

    with use_impl(request.param):
        yield request.param


def test_hand_values_are_what_we_think():
    assert D_EXPECTED["ns"] == pytest.approx(1.5158679, abs=1e-6)
    assert G_EXPECTED["ns"] == pytest.approx(0.9714222, abs=1e-6)


@pytest.mark.parametrize("kind", ["ns", "lsgan", "hinge", "wgan"])
def test_d_loss_values(kind, path):
    out = d_loss(kind, REAL, FAKE)
    assert out.shape == () and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(D_EXPECTED[kind]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["ns", "lsgan", "hinge", "wgan"])
def test_g_loss_values(kind, path):
    out = g_loss(kind, FAKE)
    assert out.shape == ()
    torch.testing.assert_close(out, torch.tensor(G_EXPECTED[kind]), rtol=1e-6, atol=1e-6)


def test_loss_gradients(path):
    f = FAKE.clone().requires_grad_(True)
    g_loss("ns", f).backward()
    # d/df mean softplus(-f) = -sigmoid(-f) / n
    torch.testing.assert_close(f.grad, -torch.sigmoid(-FAKE) / 3)
    r = REAL.clone().requires_grad_(True)
    d_loss("hinge", r, FAKE).backward()
    # relu(1 - r): slope -1/n where r < 1, else 0
    torch.testing.assert_close(r.grad, torch.tensor([-1 / 3, -1 / 3, 0.0]))


def test_unknown_kind():
    with pytest.raises(ConfigError, match="unknown loss"):
        d_loss("bce", REAL, FAKE)
    with pytest.raises(ConfigError, match="unknown loss"):
        g_loss("minimax", FAKE)


def linear_d(w):
    """D(x) = <w, x_i> per sample: dD/dx_i = w exactly."""
    return lambda x, labels=None: (x.flatten(1) * w).sum(1)


def test_r1_linear_discriminator():
    w = torch.tensor([1.0, 2.0, -2.0], requires_grad=True)         # ||w||^2 = 9
    x = torch.randn(5, 3, requires_grad=True)
    r1 = r1_penalty(linear_d(w)(x), x)
    torch.testing.assert_close(r1, torch.tensor(9.0))
    r1.backward()                                                  # double backward: d||w||^2/dw = 2w
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_r1_quadratic_discriminator():
    a = torch.tensor(1.5, requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [0.0, 3.0]], requires_grad=True)
    # D(x) = a ||x||^2 -> grad 2 a x -> mean 4 a^2 ||x||^2 = 4 * 2.25 * (5 + 9) / 2 = 63
    r1 = r1_penalty(a * x.square().sum(1), x)
    torch.testing.assert_close(r1, torch.tensor(63.0))
    r1.backward()
    torch.testing.assert_close(a.grad, torch.tensor(8 * 1.5 * 7.0))   # d/da 4 a^2 * 7


def test_r1_packed_is_per_pack():
    w = torch.tensor([1.0, 0.0, 0.0, 2.0])                          # D sees packs of 2 points (2-D)
    x = torch.randn(6, 2, requires_grad=True)
    logits = (x.reshape(3, 4) * w).sum(1)
    torch.testing.assert_close(r1_penalty(logits, x), torch.tensor(5.0))


def test_r1_on_a_real_discriminator_backpropagates():
    from fastgan.models import DCGANDiscriminator

    D = DCGANDiscriminator(img_size=16, channels=1, width=4, norm="none", mbstd=True)
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    r1 = r1_penalty(D(x), x)
    assert r1 > 0
    r1.backward()
    assert D.from_img.weight.grad.abs().sum() > 0


def test_gradient_penalty_linear():
    w = torch.tensor([3.0, 0.0, 4.0, 0.0], requires_grad=True)     # ||w|| = 5 -> (5 - 1)^2 = 16
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    gp = gradient_penalty(linear_d(w), real, fake, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gp, torch.tensor(16.0))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 1.6 w
    torch.testing.assert_close(w.grad, 1.6 * w.detach())
    unit = torch.tensor([0.6, 0.8])
    torch.testing.assert_close(gradient_penalty(linear_d(unit), torch.randn(3, 2), torch.randn(3, 2)),
                               torch.tensor(0.0), rtol=0, atol=1e-6)


def test_gradient_penalty_interpolates_with_generator():
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    seen = {}

    def D(x, labels=None):                      # D(x) = ||x||^2: grad 2 x_hat
        seen["x"], seen["labels"] = x, labels
        return x.square().sum(1)

    labels = torch.tensor([0, 1, 2, 3])
    gp = gradient_penalty(D, real, fake, labels, generator=torch.Generator().manual_seed(7))
    eps = torch.rand(4, 1, generator=torch.Generator().manual_seed(7))
    x_hat = eps * real + (1 - eps) * fake
    torch.testing.assert_close(seen["x"], x_hat)
    assert seen["labels"] is labels
    expected = ((2 * x_hat.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gp, expected)
    again = gradient_penalty(D, real, fake, labels, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(again, gp, rtol=0, atol=0)


def test_gradient_penalty_does_not_reach_the_inputs():
    real = torch.randn(2, 3, requires_grad=True)
    fake = torch.randn(2, 3, requires_grad=True)
    gp = gradient_penalty(lambda x, labels=None: x.square().sum(1), real, fake)
    gp.backward()
    assert real.grad is None and fake.grad is None


def test_gradient_penalty_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        gradient_penalty(linear_d(torch.ones(3)), torch.randn(2, 3), torch.randn(3, 3))


def test_gradient_penalty_runs_d_with_reference_kernels():
    from fastgan.kernels import get_default_impl

    seen = []

    def D(x, labels=None):
        seen.append(get_default_impl())
        return x.sum(1)

    gradient_penalty(D, torch.randn(2, 3), torch.randn(2, 3))
    gradient_penalty(D, torch.randn(2, 3), torch.randn(2, 3), ref_kernels=False)
    assert seen == ["ref", "auto"] and get_default_impl() == "auto"
