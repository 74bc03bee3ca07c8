"""Deploying a trained translator: load its generator, translate image files (PyTorch or ONNX Runtime).

    G = fastgan.load_translator("runs/pix2pix")                  # AtoB generator, eval mode
    y = G(x)                                                     # (N, C, H, W) in [-1, 1]
    fastgan.translate("runs/pix2pix", "photos/", "out/")         # one PNG per input image
    fastgan.translate("G.onnx", "photo.jpg", "out/")             # the same through ONNX Runtime

What ``fastgan translate`` calls. Inputs are read like training images
(shorter side resized to the size, centre crop) at the run's training
resolution unless another is asked for (a multiple of the generator's
down-sampling: the networks are fully convolutional), converted to the
generator's input channels (grey <-> colour), and written as PNGs under the
input's own name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, ConfigError, DataError

PathLike = Union[str, os.PathLike]
DIRECTIONS = ("AtoB", "BtoA")


def translation_info(ckpt_meta: dict[str, str], where: str) -> dict[str, Any]:
    """The translation metadata a checkpoint carries (task, resolution, generators).

    Args:
        ckpt_meta: the checkpoint's safetensors metadata.
        where: the checkpoint, for the error message.
    """
    if "translation" not in ckpt_meta:
        raise CheckpointError(f"'{where}' is not a translation run (pix2pix / CycleGAN); for noise-to-image "
                              "runs use fastgan sample")
    try:
        return json.loads(ckpt_meta["translation"])
    except json.JSONDecodeError:
        raise CheckpointError(f"'{where}' has unreadable translation metadata") from None


def _checkpoint(run: PathLike) -> Path:
    from .checkpoint import MODELS_FILE, latest_checkpoint

    p = Path(run)
    if not p.exists():
        raise CheckpointError(f"no run or checkpoint at '{p}'")
    if (p / MODELS_FILE).exists() or p.is_file():
        return p
    ckpt = latest_checkpoint(p)
    if ckpt is None:
        raise CheckpointError(f"'{p}' holds no checkpoint (train first: fastgan train --task pix2pix --out {p})")
    return ckpt


def is_translation_run(run: PathLike) -> bool:
    """True when ``run`` (a run or checkpoint folder) holds a translation run.

    Args:
        run: a run folder or one of its checkpoints.
    """
    from .checkpoint import read_run_config
    from .tasks.translation import is_translation_config

    p = Path(run)
    for folder in (p, p.parent.parent):
        saved = read_run_config(folder) if folder.is_dir() else None
        if saved is not None:
            return is_translation_config(saved)
    return False


def load_translator(run: PathLike, direction: str = "AtoB", device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load a trained translation generator.

    Args:
        run: a pix2pix / CycleGAN run folder (its latest checkpoint) or one checkpoint folder.
        direction: ``AtoB``, or ``BtoA`` (CycleGAN's second generator).
        device: where to put the network.

    Returns:
        The generator in eval mode, with ``direction``, ``task``, ``resolution``,
        ``in_channels``, ``out_channels``, ``size_multiple`` and ``fastgan_metadata``.
    """
    from .checkpoint import load_module_weights, read_models
    from .models import ResnetGenerator, UNetGenerator

    ckpt = _checkpoint(run)
    nets, meta = read_models(ckpt)
    info = translation_info(meta, str(ckpt))
    gens = info.get("generators", {})
    if direction not in gens:
        raise ConfigError(f"this {info.get('task')} run has no {direction!r} generator; choose "
                          f"{' or '.join(sorted(gens))}")
    spec = gens[direction]
    classes = {"UNetGenerator": UNetGenerator, "ResnetGenerator": ResnetGenerator}
    if spec.get("class") not in classes:
        raise CheckpointError(f"'{ckpt}' names an unknown generator class {spec.get('class')!r}")
    try:
        G = classes[spec["class"]](**spec["arch"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild {spec['class']} from {spec['arch']!r}: {e}") from None
    load_module_weights(G, nets.get(spec["network"], {}), f"{direction} generator")
    G.direction, G.task, G.resolution = direction, info.get("task"), int(info.get("resolution", 0))
    G.fastgan_metadata = dict(meta)
    G.fastgan_checkpoint = str(ckpt)
    return G.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------- image files
def image_files(inputs: Union[PathLike, Sequence[PathLike]]) -> tuple[list[Path], list[Path]]:
    """The image files to translate and the name each output gets (relative to its input folder).

    Args:
        inputs: an image file, a folder (searched recursively), or a list of files.
    """
    from .image_folders import IMAGE_EXTENSIONS

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    names: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            files += found
            names += [f.relative_to(p).with_suffix(".png") for f in found]
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(f"'{p}' is not a .png/.jpg/.jpeg image")
            files.append(p)
            names.append(Path(p.stem + ".png"))
        else:
            raise DataError(f"input '{p}' does not exist")
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, items))} (looked for .png, .jpg, .jpeg)")
    return files, names


def read_images(files: Sequence[Path], resolution: int, channels: int) -> torch.Tensor:
    """Read image files as the generator takes them: float32 (N, channels, R, R) in [-1, 1].

    Args:
        files: image files.
        resolution: side R (shorter side resized, centre crop).
        channels: 1 (grey: ITU-R 601 luma of colour images) or 3 (grey images repeated).
    """
    from .decode import read_image
    from .translation_data import _grey

    out = []
    for f in files:
        arr, err = read_image(f, resolution)
        if arr is None:
            raise DataError(f"cannot read image '{f}' ({err})")
        if channels == 1 and arr.shape[2] == 3:
            arr = _grey(arr)
        elif channels == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        out.append(arr)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def translate(source: PathLike, inputs: Union[PathLike, Sequence[PathLike]], out: PathLike, *,
              direction: Optional[str] = None, resolution: Optional[int] = None,
              device: Union[str, torch.device] = "cpu",
              batch_size: int = 16) -> list[Path]:
    """Translate image files with a run's generator or an exported ONNX file; write one PNG per input.

    Args:
        source: a translation run folder (or checkpoint folder), or an
            :class:`fastgan.export.OnnxTranslator` opened on a file written by ``fastgan export``
            (so that the core never imports the export package).
        inputs: an image file, a folder of images (searched recursively), or a list of files.
        out: the output folder (created); outputs keep the inputs' names (``.png``).
        direction: ``AtoB`` or ``BtoA`` (CycleGAN runs); ``None``: ``AtoB`` for a run, the
            file's own for ONNX (an exported file holds one generator).
        resolution: image side to translate at (default: the training resolution); a multiple
            of the generator's down-sampling.
        device: device of the PyTorch generator.
        batch_size: images per forward pass.

    Returns:
        The files written.
    """
    from .images import _save_png, to_uint8

    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out '{out}' exists and is not a folder")
    if hasattr(source, "run") and hasattr(source, "size_multiple"):   # an OnnxTranslator
        if direction not in (None, source.direction):
            raise ConfigError(f"'{source.path}' holds the {source.direction} generator, not {direction}")
        run = source.run
        res, channels, multiple = resolution or source.resolution, source.in_channels, source.size_multiple
    elif str(source).lower().endswith(".onnx"):
        raise ConfigError(f"open an ONNX file first: fastgan.translate(fastgan.export.OnnxTranslator({str(source)!r}), "
                          "...)")
    else:
        G = load_translator(source, direction or "AtoB", device)
        res, channels, multiple = resolution or G.resolution, G.in_channels, G.size_multiple

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return G(torch.from_numpy(x).to(device)).float().cpu().numpy()
    if res <= 0 or res % multiple:
        raise ConfigError(f"resolution must be a positive multiple of {multiple} for this generator, got {res}")
    files, names = image_files(inputs)
    written = []
    for i in range(0, len(files), batch_size):
        x = read_images(files[i:i + batch_size], res, channels).numpy()
        y = to_uint8(run(x)).transpose(0, 2, 3, 1)                       # (n, H, W, C)
        for img, name in zip(y, names[i:i + batch_size]):
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_png(img, path)
            written.append(path)
    return written
