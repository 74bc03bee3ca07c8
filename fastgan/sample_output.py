"""Writing any number of samples with bounded memory.

``.npy`` files and folders of PNGs are written batch by batch as the
generator produces them (the ``.npy`` through a temporary file renamed into
place when complete). A ``.png`` grid or a ``.npz`` file needs every sample at
once; those are refused beyond :data:`MAX_IN_MEMORY_BYTES`. Before anything
is generated, the space the output needs is compared with the space free
where it goes, so ``fastgan sample --n 1000000000`` is one clear error, not a
process that grows until it is killed.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from .errors import ConfigError, StorageError, storage_error
from .files import atomic_write
from .images import ArrayLike, _as_numpy, sample_target, write_png_folder, write_samples

MAX_IN_MEMORY_BYTES = 2 << 30   # float32 samples a .png grid or a .npz may hold (2 GiB)


def _size(n_bytes: float) -> str:
    units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"]
    k = min(int(math.log(max(n_bytes, 1), 1024)), len(units) - 1)
    return f"{n_bytes / 1024 ** k:.1f} {units[k]}" if k else f"{int(n_bytes)} bytes"


def check_sample_output(n: int, sample_shape: tuple[int, ...], out: Union[str, Path]) -> None:
    """Refuse, before generating anything, an output that cannot hold ``n`` samples.

    Args:
        n: number of samples.
        sample_shape: shape of one sample, (C, H, W) or (2,).
        out: destination (see :func:`fastgan.images.write_samples`).

    Raises:
        ConfigError: a grid or ``.npz`` beyond :data:`MAX_IN_MEMORY_BYTES`, or an
            output larger than the free space where it goes.
    """
    path, kind = sample_target(out)
    per_sample = 4 * math.prod(sample_shape)            # float32 as generated
    if kind in (".png", ".npz") and n * per_sample > MAX_IN_MEMORY_BYTES:
        most = MAX_IN_MEMORY_BYTES // per_sample
        raise ConfigError(f"{n:,} samples need {_size(n * per_sample)} in memory for a {kind} file; the most is "
                          f"{_size(MAX_IN_MEMORY_BYTES)} ({most:,} samples): write a .npy file or a folder/, which "
                          "are streamed to disk")
    # a folder holds 8-bit PNGs: about C*H*W bytes each (compression mostly saves, noise can cost a little)
    need = n * (per_sample if kind in (".npy", ".npz") else per_sample // 4)
    where = path if path.exists() else next(p for p in path.parents if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise ConfigError(f"{n:,} samples need about {_size(need)} at '{out}', but only {_size(free)} is free "
                          "there: lower --n or choose another location")


def write_sample_batches(batches: Iterable[ArrayLike], n: int, sample_shape: tuple[int, ...],
                         out: Union[str, Path], *, labels: Optional[ArrayLike] = None,
                         modes: Optional[ArrayLike] = None, nrow: Optional[int] = None,
                         vectors: Optional[ArrayLike] = None) -> list[Path]:
    """Write ``n`` samples arriving in batches, streamed where the format allows.

    Args:
        batches: arrays or tensors (B, *sample_shape), n rows in all, floats in [-1, 1] for images.
        n: number of samples.
        sample_shape: shape of one sample, (C, H, W) or (2,).
        out: destination: ``.png`` (grid or point plot), ``.npy``, ``.npz``, or a folder (``DIR/``).
        labels: optional (n,) class labels, stored in ``.npz`` files.
        modes: optional (K, 2) mixture centres drawn on point plots.
        nrow: images per grid row.
        vectors: optional (n, V) conditioning vectors, stored in ``.npz`` files.

    Returns:
        The paths written (one per image for a folder).

    Raises:
        ConfigError: see :func:`check_sample_output`.
        StorageError: the output could not be written; nothing partial is left for files.
    """
    check_sample_output(n, sample_shape, out)
    path, kind = sample_target(out)
    try:
        if kind == ".npy":
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: _stream_npy(f, batches, n, sample_shape))
            return [path]
        if kind == "dir":
            return write_png_folder(batches, path, n)
        x = np.concatenate([_as_numpy(b) for b in batches])
        return write_samples(x, out, labels=labels, modes=modes, nrow=nrow, vectors=vectors)
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(e, "write samples to", out) from None


def _stream_npy(f, batches: Iterable[ArrayLike], n: int, sample_shape: tuple[int, ...]) -> None:
    """The bytes ``np.save`` writes for the float32 (n, *sample_shape) array, one batch at a time."""
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                             "fortran_order": False, "shape": (n, *sample_shape)})
    done = 0
    for b in batches:
        a = np.ascontiguousarray(_as_numpy(b), dtype=np.float32)
        f.write(a.tobytes())
        done += len(a)
    if done != n:
        raise ValueError(f"expected {n} samples, the generator gave {done}")


__all__ = ("MAX_IN_MEMORY_BYTES", "check_sample_output", "write_sample_batches")
