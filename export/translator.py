"""ONNX export of translation generators (pix2pix U-Net, CycleGAN ResNet) and an ONNX Runtime translator.

The graph takes ``images`` (float32 (N, C_in, H, W) in [-1, 1]) and returns
``translated`` (float32 (N, C_out, H, W) in [-1, 1]). The batch axis is
dynamic, and so are H and W: both networks are fully convolutional, so any
multiple of their down-sampling factor (``fastgan.size_multiple`` in the
metadata: 2^depth for the U-Net, 4 for the ResNet) works. Instance norm
exports as ``InstanceNormalization``, the U-Net's dropout is off (evaluation
mode), and the fused kernels become their reference maths, so the file holds
standard ONNX ops only. Before anything is written, ONNX Runtime is checked
against PyTorch at three shapes, two of them other than the training size.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from fastgan.errors import CheckpointError, ConfigError, DataError

from .errors import ExportError
from .fp16 import convert_to_fp16
from .onnx_export import _STANDARD_DOMAINS, _quiet_exporter, _reference_copy, _summary, _Unconditional, _write_onnx
from .opset import choose_opset
from .report import ExportReport
from .verify import TOLERANCE

PREFIX = "fastgan."
KIND = "translator"


def verify_shapes(G: nn.Module, resolution: int) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the parity check: the training size, a wider and a smaller one.

    Args:
        G: the generator (``size_multiple``).
        resolution: its training resolution.
    """
    m = int(G.size_multiple)
    small = max(m, (resolution // 2) // m * m)
    return [(1, resolution, resolution), (3, resolution, resolution + m), (2, small, 2 * small)]


def export_translator(G: nn.Module, path: Union[str, os.PathLike], *, resolution: Optional[int] = None,
                      direction: str = "AtoB", task: str = "", fp16: bool = False, opset: Optional[int] = None,
                      verify: bool = True, tolerance: Optional[float] = None,
                      metadata: Optional[dict[str, Any]] = None) -> ExportReport:
    """Export a translation generator to one ONNX file with dynamic batch, height and width, verified.

    Args:
        G: a :class:`~fastgan.models.UNetGenerator` or :class:`~fastgan.models.ResnetGenerator`
            (any module with ``in_channels``, ``out_channels``, ``size_multiple``, ``arch_config()``).
        path: destination ``.onnx`` file.
        resolution: training image side (default: ``G.resolution``, else ``G.img_size``, else 256).
        direction: ``AtoB`` or ``BtoA`` (stored in the metadata).
        task: ``pix2pix`` or ``cyclegan`` (stored in the metadata).
        fp16: float16 weights and compute, float32 inputs and outputs (tolerance 1e-2).
        opset: ONNX opset (``None``: one the installed ONNX Runtime loads).
        verify: compare ONNX Runtime with PyTorch and refuse to write on a difference above ``tolerance``.
        tolerance: largest accepted max |difference| (default 1e-4, fp16 1e-2).
        metadata: extra key/value strings for ``metadata_props``.

    Returns:
        An :class:`~fastgan.export.ExportReport` whose ``max_abs_diff`` is keyed ``"NxHxW"``.
    """
    t0 = time.perf_counter()
    G = getattr(G, "_orig_mod", G)
    missing = [a for a in ("in_channels", "out_channels", "size_multiple") if not hasattr(G, a)]
    if missing:
        raise ConfigError(f"{type(G).__name__} is not a fastgan translation generator (no {', '.join(missing)})")
    resolution = int(resolution or getattr(G, "resolution", 0) or getattr(G, "img_size", 0) or 256)
    if resolution % int(G.size_multiple):
        raise ConfigError(f"resolution {resolution} is not a multiple of {G.size_multiple}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"export path '{path}' is a folder; give a file name such as G.onnx")
    opset = choose_opset(opset)
    precision = "fp16" if fp16 else "fp32"
    tol = TOLERANCE[precision] if tolerance is None else float(tolerance)
    from fastgan.kernels import use_impl
    from fastgan.version import __version__

    props = {"kind": KIND, "task": task, "direction": direction, "generator_class": type(G).__name__,
             "arch_config": json.dumps(G.arch_config() if hasattr(G, "arch_config") else {}),
             "in_channels": int(G.in_channels), "out_channels": int(G.out_channels), "resolution": resolution,
             "size_multiple": int(G.size_multiple), "value_range": json.dumps([-1.0, 1.0]), "precision": precision,
             "version": __version__, **{str(k): v for k, v in (metadata or {}).items()}}
    with use_impl("ref"):
        reference = _reference_copy(G)
        proto = _trace(reference, int(G.in_channels), int(G.size_multiple), opset)
        if fp16:
            convert_to_fp16(proto)
        _finish(proto, props)
        data = proto.SerializeToString()
        diffs = _parity(reference, data, int(G.in_channels), verify_shapes(G, resolution)) if verify else {}
    if verify and max(diffs.values()) > tol:
        figures = ", ".join(f"{k}: {d:.2e}" for k, d in diffs.items())
        raise ExportError(f"ONNX Runtime differs from PyTorch by more than {tol:.0e} ({figures}); "
                          f"nothing written to '{path}'")
    _write_onnx(path, data)
    return ExportReport(path=str(path), opset=opset, precision=precision, generator_class=type(G).__name__,
                        file_size=path.stat().st_size, max_abs_diff=diffs, tolerance=tol, verified=bool(verify),
                        inputs=["images"], output="translated", export_seconds=time.perf_counter() - t0)


def _trace(model: nn.Module, channels: int, multiple: int, opset: int):
    """The dynamo exporter's ModelProto with batch, height and width dynamic (multiples of ``multiple``)."""
    from torch.export import Dim

    # sizes of 1 are specialised away by torch.export: batch 2, height 2 and width 3 multiples
    example = (torch.zeros(2, channels, 2 * multiple, 3 * multiple),)
    # _Unconditional fixes the signature to one input, G(x).float(), named "images" in the graph
    dynamic = {"z": {0: Dim("batch"), 2: multiple * Dim("h"), 3: multiple * Dim("w")}}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")   # exporter deprecation chatter; failures still raise
        try:
            program = torch.onnx.export(
                _Unconditional(model).eval(), example, dynamo=True, opset_version=opset, input_names=["images"],
                output_names=["translated"], dynamic_shapes=dynamic, external_data=False, optimize=True,
                verbose=False, artifacts_dir=tmp)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {_summary(e)}") from e
    return program.model_proto


def _finish(proto, props: dict[str, Any]) -> None:
    """Insist on standard ops, add the metadata, run the ONNX checker."""
    import onnx

    odd = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in _STANDARD_DOMAINS})
    if odd or len(proto.functions):
        raise ExportError(f"the exported graph holds non-standard ops ({', '.join(odd) or 'local functions'})")
    del proto.metadata_props[:]
    for k, v in sorted(props.items()):
        proto.metadata_props.add(key=PREFIX + k, value=str(v))
    proto.doc_string = (f"fastgan {props['generator_class']} translator {props['direction']} ({props['precision']}); "
                        "input images (N, C, H, W) in [-1, 1], output translated; see metadata_props fastgan.*")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        text = str(e).strip().splitlines()
        raise ExportError(f"the ONNX checker rejected the exported graph: {text[0] if text else e}") from None


def _parity(reference: nn.Module, data: bytes, channels: int, shapes) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per (batch, height, width), on the CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's exception types are not public
        raise ExportError(f"ONNX Runtime cannot load the exported model: {_summary(e)}") from None
    g = torch.Generator().manual_seed(0)
    diffs = {}
    for n, h, w in shapes:
        x = torch.rand(n, channels, h, w, generator=g) * 2 - 1
        with torch.no_grad():
            want = reference(x).float().numpy()
        try:
            got = sess.run(None, {"images": x.numpy()})[0]
        except Exception as e:
            raise ExportError(f"ONNX Runtime failed at shape {n}x{h}x{w}: {_summary(e)}") from None
        if got.shape != want.shape or not np.isfinite(got).all():
            raise ExportError(f"ONNX output at {n}x{h}x{w} has shape {got.shape} (expected {want.shape}) or "
                              "non-finite values")
        diffs[f"{n}x{h}x{w}"] = float(np.abs(got.astype(np.float64) - want).max())
    return diffs


def export_translation_run(run: Union[str, os.PathLike], out: Union[str, os.PathLike], *, direction: str = "AtoB",
                           fp16: bool = False, opset: Optional[int] = None, verify: bool = True) -> ExportReport:
    """Export one generator of a pix2pix / CycleGAN run (what ``fastgan export`` calls for such runs).

    Args:
        run: the run folder or one of its checkpoints.
        out: destination ``.onnx`` file.
        direction: ``AtoB`` or ``BtoA`` (CycleGAN).
        fp16: float16 weights and compute.
        opset: ONNX opset (``None``: the default for the installed ONNX Runtime).
        verify: the ONNX Runtime vs PyTorch parity check.
    """
    from fastgan.translator import load_translator

    G = load_translator(run, direction)
    meta = G.fastgan_metadata
    return export_translator(G, out, resolution=G.resolution, direction=direction, task=G.task or "", fp16=fp16,
                             opset=opset, verify=verify,
                             metadata={"source_run": Path(run).name, "source_step": meta.get("step", ""),
                                       "config_hash": meta.get("config_hash", "")})


def format_translator_report(report: ExportReport) -> str:
    """A few lines for the terminal about a translator export.

    Args:
        report: what :func:`export_translator` returned.
    """
    size = report.file_size / 2**20
    lines = [f"exported {report.generator_class} -> {report.path} ({size:.2f} MiB, opset {report.opset}, "
             f"{report.precision}, {report.export_seconds:.1f} s)",
             "input: images (N, C, H, W)  output: translated  (batch, height and width dynamic)"]
    if report.verified:
        figures = ", ".join(f"{k}: {d:.2e}" for k, d in report.max_abs_diff.items())
        lines.append(f"parity ONNX Runtime vs PyTorch, max |diff| at NxHxW {figures} (tolerance "
                     f"{report.tolerance:.0e}) OK")
    return "\n".join(lines)


class OnnxTranslator:
    """An exported translation generator run with ONNX Runtime.

    Args:
        path: a file written by :func:`export_translator` / ``fastgan export``.
        providers: ``"auto"``, ``"cpu"``, ``"cuda"`` or ONNX Runtime provider names.
        threads: intra-op threads (``None``: ONNX Runtime's default).
    """

    def __init__(self, path: Union[str, os.PathLike], providers: Any = "auto", threads: Optional[int] = None):
        import onnxruntime as ort

        from .runtime import resolve_providers, session_options

        self.path = str(path)
        if not Path(path).is_file():
            raise CheckpointError(f"ONNX file '{self.path}' does not exist")
        try:
            self._session = ort.InferenceSession(self.path, session_options(threads=threads),
                                                 providers=resolve_providers(providers))
        except Exception as e:  # ORT's exception types are not public
            raise CheckpointError(f"'{self.path}' is not a loadable ONNX model ({_summary(e)[:200]})") from None
        props = self._session.get_modelmeta().custom_metadata_map
        if props.get(PREFIX + "kind") != KIND:
            raise CheckpointError(f"'{self.path}' is not a fastgan translator (for noise-to-image generators use "
                                  "fastgan sample --onnx)")
        self.metadata = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        self.in_channels = int(self.metadata["in_channels"])
        self.out_channels = int(self.metadata["out_channels"])
        self.resolution = int(self.metadata["resolution"])
        self.size_multiple = int(self.metadata["size_multiple"])
        self.direction = self.metadata.get("direction", "AtoB")

    def run(self, images: Any) -> np.ndarray:
        """Translate a batch.

        Args:
            images: float array (N, in_channels, H, W) in [-1, 1], H and W multiples of ``size_multiple``.

        Returns:
            float32 (N, out_channels, H, W) in [-1, 1].
        """
        x = np.asarray(images.detach().cpu().numpy() if hasattr(images, "detach") else images, dtype=np.float32)
        m = self.size_multiple
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % m or x.shape[3] % m or not len(x):
            raise DataError(f"images must be (N, {self.in_channels}, H, W) with N >= 1 and H, W multiples of {m}; "
                            f"got {tuple(x.shape)}")
        return self._session.run(None, {"images": np.ascontiguousarray(x)})[0]
