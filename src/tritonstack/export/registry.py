"""What ``tritonstack export`` supports: model types x tasks, and task inference.

Like optimum's ``TasksManager``, but narrowed to encoder models whose export we
test and whose ONNX Runtime transformer optimization we know works. An unknown
model type or task fails at once and lists what is supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack.export._errors import UnsupportedModelError
from tritonstack.in_triton.contract import (
    FEATURE_EXTRACTION,
    TASKS,
    TEXT_CLASSIFICATION,
    TEXT_RANKING,
    TOKEN_CLASSIFICATION,
)


@dataclass(frozen=True)
class ModelTypeSpec:
    """One supported ``config.model_type``.

    ``ort_model_type`` is what ``onnxruntime.transformers.optimizer`` calls it
    (all of these are BERT-shaped encoders, fused by its ``BertOnnxModel``).
    """

    model_type: str
    tasks: tuple[str, ...] = TASKS
    ort_model_type: str = "bert"


_SPECS = (
    ModelTypeSpec("bert"),
    ModelTypeSpec("distilbert"),
    ModelTypeSpec("roberta"),
    ModelTypeSpec("xlm-roberta"),
    ModelTypeSpec("camembert"),
    ModelTypeSpec("mpnet"),
    ModelTypeSpec("electra"),
    ModelTypeSpec("albert"),
)
REGISTRY: Mapping[str, ModelTypeSpec] = {spec.model_type: spec for spec in _SPECS}

# architectures suffix -> task; the first match wins
_ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", TEXT_CLASSIFICATION.name),
    ("ForTokenClassification", TOKEN_CLASSIFICATION.name),
    ("Model", FEATURE_EXTRACTION.name),
    ("ForMaskedLM", FEATURE_EXTRACTION.name),
    ("ForPreTraining", FEATURE_EXTRACTION.name),
)

SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")
# What sentence-transformers writes into the config.json of a CrossEncoder it saves (v4+: a "sentence_transformers"
# mapping with the activation; before: the key below): a reranker, not a classifier.
_CROSS_ENCODER_KEY = "sbert_ce_default_activation_function"

# optimum's task for ours where the names differ: a cross-encoder is a sequence-classification model (the
# ONNX graph is the same: token ids -> logits [batch_size, num_labels]); what differs is that its rows are
# (query, document) pairs and its one logit is a relevance score.
_OPTIMUM_TASKS = {TEXT_RANKING.name: TEXT_CLASSIFICATION.name}


def optimum_task(task: str) -> str:
    """The task name optimum's exporter takes for ``task``."""
    return _OPTIMUM_TASKS.get(task, task)


def _is_cross_encoder(config: Mapping[str, Any]) -> bool:
    saved = config.get("sentence_transformers")
    marked = _CROSS_ENCODER_KEY in config or (isinstance(saved, Mapping) and "activation_fn" in saved)
    return marked and len(config.get("id2label") or {"0": "LABEL_0"}) == 1


def supported_summary() -> str:
    """One line listing the supported model types and tasks, for error messages."""
    return f"model types: {', '.join(sorted(REGISTRY))}; tasks: {', '.join(TASKS)}"


def lookup(model_type: str, task: str) -> ModelTypeSpec:
    """The registry entry for ``model_type``, checked to support ``task``."""
    if task not in TASKS:
        raise UnsupportedModelError(
            f"unsupported task {task!r}; supported tasks: {', '.join(TASKS)}",
            hint="pass --task with one of the supported tasks",
        )
    spec = REGISTRY.get(model_type)
    if spec is None:
        raise UnsupportedModelError(
            f"unsupported model type {model_type!r}; supported {supported_summary()}",
            hint="export one of the supported architectures, or open an issue for this one",
        )
    if task not in spec.tasks:
        raise UnsupportedModelError(
            f"model type {model_type!r} does not support task {task!r}; it supports {', '.join(spec.tasks)}",
            hint="pass a supported --task",
        )
    return spec


def infer_task(model_dir: Path, config: Mapping[str, Any]) -> str:
    """The task implied by a model directory (``--task`` omitted).

    A classification head in ``architectures`` wins -- text-ranking where
    sentence-transformers saved it as a one-logit CrossEncoder (a reranker),
    else the head's task; sentence-transformers files or a bare encoder mean
    feature-extraction (what ``SentenceTransformer(model_dir)`` would do with it).
    Other rerankers (bge-reranker) carry no such mark: pass ``--task text-ranking``.
    """
    architectures = [str(a) for a in config.get("architectures") or []]
    for suffix, task in _ARCHITECTURE_TASKS[:2]:
        if any(a.endswith(suffix) for a in architectures):
            return TEXT_RANKING.name if task == TEXT_CLASSIFICATION.name and _is_cross_encoder(config) else task
    if any((model_dir / name).is_file() for name in SENTENCE_TRANSFORMERS_FILES):
        return FEATURE_EXTRACTION.name
    for suffix, task in _ARCHITECTURE_TASKS[2:]:
        if any(a.endswith(suffix) for a in architectures):
            return task
    raise UnsupportedModelError(
        f"cannot infer the task from architectures {architectures or '(none)'}",
        hint=f"pass --task (one of: {', '.join(TASKS)})",
    )
