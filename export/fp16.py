"""Turn an fp32 ONNX generator graph into an fp16 one with fp32 inputs and outputs.

Why at the ONNX level and not ``model.half()`` before tracing: fastgan's
reference batch norm computes in fp32 even for fp16 inputs (as the fused
kernels do), so a traced fp16 model keeps unfolded fp32 batch-norm islands
with a Cast on each side of every layer. The fp32 export has batch norm folded
into the convolutions already; rounding its weights to fp16 and adding one
Cast at each end gives a graph that computes in fp16 throughout and a file
about half the size.
"""

from __future__ import annotations

import numpy as np

from .errors import ExportError

_FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(proto) -> None:
    """Convert an ``onnx.ModelProto`` in place: float tensors become float16.

    Float initializers, ``Constant``/``ConstantOfShape`` values and ``Cast``
    targets become float16; each float32 graph input gets a Cast to float16
    and each float32 output is produced by a Cast back to float32, so the
    interface is unchanged.

    Args:
        proto: the model (fp32 graph, single file, no subgraphs).

    Raises:
        ExportError: a weight does not fit in float16, or the graph has subgraphs.
    """
    from onnx import TensorProto, helper, numpy_helper

    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    graph = proto.graph

    def half(t):  # a TensorProto in float32 -> the same tensor in float16
        arr = numpy_helper.to_array(t)
        if arr.size and float(np.abs(arr).max()) > _FP16_MAX:
            raise ExportError(f"tensor {t.name!r} holds values beyond the float16 range "
                              f"(max |x| = {float(np.abs(arr).max()):.3g}); export in fp32")
        return numpy_helper.from_array(arr.astype(np.float16), t.name)

    for i, init in enumerate(graph.initializer):
        if init.data_type == F32:
            graph.initializer[i].CopyFrom(half(init))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type in (attr.GRAPH, attr.GRAPHS):
                raise ExportError(f"fp16 conversion does not handle subgraphs (node {node.op_type})")
            if attr.type == attr.TENSOR and attr.t.data_type == F32:
                attr.t.CopyFrom(half(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == F32:
                attr.i = F16

    new_nodes = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type == F32:
            inner = f"{inp.name}_fp16"
            for node in graph.node:
                for j, name in enumerate(node.input):
                    if name == inp.name:
                        node.input[j] = inner
            new_nodes.append(helper.make_node("Cast", [inp.name], [inner], to=F16, name=f"{inp.name}_to_fp16"))
    tail = []
    for out in graph.output:
        if out.type.tensor_type.elem_type == F32:
            inner = f"{out.name}_fp16"
            for node in graph.node:  # the producer and any consumer inside the graph
                for j, name in enumerate(node.output):
                    if name == out.name:
                        node.output[j] = inner
                for j, name in enumerate(node.input):
                    if name == out.name:
                        node.input[j] = inner
            tail.append(helper.make_node("Cast", [inner], [out.name], to=F32, name=f"{out.name}_to_fp32"))
    nodes = new_nodes + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale fp32 intermediate types; the checker re-infers them
