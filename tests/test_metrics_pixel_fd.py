"""pixel_fd: digits against the real 8x8 digits in pixel space (scale, block averaging, calibration)."""

import json

import pytest
import torch
import torch.nn.functional as F

from fastgan.data import load_data
from fastgan.errors import ConfigError, DataError
from fastgan.metrics import (check_metrics, evaluate, evaluate_cli, evaluate_samples, native_digits,
                             pixel_frechet_distance, to_native_pixels)
from fastgan.metrics.fid import frechet_distance


@pytest.fixture(scope="module")
def real():
    return native_digits()


def as_images(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 64) pixels on the 0..16 scale -> (N, 1, size, size) in [-1, 1], each pixel a constant block."""
    x = pixels.reshape(-1, 1, 8, 8).to(torch.float64) / 8.0 - 1.0
    return F.interpolate(x, scale_factor=size // 8, mode="nearest")


def test_reference_is_the_native_digits(real):
    x, y = real
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == torch.float64 and float(x.min()) == 0.0 and float(x.max()) == 16.0
    assert torch.equal(x, x.round())                        # integers 0..16, as scikit-learn ships them
    assert torch.bincount(y).tolist()[:2] == [178, 182]


def test_scale_and_block_averaging():
    assert to_native_pixels(-torch.ones(2, 1, 16, 16)).unique().tolist() == [0.0]
    assert to_native_pixels(torch.ones(2, 1, 32, 32)).unique().tolist() == [16.0]
    x = torch.full((1, 1, 16, 16), -1.0)
    x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1] = 1.0, 0.0, 0.0, -1.0   # pixels 16, 8, 8, 0
    x[0, 0, 14:, 2:4] = 0.5                                                            # 12 everywhere
    p = to_native_pixels(x).reshape(8, 8)
    assert p[0, 0] == 8.0 and p[7, 1] == 12.0 and p.sum() == 20.0
    assert to_native_pixels(torch.zeros(3, 8, 8)).shape == (3, 64)                      # (N, R, R) accepted


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_known_answers(real, size):
    x, _ = real
    assert pixel_frechet_distance(as_images(x, size)) == pytest.approx(0.0, abs=1e-6)
    # a constant shift c moves only the mean: 64 c^2
    assert pixel_frechet_distance(as_images(x + 0.5, size)) == pytest.approx(64 * 0.25, rel=1e-6)
    # shrinking the spread about the mean by s: (1 - s)^2 tr(cov)
    mu = x.mean(0)
    cov_trace = float(((x - mu) ** 2).sum(0).div(len(x) - 1).sum())
    shrunk = mu + 0.5 * (x - mu)
    assert pixel_frechet_distance(as_images(shrunk, size)) == pytest.approx(0.25 * cov_trace, rel=1e-6)


def test_real_halves_score_low_and_one_class_far(real):
    x, y = real
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    a, b = x[perm[:898]], x[perm[898:]]
    halves = pixel_frechet_distance(as_images(b, 16), reference=a)
    assert 10 < halves < 30                      # docs/quality.md: 18.2 +- 1.7 over 20 random splits
    assert halves == pytest.approx(frechet_distance(a, b), rel=1e-9)
    for c in range(10):                          # one class against all the digits: 548 (8) .. 1234 (6)
        assert pixel_frechet_distance(as_images(x[y == c], 16)) > 20 * halves


def test_errors():
    with pytest.raises(DataError, match="multiple of 8, got 12"):
        to_native_pixels(torch.zeros(2, 1, 12, 12))
    with pytest.raises(DataError, match=r"one-channel square digit images \(N, 1, R, R\), got \(2, 3, 16, 16\)"):
        to_native_pixels(torch.zeros(2, 3, 16, 16))
    with pytest.raises(DataError, match="at least 2"):
        pixel_frechet_distance(torch.zeros(1, 1, 16, 16))


def test_in_evaluate_and_the_cli(tmp_path, capsys):
    import fastgan
    from helpers import tiny_images

    digits = load_data("digits", resolution=16)
    assert "pixel_fd" in check_metrics(digits, [])
    r = evaluate_samples(as_images(native_digits()[0], 16).float(), digits, ["pixel_fd"])
    assert r["pixel_fd"] == pytest.approx(0.0, abs=1e-3)             # float32 images of the real digits
    with pytest.raises(ConfigError, match="'pixel_fd' needs the built-in digits"):
        check_metrics(load_data("grid25"), ["pixel_fd"])
    with pytest.raises(ConfigError, match="'pixel_fd' needs the built-in digits"):
        check_metrics(load_data("stacked_digits", resolution=16), ["pixel_fd"])

    fastgan.Trainer(tiny_images(tmp_path / "run")).fit()
    assert evaluate_cli(str(tmp_path / "run"), metrics="pixel_fd,classes", n=50) == 0
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]
    G = fastgan.load_generator(tmp_path / "run")
    assert saved["pixel_fd"] == pytest.approx(evaluate(G, digits, ["pixel_fd"], n=50)["pixel_fd"], rel=1e-9)
    assert "pixel_fd" in capsys.readouterr().out


def test_eval_compares_a_run_with_the_digits_it_was_trained_on(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import fastgan.data

    asked = []

    def spy(spec, **kw):
        asked.append(kw.get("digits_upscale"))
        raise DataError("stop here")

    monkeypatch.setattr(fastgan.data, "load_data", spy)
    old = tmp_path / "old"   # saved before digits_upscale existed: trained on plain bicubic images
    shutil.copytree(Path(__file__).parent / "fixtures" / "old_run_digits", old)
    new = tmp_path / "new"
    cfg = json.loads((old / "config.json").read_text())
    (new / "checkpoints").mkdir(parents=True)
    shutil.copytree(old / "checkpoints", new / "checkpoints", dirs_exist_ok=True)
    (new / "config.json").write_text(json.dumps(dict(cfg, digits_upscale="block")))
    for run in (old, new):
        with pytest.raises(DataError, match="stop here"):
            evaluate_cli(str(run), metrics="pixel_fd")
    with pytest.raises(DataError, match="stop here"):
        evaluate_cli(str(old), metrics="pixel_fd", data="stacked_digits")   # other data: its own images
    assert asked == ["bicubic", "block", "block"]
