"""The digits classifier: held-out accuracy, resolution handling, determinism, caching."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fastgan.errors import DataError
from fastgan.metrics import cache_dir, classifier as clf_mod
from fastgan.metrics.classifier import (CLASSIFIER_VERSION, FEATURE_DIM, accuracy_of, classifier_path, digits_tensors,
                                        held_out_split, load_digits_classifier, train_digits_classifier)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the whole test session, so the classifier trains once."""
    path = tmp_path_factory.getbasetemp() / "fastgan-cache"
    old = os.environ.get("FASTGAN_CACHE_DIR")
    os.environ["FASTGAN_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FASTGAN_CACHE_DIR", None)
    else:
        os.environ["FASTGAN_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def clf(shared_cache):
    return load_digits_classifier()


@pytest.fixture(scope="module")
def held_out():
    images, labels = digits_tensors()
    _, test = held_out_split(labels)
    return images[test], labels[test]


def test_held_out_accuracy_above_95_percent(clf, held_out):
    x, y = held_out
    assert clf.accuracy > 0.95
    assert accuracy_of(clf, x, y) == pytest.approx(clf.accuracy)
    assert len(y) == 359  # 20% of each class of the 1,797 digits, rounded


@pytest.mark.parametrize("size,mode", [(16, "bilinear"), (32, "bilinear"), (64, "bilinear"), (32, "nearest"),
                                       (12, "bicubic"), (4, "area")])
def test_accepts_images_at_model_resolution(clf, held_out, size, mode):
    x, y = held_out
    kw = {} if mode in ("nearest", "area") else {"align_corners": False}
    up = F.interpolate(x, size=(size, size), mode=mode, **kw).clamp(-1, 1)
    logits = clf(up)
    assert logits.shape == (len(x), 10)
    assert clf.features(up).shape == (len(x), FEATURE_DIM)
    if size >= 8:
        assert accuracy_of(clf, up, y) > 0.95


def test_accuracy_on_the_built_in_digits_data(clf, held_out):
    from fastgan.data import load_data

    data = load_data("digits", resolution=32)
    _, test = held_out_split(data.labels.cpu())
    x = data.images[test].float() / 127.5 - 1
    assert accuracy_of(clf, x, data.labels[test]) > 0.95


def test_rejects_wrong_channel_count(clf):
    with pytest.raises(DataError, match=r"\(B, 1, H, W\)"):
        clf(torch.zeros(2, 3, 8, 8))


def test_training_is_deterministic_and_keeps_the_global_rng():
    state = torch.get_rng_state()
    a = train_digits_classifier(epochs=1)
    b = train_digits_classifier(epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert a.accuracy == b.accuracy


def test_cache_round_trip(clf, shared_cache, monkeypatch):
    path = classifier_path()
    assert path.parent == shared_cache and path.is_file()
    assert CLASSIFIER_VERSION in path.name and path.suffix == ".safetensors"
    monkeypatch.setattr(clf_mod, "_loaded", {})          # a fresh process
    monkeypatch.setattr(clf_mod, "train_digits_classifier", lambda *a, **k: pytest.fail("retrained"))
    again = load_digits_classifier()
    assert again is not clf
    assert again.accuracy == pytest.approx(clf.accuracy)
    assert all(torch.equal(again.state_dict()[k], clf.state_dict()[k]) for k in clf.state_dict())


def test_corrupt_or_foreign_cache_file_is_rebuilt(tmp_path, monkeypatch, clf):
    path = classifier_path(tmp_path)
    path.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(clf_mod, "train_digits_classifier", lambda *a, **k: clf)
    model = load_digits_classifier(directory=tmp_path)
    assert model.accuracy == clf.accuracy
    assert clf_mod.read_classifier(path) is not None      # rewritten with valid weights


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("FASTGAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fastgan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fastgan"


def test_importing_metrics_trains_nothing_and_writes_nothing(tmp_path):
    env = dict(os.environ, FASTGAN_CACHE_DIR=str(tmp_path / "cache"))
    code = "import fastgan.metrics, sys; sys.exit('sklearn' in sys.modules or 'matplotlib' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert not (tmp_path / "cache").exists()
