"""Sentence-transformers pooling and normalisation, appended to an ONNX graph.

``SentenceTransformer(model_dir).encode()`` runs Transformer -> Pooling ->
(Normalize). We read the same three files it reads (``modules.json``,
``<pooling dir>/config.json``, ``sentence_bert_config.json``) and add the
equivalent ONNX nodes after ``last_hidden_state``, so the exported encoder's
single output is the final ``sentence_embedding`` -- the server and clients
need no pooling code, and parity is checked on what users actually get.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tritonstack.export._errors import UnsupportedModelError
from tritonstack.in_triton import contract

SENTENCE_EMBEDDING = contract.FEATURE_EXTRACTION.encoder_output
HIDDEN_STATE = "last_hidden_state"
NODE_PREFIX = "tritonstack_pool/"  # every node and constant the pooling tail adds

# Concatenation order of sentence-transformers' Pooling for legacy boolean keys.
_LEGACY_MODE_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
SUPPORTED_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
_MODULE_KINDS = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class PoolingSpec:
    """How token embeddings become the sentence embedding.

    ``modes`` are concatenated in order (sentence-transformers' behaviour);
    ``source`` says where the spec came from, for the export report.
    """

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None
    source: str = "default (plain transformers model: mean pooling, no normalisation)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "modes": list(self.modes),
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolingSpec:
        """The inverse of ``to_dict``."""
        return cls(tuple(data["modes"]), data["normalize"], data["max_seq_length"], data["source"])


def _modes_from_config(config: dict[str, Any]) -> tuple[str, ...]:
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return (mode,)
    if isinstance(mode, list | tuple) and mode:
        return tuple(str(m) for m in mode)
    legacy = tuple(name for key, name in _LEGACY_MODE_KEYS if config.get(key))
    return legacy or ("mean",)


def read_pooling_spec(model_dir: Path) -> PoolingSpec:
    """The pooling a ``SentenceTransformer(model_dir)`` would apply.

    Without sentence-transformers files this is what sentence-transformers
    itself does with a plain transformers model: mean pooling, no normalisation.
    """
    max_seq_length: int | None = None
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        max_seq_length = int(value) if value is not None else None
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return PoolingSpec(max_seq_length=max_seq_length)

    modules = json.loads(modules_file.read_text())
    modes: tuple[str, ...] = ("mean",)
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _MODULE_KINDS:
            raise UnsupportedModelError(
                f"sentence-transformers module {module.get('type')!r} is not supported "
                f"(supported: {', '.join(_MODULE_KINDS)})",
                hint="export a model whose modules.json has only Transformer, Pooling and Normalize",
            )
        if kind == "Transformer" and module.get("path"):
            raise UnsupportedModelError(
                f"the Transformer module lives in a subfolder ({module['path']!r})",
                hint="point tritonstack export at that subfolder",
            )
        if kind == "Pooling":
            config_file = model_dir / str(module.get("path", "")) / "config.json"
            if config_file.is_file():
                modes = _modes_from_config(json.loads(config_file.read_text()))
        if kind == "Normalize":
            normalize = True
    unsupported = [m for m in modes if m not in SUPPORTED_MODES]
    if unsupported:
        raise UnsupportedModelError(
            f"pooling mode(s) {', '.join(unsupported)} not supported (supported: {', '.join(SUPPORTED_MODES)})",
            hint="export the model for a different task, or pool client-side from a token-level export",
        )
    return PoolingSpec(
        modes=modes,
        normalize=normalize,
        max_seq_length=max_seq_length,
        source=f"sentence-transformers files in {model_dir.name}",
    )


class _GraphBuilder:
    """Appends uniquely named nodes and constants to a graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.opset < 13:
            raise UnsupportedModelError(f"ONNX opset {self.opset} is too old for pooling (need >= 13)")
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{NODE_PREFIX}{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, op: str, x: str, axis: int, keepdims: int) -> str:
        # ReduceSum took axes as an input from opset 13, the other reductions only from 18.
        if op == "ReduceSum" or self.opset >= 18:
            axes = self.const("axes", np.array([axis], dtype=np.int64))
            return self.node(op, [x, axes], op.lower(), keepdims=keepdims)
        return self.node(op, [x], op.lower(), axes=[axis], keepdims=keepdims)


def append_pooling(model: onnx.ModelProto, spec: PoolingSpec, hidden_size: int) -> onnx.ModelProto:
    """Replace the ``last_hidden_state`` output by pooled (and normalised) ``sentence_embedding``."""
    outputs = [o.name for o in model.graph.output]
    if HIDDEN_STATE not in outputs:
        raise UnsupportedModelError(f"expected a {HIDDEN_STATE!r} output to pool, the graph has {outputs}")
    g = _GraphBuilder(model)
    mask_f = g.node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    mask_e = g.node("Unsqueeze", [mask_f, g.const("axes", np.array([-1], dtype=np.int64))], "mask_e")

    pooled: list[str] = []
    mean_sum = mean_count = None
    for mode in spec.modes:
        if mode == "cls":
            # The tokenizer pads on the right, so the CLS token is position 0 in every row.
            index = g.const("zero", np.array(0, dtype=np.int64))
            pooled.append(g.node("Gather", [HIDDEN_STATE, index], "cls", axis=1))
        elif mode == "max":
            padding = g.node("Equal", [mask_e, g.const("zero_f", np.array(0.0, dtype=np.float32))], "is_pad")
            neg_inf = g.const("neg_inf", np.array(-np.inf, dtype=np.float32))
            masked = g.node("Where", [padding, neg_inf, HIDDEN_STATE], "masked")
            pooled.append(g.reduce("ReduceMax", masked, axis=1, keepdims=0))
        else:  # mean, mean_sqrt_len_tokens share the masked sum
            if mean_sum is None or mean_count is None:
                mean_sum = g.reduce("ReduceSum", g.node("Mul", [HIDDEN_STATE, mask_e], "masked"), 1, 0)
                count = g.reduce("ReduceSum", mask_e, axis=1, keepdims=0)
                eps = g.const("eps", np.array(1e-9, dtype=np.float32))
                mean_count = g.node("Max", [count, eps], "count")
            denom = mean_count if mode == "mean" else g.node("Sqrt", [mean_count], "sqrt_count")
            pooled.append(g.node("Div", [mean_sum, denom], mode))
    embedding = pooled[0] if len(pooled) == 1 else g.node("Concat", pooled, "concat", axis=1)

    if spec.normalize:
        # torch.nn.functional.normalize: x / max(||x||_2, 1e-12)
        norm = g.reduce("ReduceL2", embedding, axis=1, keepdims=1)
        norm = g.node("Max", [norm, g.const("eps", np.array(1e-12, dtype=np.float32))], "norm")
        embedding = g.node("Div", [embedding, norm], "normalized")

    g.graph.node.append(helper.make_node("Identity", [embedding], [SENTENCE_EMBEDDING], name=SENTENCE_EMBEDDING))
    del g.graph.output[:]
    g.graph.output.append(
        helper.make_tensor_value_info(
            SENTENCE_EMBEDDING, TensorProto.FLOAT, ["batch_size", hidden_size * len(spec.modes)]
        )
    )
    onnx.checker.check_model(model)
    return model
