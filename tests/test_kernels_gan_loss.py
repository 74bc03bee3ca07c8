"""gan_loss: Triton kernel (interpreter on CPU, compiled on a GPU) against the reference."""

import pytest
import torch
import torch.nn.functional as F

from fastgan.kernels import LOSS_KINDS, gan_loss, gan_loss_ref
from kernel_helpers import DEVICE, needs_triton


def logits(shape, dtype, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3
    x.view(-1)[0] = 1.0  # a hinge kink (relu(1 - x) at x = 1): gradient 0, as torch
    if x.numel() > 1:
        x.view(-1)[1] = -1.0
    return x.to(DEVICE, dtype)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("real", [True, False])
@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("shape", [(1,), (7,), (128,), (3, 5), (40001,), (70001,)])
def test_matches_reference(shape, kind, real, dtype):
    x = logits(shape, dtype)
    out = []
    for impl in ("triton", "ref"):
        xx = x.clone().requires_grad_(True)
        loss = gan_loss(xx, real, kind, impl=impl)
        (loss * 3.0).backward()  # an upstream gradient != 1
        out.append((loss, xx.grad))
    (loss, dx), (loss_ref, dx_ref) = out
    assert loss.shape == () and loss.dtype == torch.float32 and dx.dtype == dtype
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-5 if dtype == torch.float32 else 2e-2, atol=1e-7)


@needs_triton
def test_non_contiguous_logits():
    base = logits((9, 4), torch.float32)
    x = base[:, 1]  # stride 4
    out = []
    for impl in ("triton", "ref"):
        xx = x.detach().requires_grad_(True)
        gan_loss(xx[::2], False, "lsgan", impl=impl).backward()
        out.append(xx.grad)
    torch.testing.assert_close(out[0], out[1])


@needs_triton
def test_without_grad():
    x = logits((33,), torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(gan_loss(x, False, "ns", impl="triton"), gan_loss_ref(x, False, "ns"))
    # a constant input: no graph, no gradient buffer
    assert not gan_loss(x, True, "hinge", impl="triton").requires_grad


def test_reference_definitions():
    x = torch.randn(10, dtype=torch.float64)
    ones = torch.ones_like(x)
    torch.testing.assert_close(gan_loss_ref(x, True, "ns"), F.binary_cross_entropy_with_logits(x, ones))
    torch.testing.assert_close(gan_loss_ref(x, False, "ns"), F.binary_cross_entropy_with_logits(x, 0 * ones))
    torch.testing.assert_close(gan_loss_ref(x, True, "lsgan"), ((x - 1) ** 2).mean())
    torch.testing.assert_close(gan_loss_ref(x, False, "lsgan"), (x ** 2).mean())
    torch.testing.assert_close(gan_loss_ref(x, True, "hinge"), F.relu(1 - x).mean())
    torch.testing.assert_close(gan_loss_ref(x, False, "hinge"), F.relu(1 + x).mean())
    torch.testing.assert_close(gan_loss_ref(x, True, "wgan"), -x.mean())
    torch.testing.assert_close(gan_loss_ref(x, False, "wgan"), x.mean())
    with pytest.raises(ValueError, match="loss kind"):
        gan_loss(x, True, "bce")


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_reference_gradcheck_and_gradgradcheck(kind):
    x = (torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.3).requires_grad_(True)
    for real in (True, False):
        assert torch.autograd.gradcheck(lambda t: gan_loss_ref(t, real, kind), (x,))
        assert torch.autograd.gradgradcheck(lambda t: gan_loss_ref(t, real, kind), (x,))


@needs_triton
def test_expanded_logits():
    leaf = logits((1, 3), torch.float32)
    out = []
    for impl in ("triton", "ref"):
        xx = leaf.clone().requires_grad_(True)
        gan_loss(xx.expand(5, 3), True, "ns", impl=impl).backward()
        out.append(xx.grad)
    torch.testing.assert_close(out[0], out[1])
