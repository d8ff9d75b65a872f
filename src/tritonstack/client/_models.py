"""What the SDK returns besides arrays: model descriptions, classifications, rerank results and token usage."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonstack.in_triton import contract


@dataclass(frozen=True, slots=True)
class Classification:
    """One text's predicted label and its softmax probability in [0, 1]."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One document of a ``rerank`` call: its position in the documents sent, its score, and its text if asked.

    ``score`` is the cross-encoder's raw relevance logit (unbounded; higher is more relevant), before any
    activation: what sentence-transformers' ``CrossEncoder.predict`` returns for a model whose activation is
    Identity (the ms-marco cross-encoders). ``relevance`` is its sigmoid in [0, 1], what ``predict`` returns
    with its default Sigmoid (bge-reranker) and the ``relevance_score`` Cohere's and TEI's rerank APIs report;
    both order the documents alike.
    """

    index: int
    score: float
    document: str | None = None

    @property
    def relevance(self) -> float:
        """``sigmoid(score)``, in [0, 1]."""
        if self.score >= 0:
            return 1.0 / (1.0 + math.exp(-self.score))
        exp = math.exp(self.score)  # no overflow for very negative logits
        return exp / (1.0 + exp)


@dataclass(eq=False)
class Usage:
    """The tokens the model ran for the calls this is passed to (``usage=`` of ``embed``, ``classify``,
    ``rerank`` and their ``*_release`` twins), from the text-in model's ``TOKENS`` output.

    ``counted``: every call recorded here was counted -- ``False`` before the first call, and for good once a
    call's model had no ``TOKENS`` output (exported before token counts); such a call adds to no other field.
    ``tokens``: the sum of ``per_row``. ``per_row``: int64 ``[rows]``, each row's tokens including the special
    ones, in the order sent (``rerank``: per document, in the order sent -- each counts its (query, document)
    pair). ``truncated``: bool ``[rows]``, the row was cut to the model's ``max_sequence_length``. Passed to
    several calls it accumulates: ``tokens`` adds up, ``per_row`` and ``truncated`` concatenate in the order
    the calls finish. A call that fails records nothing. Not locked: share one between threads at your own risk.
    """

    counted: bool = False
    tokens: int = 0
    per_row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    calls: int = 0  # calls recorded, counted or not

    def record(self, counts: np.ndarray | None) -> None:
        """Add one call: its ``TOKENS`` (``[rows, 2]``: tokens, cut), or ``None`` where its model has none."""
        self.counted = counts is not None and (self.counted or self.calls == 0)
        self.calls += 1
        if counts is None:
            return
        per_row = counts[:, contract.TOKEN_COUNT].astype(np.int64)
        self.per_row = np.concatenate([self.per_row, per_row])
        self.truncated = np.concatenate([self.truncated, counts[:, contract.TOKENS_CUT] != 0])
        self.tokens += int(per_row.sum())


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a served model.

    ``shape`` is per row: without the batch axis when the model batches
    (``max_batch_size > 0``); ``-1`` is a variable dimension.
    """

    name: str
    datatype: str  # Triton's name: "FP32", "INT64", "BYTES", ...
    shape: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """A served model as its metadata and configuration describe it."""

    name: str
    versions: tuple[str, ...]
    platform: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @functools.cached_property  # asked on every embed()/classify()/rerank() call
    def task(self) -> str | None:
        """The tritonstack task its outputs mean (``contract.OUTPUTS_BY_TASK``) -- a pair task's model takes
        ``TEXT_PAIR`` too, the others do not -- ``None`` for other models."""
        names = {spec.name for spec in self.outputs}
        pair = self.input(contract.TEXT_PAIR_INPUT) is not None
        for task, outputs in contract.OUTPUTS_BY_TASK.items():
            if set(outputs) <= names and contract.task(task).pair == pair:
                return task
        return None

    @property
    def batches(self) -> bool:
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


def parse_model_info(metadata: Any, config: Any) -> ModelInfo:
    """A ``ModelInfo`` from Triton's ``ModelMetadataResponse`` and ``ModelConfigResponse`` protobufs.

    Metadata gives names, datatypes and shapes (with the batch axis as a
    leading ``-1`` when the model batches); the config gives ``max_batch_size``
    and which inputs are optional.
    """
    model_config = config.config
    max_batch_size = int(model_config.max_batch_size)
    optional = {tensor.name for tensor in model_config.input if tensor.optional}

    def specs(tensors: Any) -> tuple[TensorSpec, ...]:
        result = []
        for tensor in tensors:
            shape = tuple(int(dim) for dim in tensor.shape)
            if max_batch_size > 0 and shape:
                shape = shape[1:]
            result.append(TensorSpec(tensor.name, tensor.datatype, shape, tensor.name in optional))
        return tuple(result)

    return ModelInfo(
        name=metadata.name,
        versions=tuple(metadata.versions),
        platform=metadata.platform,
        max_batch_size=max_batch_size,
        inputs=specs(metadata.inputs),
        outputs=specs(metadata.outputs),
    )
