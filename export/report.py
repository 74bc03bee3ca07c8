"""The report an export returns, and its human-readable form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ExportReport:
    """What :func:`fastgan.export.export_onnx` did.

    Args:
        path: the ONNX file written.
        opset: default-domain opset of the graph.
        precision: ``"fp32"`` or ``"fp16"``.
        generator_class: class name of the exported generator.
        file_size: size of the file in bytes.
        max_abs_diff: batch size -> max |ONNX Runtime - PyTorch| over all
            outputs (empty when verification was skipped).
        tolerance: the largest difference accepted.
        verified: whether the parity check ran (and passed: a failing check raises).
        inputs: graph input names.
        output: graph output name.
        export_seconds: wall time of the whole export, verification included.
    """

    path: str
    opset: int
    precision: str
    generator_class: str
    file_size: int
    max_abs_diff: dict = field(default_factory=dict)
    tolerance: float = 0.0
    verified: bool = False
    inputs: list = field(default_factory=list)
    output: str = ""
    export_seconds: float = 0.0

    @property
    def worst_diff(self) -> float:
        """The largest difference over all verified batch sizes (0.0 when not verified)."""
        return max(self.max_abs_diff.values(), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dict (batch sizes become string keys)."""
        d = asdict(self)
        d["max_abs_diff"] = {str(k): float(v) for k, v in self.max_abs_diff.items()}
        return d


def format_report(report: ExportReport) -> str:
    """Render an export report as a few lines for the terminal.

    Args:
        report: the object returned by ``export_onnx`` or ``export_run``.
    """
    size = report.file_size
    size_s = f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
    lines = [
        f"exported {report.generator_class} -> {report.path} "
        f"({size_s}, opset {report.opset}, {report.precision}, {report.export_seconds:.1f} s)",
        f"inputs: {', '.join(report.inputs)}  output: {report.output}  (batch axis dynamic)",
    ]
    if report.verified:
        figures = ", ".join(f"batch {b}: {d:.2e}" for b, d in sorted(report.max_abs_diff.items()))
        lines.append(f"parity ONNX Runtime vs PyTorch, max |diff|: {figures} "
                     f"(tolerance {report.tolerance:.0e}) OK")
    else:
        lines.append("parity check skipped (verify=False)")
    return "\n".join(lines)
