"""Data loading: folders, tensors, Datasets, built-in sets, sampling."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.builtin_data import digits as _digits, keep_block_means as _keep_block_means
from fastgan.data import GanData, load_data
from fastgan.errors import ConfigError, DataError


def save(path, size=(20, 20), color=(200, 30, 40), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def jpeg_bytes(size=(32, 32)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(
        buf, format="JPEG")
    return buf.getvalue()


# ------------------------------------------------------------------ folders
def test_folder_with_subfolders_gives_labels(tmp_path):
    save(tmp_path / "cats" / "a.png")
    save(tmp_path / "cats" / "deep" / "b.PNG")                 # nested, upper-case extension
    save(tmp_path / "dogs" / "c.jpg", color=(10, 200, 10))
    save(tmp_path / "dogs" / "d.JPEG", color=(10, 200, 10))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    d = load_data(str(tmp_path), resolution=16)
    assert d.kind == "image" and len(d) == 4 and d.skipped == 0
    assert d.images.shape == (4, 3, 16, 16) and d.images.dtype == torch.uint8
    assert d.channels == 3 and d.resolution == 16
    assert d.class_names == ["cats", "dogs"] and d.num_classes == 2
    assert d.labels.tolist() == [0, 0, 1, 1]
    assert d.images[0, :, 8, 8].tolist() == [200, 30, 40]


def test_flat_folder_is_unlabelled_and_greyscale_detected(tmp_path):
    save(tmp_path / "a.png", mode="L", color=90)
    save(tmp_path / "b.png", color=(77, 77, 77))                # RGB file with grey content
    d = load_data(tmp_path, resolution=16)
    assert d.labels is None and d.num_classes == 0
    assert d.channels == 1 and d.images[:, 0, 5, 5].tolist() == [90, 77]
    save(tmp_path / "c.png", color=(1, 2, 3))
    assert load_data(tmp_path, resolution=16).channels == 3


def test_single_subfolder_is_unlabelled(tmp_path):
    save(tmp_path / "only" / "a.png")
    save(tmp_path / "only" / "b.png")
    assert load_data(tmp_path, resolution=16).labels is None


def test_resize_shorter_side_then_centre_crop(tmp_path):
    img = np.zeros((40, 20, 3), dtype=np.uint8)                # 20 wide, 40 tall
    img[10:30] = 255                                           # the centre 20x20 square is white
    Image.fromarray(img).save(tmp_path / "tall.png")
    d = load_data(tmp_path, resolution=16)
    assert d.images.shape == (1, 1, 16, 16)                    # black and white: one channel
    assert d.images[0, :, 1:-1, :].float().mean() > 250        # only the white centre is kept


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    save(tmp_path / "good1.png")
    save(tmp_path / "good2.jpg")
    (tmp_path / "bad.png").write_bytes(b"definitely not a png")
    (tmp_path / "cut.jpg").write_bytes(jpeg_bytes()[:300])      # truncated JPEG
    with pytest.warns(UserWarning, match="skipped 2 of 4"):
        d = load_data(tmp_path, resolution=16)
    assert len(d) == 2 and d.skipped == 2


def test_corrupt_files_in_labelled_folder_keep_labels_aligned(tmp_path):
    save(tmp_path / "a" / "1.png", color=(255, 0, 0))
    (tmp_path / "a" / "2.png").write_bytes(b"junk")
    save(tmp_path / "b" / "3.png", color=(0, 0, 255))
    with pytest.warns(UserWarning):
        d = load_data(tmp_path, resolution=16)
    assert d.labels.tolist() == [0, 1]
    assert d.images[1, 2, 0, 0] == 255


def test_all_corrupt_is_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    (tmp_path / "y.jpeg").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 2 image files"):
        load_data(tmp_path, resolution=16)


def test_empty_missing_and_not_a_folder(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found in folder"):
        load_data(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "missing"))
    f = save(tmp_path / "file.png")
    with pytest.raises(DataError, match="is not a folder"):
        load_data(str(f))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits.*grid25"):
        load_data("mnist")
    with pytest.raises(DataError, match="empty string"):
        load_data("")
    with pytest.raises(DataError, match="cannot load data from a set"):
        load_data({1, 2})
    with pytest.raises(DataError, match=r"image tensor must have shape \(N, C, H, W\)"):
        load_data({"images": 1})   # a dict holds arrays as an .npz file does


def test_errors_are_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(str(tmp_path / "missing"))
    assert "\n" not in str(e.value)


def test_unsupported_resolution():
    with pytest.raises(ConfigError, match="resolution 48"):
        load_data("digits", resolution=48)


# ------------------------------------------------------------------ tensors and Datasets
def test_uint8_tensor():
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    d = load_data(x, labels=torch.tensor([0, 1, 2, 1, 0]))
    assert torch.equal(d.images, x) and d.num_classes == 3 and d.resolution == 16


def test_float_tensor_is_quantised():
    x = torch.zeros(3, 1, 16, 16)
    x[0], x[1] = -1.0, 1.0
    d = load_data(x)
    assert d.images[:, 0, 0, 0].tolist() == [0, 255, 128]     # round((x + 1) * 127.5)


@pytest.mark.parametrize("x,match", [
    (torch.full((2, 3, 16, 16), 1.5), r"\[-1, 1\]"),
    (torch.full((2, 3, 16, 16), float("nan")), r"\[-1, 1\]"),
    (torch.zeros(2, 16, 16, 3), "channels last"),
    (torch.zeros(2, 2, 16, 16), "1 or 3 channels"),
    (torch.zeros(16, 16), r"\(N, C, H, W\)"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.int64), "uint8 or float"),
    (torch.zeros(0, 3, 16, 16), "no images"),
    (torch.zeros(2, 3, 28, 28), "pass resolution"),
])
def test_tensor_validation(x, match):
    with pytest.raises(DataError, match=match):
        load_data(x)


def test_tensor_resized_and_labels_validated():
    d = load_data(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), resolution=16)
    assert d.images.shape == (4, 1, 16, 16)
    with pytest.raises(DataError, match="labels"):
        load_data(torch.zeros(4, 1, 16, 16), labels=torch.tensor([0.5, 1, 2, 3]))
    with pytest.raises(DataError, match="labels"):
        load_data(torch.zeros(4, 1, 16, 16), labels=torch.tensor([0, 1]))


def test_zero_one_floats_warn():
    with pytest.warns(UserWarning, match=r"\[0, 1\]"):
        load_data(torch.rand(2, 3, 16, 16))


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, labelled=True):
        self.labelled = labelled

    def __len__(self):
        return 6

    def __getitem__(self, i):
        img = torch.full((1, 16, 16), i / 6.0 - 0.5)
        return (img, i % 3) if self.labelled else img


def test_torch_dataset():
    d = load_data(PairDataset())
    assert d.images.shape == (6, 1, 16, 16) and d.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert d.num_classes == 3 and d.name == "dataset"
    u = load_data(PairDataset(labelled=False))
    assert u.labels is None and u.num_classes == 0


# ------------------------------------------------------------------ built-in sets
def test_digits():
    d = load_data("digits")
    assert d.images.shape == (1797, 1, 32, 32) and d.images.dtype == torch.uint8
    assert d.num_classes == 10 and d.labels.unique().tolist() == list(range(10))
    assert d.images.max() == 255 and d.images.min() == 0
    assert d.images[:, 0, :2, :2].float().mean() < 10          # black background, white digit
    assert load_data("digits", resolution=16).images.shape == (1797, 1, 16, 16)


def test_stacked_digits():
    a = load_data("stacked_digits", resolution=16, seed=1)
    assert a.images.shape == (10000, 3, 16, 16) and a.num_classes == 1000
    assert a.labels.min() >= 0 and a.labels.max() <= 999 and a.labels.unique().numel() > 900
    b = load_data("stacked_digits", resolution=16, seed=1)
    c = load_data("stacked_digits", resolution=16, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    # each channel is a digit whose class is the matching decimal digit of the label
    digits, _ = _digits(16, block_means=False)             # stacked digits keep the plain bicubic upscaling
    labels = load_data("digits", resolution=16).labels
    for i in range(5):
        lab = int(a.labels[i])
        for ch, cls in enumerate((lab // 100, lab // 10 % 10, lab % 10)):
            match = (digits[:, 0] == a.images[i, ch]).flatten(1).all(1)
            assert cls in labels[match].tolist()


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_digits_average_back_to_the_real_digits(resolution):
    from fastgan.metrics import native_digits, to_native_pixels

    real, _ = native_digits()
    images = load_data("digits", resolution=resolution).images.float() / 127.5 - 1
    assert (to_native_pixels(images) - real).abs().max() < 0.05          # of 16; plain bicubic: 3.8
    plain, _ = _digits(resolution, block_means=False)
    assert torch.equal(load_data("digits", resolution=resolution, digits_upscale="bicubic").images, plain)
    assert (to_native_pixels(plain.float() / 127.5 - 1) - real).abs().max() > 1.0
    # the shifts keep the bicubic look: pixels move by 4-5% of the range on average (a 2-level image, 50%)
    assert (images - (plain.float() / 127.5 - 1)).abs().mean() < 0.12


def test_unknown_digits_upscale():
    with pytest.raises(ConfigError, match="unknown digits_upscale 'area'"):
        load_data("digits", digits_upscale="area")


def test_keep_block_means_saturated_and_random_blocks():
    small = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])                  # (1, 1, 2, 2)
    up = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2
    out = _keep_block_means(up, small)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(torch.nn.functional.avg_pool2d(out, 4), small, atol=1e-4)
    assert out[..., :4, :4].max() < 1e-4 and out[..., :4, 4:].min() > 1 - 1e-4   # black and white blocks


@pytest.mark.parametrize("name,k,std,spacing", [("grid25", 25, 0.05, 2.0), ("ring8", 8, 0.01, 0.7)])
def test_point_mixtures(name, k, std, spacing):
    d = load_data(name)
    assert d.kind == "points" and d.num_classes == k and d.modes.shape == (k, 2)
    assert d.mode_std == std and d.images is None
    x, y = d.sample(4000, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32 and y.dtype == torch.long
    err = x - d.modes[y]
    assert err.abs().max() < 6 * std                              # every point near its own mode
    assert 0.9 * std < err.std().item() < 1.1 * std
    assert y.unique().numel() == k
    dist = torch.cdist(d.modes, d.modes) + torch.eye(k) * 100
    assert dist.min() > spacing * 0.99
    if name == "ring8":
        torch.testing.assert_close(d.modes.norm(dim=1), torch.ones(8))


def test_grid25_modes():
    m = load_data("grid25").modes
    assert sorted(set(m[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(r) for r in m.tolist()}) == 25


# ------------------------------------------------------------------ sampling
def test_image_sample_values_labels_and_determinism():
    x = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    d = load_data(x, labels=torch.arange(10))
    xb, yb = d.sample(7, torch.Generator().manual_seed(3))
    assert xb.shape == (7, 3, 16, 16) and xb.dtype == torch.float32
    assert xb.min() >= -1 and xb.max() <= 1
    torch.testing.assert_close(xb, x[yb].float() / 127.5 - 1, rtol=0, atol=1e-6)
    xb2, yb2 = d.sample(7, torch.Generator().manual_seed(3))
    assert torch.equal(xb, xb2) and torch.equal(yb, yb2)
    assert load_data(x).sample(2)[1] is None


def test_gandata_passthrough_and_repr():
    d = load_data("ring8")
    assert load_data(d) is d and "ring8" in repr(d)
    assert isinstance(d, GanData) and len(d) > 0
