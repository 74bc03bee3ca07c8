"""The device-side history buffer of generated images (CycleGAN's image pool)."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fastgan.image_history import ImageHistory


def reference_query(pool: list, size: int, batch: torch.Tensor, coins, slots) -> torch.Tensor:
    """The rule in plain Python (the reference repository's ImagePool), fed the same random numbers."""
    out = []
    for image, coin, slot in zip(batch, coins.tolist(), slots.tolist()):
        if len(pool) < size:
            pool.append(image.clone())
            out.append(image)
        elif coin > 0.5:
            out.append(pool[slot].clone())
            pool[slot] = image.clone()
        else:
            out.append(image)
    return torch.stack(out)


def test_matches_the_reference_rule_draw_for_draw():
    size, shape = 5, (2, 3, 3)
    hist = ImageHistory(size, shape, "cpu")
    gen, twin = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    pool: list = []
    for step in range(6):   # batches of 3: fills after two, then swaps and passes
        batch = torch.full((3, *shape), float(step)) + torch.arange(3.0).view(3, 1, 1, 1) / 10
        coins = torch.rand(3, generator=twin)
        slots = torch.randint(0, size, (3,), generator=twin)
        want = reference_query(pool, size, batch, coins, slots)
        got = hist.query(batch, gen)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert int(hist.count) == min(size, 3 * (step + 1))
        torch.testing.assert_close(hist.images[:len(pool)], torch.stack(pool), rtol=0, atol=0)


def test_while_filling_images_pass_through_and_are_stored():
    hist = ImageHistory(4, (1, 2, 2), "cpu")
    batch = torch.arange(12.0).view(3, 1, 2, 2)
    assert torch.equal(hist.query(batch, torch.Generator().manual_seed(0)), batch)
    assert int(hist.count) == 3 and torch.equal(hist.images[:3], batch) and not hist.images[3].any()


def test_when_full_roughly_half_the_images_come_from_the_history():
    hist = ImageHistory(8, (1, 1, 1), "cpu")
    gen = torch.Generator().manual_seed(0)
    hist.query(-torch.ones(8, 1, 1, 1), gen)                  # full of -1
    old = sum(int((hist.query(torch.full((4, 1, 1, 1), float(i)), gen) != i).sum()) for i in range(100))
    assert 150 < old < 250                                   # 400 images, each from the history with p = 1/2


def test_size_zero_passes_through_and_state_round_trips():
    assert torch.equal(ImageHistory(0, (1, 2, 2), "cpu").query(torch.ones(2, 1, 2, 2)), torch.ones(2, 1, 2, 2))
    a = ImageHistory(3, (1, 2, 2), "cpu")
    a.query(torch.rand(2, 1, 2, 2), torch.Generator().manual_seed(0))
    b = ImageHistory(3, (1, 2, 2), "cpu")
    images_before = b.images
    b.load_state_dict(a.state_dict())
    assert b.images is images_before   # restored in place: a captured graph keeps its addresses
    assert torch.equal(b.images, a.images) and int(b.count) == 2
    with pytest.raises(ValueError, match="does not fit"):
        ImageHistory(4, (1, 2, 2), "cpu").load_state_dict(a.state_dict())


def test_query_never_reads_a_value_on_the_host():
    """Under fake tensors a host read (.item(), Python branching on a value) raises: the query is capturable."""
    with FakeTensorMode():
        hist = ImageHistory(2, (1, 2, 2), "cpu")
        out = hist.query(torch.zeros(3, 1, 2, 2))
        assert out.shape == (3, 1, 2, 2)
