"""Choosing the ONNX opset for an export.

The dynamo exporter writes its graphs with torchlib at opset 18 and converts
them up to the requested opset. Nothing a fastgan generator uses (ConvTranspose,
Gemm/MatMul, Gather, Relu, LeakyRelu, Tanh, Mul, Add) changed after opset 18,
so a newer opset buys no speed; an older one keeps the file loadable by older
ONNX Runtime builds. We therefore default to opset 20 (ONNX Runtime >= 1.17),
lowered when the installed runtime is older, and accept any opset between 18
and the newest the installed runtime loads (28 for onnxruntime 1.32).
"""

from __future__ import annotations

import functools

from fastgan.errors import ConfigError

DEFAULT_OPSET = 20
MIN_OPSET = 18


def _loads_opset(opset: int) -> bool:
    """True when the installed ONNX Runtime accepts a model declaring ``opset``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)  # what the torch exporter writes
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # ORT raises its own Fail/InvalidGraph types for unknown opsets
        return False
    return True


@functools.lru_cache(maxsize=1)
def max_runtime_opset() -> int:
    """The newest default-domain opset the installed ONNX Runtime loads.

    Found by loading one-node probe models (a few milliseconds), because
    onnxruntime has no public query for it.
    """
    import onnx

    lo, hi = 1, onnx.defs.onnx_opset_version()
    if _loads_opset(hi):
        return hi
    while hi - lo > 1:  # invariant: lo loads (opset 1 always does), hi does not
        mid = (lo + hi) // 2
        if _loads_opset(mid):
            lo = mid
        else:
            hi = mid
    return lo


def choose_opset(opset: int | None = None) -> int:
    """Validate a requested opset, or pick the default for the installed runtime.

    Args:
        opset: the opset the caller asked for, or ``None`` for
            ``min(DEFAULT_OPSET, max_runtime_opset())``.

    Returns:
        The opset to export with.
    """
    newest = max_runtime_opset()
    if opset is None:
        opset = min(DEFAULT_OPSET, newest)
        if opset < MIN_OPSET:
            raise ConfigError(f"the installed onnxruntime loads opsets up to {newest}; "
                              f"export needs at least {MIN_OPSET} (upgrade onnxruntime)")
        return opset
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ConfigError(f"opset must be an integer, got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset {opset} is not supported: choose {MIN_OPSET}..{newest} "
                          f"(the newest the installed onnxruntime loads)")
    return opset
