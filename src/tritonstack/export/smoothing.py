"""Outlier smoothing and per-channel dynamic int8, with chosen MatMuls kept fp32.

Why: in a transformer a few activation channels dwarf the rest (MiniLM: the
largest channel of a LayerNorm output is 16x its median). Dynamic int8 gives an
activation tensor one scale, so those few channels make it coarse for all the
others, and the error is largest for the shortest texts. SmoothQuant
(Xiao et al., 2023) moves that range into the weights, where per-channel
quantization absorbs it: per input channel ``j`` of a group of MatMuls that
read the same activation ``X``::

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)     X' = X / s    W' = diag(s) W

``X' W' = X W`` exactly in fp32; ``max|X_j|`` comes from the calibration
split, ``alpha`` is searched per model (``sensitivity.py``). The division is a
``Mul`` by ``1/s`` before the group (a LayerNorm cannot absorb it: its output
also feeds the residual connection).

Each smoothed MatMul then becomes ``com.microsoft.DynamicQuantizeMatMul``:
int8 weights with one symmetric scale per output column, activations quantized
to uint8 per call (per text, when each text gets its own call), and the
following bias ``Add`` folded in. A MatMul in ``fp32_nodes`` keeps its smoothed
fp32 weight.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SWITCH_INPUT = "tritonstack_int8_switch"  # the switchboard's input: bool [nodes], True = that MatMul int8
_MS_DOMAIN = "com.microsoft"
_SCALE_RANGE = (1e-4, 1e4)  # a channel never seen active (max 0) must not blow up a weight row


@dataclass(frozen=True)
class WeightedMatMul:
    """A MatMul of an activation by a constant 2-D weight, and the bias ``Add`` right after it, if any."""

    name: str
    activation: str  # the input tensor: what smoothing divides
    weight: np.ndarray  # [K, N] fp32
    output: str  # the MatMul's output
    bias: str | None = None  # a 1-D constant added to the output by the only node that reads it...
    bias_add: str | None = None  # ...that Add node's name
    bias_output: str | None = None  # ...and its output: what an int8 node with the bias folded writes


class SmoothableGraph:
    """An fp32 ONNX graph, read once, that writes smoothed int8 variants of itself."""

    def __init__(self, path: Path) -> None:
        self.model = onnx.load(str(path))
        graph = self.model.graph
        initializers = {t.name: t for t in graph.initializer}
        graph_outputs = {o.name for o in graph.output}
        readers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        matmuls: list[WeightedMatMul] = []
        for node in graph.node:
            weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
            if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT or not node.name:
                continue
            if len(readers[weight.name]) != 1:  # a shared (tied) weight cannot be scaled for one reader
                continue
            bias = bias_add = bias_output = None
            (reader, *others) = readers.get(node.output[0], [None])
            if reader is not None and not others and reader.op_type == "Add" and node.output[0] not in graph_outputs:
                other = reader.input[1] if reader.input[0] == node.output[0] else reader.input[0]
                constant = initializers.get(other)
                if constant is not None and list(constant.dims) == [weight.dims[1]]:
                    bias, bias_add, bias_output = other, reader.name, reader.output[0]
            matmuls.append(
                WeightedMatMul(
                    node.name,
                    node.input[0],
                    numpy_helper.to_array(weight).astype(np.float32),
                    node.output[0],
                    bias,
                    bias_add,
                    bias_output,
                )
            )
        self.matmuls = {m.name: m for m in matmuls}
        self._weights = {node.input[1] for node in graph.node if node.name in self.matmuls}
        groups: dict[str, list[str]] = {}
        for m in matmuls:
            groups.setdefault(m.activation, []).append(m.name)
        self.groups = {activation: tuple(names) for activation, names in groups.items()}

    @property
    def nodes(self) -> tuple[str, ...]:
        """The MatMuls that can be int8, in graph order."""
        return tuple(self.matmuls)

    def activation_maxima(
        self, session_for: Callable[[onnx.ModelProto], Any], feeds: Sequence[Mapping[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Per channel, the largest ``|X|`` each group's activation reaches on ``feeds``.

        ``session_for(model)`` opens an ONNX Runtime session on a model proto. Padding
        positions count too where ``feeds`` are padded, so pass one text per call.
        """
        probe = onnx.ModelProto()
        probe.CopyFrom(self.model)
        for activation in self.groups:
            probe.graph.output.append(helper.make_tensor_value_info(activation, TensorProto.FLOAT, None))
        session = session_for(probe)
        names = list(self.groups)
        inputs = [i.name for i in session.get_inputs()]
        maxima = {name: np.zeros(self.matmuls[self.groups[name][0]].weight.shape[0], np.float32) for name in names}
        for feed in feeds:
            for name, value in zip(names, session.run(names, {n: feed[n] for n in inputs}), strict=True):
                np.maximum(maxima[name], np.abs(value).reshape(-1, value.shape[-1]).max(axis=0), out=maxima[name])
        return maxima

    def scales(self, maxima: Mapping[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
        """The smoothing factor ``s`` of every group's input channels for strength ``alpha``."""
        scales = {}
        for activation, names in self.groups.items():
            weight_max = np.max([np.abs(self.matmuls[n].weight).max(axis=1) for n in names], axis=0)
            activation_max = np.maximum(maxima[activation], 1e-5)
            s = activation_max**alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha)
            scales[activation] = np.clip(s, *_SCALE_RANGE).astype(np.float32)
        return scales

    def build(self, scales: Mapping[str, np.ndarray], fp32_nodes: Collection[str] = ()) -> onnx.ModelProto:
        """The smoothed graph: every weighted MatMul int8 except ``fp32_nodes``."""
        unknown = set(fp32_nodes) - set(self.matmuls)
        if unknown:
            raise ValueError(f"no weighted MatMul named {sorted(unknown)}")
        writer = _Writer(scales)
        return self._rewrite(scales, lambda m, _: writer.fp32(m) if m.name in fp32_nodes else writer.int8(m))

    def switchboard(self, scales: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        """The smoothed graph with every weighted MatMul switchable at run time.

        Input ``SWITCH_INPUT`` (bool ``[len(nodes)]``, graph order) picks int8
        (True) or fp32 per MatMul through an ``If``, so one ONNX Runtime session
        evaluates any mix: the sensitivity search scores dozens of mixes without
        rebuilding a model for each. Its outputs equal ``build``'s for the same mix.
        """
        writer = _Writer(scales)
        model = self._rewrite(scales, writer.switched)
        model.graph.input.append(helper.make_tensor_value_info(SWITCH_INPUT, TensorProto.BOOL, [len(self.matmuls)]))
        return model

    def _rewrite(self, scales: Mapping[str, np.ndarray], replace: Replace) -> onnx.ModelProto:
        """This graph with each weighted MatMul replaced by ``replace(matmul, index)``, after a ``Mul`` by
        ``1/s`` on its group's input. A replacement that writes the bias ``Add``'s output replaces that too."""
        graph = self.model.graph
        nodes: list[Any] = []
        tensors: list[TensorProto] = []
        smoothed: set[str] = set()
        folded: set[str] = set()
        order = {name: index for index, name in enumerate(self.matmuls)}
        for node in graph.node:
            m = self.matmuls.get(node.name)
            if m is None:
                if node.name not in folded:
                    nodes.append(node)
                continue
            if m.activation not in smoothed:  # the group's Mul, before its first MatMul
                smoothed.add(m.activation)
                inverse = f"{m.activation}_smooth_inverse"
                tensors.append(numpy_helper.from_array((1.0 / scales[m.activation]).astype(np.float32), inverse))
                nodes.append(helper.make_node("Mul", [m.activation, inverse], [_smoothed(m)], name=_smoothed(m)))
            new_nodes, new_tensors = replace(m, order[m.name])
            nodes.extend(new_nodes)
            tensors.extend(new_tensors)
            if m.bias_add and any(m.bias_output in n.output for n in new_nodes):
                folded.add(m.bias_add)
        kept = [t for t in graph.initializer if t.name not in self._weights]
        new_graph = helper.make_graph(
            nodes, graph.name, list(graph.input), list(graph.output), initializer=kept + tensors
        )
        model = helper.make_model(new_graph, opset_imports=list(self.model.opset_import))
        model.ir_version = self.model.ir_version
        if not any(o.domain == _MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
        return model


Replacement = tuple[list[Any], list[TensorProto]]  # nodes and initializers that stand for one MatMul
Replace = Callable[[WeightedMatMul, int], Replacement]


@dataclass(frozen=True)
class _Writer:
    """The replacements of weighted MatMuls for one set of smoothing scales."""

    scales: Mapping[str, np.ndarray]

    def weight(self, m: WeightedMatMul) -> np.ndarray:
        return (m.weight * self.scales[m.activation][:, None]).astype(np.float32)

    def int8(self, m: WeightedMatMul) -> Replacement:
        """``DynamicQuantizeMatMul`` with per-column symmetric int8 weights and the bias folded in."""
        weight = self.weight(m)
        scale = np.maximum(np.abs(weight).max(axis=0) / 127.0, 1e-12).astype(np.float32)
        quantized = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
        names = (f"{m.name}_weight_int8", f"{m.name}_weight_scale")
        inputs = [_smoothed(m), *names]
        if m.bias:
            inputs += ["", m.bias]  # no zero point: the weights are symmetric
        output = m.bias_output or m.output
        node = helper.make_node("DynamicQuantizeMatMul", inputs, [output], name=f"{m.name}_int8", domain=_MS_DOMAIN)
        return [node], [numpy_helper.from_array(quantized, names[0]), numpy_helper.from_array(scale, names[1])]

    def fp32(self, m: WeightedMatMul, *, with_bias: bool = False) -> Replacement:
        """The MatMul on the smoothed weight (and its bias ``Add`` when ``with_bias``)."""
        name = f"{m.name}_weight_smoothed"
        nodes = [helper.make_node("MatMul", [_smoothed(m), name], [m.output], name=m.name)]
        if with_bias and m.bias and m.bias_add and m.bias_output:
            nodes.append(helper.make_node("Add", [m.output, m.bias], [m.bias_output], name=m.bias_add))
        return nodes, [numpy_helper.from_array(self.weight(m), name)]

    def switched(self, m: WeightedMatMul, index: int) -> Replacement:
        """``If(switch[index])``: ``int8`` in the then-branch, ``fp32`` (bias included) in the else-branch."""
        int8_nodes, int8_tensors = self.int8(m)
        fp32_nodes, fp32_tensors = self.fp32(m, with_bias=True)
        result = m.bias_output or m.output
        index_name, condition = f"{m.name}_switch_index", f"{m.name}_switch"
        branches = {
            "then_branch": _branch(f"{m.name}_then", int8_nodes, result, "int8"),
            "else_branch": _branch(f"{m.name}_else", fp32_nodes, result, "fp32"),
        }
        nodes = [
            helper.make_node("Gather", [SWITCH_INPUT, index_name], [condition], name=condition),
            helper.make_node("If", [condition], [result], name=f"{m.name}_if", **branches),
        ]
        index_tensor = numpy_helper.from_array(np.array(index, np.int64), index_name)
        return nodes, [*int8_tensors, *fp32_tensors, index_tensor]


def _smoothed(m: WeightedMatMul) -> str:
    return f"{m.activation}_smoothed"


def _branch(name: str, nodes: list[Any], result: str, suffix: str) -> Any:
    """A subgraph of ``nodes`` whose output, renamed from ``result``, is the ``If``'s output."""
    output = f"{result}_{suffix}"
    for node in nodes:
        node.output[:] = [output if o == result else o for o in node.output]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])
