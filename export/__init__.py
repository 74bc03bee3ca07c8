"""ONNX export of fastgan generators and an ONNX Runtime generator.

Public API::

    from fastgan.export import export_onnx, OnnxGenerator
    report = export_onnx(G, "G.onnx", fp16=False)   # verified against PyTorch at batch 1, 7, 64
    print(format_report(report))
    gen = OnnxGenerator("G.onnx")                    # CUDA provider when available, else CPU
    images = gen.sample(16, seed=0)                  # uint8 (16, H, W, C)
    x = gen.run(z, labels=None)                      # raw float32 (N, C, H, W) in [-1, 1] or (N, 2)

    export_run(run_dir, out_path, fp16=False)        # what `fastgan export` calls
    sample_onnx(onnx_path, n, out, seed=0)           # what `fastgan sample --onnx` calls

    export_translator(G, "G.onnx", resolution=256)   # pix2pix / CycleGAN generator: dynamic batch, H, W
    OnnxTranslator("G.onnx").run(images)             # (N, C, H, W) in [-1, 1] -> translated

Errors: :class:`ExportError` (export or parity check failed), and the
:mod:`fastgan.errors` classes for bad arguments, files and inputs.

Submodules are imported on first use, so ``import fastgan.export`` does not
load onnx, onnxruntime or the exporter.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "export_onnx": "onnx_export",
    "generator_info": "onnx_export",
    "OnnxGenerator": "runtime",
    "resolve_providers": "runtime",
    "session_options": "runtime",
    "ExportReport": "report",
    "format_report": "report",
    "ExportError": "errors",
    "GeneratorInfo": "metadata",
    "choose_opset": "opset",
    "max_runtime_opset": "opset",
    "DEFAULT_OPSET": "opset",
    "export_run": "commands",
    "sample_onnx": "commands",
    "export_translator": "translator",
    "export_translation_run": "translator",
    "format_translator_report": "translator",
    "OnnxTranslator": "translator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):  # PEP 562: import the submodule that holds `name` on first access
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastgan.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
