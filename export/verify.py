"""Parity check: ONNX Runtime against PyTorch on the same inputs.

The check runs on the CPU execution provider (always present, deterministic)
against the fp32 reference-op copy of the generator, so an fp16 export is
measured against the model it approximates, not against itself.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import ExportError

VERIFY_BATCHES = (1, 7, 64)
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def example_inputs(z_dim: int, num_classes: int, batch: int, seed: int = 0,
                   vector_dim: int = 0) -> tuple[torch.Tensor, ...]:
    """Standard-normal latents (and uniform labels, or standard-normal vectors, for a conditional generator).

    Args:
        z_dim: latent size.
        num_classes: number of classes; 0 means no labels input.
        batch: batch size.
        seed: seed of the draws.
        vector_dim: size of the conditioning vectors; 0 means no vectors input.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, z_dim, generator=g)
    if vector_dim > 0:
        return z, torch.randn(batch, vector_dim, generator=g)
    if num_classes <= 0:
        return (z,)
    return z, torch.randint(0, num_classes, (batch,), generator=g, dtype=torch.long)


def parity(reference: torch.nn.Module, onnx_bytes: bytes, *, z_dim: int, num_classes: int,
           out_shape: Sequence[int], input_names: Sequence[str],
           batches: Sequence[int] = VERIFY_BATCHES, vector_dim: int = 0) -> dict[int, float]:
    """Max |ONNX Runtime - PyTorch| per batch size.

    Args:
        reference: the fp32 generator on the CPU in eval mode (reference ops).
        onnx_bytes: the serialised ONNX model.
        z_dim: latent size.
        num_classes: number of classes (0 = unconditional).
        out_shape: expected shape of one sample.
        input_names: graph input names, in the order of ``reference``'s arguments.
        batches: batch sizes to compare at.
        vector_dim: size of the conditioning vectors (0 = none).

    Raises:
        ExportError: ONNX Runtime cannot load or run the model, an output has the
            wrong shape, or an output is not finite.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises pybind types that are not exported publicly
        raise ExportError(f"ONNX Runtime cannot load the exported model: {_first_line(e)}") from None
    diffs: dict[int, float] = {}
    for i, batch in enumerate(batches):
        inputs = example_inputs(z_dim, num_classes, batch, seed=1000 + i, vector_dim=vector_dim)
        with torch.no_grad():
            expected = reference(*inputs).float().numpy()
        try:
            got = sess.run(None, {n: t.numpy() for n, t in zip(input_names, inputs)})[0]
        except Exception as e:
            raise ExportError(f"ONNX Runtime failed at batch {batch}: {_first_line(e)}") from None
        want_shape = (batch, *out_shape)
        if tuple(got.shape) != want_shape:
            raise ExportError(f"ONNX output at batch {batch} has shape {tuple(got.shape)}, expected {want_shape}")
        if not (np.isfinite(got).all() and np.isfinite(expected).all()):
            raise ExportError(f"non-finite outputs at batch {batch} (ONNX Runtime or PyTorch produced NaN/inf)")
        diffs[batch] = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
    return diffs


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:300]
