"""Image folders as training data: read in parallel, labelled by sub-folder.

:func:`fastgan.data.load_data` reads a folder through :func:`read_folder`; the
translation data (:mod:`fastgan.translation_data`) shares the extensions and
the grey-image test.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .config import BUILTIN_DATASETS
from .decode import read_image
from .errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PROGRESS_MIN_IMAGES = 300        # show a progress bar when loading more images than this


@dataclass
class FolderImages:
    """What :func:`read_folder` found.

    Attributes:
        images: uint8 (N, C, R, R), C 1 when every image is grey, else 3.
        labels: long (N,) indices into ``class_names``, or None for an unlabelled folder.
        class_names: the sub-folder names (two or more), or None.
        skipped: how many image files could not be read.
        name: the folder's name.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: Optional[list[str]]
    skipped: int
    name: str


def looks_like_path(s: str) -> bool:
    """True when ``s`` reads as a path (a separator, a leading . or ~, an image extension), not a dataset name."""
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(c in s for c in seps) or s.startswith((".", "~")) or s.lower().endswith(IMAGE_EXTENSIONS)


def read_folder(spec: str, resolution: int) -> FolderImages:
    """Every readable image under the folder ``spec``, centre-cropped and resized to ``resolution``.

    Unreadable files are skipped with one warning (all unreadable: a
    :class:`~fastgan.errors.DataError`); a folder whose images are all grey
    gives one channel.

    Args:
        spec: the folder (searched recursively for .png, .jpg, .jpeg).
        resolution: the side of the square images returned.
    """
    from tqdm.auto import tqdm

    root = Path(spec).expanduser()
    if not root.exists():
        if looks_like_path(spec):
            raise DataError(f"folder '{spec}' does not exist")
        raise DataError(f"unknown dataset '{spec}': not a built-in ({', '.join(BUILTIN_DATASETS)}) "
                        "and no folder of that name exists")
    if not root.is_dir():
        raise DataError(f"'{spec}' is not a folder (pass a folder of .png/.jpg/.jpeg images)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images found in folder '{spec}' (looked for .png, .jpg, .jpeg "
                        "recursively)")
    class_names, file_labels = folder_labels(root, files)

    n = len(files)
    pixels = np.empty((n, resolution, resolution, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    grey = np.zeros(n, dtype=bool)
    first_error = None
    # PIL releases the GIL while decoding and resampling, so threads overlap files.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda f: read_image(f, resolution), files)
        for i, (arr, err) in enumerate(tqdm(results, total=n, desc=f"loading {root.name}",
                                            unit="img", disable=n <= PROGRESS_MIN_IMAGES)):
            if arr is None:
                first_error = first_error or f"'{files[i].relative_to(root)}': {err}"
                continue
            pixels[i] = arr                    # (R, R, 1) broadcasts over RGB
            ok[i], grey[i] = True, arr.shape[2] == 1 or equal_channels(arr)
    skipped = int(n - ok.sum())
    if skipped == n:
        raise DataError(f"none of the {n} image files in folder '{spec}' could be read "
                        f"(first: {first_error})")
    if skipped:
        warnings.warn(f"skipped {skipped} of {n} image files in folder '{spec}' that could not be "
                      f"read (first: {first_error})", stacklevel=3)
        pixels = pixels[ok]
    if grey[ok].all():
        pixels = pixels[..., :1]               # every image is greyscale: keep one channel
    images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor(file_labels)[torch.from_numpy(ok)] if class_names else None
    return FolderImages(images, labels, class_names, skipped, root.name or spec)


def folder_labels(root: Path, files: Sequence[Path]) -> tuple[Optional[list[str]], list[int]]:
    """Class names and per-file labels from the first sub-folder under root.

    A folder is labelled only when every image sits in a sub-folder and there
    are at least two of them; otherwise (None, []).
    """
    tops = [f.relative_to(root).parts for f in files]
    if any(len(t) < 2 for t in tops):
        return None, []
    names = sorted({t[0] for t in tops})
    if len(names) < 2:
        return None, []
    index = {name: i for i, name in enumerate(names)}
    return names, [index[t[0]] for t in tops]


def equal_channels(arr: np.ndarray) -> bool:
    """True for an RGB array whose three channels are identical (grey content)."""
    return bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
