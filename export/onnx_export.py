"""Export a fastgan generator to one self-contained ONNX file.

The graph has a dynamic batch axis, inputs ``z`` (float32, (B, z_dim)) and,
for conditional generators, ``labels`` (int64, (B,)) or, for vector-conditioned
ones, ``vectors`` (float32, (B, vector_dim)), and one float32 output:
``images`` (B, C, H, W) in the generator's value range, or ``points`` (B, 2).

With ``fp16=True`` the fp32 graph (batch norm already folded) has its weights
rounded to float16 and computes in float16 (see :mod:`fastgan.export.fp16`;
ONNX Runtime's CPU provider runs fp32 kernels behind casts where it has no fp16
one); the inputs and output stay float32, with one Cast at each end, so callers
feed and read the same arrays as for an fp32 file.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from fastgan.errors import ConfigError, storage_error
from fastgan.files import atomic_write

from .errors import ExportError
from .fp16 import convert_to_fp16
from .metadata import GeneratorInfo, build_metadata
from .opset import choose_opset
from .report import ExportReport
from .verify import TOLERANCE, VERIFY_BATCHES, example_inputs, parity

_STANDARD_DOMAINS = ("", "ai.onnx")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Unconditional(nn.Module):
    """Fixes the traced signature to ``(z)``."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z).float()


class _Conditional(nn.Module):
    """Fixes the traced signature to ``(z, labels)`` (or ``(z, vectors)``)."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.G(z, labels).float()


def generator_info(G: nn.Module, *, fp16: bool = False, config: Any = None,
                   metadata: Optional[Mapping[str, Any]] = None) -> GeneratorInfo:
    """Describe a generator for the file's metadata, checking it has the fastgan interface.

    Args:
        G: a generator with ``z_dim``, ``out_shape``, ``num_classes``,
            ``value_range`` and ``arch_config()`` (every fastgan generator).
        fp16: whether the export is in float16.
        config: the run's ``TrainConfig`` (or its dict), or ``None``.
        metadata: extra string metadata to store.
    """
    G = _unwrap(G)
    missing = [a for a in ("z_dim", "out_shape") if not hasattr(G, a)]
    if missing:
        raise ConfigError(f"{type(G).__name__} is not a fastgan generator: it has no "
                          f"{' or '.join(missing)} attribute")
    z_dim, out_shape = int(G.z_dim), tuple(int(s) for s in G.out_shape)
    num_classes = int(getattr(G, "num_classes", 0) or 0)
    value_range = getattr(G, "value_range", None)
    if z_dim <= 0 or len(out_shape) not in (1, 3) or min(out_shape) <= 0:
        raise ConfigError(f"{type(G).__name__} has unsupported z_dim={z_dim} or out_shape={out_shape} "
                          "(expected z_dim > 0 and out_shape (C, H, W) or (D,))")
    arch = G.arch_config() if callable(getattr(G, "arch_config", None)) else {}
    class_names = _class_names(G, num_classes)
    vector_dim = int(getattr(G, "vector_dim", 0) or 0)
    inputs = ["z", "labels"] if num_classes > 0 else (["z", "vectors"] if vector_dim > 0 else ["z"])
    cfg_hash, cfg_dict = "", None
    if config is not None:
        from fastgan.config import TrainConfig

        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
        cfg_hash = cfg.config_hash()
        cfg_dict = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress", "device")}
    from fastgan.version import __version__

    return GeneratorInfo(
        generator_class=type(G).__name__, arch_config=dict(arch), z_dim=z_dim, out_shape=out_shape,
        value_range=None if value_range is None else (float(value_range[0]), float(value_range[1])),
        num_classes=num_classes, precision="fp16" if fp16 else "fp32",
        input_names=inputs,
        output_name="images" if len(out_shape) == 3 else "points",
        version=__version__, config_hash=cfg_hash, train_config=cfg_dict,
        extra={str(k): str(v) for k, v in (metadata or {}).items()}, class_names=class_names,
        vector_dim=vector_dim,
    )


def _class_names(G: nn.Module, num_classes: int) -> list[str]:
    """The generator's ``class_names`` (checked: one distinct name per class), or zero-padded indices."""
    from fastgan.sampling import default_class_names

    names = getattr(G, "class_names", None)
    if not num_classes:
        return []
    if not names:
        return default_class_names(num_classes)
    names = [str(n) for n in names]
    if len(names) != num_classes or len(set(names)) != num_classes:
        raise ConfigError(f"{type(G).__name__}.class_names must hold {num_classes} distinct names, got {len(names)}")
    return names


def export_onnx(G: nn.Module, path: Union[str, os.PathLike], *, fp16: bool = False,
                opset: Optional[int] = None, metadata: Optional[Mapping[str, Any]] = None,
                verify: bool = True, config: Any = None, tolerance: Optional[float] = None,
                verify_batches: Sequence[int] = VERIFY_BATCHES) -> ExportReport:
    """Export a generator to a single ONNX file, verified against PyTorch.

    The model is deep-copied, moved to the CPU, put in eval mode and traced with
    ``torch.onnx.export(dynamo=True)`` inside ``fastgan.kernels.use_impl("ref")``,
    so fused Triton ops become their plain-PyTorch maths and the graph holds
    standard ONNX ops only (batch norm folded into the convolutions). The
    caller's model is not modified. Nothing is written unless every check passes.

    Args:
        G: a fastgan generator (``DCGANGenerator``, ``MLPGenerator``, or any
            module with the same attributes); a ``torch.compile`` wrapper is unwrapped.
        path: destination ``.onnx`` file (parent folders are created).
        fp16: store weights and compute in float16 (inputs/output stay float32).
        opset: ONNX opset; ``None`` picks one the installed ONNX Runtime loads
            (see :mod:`fastgan.export.opset`).
        metadata: extra key/value strings for the file's ``metadata_props``.
        verify: run ONNX Runtime and PyTorch on the same inputs and raise
            :class:`ExportError` if they differ by more than ``tolerance``.
        config: the run's ``TrainConfig`` (or dict); its hash and fields go into
            the metadata.
        tolerance: max abs difference accepted (default 1e-4 fp32, 1e-2 fp16).
        verify_batches: batch sizes the parity check runs at.

    Returns:
        An :class:`ExportReport` (path, opset, max_abs_diff per batch, file size, ...).

    Raises:
        ConfigError: bad arguments or a model without the generator interface.
        ExportError: the exporter, the ONNX checker or the parity check failed.
        StorageError: the file cannot be written (a path through a file, no space, ...).
    """
    t0 = time.perf_counter()
    if not isinstance(G, nn.Module):
        raise ConfigError(f"export_onnx needs a torch.nn.Module generator, got {type(G).__name__}")
    opset = choose_opset(opset)
    info = generator_info(G, fp16=bool(fp16), config=config, metadata=metadata)
    precision = info.precision
    tol = TOLERANCE[precision] if tolerance is None else float(tolerance)
    batches = [int(b) for b in verify_batches]
    if verify and (not batches or min(batches) < 1):
        raise ConfigError(f"verify_batches must be positive batch sizes, got {list(verify_batches)}")
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ConfigError(f"export path '{path}' is a folder; give a file name such as G.onnx")
    try:  # a folder that cannot be made fails now, not after the export's seconds of work
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, "write the ONNX file", path) from None

    from fastgan.kernels import use_impl

    # The reference ops everywhere (tracing and the PyTorch side of the parity
    # check), whatever implementation the process or the modules ask for.
    with use_impl("ref"):
        reference = _reference_copy(G)
        proto = _trace(reference, info, opset)
        if fp16:
            convert_to_fp16(proto)
        _finish_proto(proto, info)
        data = proto.SerializeToString()
        diffs: dict[int, float] = {}
        if verify:
            diffs = parity(reference, data, z_dim=info.z_dim, num_classes=info.num_classes,
                           out_shape=info.out_shape, input_names=info.input_names, batches=batches,
                           vector_dim=info.vector_dim)
    if verify:
        worst = max(diffs.values())
        if worst > tol:
            figures = ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items())
            raise ExportError(f"ONNX Runtime differs from PyTorch by more than {tol:.0e} ({figures}); "
                              f"nothing written to '{path}'")
    _write_onnx(path, data)
    return ExportReport(
        path=str(path), opset=opset, precision=precision, generator_class=info.generator_class,
        file_size=path.stat().st_size, max_abs_diff=diffs, tolerance=tol, verified=bool(verify),
        inputs=list(info.input_names), output=info.output_name,
        export_seconds=time.perf_counter() - t0,
    )


def _unwrap(G: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``)."""
    return getattr(G, "_orig_mod", G)


def _reference_copy(G: nn.Module) -> nn.Module:
    """A deep copy in fp32, on the CPU, in eval mode, with every fused op set to "ref"."""
    m = copy.deepcopy(_unwrap(G)).float().cpu().eval()
    m.requires_grad_(False)
    for sub in m.modules():
        if isinstance(getattr(sub, "impl", None), str):
            sub.impl = "ref"
    return m


def _trace(model: nn.Module, info: GeneratorInfo, opset: int):
    """Run the dynamo exporter and return its ``onnx.ModelProto`` (call inside ``use_impl("ref")``)."""
    wrapper = (_Conditional if len(info.input_names) == 2 else _Unconditional)(model).eval()
    # batch 2: a batch of 1 would let torch.export specialise the batch axis away
    args = example_inputs(info.z_dim, info.num_classes, 2, vector_dim=info.vector_dim)
    batch = torch.export.Dim("batch")
    dynamic = [{0: batch} for _ in info.input_names]   # by position: the wrapper names its second input labels
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")  # exporter deprecation chatter; failures still raise
        try:
            program = torch.onnx.export(
                wrapper, args, dynamo=True, opset_version=opset, input_names=list(info.input_names),
                output_names=[info.output_name], dynamic_shapes=dynamic, external_data=False,
                optimize=True, verbose=False, artifacts_dir=tmp)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed for {info.generator_class}: {_summary(e)}") from e
    return program.model_proto


def _summary(e: BaseException) -> str:
    """One line naming an exporter failure and its root cause, without terminal colour codes."""
    parts = []
    while e is not None and len(parts) < 3:
        lines = _ANSI.sub("", str(e)).strip().splitlines()
        parts.append(f"{type(e).__name__}: {lines[0] if lines else ''}".strip())
        e = e.__cause__
    return " <- ".join(parts)[:500]


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's informational log lines (e.g. "torchvision is not installed")."""
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _finish_proto(proto, info: GeneratorInfo) -> None:
    """Add the metadata, insist on standard ops, and run the ONNX checker."""
    import onnx

    odd = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in _STANDARD_DOMAINS})
    if odd or len(proto.functions):
        what = ", ".join(odd) or f"{len(proto.functions)} local functions"
        raise ExportError(f"the exported graph holds non-standard ops ({what}); "
                          "every fastgan op must lower to standard ONNX")
    del proto.metadata_props[:]
    for k, v in sorted(build_metadata(info).items()):
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = (f"fastgan {info.generator_class} generator ({info.precision}); "
                        f"inputs {', '.join(info.input_names)}, output {info.output_name}; "
                        "see metadata_props fastgan.*")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        text = str(e).strip().splitlines()
        raise ExportError(f"the ONNX checker rejected the exported graph: {text[0] if text else e}") from None


def _write_onnx(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, an OS error becoming one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as e:
        raise storage_error(e, "write the ONNX file", path) from None
