"""Differentiable augmentations: identity at p=0, semantics of each op, gradients, determinism."""

import pytest
import torch
import torch.nn.functional as F

from fastgan.augment import augment, parse_policy
from fastgan.config import AUGMENTS
from fastgan.errors import ConfigError

OPS = list(AUGMENTS)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(b=8, c=3, s=16, seed=1):
    return torch.rand(b, c, s, s, generator=gen(seed)) * 2 - 1


def test_identity_at_p0_and_empty_policy():
    x = images()
    assert augment(x, OPS, 0.0, gen()) is x
    assert augment(x, "", 1.0, gen()) is x
    assert augment(x, [], 1.0, gen()) is x
    assert augment(x, None, 1.0, gen()) is x


@pytest.mark.parametrize("op", OPS)
def test_identity_with_tensor_p0_is_bitwise(op):
    x = images()
    out = augment(x, [op], torch.tensor(0.0), gen())
    assert torch.equal(out, x)


@pytest.mark.parametrize("op", OPS)
def test_each_op_changes_images_at_p1_and_keeps_shape(op):
    x = images()
    out = augment(x, op, 1.0, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    changed = (out != x).flatten(1).any(1)
    # rot90 leaves k=0 samples alone, translation a (0, 0) shift: most samples still change
    assert changed.sum() >= 4


def test_policy_string_and_errors():
    assert parse_policy("color, translation,,cutout") == ["color", "translation", "cutout"]
    with pytest.raises(ConfigError, match="unknown augmentation"):
        augment(images(), "colour", 1.0)
    with pytest.raises(ConfigError, match="square"):
        augment(torch.zeros(2, 3, 8, 12), "rot90", 1.0)


def test_deterministic_given_generator():
    x = images()
    a = augment(x, OPS, 0.7, gen(3))
    b = augment(x, OPS, 0.7, gen(3))
    c = augment(x, OPS, 0.7, gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_probability_selects_about_p_of_the_samples():
    x = images(b=400, c=1, s=8)
    out = augment(x, "flip", 0.3, gen())
    flipped = (out == x.flip(3)).flatten(1).all(1) & (out != x).flatten(1).any(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped | kept)
    assert 0.22 < flipped.float().mean().item() < 0.38


def test_flip_is_horizontal():
    x = images()
    torch.testing.assert_close(augment(x, "flip", 1.0, gen()), x.flip(3), rtol=0, atol=0)


def test_rot90_outputs_are_rotations():
    x = images(b=16)
    out = augment(x, "rot90", 1.0, gen())
    ks = []
    for i in range(16):
        match = [k for k in range(4) if torch.equal(out[i], torch.rot90(x[i], k, dims=(1, 2)))]
        assert len(match) == 1
        ks.append(match[0])
    assert len(set(ks)) >= 3


def test_translation_is_a_zero_filled_integer_shift():
    x = images(b=8, c=2, s=16) + 2.0                         # no zeros in the input
    out = augment(x, "translation", 1.0, gen())
    for i in range(8):
        found = False
        for dy in range(-2, 3):                              # 16 / 8 = 2 pixels at most
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[i])
                ys, yd = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, dy), 16 - max(0, -dy))
                xs, xd = slice(max(0, -dx), 16 - max(0, dx)), slice(max(0, dx), 16 - max(0, -dx))
                ref[:, yd, xd] = x[i][:, ys, xs]
                found = found or torch.equal(out[i], ref)
        assert found, i


def test_shift_is_an_integer_shift_filled_by_reflection():
    x = images(b=16, c=2, s=16)
    out = augment(x, "shift", 1.0, gen())
    xp = F.pad(x, (2, 2, 2, 2), mode="reflect")             # 16 / 8 = 2 pixels at most
    shifts = set()
    for i in range(16):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(out[i], xp[i, :, 2 - dy:18 - dy, 2 - dx:18 - dx])]
        assert len(match) == 1, i
        shifts.add(match[0])
    assert len(shifts) >= 6
    # a non-square image is shifted by up to 1/8 of each side: 1 row, 4 columns here
    wide = images(b=32, c=1, s=8).repeat(1, 1, 1, 4)[:, :, :, :32]
    out = augment(wide, "shift", 1.0, gen(1))
    wp = F.pad(wide, (4, 4, 1, 1), mode="reflect")
    for i in range(32):
        assert any(torch.equal(out[i], wp[i, :, 1 - dy:9 - dy, 4 - dx:36 - dx])
                   for dy in range(-1, 2) for dx in range(-4, 5)), i


def test_rotate_turns_a_line_by_at_most_15_degrees_and_fills_by_reflection():
    torch.testing.assert_close(augment(torch.full((8, 1, 12, 12), 0.3), "rotate", 1.0, gen()),
                               torch.full((8, 1, 12, 12), 0.3))       # no zero band at the corners
    line = torch.zeros(64, 1, 33, 33)
    line[..., 16, :] = 1.0                                    # a horizontal line through the centre
    out = augment(line, "rotate", 1.0, gen())
    torch.testing.assert_close(out[..., 16, 16], torch.ones(64, 1), atol=1e-5, rtol=0)   # the centre stays
    cols = torch.arange(33.0) - 16
    rows = (out[:, 0] * (torch.arange(33.0) - 16).view(33, 1)).sum(1) / out[:, 0].sum(1).clamp(min=1e-6)  # (64, 33)
    inner = cols.abs() <= 8                                   # away from the reflected border
    slope = (rows[:, inner] * cols[inner]).sum(1) / cols[inner].square().sum()
    angle = torch.rad2deg(torch.atan(slope)).abs()
    assert angle.max() <= 15.5 and angle.max() > 10 and angle.min() < 3


def test_cutout_zeroes_one_square_of_half_the_side():
    x = images(b=16, c=3, s=16) + 2.0
    out = augment(x, "cutout", 1.0, gen())
    for i in range(16):
        zero = (out[i] == 0).all(0)                          # (H, W)
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 4 <= h <= 8 and 4 <= w <= 8 and zero.sum() == h * w   # a (clipped) 8x8 square
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w


def test_color_on_constant_image_shifts_uniformly():
    x = torch.full((4, 3, 8, 8), 0.25)
    out = augment(x, "color", 1.0, gen())
    for i in range(4):                                       # grey stays grey and flat
        assert torch.allclose(out[i], out[i, 0, 0, 0].expand(3, 8, 8), atol=1e-6)
    shift = out[:, 0, 0, 0] - 0.25
    assert shift.abs().max() <= 0.5 and shift.abs().min() > 0


def test_scale_zooms_about_the_centre():
    x = torch.ones(32, 1, 16, 16)
    out = augment(x, "scale", 1.0, gen())
    torch.testing.assert_close(out[:, :, 6:10, 6:10], torch.ones(32, 1, 4, 4))
    border = out[:, 0, 0, 0]
    # zoom-out (s < 1) leaves zero-padded borders; zoom-in keeps the constant
    assert (border < 0.9).any() and (border > 0.999).any()
    # a zoom by at most 10% moves a bright dot off centre by at most ~1 pixel
    dot = torch.zeros(1, 1, 17, 17)
    dot[..., 12, 12] = 1.0
    z = augment(dot.expand(16, 1, 17, 17), "scale", 1.0, gen())
    peak = z.flatten(1).argmax(1)
    assert ((peak // 17 - 12).abs() <= 1).all() and ((peak % 17 - 12).abs() <= 1).all()


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    fn = lambda t: augment(t, [op], 1.0, gen(5))               # same random draws every call
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_gradgradcheck_for_r1_through_augment():
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda t: augment(t.square(), ["translation", "scale", "color"], 1.0, gen(2))
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_grad_flows_through_full_policy():
    x = images().requires_grad_(True)
    augment(x, OPS, 0.8, gen()).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_draws_do_not_depend_on_p():
    """Structural check: the same number of random values is drawn whatever p is."""
    x = images()
    g1, g2 = gen(9), gen(9)
    augment(x, OPS, 0.01, g1)
    augment(x, OPS, 0.99, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_traces_as_one_graph():
    """No Python branch on random values and no host sync: dynamo traces it without a break.

    (The global RNG is used here: dynamo cannot take a torch.Generator argument.)
    """
    torch._dynamo.reset()
    f = torch.compile(lambda t: augment(t, OPS, 0.5), fullgraph=True, backend="eager")
    x = images(b=4)
    assert f(x).shape == x.shape
    torch._dynamo.reset()
