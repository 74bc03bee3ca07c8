"""Data for image-to-image translation: paired (pix2pix) and unpaired (CycleGAN) domains on the device.

Everything lives on the training device before the first step, as uint8
(N, C, H, W) per domain; :meth:`TranslationData.sample` draws a batch with the
step's ``torch.Generator`` (indices, then horizontal flips as a device-side
``torch.where``): no host sync, no data-dependent shape, capturable.

Sources:

- paired: two folders whose images match by file name (``data`` = A,
  ``data_b`` = B), or one folder of images holding A (left half) and B (right
  half) side by side (``data_b`` empty), as the pix2pix datasets ship;
- unpaired: two folders, any names and counts;
- built-in demos cut from scikit-learn's two sample photographs
  (``sklearn.datasets.load_sample_images``: china.jpg, flower.jpg; installed
  with scikit-learn, nothing is downloaded), and from its 1,797 handwritten
  digits: ``edges2digits`` (paired: a digit's outline -> the digit), ``edges2photo`` (paired: the edge
  map of a crop, dark lines on white as in pix2pix's edges2shoes -> the crop in
  colour), ``grey2colour`` (paired: the grey version of a crop -> the crop in
  colour) and ``china2flower`` (unpaired: crops of one photograph -> the
  colours and textures of the other). docs/translation.md says why these.

A part of every set is held out for evaluation: for the paired demos every
crop in the right-hand ``holdout`` fraction of each photograph (no training
crop overlaps them), otherwise a seeded random ``holdout`` fraction of the images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import builtin_data
from .decode import read_image
from .errors import DataError
from .image_folders import IMAGE_EXTENSIONS, equal_channels

PAIRED_DEMOS = ("edges2digits", "edges2photo", "grey2colour")
UNPAIRED_DEMOS = ("digits2bold", "china2flower")
DEMO_SCALE = 0.5         # the photographs (427 x 640) are halved before cropping: more scene per crop
DEMO_STRIDE_DIV = 4      # crops start every resolution / 4 pixels (overlapping)


@dataclass
class Domains:
    """Images of the two domains on the CPU, as loaded (uint8 (N, C, H, W) each).

    Args:
        a: domain A images.
        b: domain B images.
        names_a: what each A image is (file name or crop position), for messages.
        names_b: the same for B.
    """

    a: torch.Tensor
    b: torch.Tensor
    names_a: list[str]
    names_b: list[str]


class TranslationData:
    """Two image domains held on the training device, split into a training and a held-out part.

    Attributes:
        paired: A[i] and B[i] belong together (pix2pix); otherwise the domains are independent.
        name: the data's name (demo name or folder name).
        a, b: training images, uint8 (N, C, H, W) on ``device``.
        test_a, test_b: held-out images (uint8, on the CPU), possibly empty.
        channels_a, channels_b: channels of each domain (1 or 3).
        resolution: image side.
        flip: :meth:`sample` flips each sample horizontally with probability 1/2.

    Args:
        train: the training part.
        test: the held-out part (empty tensors allowed).
        paired: whether A[i] and B[i] are a pair.
        name: the data's name.
        device: where the training part lives.
        flip: random horizontal flips in :meth:`sample`.
    """

    def __init__(self, train: Domains, test: Domains, *, paired: bool, name: str,
                 device: Union[str, torch.device], flip: bool = True):
        self.paired, self.name, self.flip = paired, name, bool(flip)
        self.device = torch.device(device)
        self.a, self.b = train.a.to(self.device), train.b.to(self.device)
        self.test_a, self.test_b = test.a, test.b
        self.channels_a, self.channels_b = int(self.a.shape[1]), int(self.b.shape[1])
        self.resolution = int(self.a.shape[2])

    def __repr__(self) -> str:
        kind = "paired" if self.paired else "unpaired"
        return (f"TranslationData({kind} {self.name!r}: A {len(self.a)} x {self.channels_a}ch, B {len(self.b)} x "
                f"{self.channels_b}ch, {self.resolution} px, held out {len(self.test_a)} / {len(self.test_b)})")

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a training batch of each domain (capturable: no host sync).

        Paired data draw one index per pair (and one flip per pair); unpaired
        data draw A and B independently.

        Args:
            batch_size: samples per domain.
            generator: torch.Generator on the data's device (None: the global RNG).

        Returns:
            (a, b): float32 (B, C, H, W) in [-1, 1].
        """
        idx_a = torch.randint(0, self.a.shape[0], (batch_size,), generator=generator, device=self.device)
        idx_b = idx_a if self.paired else \
            torch.randint(0, self.b.shape[0], (batch_size,), generator=generator, device=self.device)
        a = self.a[idx_a].to(torch.float32).div_(127.5).sub_(1.0)          # (B, Ca, H, W)
        b = self.b[idx_b].to(torch.float32).div_(127.5).sub_(1.0)          # (B, Cb, H, W)
        if self.flip:
            flip_a = torch.rand(batch_size, 1, 1, 1, generator=generator, device=self.device) < 0.5
            flip_b = flip_a if self.paired else \
                torch.rand(batch_size, 1, 1, 1, generator=generator, device=self.device) < 0.5
            a = torch.where(flip_a, a.flip(3), a)
            b = torch.where(flip_b, b.flip(3), b)
        return a, b


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1].

    Args:
        x: uint8 (N, C, H, W).
    """
    return x.to(torch.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------- loading
def load_translation_data(data: str, data_b: str = "", *, paired: bool, resolution: int,
                          holdout: float = 0.1, seed: int = 0, device: Union[str, torch.device] = "cpu",
                          flip: bool = True) -> TranslationData:
    """Load a built-in demo or image folders as two domains.

    Args:
        data: a built-in demo (``edges2photo``, ``grey2colour`` paired, ``china2flower`` unpaired),
            the A folder, or (paired, ``data_b`` empty) a folder of side-by-side A|B images.
        data_b: the B folder (empty: a demo, or side-by-side images).
        paired: pairs are needed (pix2pix): two folders must match by file name.
        resolution: image side; images are resized (shorter side) and centre-cropped to it.
        holdout: fraction held out for evaluation.
        seed: seed of the held-out choice for folders.
        device: where the training images live.
        flip: random horizontal flips when sampling.

    Raises:
        DataError: an unknown demo, a missing or empty folder, unmatched names or
            sizes, unreadable images, or a demo of the other kind.
    """
    if not 0.0 <= holdout < 1.0:
        raise DataError(f"holdout must be a fraction in [0, 1), got {holdout}")
    if data in PAIRED_DEMOS + UNPAIRED_DEMOS:
        if data_b:
            raise DataError(f"'{data}' is a built-in demo; leave data_b empty")
        if paired != (data in PAIRED_DEMOS):
            want = "paired (pix2pix): " + ", ".join(PAIRED_DEMOS) if paired else \
                "unpaired (CycleGAN): " + ", ".join(UNPAIRED_DEMOS)
            raise DataError(f"'{data}' is a {'paired' if data in PAIRED_DEMOS else 'unpaired'} demo; this task "
                            f"needs {want}")
        train, test = _demo(data, resolution, holdout, seed)
    else:
        domains = _folders(data, data_b, paired, resolution)
        train, test = _split(domains, paired, holdout, seed)
    name = data if data in PAIRED_DEMOS + UNPAIRED_DEMOS else Path(data).name or data
    return TranslationData(train, test, paired=paired, name=name, device=device, flip=flip)


def _split(d: Domains, paired: bool, holdout: float, seed: int) -> tuple[Domains, Domains]:
    """A seeded random ``holdout`` part of each domain (the same indices for pairs)."""
    g = torch.Generator().manual_seed(seed)
    perm_a = torch.randperm(len(d.a), generator=g)
    perm_b = perm_a if paired else torch.randperm(len(d.b), generator=g)
    n_a, n_b = int(len(d.a) * holdout), int(len(d.b) * holdout)
    test_a, train_a = perm_a[:n_a].sort().values, perm_a[n_a:].sort().values
    test_b, train_b = perm_b[:n_b].sort().values, perm_b[n_b:].sort().values

    def pick(x, names, idx):
        return x[idx], [names[i] for i in idx.tolist()]

    ta, tna = pick(d.a, d.names_a, train_a)
    tb, tnb = pick(d.b, d.names_b, train_b)
    ea, ena = pick(d.a, d.names_a, test_a)
    eb, enb = pick(d.b, d.names_b, test_b)
    return Domains(ta, tb, tna, tnb), Domains(ea, eb, ena, enb)


# ---------------------------------------------------------------------------- built-in demos
def _photos(scale: float) -> dict[str, np.ndarray]:
    """scikit-learn's sample photographs (china, flower), resized by ``scale``: name -> (H, W, 3) uint8."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = {}
    sample = load_sample_images()
    for path, img in zip(sample.filenames, sample.images):
        im = Image.fromarray(img)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        out[Path(path).stem] = np.asarray(im)
    return out


def _crops(img: np.ndarray, size: int, stride: int, x0: int, x1: int) -> tuple[np.ndarray, list[str]]:
    """Every size x size crop starting on a stride grid whose columns lie within [x0, x1): (N, size, size, C)."""
    h = img.shape[0]
    tops = range(0, h - size + 1, stride)
    lefts = range(x0, x1 - size + 1, stride)
    crops = [img[t:t + size, left:left + size] for t in tops for left in lefts]
    names = [f"y{t}x{left}" for t in tops for left in lefts]
    return np.stack(crops), names


def _grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of (..., 3) uint8 RGB, as (..., 1) uint8 (what PIL's convert("L") computes)."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = r * 299 + g * 587 + b * 114
    return ((y + 500) // 1000).astype(np.uint8)[..., None]


def _sobel(y: np.ndarray, percentile: float = 98.0) -> np.ndarray:
    """Sobel gradient magnitude of grey images (..., H, W), scaled so its ``percentile`` is 255: uint8 (..., H, W)."""
    y = y.astype(np.float32)
    p = np.pad(y, [(0, 0)] * (y.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    gx = (p[..., :-2, 2:] + 2 * p[..., 1:-1, 2:] + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * p[..., 1:-1, :-2]
                                                                        + p[..., 2:, :-2])
    gy = (p[..., 2:, :-2] + 2 * p[..., 2:, 1:-1] + p[..., 2:, 2:]) - (p[..., :-2, :-2] + 2 * p[..., :-2, 1:-1]
                                                                        + p[..., :-2, 2:])
    mag = np.sqrt(gx * gx + gy * gy)
    return np.clip(mag * (255.0 / max(float(np.percentile(mag, percentile)), 1e-6)), 0, 255).round().astype(np.uint8)


def _edges(rgb: np.ndarray) -> np.ndarray:
    """Soft edge map of a whole (H, W, 3) photograph: dark lines on white (as edges2shoes), (H, W, 1) uint8.

    Computed before cropping, so crops have no border lines.
    """
    return (255 - _sobel(_grey(rgb)[..., 0]))[..., None]


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()


def _demo(name: str, resolution: int, holdout: float, seed: int) -> tuple[Domains, Domains]:
    """Crops of the two sample photographs, split into a training and a held-out part.

    The paired demos hold out every crop in the right-hand ``holdout`` part of each
    photograph (no training crop overlaps them: the targets never leak).
    ``china2flower`` has no targets to leak, and a photograph's right-hand strip
    has a style of its own, so it holds out a seeded random ``holdout`` part of the crops.
    ``edges2digits`` holds out a seeded random part of scikit-learn's 1,797 digits.
    """
    if name == "digits2bold":   # one half of the digits as written -> the other half with bold strokes
        digits = builtin_data.digits(resolution)[0]                                   # (1797, 1, R, R)
        half = torch.randperm(len(digits), generator=torch.Generator().manual_seed(1234))
        k = max(1, resolution // 10) * 2 + 1                              # 7 px wide dilation at 32 px
        bold = F.max_pool2d(digits[half[1::2]].float(), k, stride=1, padding=k // 2).to(torch.uint8)
        every = Domains(digits[half[0::2]], bold, [f"digit{i}" for i in half[0::2].tolist()],
                        [f"bold{i}" for i in half[1::2].tolist()])
        return _split(every, False, holdout, seed)
    if name == "edges2digits":   # each digit's outline -> the digit, white on black
        digits = builtin_data.digits(resolution)[0]                                   # (1797, 1, R, R)
        outlines = torch.from_numpy(_sobel(digits[:, 0].numpy()))[:, None]
        names = [f"digit{i}" for i in range(len(digits))]
        return _split(Domains(outlines, digits, names, list(names)), True, holdout, seed)
    photos = _photos(DEMO_SCALE)
    stride = max(1, resolution // DEMO_STRIDE_DIV)
    for key, img in photos.items():
        if min(img.shape[:2]) < resolution * 2:
            raise DataError(f"resolution {resolution} is too large for the built-in demos (photographs of "
                            f"{img.shape[0]} x {img.shape[1]} px); use 64 or less")
    if name == "china2flower":
        (a, na), (b, nb) = (_crops(photos[k], resolution, stride, 0, photos[k].shape[1]) for k in ("china", "flower"))
        every = Domains(_nchw(a), _nchw(b), [f"china:{n}" for n in na], [f"flower:{n}" for n in nb])
        return _split(every, False, holdout, seed)
    out = []
    for part in ("train", "test"):   # each crop's edge map / grey version -> the crop, both photographs
        inputs, crops, names = [], [], []
        for key in sorted(photos):
            img = photos[key]
            w = img.shape[1]
            split = w - max(resolution, int(round(w * holdout)))
            cols = (0, split) if part == "train" else (split, w)
            c, n = _crops(img, resolution, stride, *cols)
            src = _edges(img) if name == "edges2photo" else _grey(img)
            inputs.append(_crops(src, resolution, stride, *cols)[0])
            crops.append(c)
            names += [f"{key}:{x}" for x in n]
        out.append(Domains(_nchw(np.concatenate(inputs)), _nchw(np.concatenate(crops)), names, list(names)))
    return out[0], out[1]


# ---------------------------------------------------------------------------- folders
def _image_files(spec: str, what: str) -> tuple[Path, list[Path]]:
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"{what} folder '{spec}' does not exist" if not root.exists()
                        else f"{what} '{spec}' is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{what} folder '{spec}' holds no images (looked for .png, .jpg, .jpeg recursively)")
    return root, files


def _image_size(path: Path) -> Optional[tuple[int, int]]:
    """(width, height) as displayed (EXIF rotation applied), from the header; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):   # rotated by 90 degrees on display
                w, h = h, w
            return w, h
    except Exception:   # any decoding failure: reported by the caller
        return None


def _read_all(items: list[tuple[Path, Optional[tuple[int, int, int, int]]]], resolution: int,
              what: str) -> torch.Tensor:
    """Read every (file, box) into uint8 (N, C, R, R): C = 1 when every image is grey; an unreadable file is an error."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda it: read_image(it[0], resolution, it[1]), items))
    arrays = []
    for (path, _), (arr, err) in zip(items, results):
        if arr is None:
            raise DataError(f"cannot read {what} image '{path}' ({err})")
        arrays.append(np.broadcast_to(arr, (resolution, resolution, 3)) if arr.shape[2] == 1 else arr)
    pixels = np.stack(arrays)
    if all(equal_channels(a) for a in arrays):
        pixels = pixels[..., :1]
    return _nchw(pixels)


def _folders(data: str, data_b: str, paired: bool, resolution: int) -> Domains:
    if not data_b:
        if not paired:
            raise DataError("unpaired translation needs two folders: data (domain A) and data_b (domain B)")
        return _side_by_side(data, resolution)
    root_a, files_a = _image_files(data, "domain A")
    root_b, files_b = _image_files(data_b, "domain B")
    if root_a.resolve() == root_b.resolve():
        raise DataError(f"data and data_b are the same folder '{data}'; give one folder per domain")
    names_a = [str(p.relative_to(root_a).with_suffix("")) for p in files_a]
    names_b = [str(p.relative_to(root_b).with_suffix("")) for p in files_b]
    if paired:
        set_a, set_b = set(names_a), set(names_b)
        if set_a != set_b or len(set_a) != len(names_a) or len(set_b) != len(names_b):
            only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
            detail = (f"{len(only_a)} only in A (e.g. '{only_a[0]}')" if only_a else "") + \
                ("; " if only_a and only_b else "") + \
                (f"{len(only_b)} only in B (e.g. '{only_b[0]}')" if only_b else "")
            raise DataError(f"paired folders must hold the same file names (extensions aside): "
                            f"{detail or 'a name appears twice with different extensions'}")
        order_b = {n: i for i, n in enumerate(names_b)}
        files_b = [files_b[order_b[n]] for n in names_a]
        names_b = list(names_a)
        for fa, fb in zip(files_a, files_b):
            sa, sb = _image_size(fa), _image_size(fb)
            if sa is None or sb is None:
                raise DataError(f"cannot read the pair '{fa.relative_to(root_a)}' / '{fb.relative_to(root_b)}'")
            if sa != sb:
                raise DataError(f"pair '{fa.relative_to(root_a).with_suffix('')}' has images of different sizes: "
                                f"A is {sa[0]}x{sa[1]}, B is {sb[0]}x{sb[1]}")
    a = _read_all([(f, None) for f in files_a], resolution, "domain A")
    b = _read_all([(f, None) for f in files_b], resolution, "domain B")
    return Domains(a, b, names_a, names_b)


def _side_by_side(data: str, resolution: int) -> Domains:
    """One folder of images holding A (left half) and B (right half)."""
    root, files = _image_files(data, "paired")
    items_a, items_b = [], []
    for f in files:
        size = _image_size(f)
        if size is None:
            raise DataError(f"cannot read paired image '{f.relative_to(root)}'")
        w, h = size
        if w % 2 or w < 2:
            raise DataError(f"'{f.relative_to(root)}' is {w}x{h}: a side-by-side pair needs an even width (A on the "
                            "left half, B on the right); for two folders of pairs give data_b too")
        items_a.append((f, (0, 0, w // 2, h)))
        items_b.append((f, (w // 2, 0, w, h)))
    names = [str(f.relative_to(root).with_suffix("")) for f in files]
    return Domains(_read_all(items_a, resolution, "A half of a"), _read_all(items_b, resolution, "B half of a"),
                   names, list(names))
