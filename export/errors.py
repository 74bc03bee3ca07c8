"""The error the exporter raises when it cannot produce a trustworthy ONNX file."""

from __future__ import annotations

from fastgan.errors import FastGANError


class ExportError(FastGANError, RuntimeError):
    """An ONNX export failed: the exporter refused the model, the ONNX checker
    rejected the graph, or ONNX Runtime disagreed with PyTorch beyond tolerance.

    Bad arguments (an unsupported opset, a model without the generator
    attributes) raise :class:`fastgan.errors.ConfigError`; an unreadable or
    foreign ONNX file raises :class:`fastgan.errors.CheckpointError`; bad
    latents or labels raise :class:`fastgan.errors.DataError`.
    """
