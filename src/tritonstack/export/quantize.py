"""Dynamic int8 quantization recipes for CPU.

A ``Recipe`` is one way to quantize: on the plain or the transformer-optimized
graph, per-tensor or per-channel weights, with or without the sensitive ops
kept in fp32, or weight-only blockwise int8. The candidate search
(``search.py``) tries the presets and keeps the fastest one that passes the
accuracy gate, because which one wins depends on the model and the CPU
(VNNI/AMX or plain AVX2).

Presets, as named factory methods::

    Recipe.default()                       plain graph, per-tensor: ORT's defaults
    Recipe.per_channel()                   plain graph, per-channel weights
    Recipe.optimized()                     fused graph, per-tensor
    Recipe.per_channel_optimized()         fused graph, per-channel
    Recipe.per_channel_optimized_safe()    ...with embeddings and FFN up-projections kept fp32
    Recipe.blockwise_optimized()           fused graph, MatMulNBits int8 weights in blocks of 32 along K;
                                           activations are quantized per block too (accuracy_level 4),
                                           not per tensor, which is what keeps short texts accurate
    Recipe.smoothed(alpha, fp32_nodes)     plain graph, outliers smoothed into the weights (strength alpha),
                                           per-channel int8 except ``fp32_nodes``: what the sensitivity
                                           search (``sensitivity.py``) produces; built by ``smoothing.py``
    Recipe.smoothed(..., per_token=True)   the same mix with one activation scale per token
                                           (``row_quantize.py``): batch-invariant, so batchable

Every recipe but the blockwise and the per-token ones quantizes activations
dynamically with one scale per ONNX Runtime call, so a text's output depends on the texts it shares
a call with: such a model is gated, timed and served one text per call
(``Recipe.max_rows_per_call``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack.export._errors import ExportError
from tritonstack.export._quiet import quiet

# FFN up-projections read the post-LayerNorm activations whose few outlier channels
# make a per-tensor activation scale coarse for everything else (measured on MiniLM:
# keeping them fp32 lifts min cosine the most of any single group).
_SENSITIVE_NODE = re.compile(r"(/intermediate/dense/|/ffn/lin1/|/mlp/fc1/)")
_BLOCKWISE_ACCURACY_LEVEL = 4  # int8 compute, activations quantized per block


@dataclass(frozen=True)
class Recipe:
    """One int8 quantization recipe."""

    name: str
    fused_graph: bool  # quantize the transformer-optimized (fused) graph
    per_channel_weights: bool = False
    exclude_sensitive: bool = False
    block_size: int = 0  # > 0: weight-only blockwise int8 (MatMulNBits) instead of quantize_dynamic
    description: str = ""
    smoothing_alpha: float | None = None  # set: a smoothed mix (``smoothing.py``), not ORT's quantizer
    fp32_nodes: tuple[str, ...] = ()  # MatMuls a smoothed mix keeps fp32, in the order the search chose them
    per_token: bool = False  # a smoothed mix whose activations get one scale per token (``row_quantize.py``)

    @property
    def max_rows_per_call(self) -> int:
        """Rows per ONNX Runtime call this model must be run with: 1 where the activation scale spans the
        call (per-text scales), 0 (no limit) where activations are quantized per block of one row or per token."""
        return 0 if self.block_size or self.per_token else 1

    @classmethod
    def default(cls) -> Recipe:
        return cls("default", fused_graph=False, description="dynamic int8, ONNX Runtime defaults")

    @classmethod
    def per_channel(cls) -> Recipe:
        return cls("per_channel", fused_graph=False, per_channel_weights=True, description="per-channel weights")

    @classmethod
    def optimized(cls) -> Recipe:
        return cls("optimized", fused_graph=True, description="fused graph, per-tensor weights")

    @classmethod
    def per_channel_optimized(cls) -> Recipe:
        return cls(
            "per_channel_optimized", fused_graph=True, per_channel_weights=True, description="fused graph, per-channel"
        )

    @classmethod
    def per_channel_optimized_safe(cls) -> Recipe:
        return cls(
            "per_channel_optimized_safe",
            fused_graph=True,
            per_channel_weights=True,
            exclude_sensitive=True,
            description="fused, per-channel, embeddings + FFN up-projections fp32",
        )

    @classmethod
    def blockwise_optimized(cls, block_size: int = 32) -> Recipe:
        return cls(
            f"blockwise{block_size}_optimized",
            fused_graph=True,
            block_size=block_size,
            description=f"fused graph, int8 weights in blocks of {block_size}, per-block activations",
        )

    @classmethod
    def smoothed(cls, alpha: float, fp32_nodes: tuple[str, ...] = (), *, per_token: bool = False) -> Recipe:
        kept = f"{len(fp32_nodes)} MatMul{'s' if len(fp32_nodes) != 1 else ''} fp32" if fp32_nodes else "all int8"
        named = f" ({', '.join(short_name(n) for n in fp32_nodes)})" if fp32_nodes else ""
        scales = "per-channel int8, per-token activation scales" if per_token else "per-channel dynamic int8"
        return cls(
            f"smoothed_a{alpha:g}" + (f"_fp32x{len(fp32_nodes)}" if fp32_nodes else "") + ("_per_token" * per_token),
            fused_graph=False,
            per_channel_weights=True,
            description=f"smoothed (alpha {alpha:g}), {scales}, {kept}{named}",
            smoothing_alpha=alpha,
            fp32_nodes=tuple(fp32_nodes),
            per_token=per_token,
        )

    @classmethod
    def presets(cls) -> tuple[Recipe, ...]:
        """Every preset, in the order the candidate search tries them."""
        return (
            cls.default(),
            cls.per_channel(),
            cls.optimized(),
            cls.per_channel_optimized(),
            cls.per_channel_optimized_safe(),
            cls.blockwise_optimized(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fused_graph": self.fused_graph,
            "per_channel_weights": self.per_channel_weights,
            "exclude_sensitive": self.exclude_sensitive,
            "block_size": self.block_size,
            "description": self.description,
            "smoothing_alpha": self.smoothing_alpha,
            "fp32_nodes": list(self.fp32_nodes),
            "per_token": self.per_token,
            "max_rows_per_call": self.max_rows_per_call,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The inverse of ``to_dict`` (``max_rows_per_call`` is derived)."""
        fields = {k: v for k, v in data.items() if k != "max_rows_per_call"}
        return cls(**{**fields, "fp32_nodes": tuple(fields.get("fp32_nodes", ()))})


def short_name(node: str) -> str:
    """``/encoder/layer.0/output/dense/MatMul`` -> ``layer.0/output/dense``: a node as people read it."""
    parts = [p for p in node.split("/") if p and p not in ("MatMul", "encoder", "transformer")]
    return "/".join(parts) or node


def sensitive_nodes(model_path: Path) -> list[str]:
    """Node names a ``exclude_sensitive`` recipe keeps in fp32."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if _SENSITIVE_NODE.search(n.name)]


def quantize(recipe: Recipe, source: Path, destination: Path) -> Path:
    """Quantize the fp32 graph ``source`` (plain or optimized, per the recipe) to ``destination``.

    Not for smoothed mixes: they need calibration statistics (``smoothing.SmoothableGraph``).
    """
    if recipe.smoothing_alpha is not None:
        raise ValueError(f"{recipe.name} is a smoothed mix: build it with smoothing.SmoothableGraph")
    if recipe.block_size:
        return quantize_blockwise(source, destination, block_size=recipe.block_size)
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kwargs: dict[str, Any] = {}
    if recipe.exclude_sensitive:
        kwargs["op_types_to_quantize"] = ["MatMul", "Attention"]  # leaves the embedding Gather fp32
        kwargs["nodes_to_exclude"] = sensitive_nodes(source)
    try:
        with quiet():
            quantize_dynamic(
                str(source),
                str(destination),
                per_channel=recipe.per_channel_weights,
                weight_type=QuantType.QInt8,
                # fused contrib ops have no ONNX type inference; without a default the quantizer
                # cannot type their outputs and fails.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                **kwargs,
            )
    except Exception as error:
        raise ExportError(
            f"quantization recipe {recipe.name!r} failed: {type(error).__name__}: {error}".splitlines()[0]
        ) from error
    return destination


def quantize_blockwise(source: Path, destination: Path, *, block_size: int = 32) -> Path:
    """Replace every MatMul with a constant 2-D weight by ``com.microsoft.MatMulNBits`` (8 bits).

    Symmetric int8 weights in blocks of ``block_size`` along K; with
    ``accuracy_level=4`` ONNX Runtime quantizes the activations per block as
    well and multiplies in int8. The packing is ORT's own C++ routine (the
    same one ``MatMulNBitsQuantizer`` calls), so the layout is what the kernel expects.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_8bits

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    new_nodes = []
    dropped: set[str] = set()
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        b = numpy_helper.to_array(weight).astype(np.float32)
        k, n = b.shape
        k_blocks = (k + block_size - 1) // block_size
        if k_blocks * block_size != k:
            b = np.pad(b, ((0, k_blocks * block_size - k), (0, 0)))
        packed = np.zeros((n, k_blocks, block_size), dtype=np.uint8)
        scales = np.zeros((n, k_blocks), dtype=np.float32)
        zero_points = np.zeros((n, k_blocks), dtype=np.uint8)
        quantize_matmul_8bits(packed, np.ascontiguousarray(b), scales, zero_points, block_size, n, k, True)
        stem = weight.name
        graph.initializer.extend(
            [numpy_helper.from_array(packed, stem + "_Q8"), numpy_helper.from_array(scales, stem + "_scales")]
        )
        dropped.add(weight.name)
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], stem + "_Q8", stem + "_scales"],
                list(node.output),
                name=node.name + "_Q8",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block_size,
                accuracy_level=_BLOCKWISE_ACCURACY_LEVEL,
            )
        )
    still_used = {i for node in new_nodes for i in node.input}
    kept = [t for t in graph.initializer if t.name not in dropped or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(destination))
    return destination
