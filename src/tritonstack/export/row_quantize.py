"""Per-token dynamic int8: rewrite per-call activation quantization so a text's output is independent of its batch.

Why: ``com.microsoft.DynamicQuantizeMatMul`` (what the smoothed mixes of
``smoothing.py`` write) quantizes its activation with ONE scale per ONNX
Runtime call, so a text's vector depends on the texts it shares a call with,
and such a model is run one text per call (``Recipe.max_rows_per_call``). W8A8
LLM inference instead gives every token its own scale. This module rewrites
each ``DynamicQuantizeMatMul(X, W_int8, w_scale, [w_zero], [bias])`` into that
form, from standard ops plus ORT's ``MatMulIntegerToFloat``::

    amax  = Max(ReduceMax(Abs(X), axis=-1, keepdims), eps)        # [.., S, 1], one per token
    q     = QuantizeLinear(X * (127 / amax), 1.0, 128 as uint8)    # symmetric int8, stored +128 as uint8
    y     = MatMulIntegerToFloat(q, W_int8, 1.0, w_scale, 128)     # ORT's u8 x s8 kernel (VNNI), scaled by w
    out   = y * (amax / 127) [+ bias]

The quantization part is shared by every MatMul that reads the same ``X``
(query, key and value). A token's scale depends only on its own hidden vector,
and a real token's vector does not depend on padding (attention masks it), so a
text gets the same output alone and in any batch: the model may run many rows
per call. The uint8 + 128 storage is what keeps ONNX Runtime on its fast
u8 x s8 path (``MatMulIntegerToFloat``'s ``a_scale`` is per tensor or per
column of A, never per row, so the per-token scale is a ``Mul`` after it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

_MS_DOMAIN = "com.microsoft"
_EPS = 1e-12  # a token whose activation is all zeros gets a finite scale (its int8 values are 0 anyway)
_QMAX = 127.0  # symmetric: [-127, 127], so a zero point of 128 keeps the uint8 in [1, 255]
# what this module writes; a node of these names already present means the graph was rewritten before
_CONSTANTS: dict[str, np.ndarray] = {
    "row_quant_eps": np.array(_EPS, np.float32),
    "row_quant_qmax": np.array(_QMAX, np.float32),
    "row_quant_one": np.array(1.0, np.float32),
    "row_quant_zero_point": np.array(128, np.uint8),
    "row_quant_axes": np.array([-1], np.int64),
}
PER_CALL_OPS = ("DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QAttention", "DynamicQuantizeLSTM")


def per_call_nodes(model: onnx.ModelProto) -> list[str]:
    """Names (else op types) of the nodes that quantize an activation with one scale per call."""
    return [n.name or n.op_type for n in model.graph.node if n.op_type in PER_CALL_OPS]


def rewrite_per_token(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every ``DynamicQuantizeMatMul`` quantizing its activation per token (a new model).

    Raises ``ValueError`` if another per-call quantizing op (``PER_CALL_OPS``) would be left: the result
    must be batch-invariant as a whole, or it is of no use.
    """
    model = _copy(model)
    graph = model.graph
    left = [n.name or n.op_type for n in graph.node if n.op_type in PER_CALL_OPS and n.op_type != PER_CALL_OPS[0]]
    if left:
        raise ValueError(f"per-call activation quantization this rewrite does not handle: {left[:5]}")
    if any(t.name in _CONSTANTS for t in graph.initializer):
        raise ValueError("the graph is already quantized per token")
    opset = _default_opset(model)
    if opset < 18:  # ReduceMax takes its axes as an input from opset 18
        raise ValueError(f"per-token rewrite needs ONNX opset >= 18, the graph has {opset}")
    quantized: dict[str, tuple[str, str]] = {}  # activation -> (uint8 tensor, per-token scale)
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeMatMul" or node.domain != _MS_DOMAIN:
            nodes.append(node)
            continue
        activation = node.input[0]
        if activation not in quantized:
            quant_nodes, quantized[activation] = _quantize_per_token(activation, f"{node.name}_rowq_in")
            nodes.extend(quant_nodes)
        nodes.extend(_matmul(node, *quantized[activation]))
        rewritten += 1
    if not rewritten:
        raise ValueError("no DynamicQuantizeMatMul to rewrite")
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in _CONSTANTS.items())
    return model


def _quantize_per_token(activation: str, stem: str) -> tuple[list[Any], tuple[str, str]]:
    """Nodes that quantize ``activation`` to uint8 (+128) with one symmetric scale per token (last axis)."""
    names = {part: f"{stem}_{part}" for part in ("abs", "amax_raw", "amax", "inverse", "scaled", "q", "scale")}
    nodes = [
        helper.make_node("Abs", [activation], [names["abs"]], name=names["abs"]),
        helper.make_node(
            "ReduceMax", [names["abs"], "row_quant_axes"], [names["amax_raw"]], name=names["amax_raw"], keepdims=1
        ),
        helper.make_node("Max", [names["amax_raw"], "row_quant_eps"], [names["amax"]], name=names["amax"]),
        helper.make_node("Div", ["row_quant_qmax", names["amax"]], [names["inverse"]], name=names["inverse"]),
        helper.make_node("Mul", [activation, names["inverse"]], [names["scaled"]], name=names["scaled"]),
        # round half to even and saturate, then +128: one fused op instead of Round/Clip/Add/Cast
        helper.make_node(
            "QuantizeLinear",
            [names["scaled"], "row_quant_one", "row_quant_zero_point"],
            [names["q"]],
            name=names["q"],
        ),
        helper.make_node("Div", [names["amax"], "row_quant_qmax"], [names["scale"]], name=names["scale"]),
    ]
    return nodes, (names["q"], names["scale"])


def _matmul(node: Any, quantized: str, scale: str) -> list[Any]:
    """``node`` (a ``DynamicQuantizeMatMul``) as ``MatMulIntegerToFloat`` on the per-token input, then the
    per-token scale and the bias."""
    weight, weight_scale = node.input[1], node.input[2]
    weight_zero = node.input[3] if len(node.input) > 3 else ""
    bias = node.input[4] if len(node.input) > 4 else ""
    output = node.output[0]
    unscaled, scaled = f"{node.name}_rowq_int", f"{node.name}_rowq_out"
    nodes = [
        helper.make_node(
            "MatMulIntegerToFloat",
            [quantized, weight, "row_quant_one", weight_scale, "row_quant_zero_point", weight_zero],
            [unscaled],
            name=unscaled,
            domain=_MS_DOMAIN,
        ),
        helper.make_node("Mul", [unscaled, scale], [scaled if bias else output], name=scaled),
    ]
    if bias:
        nodes.append(helper.make_node("Add", [scaled, bias], [output], name=f"{node.name}_rowq_bias"))
    return nodes


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def count_ops(model: onnx.ModelProto, op_types: Iterable[str]) -> int:
    """How many nodes of ``op_types`` the graph has (a report figure and a test's check)."""
    wanted = set(op_types)
    return sum(1 for n in model.graph.node if n.op_type in wanted)
