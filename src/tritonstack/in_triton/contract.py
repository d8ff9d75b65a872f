"""The tensor contract between ``export``, the served models and the SDK.

Kept free of heavy imports: the client SDK (base install) reads it.

A repository written by ``tritonstack export --name NAME`` holds three models:

* ``NAME_encoder`` -- ``platform: "onnxruntime_onnx"``; inputs ``input_ids``,
  ``attention_mask`` (and ``token_type_ids`` where the architecture has them),
  INT64 ``[-1]`` (the sequence axis; batch is Triton's ``max_batch_size``).
  Output: ``sentence_embedding`` FP32 ``[hidden]`` for feature-extraction
  (pooling and normalisation are part of the graph), ``logits`` FP32
  ``[num_labels]`` for text-classification, ``logits`` FP32 ``[-1, num_labels]``
  for token-classification, ``logits`` FP32 ``[1]`` for text-ranking (a
  cross-encoder's one relevance logit per pair).
* ``NAME_tokenizer`` -- Python backend, ``TEXT`` -> the encoder's inputs, padded
  to the longest text of each batch. A pair task (text-ranking) takes ``TEXT_PAIR``
  as well: row i is the pair (``TEXT[i]``, ``TEXT_PAIR[i]``), tokenized with the
  model's own pair template, only the second text truncated.
* ``NAME_postprocess`` -- classification tasks only, Python backend: logits ->
  label and score (``TEXT`` + logits -> entities for token-classification).
* ``NAME`` -- the text-in model, an ensemble of the above: ``TEXT`` BYTES
  ``[1]`` per row (and ``TEXT_PAIR`` for a pair task) -> the task's result (below),
  and ``TOKENS`` INT32 ``[2]`` per row (``TOKENS_OUTPUT``): the tokens the model
  ran for the row, and whether the row was cut to ``max_sequence_length``.
  ``NAME_tokenizer`` produces it (the ensemble maps it to its own output).

In the ``fused`` layout (CPU only, ``export --layout fused`` or chosen by
``tune``) the ensemble ``NAME`` has one step instead, ``NAME_fused``: a Python
model that tokenizes, runs the ONNX file of ``NAME_encoder`` of its own release
in its own process and post-processes (``in_triton/models/text_model.py``).

Every export of NAME is a release, numbered by its version folder. Each served
release V also has its own text-in ensemble ``NAME_vV`` whose steps run version
V of each step (``repository/releases.py``, ``docs/releases.md``); ``NAME`` runs
the stable release and reports its number as the model version.

This module runs on both sides: the package imports it (``export``, the SDK,
``validate``), and ``export`` and the embedded server copy it beside each
Python model's ``model.py`` (``in_triton/manifest.py``), which loads it by path.
So it imports the standard library only, and every name the writer and the
served models agree on -- roles, parameter keys and their defaults, tensor
names -- is spelled here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TEXT_INPUT = "TEXT"
# A pair task's second text per row (text-ranking: the document; TEXT holds the query, repeated on every row).
TEXT_PAIR_INPUT = "TEXT_PAIR"

# feature-extraction
EMBEDDING_OUTPUT = "EMBEDDING"  # FP32 [hidden], L2-normalised where the model's config says so

# text-classification
LABEL_OUTPUT = "LABEL"  # BYTES [1], the label name
SCORE_OUTPUT = "SCORE"  # FP32 [1], softmax probability of that label

# text-ranking: SCORE alone, FP32 [1] per (query, document) row -- the model's raw relevance logit, before any
# activation. sentence-transformers' CrossEncoder.predict applies the activation its config names: Identity for
# the ms-marco cross-encoders (the same number), Sigmoid where none is named (bge-reranker); sigmoid(SCORE) is
# the relevance in [0, 1] that Cohere's and TEI's rerank APIs report. Raw, because a sigmoid in float32 saturates
# and ties the best documents at 1.0 where their logits still differ; either orders the documents alike.

# token-classification
ENTITIES_OUTPUT = "ENTITIES"  # BYTES [1], JSON list of {token, label, score, start, end}

# Every task, beside its outputs: INT32 [2] per row, [tokens the model ran for the row including the special
# tokens, 1 if the row was cut to max_sequence_length else 0]; for a pair task a row is the (query, document)
# pair. Produced by the step that tokenizes (NAME_tokenizer, NAME_fused; the bench's floor step answers zeros),
# so that a caller (the gateway's `usage`) reports the tokens the model really ran. Not in Task.outputs: a
# repository exported before it keeps its task, and a caller asks for it only where the model lists it
# (the SDK's usage=).
TOKENS_OUTPUT = "TOKENS"
TOKEN_COUNT, TOKENS_CUT = 0, 1  # the columns of TOKENS

ENCODER_SUFFIX = "_encoder"
TOKENIZER_SUFFIX = "_tokenizer"
POSTPROCESS_SUFFIX = "_postprocess"
FUSED_SUFFIX = "_fused"

# How the text-in ensemble NAME runs a text: tokenizer -> encoder [-> postprocess], or one fused Python step.
ENSEMBLE_LAYOUT = "ensemble"
FUSED_LAYOUT = "fused"
LAYOUTS = (ENSEMBLE_LAYOUT, FUSED_LAYOUT)

# The role of a Python model of the text-in model (its ROLE_PARAMETER): which step of in_triton/models/text_model.py.
TOKENIZER_ROLE = "tokenizer"  # NAME_tokenizer: TEXT -> the encoder's inputs
POSTPROCESS_ROLE = "postprocess"  # NAME_postprocess: the encoder's output -> the task's outputs
FUSED_ROLE = "text-in"  # NAME_fused: TEXT -> the task's outputs, the encoder run in its own process
# bench's serving floor only (bench/floor.py): the fused step's inputs and outputs answered with constants, no
# model work, so that bench measures the serving path alone through the same layout
FLOOR_ROLE = "serving-floor"
TEXT_ROLES = (TOKENIZER_ROLE, POSTPROCESS_ROLE, FUSED_ROLE, FLOOR_ROLE)

# Parameters of those Python models (string values, as every Triton parameter).
ROLE_PARAMETER = "role"  # one of TEXT_ROLES
TASK_PARAMETER = "task"  # a task name (TASKS); the text-in ensemble carries it too
MAX_SEQUENCE_LENGTH_PARAMETER = "max_sequence_length"  # tokens kept of a text
ENCODER_MODEL_PARAMETER = "encoder_model"  # NAME_encoder
ENCODER_INPUTS_PARAMETER = "encoder_inputs"  # its input names, comma-separated
ENCODER_OUTPUT_PARAMETER = "encoder_output"  # its output name
LABELS_PARAMETER = "labels"  # JSON list of label names, index = class id; "[]" where the task has none
# The fused step only: the encoder's file it runs, in NAME_encoder/<its own version>/.
ENCODER_FILE_PARAMETER = "encoder_file"
DEFAULT_ENCODER_FILE = "model.onnx"  # Triton's default file name of an ONNX model

# Parameters of NAME_encoder that say how its ONNX file was made (the benchmark labels its figures with them).
PRECISION_PARAMETER = "precision"  # fp32 | fp16 | int8
RECIPE_PARAMETER = "recipe"  # the export candidate that won: fp32, fp32_optimized, an int8 recipe, fp16_optimized
# Rows per ONNX Runtime call of NAME_encoder (0 or absent: no limit). Export writes 1 for dynamic-int8 encoders,
# whose activation scale spans a call: one row per call gives each text its own scale, so a text's vector does
# not depend on the texts it was batched with. `tritonstack tune` searches it for the others.
MAX_ROWS_PER_CALL_PARAMETER = "max_rows_per_call"
# The other ONNX Runtime knobs of a model that runs the encoder (NAME_encoder in the embedded onnxruntime backend,
# NAME_fused); EncoderKnobs reads them all, with their defaults.
MAX_PADDING_WASTE_PARAMETER = "max_padding_waste"  # padding a length group may carry, x its real tokens
DEFAULT_MAX_PADDING_WASTE = 0.25
CPU_TURNS_PARAMETER = "cpu_turns"  # "1": CPU instances that outnumber the process's CPUs take turns on them
# ONNX Runtime's threads per instance; the NGC image's native backend reads these two as well. 0: intra-op, the
# CPUs the process may run on shared among the config's CPU instances; inter-op, ONNX Runtime's default.
INTRA_OP_THREADS_PARAMETER = "intra_op_thread_count"
INTER_OP_THREADS_PARAMETER = "inter_op_thread_count"

# Load shedding without a Triton queue policy (any policy stalls Triton 2.51's batcher up to 500 ms: docs/export.md).
# The SDK stamps every request with SENT_AT_PARAMETER (a request parameter: its wall-clock send time, integer
# microseconds since the Unix epoch); a Python step answers a request that queued longer than its config's
# QUEUE_BUDGET_MS_PARAMETER (absent or "0": no budget) UNAVAILABLE at once, without computing it, with a message
# that starts with SHED_MESSAGE, which the SDK maps to OverloadedError. Requests without the stamp (raw
# tritonclient callers) are never shed by age; their client's deadline still cancels them.
SENT_AT_PARAMETER = "tritonstack_sent_at_us"
QUEUE_BUDGET_MS_PARAMETER = "queue_budget_ms"
DEFAULT_QUEUE_BUDGET_MS = 500  # half the shipped SLO's p99 of 1 s (loadtest/slo.yaml), for the queueing of all steps
SHED_MESSAGE = "shed by the model: queued past its budget"
# Parameters of a per-release text-in ensemble NAME_vV: the text-in model it is a release of, and V.
RELEASE_OF_PARAMETER = "release_of"
RELEASE_PARAMETER = "release"


@dataclass(frozen=True)
class Task:
    """What a task (a Hugging Face pipeline tag) means to every side: export, the served models, SDK, load test.

    Code that branches on the task reads these fields instead of comparing names: a new task is a new row.
    """

    name: str  # the pipeline tag, as ``export --task`` takes it
    outputs: tuple[str, ...]  # the text-in model's outputs
    encoder_output: str  # the ONNX graph's output
    sdk_method: str | None  # the SDK call for it (``Client.embed``, ``Client.classify``); None: no SDK call
    postprocess: bool  # a postprocess step turns the encoder's output into the answer (label, entities)
    token_level: bool  # one result per token: the encoder's output keeps the sequence axis
    # The answer is a vector: export appends pooling to the encoder (export/pooling.py) and parity compares
    # vectors by cosine; otherwise the encoder's output is logits over the model's labels.
    embedding: bool
    gate_metric: str  # the export's default accuracy gate (export/gates.py GateMetric)
    # The text-in model takes TEXT_PAIR besides TEXT: one row is a pair of texts, tokenized with the model's pair
    # template and truncated on the second text only (a reranker's query is never cut).
    pair: bool = False
    # The answer is one score per row, judged by the order it puts each query's documents in: parity compares
    # the scores and the per-query rankings (export/parity.py), not labels.
    ranking: bool = False


FEATURE_EXTRACTION = Task(
    name="feature-extraction",
    outputs=(EMBEDDING_OUTPUT,),
    encoder_output="sentence_embedding",
    sdk_method="embed",
    postprocess=False,
    token_level=False,
    embedding=True,
    gate_metric="min_cosine",
)
TEXT_CLASSIFICATION = Task(
    name="text-classification",
    outputs=(LABEL_OUTPUT, SCORE_OUTPUT),
    encoder_output="logits",
    sdk_method="classify",
    postprocess=True,
    token_level=False,
    embedding=False,
    gate_metric="label_agreement",
)
TOKEN_CLASSIFICATION = Task(
    name="token-classification",
    outputs=(ENTITIES_OUTPUT,),
    encoder_output="logits",
    sdk_method=None,
    postprocess=True,
    token_level=True,
    embedding=False,
    gate_metric="label_agreement",
)
# A cross-encoder: a sequence-classification model over (query, document) pairs, one relevance logit per pair.
TEXT_RANKING = Task(
    name="text-ranking",
    outputs=(SCORE_OUTPUT,),
    encoder_output="logits",
    sdk_method="rerank",
    postprocess=False,  # the encoder's one logit is the answer
    token_level=False,
    embedding=False,
    gate_metric="rank_spearman",
    pair=True,
    ranking=True,
)
TASKS_BY_NAME: dict[str, Task] = {
    t.name: t for t in (FEATURE_EXTRACTION, TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION, TEXT_RANKING)
}
TASKS = tuple(TASKS_BY_NAME)
# Tasks the SDK has a call for, so the load test, tune and bench can drive them.
SDK_TASKS = tuple(name for name, t in TASKS_BY_NAME.items() if t.sdk_method)
OUTPUTS_BY_TASK: dict[str, tuple[str, ...]] = {name: t.outputs for name, t in TASKS_BY_NAME.items()}


def parameters(config: Mapping[str, object]) -> dict[str, str]:
    """The parameters of ``config`` (a model config as JSON, as Triton hands it to a Python model): name -> value."""
    found = config.get("parameters") or {}
    assert isinstance(found, Mapping)
    return {name: value["string_value"] for name, value in found.items()}


@dataclass(frozen=True)
class EncoderKnobs:
    """The ONNX Runtime knobs of a model that runs the encoder, as its config's parameters set them."""

    max_rows_per_call: int = 0  # 0: no limit
    max_padding_waste: float = DEFAULT_MAX_PADDING_WASTE
    cpu_turns: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> EncoderKnobs:
        """The knobs of ``params`` (parameter name -> string value); an absent one takes its default."""
        return cls(
            max_rows_per_call=int(params.get(MAX_ROWS_PER_CALL_PARAMETER, "0")),
            max_padding_waste=float(params.get(MAX_PADDING_WASTE_PARAMETER, str(DEFAULT_MAX_PADDING_WASTE))),
            cpu_turns=params.get(CPU_TURNS_PARAMETER, "0") == "1",
            intra_op_threads=int(params.get(INTRA_OP_THREADS_PARAMETER, "0")),
            inter_op_threads=int(params.get(INTER_OP_THREADS_PARAMETER, "0")),
        )


def task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return TASKS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None


def text_inputs(task: Task) -> tuple[str, ...]:
    """The text-in model's inputs for ``task``: ``TEXT``, and ``TEXT_PAIR`` for a pair task."""
    return (TEXT_INPUT, TEXT_PAIR_INPUT) if task.pair else (TEXT_INPUT,)


def encoder_name(name: str) -> str:
    return name + ENCODER_SUFFIX


def tokenizer_name(name: str) -> str:
    return name + TOKENIZER_SUFFIX


def postprocess_name(name: str) -> str:
    return name + POSTPROCESS_SUFFIX


def fused_name(name: str) -> str:
    return name + FUSED_SUFFIX


def release_name(name: str, release: int) -> str:
    """The text-in model that runs release ``release`` of ``name`` end to end (Triton names allow no ``@``)."""
    return f"{name}_v{release}"
