"""Paired and unpaired translation data: demos, folders, side-by-side pairs, sampling, and bad input refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.errors import DataError
from fastgan.translation_data import load_translation_data


def write(path, w, h, value, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, dtype=np.uint8)
    arr[..., 2] = 7                                # colour (a grey RGB image is stored as one channel)
    arr[: h // 2, : w // 2, 0] = 255 - value       # a corner to tell flips and halves apart
    Image.fromarray(arr).convert(mode).save(path)


def pair_folders(root, n=4, size=(20, 20), names_b=None):
    for i in range(n):
        write(root / "A" / f"{i}.png", *size, 10 * i, mode="L")
    for i, name in enumerate(names_b or [f"{i}" for i in range(n)]):
        write(root / "B" / f"{name}.jpg", *size, 10 * i + 50)
    return str(root / "A"), str(root / "B")


def test_two_folders_pair_by_name_and_keep_channels(tmp_path):
    a, b = pair_folders(tmp_path, n=5)
    d = load_translation_data(a, b, paired=True, resolution=16, holdout=0.2, seed=0)
    assert d.paired and d.channels_a == 1 and d.channels_b == 3 and d.resolution == 16
    assert len(d.a) == 4 and len(d.test_a) == 1 and len(d.b) == 4 and len(d.test_b) == 1
    # pairs stay pairs: pair i is the i-th brightest in both domains
    both = torch.cat([d.a, d.test_a]), torch.cat([d.b, d.test_b])
    assert torch.equal(both[0][:, 0, -1, -1].argsort(), both[1][:, 0, -1, -1].argsort())


def test_side_by_side_pairs_split_into_halves(tmp_path):
    for i in range(3):
        arr = np.zeros((16, 32, 3), dtype=np.uint8)
        arr[:, 16:] = 200 + i                                  # B: the right half
        Image.fromarray(arr).save(tmp_path / f"p{i}.png")
    d = load_translation_data(str(tmp_path), paired=True, resolution=16, holdout=0.0)
    assert d.a.max() == 0 and d.channels_a == 1                # grey (all-zero) left halves
    assert sorted(d.b[:, 0, 0, 0].tolist()) == [200, 201, 202]


def test_unpaired_folders_have_their_own_counts(tmp_path):
    for i in range(3):
        write(tmp_path / "x" / f"a{i}.png", 24, 18, 30 * i)
    for i in range(5):
        write(tmp_path / "y" / "sub" / f"b{i}.png", 18, 30, 20 * i)
    d = load_translation_data(str(tmp_path / "x"), str(tmp_path / "y"), paired=False, resolution=16, holdout=0.0)
    assert (len(d.a), len(d.b)) == (3, 5) and not d.paired


def test_sampling_is_seeded_and_flips_pairs_together(tmp_path):
    a, b = pair_folders(tmp_path, n=4)
    d = load_translation_data(a, b, paired=True, resolution=16, holdout=0.0)
    x1, y1 = d.sample(64, torch.Generator().manual_seed(5))
    x2, y2 = d.sample(64, torch.Generator().manual_seed(5))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.min() >= -1 and x1.max() <= 1
    # the bright corner is top-left unless flipped; A and B of a pair flip together
    a_flipped, b_flipped = x1[:, 0, 0, 0] < x1[:, 0, 0, -1], y1[:, 0, 0, 0] < y1[:, 0, 0, -1]
    assert torch.equal(a_flipped, b_flipped) and 0 < int(a_flipped.sum()) < 64


def test_demos_hold_out_what_they_say():
    d = load_translation_data("edges2digits", paired=True, resolution=32, holdout=0.2)
    assert (d.channels_a, d.channels_b) == (1, 1) and (len(d.a), len(d.test_a)) == (1438, 359)
    u = load_translation_data("digits2bold", paired=False, resolution=32, holdout=0.2)
    assert (len(u.a) + len(u.test_a), len(u.b) + len(u.test_b)) == (899, 898)    # two disjoint halves
    assert u.b.float().mean() > 1.5 * u.a.float().mean()                         # bold strokes: more ink
    g = load_translation_data("grey2colour", paired=True, resolution=32, holdout=0.2)
    assert (g.channels_a, g.channels_b) == (1, 3) and len(g.test_a) > 100 and len(g.a) > 1000
    c = load_translation_data("china2flower", paired=False, resolution=32, holdout=0.2)
    assert (c.channels_a, c.channels_b) == (3, 3) and len(c.test_a) > 100
    # the two photographs differ in style: the flower crops are far darker than the temple's
    assert c.b.float().mean() < c.a.float().mean() - 60


def test_demo_split_does_not_overlap():
    from fastgan.translation_data import _demo

    train, test = _demo("edges2photo", 32, 0.2, 0)
    for names_train, names_test in ((train.names_a, test.names_a),):
        right_of_train = {}
        for n in names_train:
            photo, pos = n.split(":")
            x = int(pos.split("x")[1])
            right_of_train[photo] = max(right_of_train.get(photo, 0), x + 32)
        assert all(int(n.split(":")[1].split("x")[1]) >= right_of_train[n.split(":")[0]] for n in names_test)


@pytest.mark.parametrize("case,message", [
    ("unmatched", "same file names.*only in A.*only in B"),
    ("sizes", "different sizes: A is 20x20, B is 24x20"),
    ("empty_b", "domain B folder .* holds no images"),
    ("missing_a", "domain A folder .* does not exist"),
    ("same", "the same folder"),
    ("unpaired_one_folder", "needs two folders"),
    ("odd_width", "needs an even width"),
    ("demo_kind", "'china2flower' is a unpaired demo; this task needs paired"),
    ("holdout", "holdout must be"),
])
def test_bad_input_is_refused_with_one_clear_line(tmp_path, case, message):
    a, b = pair_folders(tmp_path, n=3)
    args, kw = (a, b), dict(paired=True)
    if case == "unmatched":
        a, b = pair_folders(tmp_path / "u", n=3, names_b=["0", "1", "x"])
        args = (a, b)
    elif case == "sizes":
        write(tmp_path / "B" / "1.jpg", 24, 20, 50)
    elif case == "empty_b":
        (tmp_path / "empty").mkdir()
        args = (a, str(tmp_path / "empty"))
    elif case == "missing_a":
        args = (str(tmp_path / "nope"), b)
    elif case == "same":
        args = (a, a)
    elif case == "unpaired_one_folder":
        args, kw = (a, ""), dict(paired=False)
    elif case == "odd_width":
        write(tmp_path / "sbs" / "p.png", 21, 10, 5)
        args = (str(tmp_path / "sbs"), "")
    elif case == "demo_kind":
        args = ("china2flower", "")
    elif case == "holdout":
        kw["holdout"] = 1.0
    with pytest.raises(DataError, match=message) as err:
        load_translation_data(*args, resolution=16, **kw)
    assert "\n" not in str(err.value)
