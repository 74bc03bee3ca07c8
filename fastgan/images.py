"""Writing samples to disk: image grids, folders of PNGs, raw arrays, point plots.

Everything here takes numpy arrays or CPU tensors, so the ONNX Runtime path
(:mod:`fastgan.export`) writes samples exactly as the PyTorch path does.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from .errors import ConfigError
from .files import atomic_write

ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821  (torch is optional here)

SAMPLE_FORMATS = (".png", ".npy", ".npz")


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def to_uint8(x: ArrayLike) -> np.ndarray:
    """Map images in [-1, 1] to uint8 in [0, 255] (values outside are clipped).

    Args:
        x: array or tensor of images in [-1, 1], any shape.
    """
    a = _as_numpy(x).astype(np.float32)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images: ArrayLike, nrow: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """Tile images into one (H', W', C) uint8 grid.

    Args:
        images: (N, C, H, W) floats in [-1, 1] or uint8 (N, C, H, W).
        nrow: images per row (default: the ceiling of sqrt(N)).
        pad: pixels of black between tiles.
    """
    a = _as_numpy(images)
    if a.ndim != 4:
        raise ConfigError(f"expected images shaped (N, C, H, W), got shape {tuple(a.shape)}")
    if a.dtype != np.uint8:
        a = to_uint8(a)
    n, c, h, w = a.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = np.zeros((pad + ncol * (h + pad), pad + nrow * (w + pad), c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = a[i].transpose(1, 2, 0)
    return grid


def _save_png(arr_hwc: np.ndarray, path: Path) -> None:
    from PIL import Image

    img = Image.fromarray(arr_hwc[..., 0] if arr_hwc.shape[-1] == 1 else arr_hwc)
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def plot_points(points: ArrayLike, path: Union[str, Path], modes: Optional[ArrayLike] = None,
                size: int = 384, extent: Optional[float] = None) -> None:
    """Draw 2-D samples (and the true mixture centres) into a PNG scatter plot.

    Args:
        points: (N, 2) array of samples.
        path: PNG file to write.
        modes: optional (K, 2) mixture centres, drawn as red crosses.
        size: side of the square image in pixels.
        extent: half-width of the plotted square (default: fits modes and most points).
    """
    from PIL import Image, ImageDraw

    p = _as_numpy(points).astype(np.float64)
    m = None if modes is None else _as_numpy(modes).astype(np.float64)
    if extent is None:
        ref = m if m is not None and len(m) else p
        extent = float(np.abs(ref).max()) * 1.25 + 1e-6 if len(ref) else 1.0
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)

    def to_px(xy: np.ndarray) -> np.ndarray:
        return (xy / extent * 0.5 + 0.5) * (size - 1) * np.array([1.0, -1.0]) + np.array([0.0, size - 1])

    for x, y in to_px(p[np.all(np.abs(p) <= extent, axis=1)]):
        draw.point((float(x), float(y)), fill=(20, 70, 160))
    if m is not None:
        for x, y in to_px(m):
            draw.line((x - 4, y, x + 4, y), fill=(220, 30, 30))
            draw.line((x, y - 4, x, y + 4), fill=(220, 30, 30))
    atomic_write(Path(path), lambda f: img.save(f, format="PNG"))


def write_samples(x: ArrayLike, out: Union[str, Path], *, labels: Optional[ArrayLike] = None,
                  modes: Optional[ArrayLike] = None, nrow: Optional[int] = None,
                  vectors: Optional[ArrayLike] = None) -> list[Path]:
    """Write samples where ``out`` says, the format chosen by its suffix.

    ``.png``: one grid image (a scatter plot for 2-D points); ``.npy``: the raw
    array (floats as generated); ``.npz``: arrays ``samples`` (and ``labels``
    or ``vectors``);
    a path ending in ``/`` or an existing folder: one PNG per image.

    Args:
        x: (N, C, H, W) images in [-1, 1] or (N, 2) points.
        out: destination file or folder.
        labels: optional (N,) class labels, stored in ``.npz`` files.
        modes: optional (K, 2) mixture centres drawn on point plots.
        nrow: images per row of a ``.png`` grid (default: a square grid).
        vectors: optional (N, V) conditioning vectors, stored in ``.npz`` files.

    Returns:
        The paths written.
    """
    a = _as_numpy(x)
    path, kind = sample_target(out)
    if kind == "dir":
        return write_png_folder([a], path, len(a))
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".npy":
        atomic_write(path, lambda f: np.save(f, a))
    elif kind == ".npz":
        arrays = {"samples": a}
        if labels is not None:
            arrays["labels"] = _as_numpy(labels)
        if vectors is not None:
            arrays["vectors"] = _as_numpy(vectors)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    elif a.ndim == 2:
        plot_points(a, path, modes=modes)
    else:
        _save_png(make_grid(a, nrow=nrow), path)
    return [path]


def sample_target(out: Union[str, Path]) -> tuple[Path, str]:
    """Where samples go and how: ``(path, kind)``, kind one of ``"dir"``, ``".png"``, ``".npy"``, ``".npz"``.

    Args:
        out: a ``.png``, ``.npy`` or ``.npz`` file, or a folder (a path ending in ``/`` or an existing folder).
    """
    out_s = str(out)
    path = Path(out_s)
    if out_s.endswith(("/", os.sep)) or path.is_dir():
        return path, "dir"
    if path.suffix.lower() not in SAMPLE_FORMATS:
        raise ConfigError(f"cannot write samples to {out_s!r}: use a .png, .npy or .npz file, "
                          "or a folder ending in '/'")
    return path, path.suffix.lower()


def write_png_folder(batches: Iterable[ArrayLike], folder: Path, n: int) -> list[Path]:
    """One PNG per image, numbered in order, from batches of (B, C, H, W) images in [-1, 1].

    Args:
        batches: the images, in batches (one batch is fine).
        folder: destination folder (created).
        n: images in all (sets the width of the numbers).

    Returns:
        The paths written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    written: list[Path] = []
    for batch in batches:
        a = _as_numpy(batch)
        if a.ndim != 4:
            raise ConfigError("a folder of PNGs needs images; write 2-D points to a .png, .npy or .npz file")
        for img in to_uint8(a):
            p = folder / f"{len(written):0{width}d}.png"
            _save_png(img.transpose(1, 2, 0), p)
            written.append(p)
    return written


def save_image_grid(images: ArrayLike, path: Union[str, Path], nrow: Optional[int] = None) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid.

    Args:
        images: the images.
        path: PNG file to write (parents are created).
        nrow: images per row.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(make_grid(images, nrow=nrow), path)
    return path


__all__: Sequence[str] = ("to_uint8", "make_grid", "plot_points", "write_samples", "save_image_grid")
