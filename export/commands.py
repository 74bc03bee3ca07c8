"""What ``fastgan export`` and ``fastgan sample --onnx`` call."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from fastgan.errors import CheckpointError

from .report import ExportReport

PathLike = Union[str, os.PathLike]


def find_run_config(run_dir: PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run, looked up from the run folder or a checkpoint inside it.

    Args:
        run_dir: a run folder, one of its checkpoint folders, or a checkpoint file.

    Raises:
        CheckpointError: no ``config.json`` was found, or it is not valid JSON.
    """
    from fastgan.checkpoint import read_run_config

    start = Path(run_dir)
    for folder in [start, *start.parents][:4]:  # RUN/checkpoints/step_N/models.safetensors at most
        if folder.is_dir() and (folder / "config.json").is_file():
            return read_run_config(folder)
    raise CheckpointError(f"no config.json found for run '{run_dir}' (is it a fastgan run folder?)")


def export_run(run_dir: PathLike, out_path: PathLike, fp16: bool = False, *,
               opset: Optional[int] = None, verify: bool = True) -> ExportReport:
    """Export the generator of a training run (EMA weights when kept) to ONNX.

    The training config stored with the checkpoint (else the run's
    ``config.json``) goes into the file's metadata with its ``config_hash()``.

    Args:
        run_dir: the run folder (``fastgan train --out RUN``) or one of its
            checkpoint folders.
        out_path: destination ``.onnx`` file.
        fp16: store weights and compute in float16.
        opset: ONNX opset (``None``: the default for the installed ONNX Runtime).
        verify: run the ONNX Runtime vs PyTorch parity check.

    Returns:
        The :class:`ExportReport`; print it with :func:`format_report`.
    """
    from fastgan.checkpoint import load_generator
    from fastgan.config import TrainConfig

    from .onnx_export import export_onnx

    G = load_generator(run_dir)
    config = TrainConfig.from_dict(_checkpoint_config(G) or find_run_config(run_dir))
    source = {"source_run": Path(run_dir).name}
    step = (getattr(G, "fastgan_metadata", None) or {}).get("step")
    if step is not None:
        source["source_step"] = step  # the training step of the exported weights (dataset manifests show it)
    return export_onnx(G, out_path, fp16=fp16, opset=opset, verify=verify, config=config, metadata=source)


def _checkpoint_config(G: Any) -> Optional[dict[str, Any]]:
    """The config stored with the checkpoint ``load_generator`` read, if it carries one."""
    meta = getattr(G, "fastgan_metadata", None) or {}
    if "config" not in meta:
        return None
    try:
        return json.loads(meta["config"])
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError("the checkpoint's stored config is not valid JSON") from None


def _point_modes(train_config: Optional[dict[str, Any]]):
    """Mixture centres of a built-in 2-D data set (drawn on point plots), else ``None``."""
    from fastgan.config import POINT_DATASETS

    if not train_config or train_config.get("data") not in POINT_DATASETS:
        return None
    from fastgan.data import load_data

    return load_data(train_config["data"]).modes


def sample_onnx(onnx_path: PathLike, n: int, out: PathLike, seed: int = 0, *, labels: Any = None,
                providers: Union[str, list] = "auto", nrow: Optional[int] = None, vectors: Any = None) -> list[Path]:
    """Sample an exported generator and write the result like ``fastgan sample`` does.

    The latents for a given seed are those ``fastgan sample --run`` draws on
    the CPU, so both commands write the same samples (to the export's parity).

    ``.png``: one grid (a scatter plot for points); ``.npy``: the raw float
    array ((N, C, H, W) in [-1, 1] or (N, 2)); ``.npz``: ``samples`` (and
    ``labels`` for a conditional generator); a folder (path ending in ``/``):
    one PNG per image.

    Args:
        onnx_path: file written by ``export_onnx`` / ``fastgan export``.
        n: number of samples.
        out: destination file or folder.
        seed: seed of the latent draws (``numpy.random.default_rng``).
        labels: for a conditional generator: ``None`` (classes in turn), an
            int, or ``(n,)`` ints.
        providers: ONNX Runtime providers (``"auto"``, ``"cpu"``, ``"cuda"`` or a list).
        nrow: images per row of a ``.png`` grid (default: a square grid).
        vectors: for a vector-conditioned generator: ``(n, V)`` vectors, or one ``(V,)`` for all.

    Returns:
        The paths written.
    """
    import numpy as np

    from fastgan.sample_output import write_sample_batches
    from fastgan.sampling import check_vectors

    from .runtime import OnnxGenerator

    gen = OnnxGenerator(onnx_path, providers=providers)
    lab = gen.sample_labels(int(n), labels) if isinstance(n, (int, np.integer)) else None
    vec = check_vectors(vectors, int(n), gen.vector_dim) if isinstance(n, (int, np.integer)) else None
    batches = gen.sample_batches(n, seed=seed, labels=lab, vectors=vec)   # checks n; draws as the writer consumes
    if gen.info.is_image and gen.value_range is not None and tuple(gen.value_range) != (-1.0, 1.0):
        lo, hi = gen.value_range  # the image writers expect [-1, 1]
        batches = ((b - lo) * (2.0 / (hi - lo)) - 1.0 for b in batches)
    modes = None if gen.info.is_image else _point_modes(gen.info.train_config)
    return write_sample_batches(batches, int(n), tuple(gen.out_shape), out, labels=lab, modes=modes, nrow=nrow,
                                vectors=vec)
