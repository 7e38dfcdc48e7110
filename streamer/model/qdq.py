"""QDQ graphs (explicit quantization): how to tell one, and the form ONNX Runtime's int8 CPU kernels need.

``<stem>.int8.onnx`` (:mod:`streamer.model.quantize`) is written in the form TensorRT and TensorRT-RTX build
from: signed int8, symmetric (zero point 0), weights per output channel, a QuantizeLinear/DequantizeLinear
pair on the input of every Conv and Gemm (after the ReLU of the layer before), biases and the classifier
head in float, the uint8→float prologue (Cast, Transpose, BGR→RGB, normalise) and the softmax in float.

ONNX Runtime's CPU provider fuses ``DequantizeLinear → Conv → QuantizeLinear`` into one QLinearConv only when
nothing sits between the Conv and the QuantizeLinear, and a ReLU does. It drops a ReLU in front of a
QuantizeLinear whose zero point is the lowest value of its type, which a symmetric int8 one (0 of -128..127)
is not. :func:`onnxruntime_form` therefore re-types the pairs on tensors that cannot be negative (ReLU
outputs, and pooling or reshapes of those) to uint8 with the same scale and zero point 0: the same values on
the same grid, since such a tensor never used the negative codes. The ReLUs then fold away and every conv
runs as a u8×s8 QLinearConv (the VNNI/AMX int8 kernels). The one difference: int8 saturates at 127×scale,
uint8 at 255×scale, so a value above the calibrated range is clipped by TensorRT and not by ONNX Runtime.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# ops whose output is non-negative when their (first) input is
_KEEPS_SIGN = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"})
# ONNX Runtime's fused int8 CPU kernels (what a QDQ graph becomes when the fusions apply)
INT8_KERNELS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger",
                          "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool"})


def is_qdq(model: onnx.ModelProto) -> bool:
    """Whether the graph holds QuantizeLinear/DequantizeLinear nodes (an explicitly quantized model)."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def onnxruntime_form(model: onnx.ModelProto) -> int:
    """Re-type, in place, the symmetric int8 Q/DQ pairs of non-negative tensors to uint8 (see the module
    docstring); returns how many QuantizeLinear nodes changed."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    non_negative: set[str] = set()
    changed = 0
    for node in graph.node:  # ONNX graphs are topologically sorted
        first = node.input[0] if node.input else ""
        if node.op_type == "Relu" or (node.op_type in _KEEPS_SIGN | {"DequantizeLinear"}
                                      and first in non_negative):
            non_negative.update(node.output)
            continue
        if node.op_type != "QuantizeLinear" or first not in non_negative or len(node.input) < 3:
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None or zero_point.data_type != TensorProto.INT8:
            continue
        value = numpy_helper.to_array(zero_point)
        users = consumers.get(node.output[0], [])
        if value.size != 1 or value.any() or node.output[0] in graph_outputs or \
                any(u.op_type != "DequantizeLinear" for u in users):
            continue
        name = f"{node.input[2]}_uint8"
        if name not in initializers:
            initializers[name] = numpy_helper.from_array(np.zeros(value.shape, np.uint8), name)
            graph.initializer.append(initializers[name])
        node.input[2] = name
        for user in users:
            user.input[2] = name
        non_negative.update(node.output)
        changed += 1
    return changed


def onnxruntime_kernels(model: onnx.ModelProto | bytes, threads: int = 1) -> Counter[str]:
    """The ops of ``model`` after ONNX Runtime's CPU graph optimisations: what actually runs."""
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    blob = model if isinstance(model, bytes) else model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="streamer-ort-") as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimised)
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimised), load_external_data=False).graph
        return Counter(node.op_type for node in graph.node)
