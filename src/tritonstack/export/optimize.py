"""ONNX Runtime transformer graph optimization and fp16 conversion.

``onnxruntime.transformers.optimizer`` fuses the encoder's attention, GELU,
embedding and layer-norm subgraphs into single contrib ops (``Attention``,
``BiasGelu``, ``EmbedLayerNormalization``); those fused ops are also what
quantization turns into ``QAttention``. It needs the head count and hidden size
to recognise attention, so we pass them from the model's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonstack.export._errors import ExportError
from tritonstack.export._quiet import quiet
from tritonstack.export.pooling import HIDDEN_STATE, NODE_PREFIX, SENTENCE_EMBEDDING


@dataclass(frozen=True)
class OptimizeResult:
    path: Path
    fused_ops: dict[str, int]  # fused op type -> count, for the report


def optimize_graph(
    source: Path,
    destination: Path,
    *,
    ort_model_type: str,
    num_heads: int,
    hidden_size: int,
    use_gpu: bool = False,
) -> OptimizeResult:
    """Write the transformer-optimized graph of ``source`` to ``destination``."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with quiet():
            model = optimize_model(
                str(source),
                model_type=ort_model_type,
                num_heads=num_heads,
                hidden_size=hidden_size,
                use_gpu=use_gpu,
            )
            model.save_model_to_file(str(destination))
    except Exception as error:  # the optimizer raises anything from its fusion passes
        raise ExportError(
            f"ONNX Runtime graph optimization failed: {type(error).__name__}: {error}".splitlines()[0],
            hint="try --precision fp32, which does not depend on the fused graph",
        ) from error
    stats = model.get_fused_operator_statistics()
    return OptimizeResult(destination, {op: int(n) for op, n in stats.items() if n})


def convert_fp16(source: Path, destination: Path) -> Path:
    """fp16 weights and compute; inputs and outputs stay as they were (int64 in, fp32 out).

    A fused pooling/normalisation tail is detached first, the encoder converted,
    and the tail put back in fp32: its epsilons (1e-9, 1e-12) underflow in
    fp16, the converter cannot type a mixed tail, and it costs nothing next to
    the encoder.
    """
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = onnx.load(str(source))
    graph = proto.graph
    tail_nodes = [n for n in graph.node if n.name.startswith(NODE_PREFIX) or n.name == SENTENCE_EMBEDDING]
    tail_inits = [t for t in graph.initializer if t.name.startswith(NODE_PREFIX)]
    outputs = list(graph.output)
    if tail_nodes:
        for node in tail_nodes:
            graph.node.remove(node)
        for init in tail_inits:
            graph.initializer.remove(init)
        del graph.output[:]
        graph.output.append(
            helper.make_tensor_value_info(
                HIDDEN_STATE, TensorProto.FLOAT, ["batch_size", "sequence_length", "hidden_size"]
            )
        )
    model = OnnxModel(proto)
    try:
        with quiet():
            model.convert_float_to_float16(keep_io_types=True)
    except Exception as error:
        raise ExportError(
            f"fp16 conversion failed: {type(error).__name__}: {error}".splitlines()[0],
            hint="try --precision fp32",
        ) from error
    if tail_nodes:
        converted = model.model.graph
        converted.node.extend(tail_nodes)
        converted.initializer.extend(tail_inits)
        del converted.output[:]
        converted.output.extend(outputs)
    model.save_model_to_file(str(destination))
    return destination
