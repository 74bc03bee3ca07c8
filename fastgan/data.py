"""Datasets: built-in sets, image folders, tensors and torch Datasets.

Everything becomes a :class:`GanData` whose whole content lives on the
training device before the first step: images as uint8 (N, C, H, W), labels as
long (N,), and for the 2-D mixtures the mode centres. ``GanData.sample`` draws
a batch with ``torch.randint`` on that device and converts it to float in
[-1, 1]: no host sync and no data-dependent shape, so it can run inside a
captured CUDA graph.

Built-in sets:

- ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (labels 0..9),
  bicubically upscaled with each block keeping its pixel's mean (so averaging
  an image back to 8x8 gives the real digit), white digit on black, 1 channel.
- ``digits_vectors``: the same digits (plainly bicubic upscaled), each with a
  14-number vector (class one-hot and stroke statistics:
  :mod:`fastgan.stroke_vectors`).
- ``stacked_digits``: 10,000 RGB images whose channels are three random
  digits (1,000 modes; label 100a + 10b + c), drawn from ``seed``.
- ``grid25``: 2-D mixture of 25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05.
- ``ring8``: 2-D mixture of 8 Gaussians on the unit circle, std 0.01.

The built-in sets are made in :mod:`fastgan.builtin_data` and folders are read
by :mod:`fastgan.image_folders`; this module turns each source into a GanData.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .builtin_data import digits, mixture_modes, stacked_digits
from .config import DIGITS_UPSCALES, RESOLUTIONS
from .decode import check_decoded_size, to_8bit
from .errors import ConfigError, DataError
from .image_folders import PROGRESS_MIN_IMAGES, read_folder

POINTS_NOMINAL_SIZE = 10_000     # len() of a 2-D mixture (it is sampled fresh every batch)
DEFAULT_BUILTIN_RESOLUTION = 32
DEFAULT_FOLDER_RESOLUTION = 64


class GanData:
    """A dataset held on the training device, ready to be sampled.

    Attributes:
        kind: ``"image"`` or ``"points"``.
        name: short name (built-in name, folder name, ``"tensor"``, ``"dataset"``).
        images: (N, C, H, W) uint8 on ``device`` (None for points).
        labels: (N,) long on ``device``, or None (always None for points,
            whose labels are the mode index drawn by :meth:`sample`).
        num_classes: number of classes (0 = unlabelled).
        channels: image channels, 1 or 3 (None for points).
        resolution: image side in pixels (None for points).
        modes: (K, 2) float32 mixture centres for points (None for images).
        mode_std: standard deviation of each mixture component (0.0 for images).
        skipped: image files skipped because they could not be read.
        class_names: label names (index = label) of a labelled folder or a built-in set, else None.
        vectors: (N, V) float32 conditioning vectors on ``device``, or None.
        device: where everything lives.

    Args:
        kind: ``"image"`` or ``"points"``.
        name: short name.
        device: torch device of every tensor.
        images: (N, C, H, W) uint8 images (image data).
        labels: (N,) integer labels or None.
        num_classes: class count (0 = unlabelled).
        modes: (K, 2) mixture centres (point data).
        mode_std: mixture component std (point data).
        skipped: unreadable files skipped while loading.
        class_names: label names, or None.
        vectors: (N, V) per-image conditioning vectors, or None.
    """

    def __init__(self, kind: str, name: str, device: Union[str, torch.device] = "cpu", *,
                 images: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                 num_classes: int = 0, modes: Optional[torch.Tensor] = None, mode_std: float = 0.0,
                 skipped: int = 0, class_names: Optional[list[str]] = None,
                 vectors: Optional[torch.Tensor] = None):
        self.kind, self.name, self.device = kind, name, torch.device(device)
        self.images = images.to(self.device) if images is not None else None
        self.labels = labels.to(self.device, torch.long) if labels is not None else None
        self.num_classes, self.skipped, self.class_names = num_classes, skipped, class_names
        self.modes = modes.to(self.device, torch.float32) if modes is not None else None
        self.mode_std = float(mode_std)
        self.vectors = vectors.to(self.device, torch.float32) if vectors is not None else None
        if kind == "image":
            self.channels, self.resolution = int(self.images.shape[1]), int(self.images.shape[2])
        else:
            self.channels, self.resolution = None, None

    @property
    def scale(self) -> float:
        """Coordinate scale of point data: the root-mean-square coordinate
        (sqrt(mean(modes^2) + mode_std^2)); 1.0 for images.

        The MLPs divide points by it, so every mixture reaches them at unit
        scale (grid25: 2.83, ring8: 0.71).
        """
        if self.kind != "points":
            return 1.0
        return float((self.modes.double().pow(2).mean() + self.mode_std ** 2).sqrt())

    @property
    def vector_dim(self) -> int:
        """Size of the per-image conditioning vectors (0 when the data has none)."""
        return int(self.vectors.shape[1]) if self.vectors is not None else 0

    @property
    def cpu_threads(self) -> Optional[int]:
        """CPU threads a command-line run on this data uses unless ``OMP_NUM_THREADS`` is set.

        None: adaptive (:class:`fastgan.cpu_threads.AdaptiveThreads`).

        2-D mixtures train MLPs too small for a second OpenMP thread to help,
        and on a busy machine its spin-waiting makes every step slower.
        """
        return 1 if self.kind == "points" else None

    def __len__(self) -> int:
        """Number of images (a nominal size for the endless 2-D mixtures)."""
        return int(self.images.shape[0]) if self.images is not None else POINTS_NOMINAL_SIZE

    def __repr__(self) -> str:
        if self.kind == "points":
            return f"GanData(points {self.name!r}: {len(self.modes)} modes, std {self.mode_std})"
        return (f"GanData(images {self.name!r}: {len(self)} x {self.channels}x{self.resolution}x"
                f"{self.resolution}, {self.num_classes} classes, on {self.device})")

    def sample(self, batch_size: int,
               generator: Optional[torch.Generator] = None, condition: str = "labels"
               ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Draw a batch uniformly with replacement (capturable: no host sync).

        Args:
            batch_size: samples to draw.
            generator: torch.Generator on ``self.device`` (None: the global RNG).
            condition: ``"labels"``, or ``"vectors"`` for the images' vectors
                instead of their labels (the same random draws either way).

        Returns:
            (x, y): x float32 (B, C, H, W) in [-1, 1] or (B, 2) points;
            y the labels (B,) long (None for unlabelled images), or the vectors (B, V).
        """
        if self.kind == "points":
            k = torch.randint(0, self.modes.shape[0], (batch_size,), generator=generator,
                              device=self.device)                                   # (B,)
            noise = torch.randn(batch_size, 2, generator=generator, device=self.device)
            return self.modes[k] + self.mode_std * noise, k                         # (B, 2), (B,)
        idx = torch.randint(0, self.images.shape[0], (batch_size,), generator=generator,
                            device=self.device)                                     # (B,)
        x = self.images[idx].to(torch.float32).div_(127.5).sub_(1.0)               # (B, C, H, W)
        if condition == "vectors":
            return x, self.vectors[idx]                                             # (B, V)
        return x, (self.labels[idx] if self.labels is not None else None)


def load_data(spec: Any, resolution: Optional[int] = None, device: Union[str, torch.device] = "cpu",
              seed: int = 0, labels: Optional[torch.Tensor] = None, digits_upscale: str = "block",
              vectors: Any = None) -> GanData:
    """Load a dataset onto ``device``.

    Args:
        spec: a built-in name (``digits``, ``digits_vectors``, ``stacked_digits``,
            ``grid25``, ``ring8``), an ``.npz`` file or a dict holding
            ``images`` (and optionally ``labels``, ``vectors``), a folder of .png/.jpg/.jpeg images (searched
            recursively; labels from the sub-folder names when the images sit in
            two or more sub-folders), a tensor or numpy array (N, C, H, W) (or
            (N, H, W)) of uint8 or float in [-1, 1], or a torch Dataset yielding
            such images (C, H, W) or (image, label) pairs.
        resolution: image side (16, 32, 64 or 128); None keeps a tensor's size
            and picks 32 for built-in images and 64 for folders. Ignored for points.
        device: where the data are stored and sampled.
        seed: seed of the generated built-in sets (``stacked_digits``).
        labels: (N,) integer labels for a tensor ``spec`` (optional).
        digits_upscale: ``block`` (bicubic keeping each block's mean, so the
            images average back to the real 8x8 digits) or ``bicubic`` (plain,
            as runs saved before ``TrainConfig.digits_upscale``); ``digits`` only.
        vectors: (N, V) float conditioning vectors for a tensor ``spec`` (optional).

    Returns:
        The :class:`GanData`.
    """
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution {resolution} is not supported; choose one of "
                          f"{', '.join(map(str, RESOLUTIONS))}")
    if isinstance(spec, GanData):
        return spec
    if isinstance(spec, np.ndarray):
        spec = torch.from_numpy(spec)
    if isinstance(spec, torch.Tensor):
        return _from_tensor(spec, labels, resolution, device, "tensor", vectors)
    if isinstance(spec, dict):
        return _from_arrays(spec, resolution, device, "arrays")
    if isinstance(spec, torch.utils.data.Dataset):
        return _from_dataset(spec, resolution, device)
    if not isinstance(spec, (str, os.PathLike)):
        raise DataError(f"cannot load data from a {type(spec).__name__}; pass a dataset name, a "
                        "folder, a tensor or a torch Dataset")
    s = os.fspath(spec)
    if not s.strip():
        raise DataError("data must name a built-in dataset or a folder, got an empty string")
    if s in ("grid25", "ring8"):
        modes, std = mixture_modes(s)
        return GanData("points", s, device, modes=modes, mode_std=std, num_classes=modes.shape[0])
    if s == "digits":
        if digits_upscale not in DIGITS_UPSCALES:
            raise ConfigError(f"unknown digits_upscale {digits_upscale!r}; "
                              f"choose one of {', '.join(DIGITS_UPSCALES)}")
        images, y = digits(resolution or DEFAULT_BUILTIN_RESOLUTION, block_means=digits_upscale == "block")
        return GanData("image", "digits", device, images=images, labels=y, num_classes=10,
                       class_names=[str(i) for i in range(10)])
    if s == "digits_vectors":  # plain bicubic, as its demo was measured (docs/applications.md)
        from .stroke_vectors import digit_vectors

        images, y = digits(resolution or DEFAULT_BUILTIN_RESOLUTION)
        return GanData("image", s, device, images=images, labels=y, num_classes=10,
                       class_names=[str(i) for i in range(10)], vectors=digit_vectors()[0])
    if s.lower().endswith(".npz"):
        if not Path(s).is_file():
            raise DataError(f"data file '{s}' does not exist")
        try:
            with np.load(s, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read '{s}' as an .npz file ({type(e).__name__}: {e})") from None
        return _from_arrays(arrays, resolution, device, Path(s).stem)
    if s == "stacked_digits":
        images, y = stacked_digits(resolution or DEFAULT_BUILTIN_RESOLUTION, seed)
        return GanData("image", "stacked_digits", device, images=images, labels=y, num_classes=1000,
                       class_names=[f"{i:03d}" for i in range(1000)])
    found = read_folder(s, resolution or DEFAULT_FOLDER_RESOLUTION)
    return GanData("image", found.name, device, images=found.images, labels=found.labels,
                   num_classes=len(found.class_names) if found.class_names else 0, skipped=found.skipped,
                   class_names=found.class_names)


# ------------------------------------------------------------ tensors, Datasets
def _from_arrays(arrays: dict, resolution: Optional[int], device: Union[str, torch.device], name: str) -> GanData:
    """Images (and labels, vectors) from a dict of arrays, as an .npz file holds them."""
    unknown = sorted(set(arrays) - {"images", "labels", "vectors"})
    if "images" not in arrays or unknown:
        raise DataError(f"an .npz data file must hold 'images' (and optionally 'labels', 'vectors'); "
                        f"it holds {', '.join(sorted(arrays)) or 'nothing'}")
    return _from_tensor(torch.as_tensor(np.asarray(arrays["images"])), arrays.get("labels"), resolution, device,
                        name, arrays.get("vectors"))


def _check_vectors(vectors: Optional[Any], n: int) -> Optional[torch.Tensor]:
    if vectors is None:
        return None
    v = torch.as_tensor(np.asarray(vectors))
    if v.ndim != 2 or v.shape[0] != n or v.shape[1] == 0 or not (v.is_floating_point() or v.dtype.is_signed
                                                                    or v.dtype == torch.uint8):
        raise DataError(f"vectors must be numbers shaped ({n}, V), one row per image, got {v.dtype} "
                        f"with shape {tuple(v.shape)}")
    v = v.to(torch.float32)
    if not torch.isfinite(v).all():
        raise DataError(f"vectors hold {int((~torch.isfinite(v)).sum())} NaN or infinite values")
    return v


def _from_tensor(x: torch.Tensor, labels: Optional[Any], resolution: Optional[int],
                 device: Union[str, torch.device], name: str, vectors: Optional[Any] = None) -> GanData:
    if x.ndim == 3:
        x = x[:, None]                                                       # (N, 1, H, W)
    if x.ndim != 4:
        raise DataError(f"image tensor must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError("image tensor holds no images (N = 0)")
    if x.shape[1] not in (1, 3):
        hint = " (channels last? permute to (N, C, H, W))" if x.shape[-1] in (1, 3) else ""
        raise DataError(f"images must have 1 or 3 channels, got shape {tuple(x.shape)}{hint}")
    x = _to_uint8(x)
    h, w = x.shape[2], x.shape[3]
    target = resolution or (h if h == w and h in RESOLUTIONS else None)
    if target is None:
        raise DataError(f"images are {h}x{w}; pass resolution (one of "
                        f"{', '.join(map(str, RESOLUTIONS))}) to crop and resize them")
    x = _fit(x, target)
    y, num_classes = _check_labels(labels, x.shape[0])
    return GanData("image", name, device, images=x, labels=y, num_classes=num_classes,
                   vectors=_check_vectors(vectors, x.shape[0]))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 stays; float in [-1, 1] becomes round((x + 1) * 127.5); anything else is refused."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise DataError(f"images must be uint8 or float in [-1, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise DataError(f"float images must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]")
    if lo >= 0.0 and hi > 0.0:
        warnings.warn("float images lie in [0, 1]; fastgan reads floats as [-1, 1] "
                      "(pass x * 2 - 1 if they are [0, 1] images)", stacklevel=3)
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop uint8 (N, C, H, W) to a square and resize it to size x size (antialiased)."""
    h, w = x.shape[2], x.shape[3]
    if h == w == size:
        return x
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, :, top:top + s, left:left + s]
    if s == size:
        return x.contiguous()
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=torch.uint8)
    for i in range(0, x.shape[0], 1024):            # in chunks: bounded float32 memory
        xf = x[i:i + 1024].float()
        xf = F.interpolate(xf, size=(size, size), mode="bicubic", align_corners=False,
                           antialias=True)
        out[i:i + 1024] = xf.round().clamp(0, 255).to(torch.uint8)
    return out


def _check_labels(labels: Optional[Any], n: int) -> tuple[Optional[torch.Tensor], int]:
    if labels is None:
        return None, 0
    y = torch.as_tensor(labels)
    if y.shape != (n,) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"labels must be {n} integers (one per image), got {y.dtype} "
                        f"with shape {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"labels must be non-negative class indices, got minimum {int(y.min())}")
    return y.long(), int(y.max()) + 1


def _from_dataset(ds: torch.utils.data.Dataset, resolution: Optional[int],
                  device: Union[str, torch.device]) -> GanData:
    from tqdm.auto import tqdm

    if isinstance(ds, torch.utils.data.IterableDataset):
        items, total = iter(ds), None
    else:
        try:
            total = len(ds)
        except TypeError:
            raise DataError("the Dataset has no len(); pass an IterableDataset or a tensor") from None
        items = (ds[i] for i in range(total))
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for item in tqdm(items, total=total, desc="reading dataset", unit="img",
                     disable=total is not None and total <= PROGRESS_MIN_IMAGES):
        has_label = isinstance(item, (tuple, list))
        img = item[0] if has_label else item
        if images and has_label != bool(labels):
            raise DataError("the Dataset yields (image, label) for some items and bare images for others")
        images.append(_item_to_tensor(img))
        if has_label:
            labels.append(int(item[1]))
    if not images:
        raise DataError("the Dataset is empty")
    shapes = {tuple(t.shape) for t in images}
    dtypes = {t.dtype for t in images}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise DataError(f"Dataset images must share one shape and dtype, got shapes "
                        f"{sorted(shapes)[:3]} and dtypes {sorted(map(str, dtypes))}")
    x = torch.stack(images)
    return _from_tensor(x, torch.tensor(labels) if labels else None, resolution, device, "dataset")


def _item_to_tensor(img: Any) -> torch.Tensor:
    """A Dataset item as a (C, H, W) or (H, W) tensor; PIL images become uint8 (C, H, W)."""
    from PIL import Image

    if isinstance(img, Image.Image):
        check_decoded_size(img.size)
        a = torch.from_numpy(np.array(to_8bit(img)))
        return a.permute(2, 0, 1) if a.ndim == 3 else a
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(img)
    if not isinstance(img, torch.Tensor):
        raise DataError(f"Dataset items must be images (tensor, array or PIL image), got "
                        f"{type(img).__name__}")
    return img
