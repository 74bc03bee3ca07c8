"""A small digits classifier, trained on scikit-learn's bundled 8x8 digits.

It gives the digits data sets a feature space (for the Fréchet distance, KID
and precision/recall) and a labeller (for class coverage and the 1,000 modes
of stacked digits) without any download.

Inputs are images at whatever resolution the GAN works at, (B, 1, H, W) in
[-1, 1]. They are first brought back to 8x8 by area averaging, which is how
scikit-learn's digits were made (each pixel counts the ink in a 4x4 block of
a 32x32 bitmap), so generated 16/32/64-pixel digits land in the same space as
the training data. The network then reads the 8x8 image.

The weights are trained deterministically on first use (a few seconds on a
CPU) on 80% of the digits and checked on the held-out 20%; they are cached as
safetensors in :func:`fastgan.metrics.cache.cache_dir`, keyed by
:data:`CLASSIFIER_VERSION`, with the held-out accuracy in the file's metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..files import atomic_write
from .cache import cache_dir

# Bump when the architecture, preprocessing or training recipe changes: old
# cache files are then ignored rather than loaded into a different model.
CLASSIFIER_VERSION = "digits-cnn-2"
NATIVE = 8          # side of scikit-learn's digits
FEATURE_DIM = 128   # size of the penultimate layer (the feature space)
_MIN_ACCURACY = 0.95

_loaded: dict = {}  # (path, device) -> DigitsClassifier, filled on first use


class DigitsClassifier(nn.Module):
    """CNN over 8x8 digits; ``features`` is its 128-d penultimate layer.

    The features are divided by a constant fixed after training (their RMS
    over the training digits), so they have unit RMS on real digits: the
    Fréchet distance then reads in units of that spread, and KID's cubic
    kernel ``(x . y / d + 1)^3`` sees inputs of order one, as with Inception
    features (raw, its values reached ~300 and buried KID in noise).

    Args:
        accuracy: held-out accuracy recorded with the weights (informational).
    """

    def __init__(self, accuracy: float = float("nan")):
        super().__init__()
        self.accuracy = accuracy
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),    # (B, 32, 8, 8)
            nn.MaxPool2d(2),                              # (B, 32, 4, 4)
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),   # (B, 32, 4, 4)
            nn.MaxPool2d(2),                              # (B, 32, 2, 2)
            nn.Flatten(),                                 # (B, 128)
            nn.Linear(128, FEATURE_DIM), nn.ReLU(),       # (B, 128)
        )
        self.head = nn.Linear(FEATURE_DIM, 10)            # (B, 10)
        self.register_buffer("feature_scale", torch.ones(()))

    @staticmethod
    def to_native(x: torch.Tensor) -> torch.Tensor:
        """Bring (B, 1, H, W) images in [-1, 1] to (B, 1, 8, 8) by area averaging.

        Args:
            x: float images; H and W of any size (smaller ones are upsampled bilinearly).
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise DataError(f"the digits classifier takes (B, 1, H, W) images, got shape {tuple(x.shape)}")
        x = x.float()
        h, w = x.shape[-2:]
        if (h, w) == (NATIVE, NATIVE):
            return x
        if h >= NATIVE and w >= NATIVE:
            return F.interpolate(x, size=(NATIVE, NATIVE), mode="area")
        return F.interpolate(x, size=(NATIVE, NATIVE), mode="bilinear", align_corners=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 128) penultimate features of (B, 1, H, W) images in [-1, 1].

        Args:
            x: images at any resolution.
        """
        return self.body(self.to_native(x)) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 10) class logits of (B, 1, H, W) images in [-1, 1].

        Args:
            x: images at any resolution.
        """
        return self.head(self.body(self.to_native(x)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """(B,) predicted digit of each image.

        Args:
            x: (B, 1, H, W) images in [-1, 1].
            batch_size: images per forward pass.
        """
        return torch.cat([self(x[s:s + batch_size]).argmax(1) for s in range(0, len(x), batch_size)])


# ---------------------------------------------------------------- training
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ((1797, 1, 8, 8) float32 in [-1, 1], (1797,) long labels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0 * 2.0 - 1.0)[:, None]
    return images, torch.from_numpy(d.target.astype(np.int64))


def held_out_split(labels: torch.Tensor, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split: (train indices, held-out indices).

    Args:
        labels: (N,) class labels.
        fraction: share of each class held out.
        seed: seed of the shuffle.
    """
    rng = np.random.RandomState(seed)
    train, test = [], []
    y = labels.numpy()
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * fraction))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return torch.as_tensor(sorted(train)), torch.as_tensor(sorted(test))


def _resampled(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """8x8 digits upsampled to ``size`` with ``mode`` and area-averaged back: what
    a digit looks like to the classifier after a data pipeline rescaled it."""
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(F.interpolate(x, size=(size, size), mode=mode, **kw), size=(NATIVE, NATIVE), mode="area")


@torch.no_grad()
def accuracy_of(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` the model labels correctly.

    Args:
        model: the classifier.
        images: (N, 1, H, W) in [-1, 1].
        labels: (N,) true digits.
    """
    was_training = model.training
    model.eval()
    acc = float((model.predict(images) == labels.to(images.device)).double().mean())
    model.train(was_training)
    return acc


def train_digits_classifier(seed: int = 0, epochs: int = 16) -> DigitsClassifier:
    """Train the classifier from scratch, deterministically, on CPU.

    Training sees the 8x8 digits and copies of them taken through a bilinear
    upscale to 32 pixels and back (what a data pipeline's rescaling does to
    them), with small random brightness and contrast changes. The global RNG
    state and thread count are left untouched.

    Args:
        seed: seed of initialisation, split and batching.
        epochs: passes over the (augmented) training set.

    Returns:
        The trained model in eval mode; ``model.accuracy`` holds the held-out accuracy.
    """
    images, labels = digits_tensors()
    train_idx, test_idx = held_out_split(labels, seed=seed)
    x, y = images[train_idx], labels[train_idx]
    variants = [x, _resampled(x, 32, "bilinear")]
    x_train = torch.cat(variants).clamp(-1, 1)
    y_train = y.repeat(len(variants))
    model = _seeded_fit(x_train, y_train, epochs, seed)
    with torch.no_grad():
        model.feature_scale.fill_(model.body(x_train).pow(2).mean().sqrt().item())
    model.accuracy = accuracy_of(model, images[test_idx], labels[test_idx])
    return model


def fit_digits_classifier(images: torch.Tensor, labels: torch.Tensor, *, steps: int = 800, seed: int = 0,
                          batch: int = 128) -> DigitsClassifier:
    """A fresh :class:`DigitsClassifier` trained on the given images only, with the cached one's recipe.

    For experiments that ask what a training set is worth (a classifier trained
    on synthetic digits, tested on real ones). Training runs whole epochs until
    at least ``steps`` mini-batches, so small and large sets get about the same
    number of updates. The global RNG state and thread count are left untouched.

    Args:
        images: (N, 1, H, W) digits in [-1, 1] (brought to 8x8 first, as the model reads them).
        labels: (N,) digits 0..9.
        steps: mini-batch updates, at least.
        seed: seed of initialisation, order and jitter.
        batch: images per mini-batch.

    Returns:
        The model in eval mode (``accuracy`` unset: measure it with :func:`accuracy_of`).
    """
    x = DigitsClassifier.to_native(images).clamp(-1, 1)
    y = torch.as_tensor(labels).long()
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"need one label per image, got {len(x)} images and {len(y)} labels")
    epochs = max(1, -(-steps // -(-len(x) // batch)))
    return _seeded_fit(x, y, epochs, seed, batch)


def _seeded_fit(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, batch: int = 128) -> DigitsClassifier:
    """:func:`_fit` seeded with ``seed``, in one thread, leaving the global RNG and thread count as they were."""
    threads = torch.get_num_threads()
    # NOTE: one thread: these layers are too small to split, and on a busy
    # 2-core machine two threads took 69 s where one took 10 s.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _fit(x, y, epochs, torch.Generator().manual_seed(seed), batch=batch)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _fit(x: torch.Tensor, y: torch.Tensor, epochs: int, g: torch.Generator, batch: int = 128) -> DigitsClassifier:
    """Adam with a one-cycle schedule over shuffled mini-batches (all draws from ``g``)."""
    model = DigitsClassifier().train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for s in range(0, len(order), batch):
            b = order[s:s + batch]
            # brightness/contrast jitter: ink and background can drift in GAN samples
            scale = 1.0 + 0.2 * (torch.rand(len(b), 1, 1, 1, generator=g) - 0.5)
            shift = 0.2 * (torch.rand(len(b), 1, 1, 1, generator=g) - 0.5)
            xb = ((x[b] + 1) * scale - 1 + shift).clamp(-1, 1)
            loss = F.cross_entropy(model(xb), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


# ---------------------------------------------------------------- caching
def classifier_path(directory: Optional[Path] = None) -> Path:
    """The cache file of the current classifier version.

    Args:
        directory: cache folder (default :func:`cache_dir`).
    """
    return Path(directory or cache_dir()) / f"{CLASSIFIER_VERSION}.safetensors"


def save_classifier(model: DigitsClassifier, path: Path) -> None:
    """Write weights and metadata atomically (a temporary file renamed into place).

    Args:
        model: the classifier.
        path: destination ``.safetensors`` file.
    """
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"version": CLASSIFIER_VERSION, "accuracy": repr(float(model.accuracy))}
    atomic_write(path, save(state, metadata=meta))


def read_classifier(path: Path) -> Optional[DigitsClassifier]:
    """Load a cached classifier, or ``None`` if the file is missing, corrupt or of another version.

    Args:
        path: a file written by :func:`save_classifier`.
    """
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("version") != CLASSIFIER_VERSION:
            return None
        model = DigitsClassifier(accuracy=float(meta["accuracy"]))
        model.load_state_dict(state)
    except Exception:  # a truncated or foreign file: rebuild it
        return None
    return model.eval()


def load_digits_classifier(device="cpu", directory: Optional[Path] = None) -> DigitsClassifier:
    """The digits classifier, trained and cached on first use, memoised per process.

    Args:
        device: where to put the model.
        directory: cache folder (default :func:`cache_dir`, which honours
            ``$FASTGAN_CACHE_DIR``).

    Returns:
        A :class:`DigitsClassifier` in eval mode with ``requires_grad`` off;
        ``.accuracy`` is its held-out accuracy.
    """
    path = classifier_path(directory)
    key = (str(path.resolve()), str(torch.device(device)))
    if key in _loaded:
        return _loaded[key]
    model = read_classifier(path)
    if model is None:
        model = train_digits_classifier()
        if model.accuracy <= _MIN_ACCURACY:  # a broken environment, not something to cache
            raise DataError(f"digits classifier reached only {model.accuracy:.1%} held-out accuracy")
        save_classifier(model, path)
    model = model.to(device).eval().requires_grad_(False)
    _loaded[key] = model
    return model
