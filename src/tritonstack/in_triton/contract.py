"""The tensor contract between ``export``, the served models and the SDK.

Kept free of heavy imports: the client SDK (base install) reads it.

A repository written by ``tritonstack export --name NAME`` holds three models:

* ``NAME_encoder`` -- ``platform: "onnxruntime_onnx"``; inputs ``input_ids``,
  ``attention_mask`` (and ``token_type_ids`` where the architecture has them),
  INT64 ``[-1]`` (the sequence axis; batch is Triton's ``max_batch_size``).
  Output: ``sentence_embedding`` FP32 ``[hidden]`` for feature-extraction
  (pooling and normalisation are part of the graph), ``logits`` FP32
  ``[num_labels]`` for text-classification, ``logits`` FP32 ``[-1, num_labels]``
  for token-classification.
* ``NAME_tokenizer`` -- Python backend, ``TEXT`` -> the encoder's inputs, padded
  to the longest text of each batch.
* ``NAME_postprocess`` -- classification tasks only, Python backend: logits ->
  label and score (``TEXT`` + logits -> entities for token-classification).
* ``NAME`` -- the text-in model, an ensemble of the above: ``TEXT`` BYTES
  ``[1]`` per row -> the task's result (below).

In the ``fused`` layout (CPU only, ``export --layout fused`` or chosen by
``tune``) the ensemble ``NAME`` has one step instead, ``NAME_fused``: a Python
model that tokenizes, runs the ONNX file of ``NAME_encoder`` of its own release
in its own process and post-processes (``in_triton/models/text_model.py``).

Every export of NAME is a release, numbered by its version folder. Each served
release V also has its own text-in ensemble ``NAME_vV`` whose steps run version
V of each step (``repository/releases.py``, ``docs/releases.md``); ``NAME`` runs
the stable release and reports its number as the model version.
"""

from __future__ import annotations

TEXT_INPUT = "TEXT"

# feature-extraction
EMBEDDING_OUTPUT = "EMBEDDING"  # FP32 [hidden], L2-normalised where the model's config says so

# text-classification
LABEL_OUTPUT = "LABEL"  # BYTES [1], the label name
SCORE_OUTPUT = "SCORE"  # FP32 [1], softmax probability of that label

# token-classification
ENTITIES_OUTPUT = "ENTITIES"  # BYTES [1], JSON list of {token, label, score, start, end}

ENCODER_SUFFIX = "_encoder"
TOKENIZER_SUFFIX = "_tokenizer"
POSTPROCESS_SUFFIX = "_postprocess"
FUSED_SUFFIX = "_fused"

# How the text-in ensemble NAME runs a text: tokenizer -> encoder [-> postprocess], or one fused Python step.
ENSEMBLE_LAYOUT = "ensemble"
FUSED_LAYOUT = "fused"
LAYOUTS = (ENSEMBLE_LAYOUT, FUSED_LAYOUT)

# Parameters of NAME_encoder that say how its ONNX file was made (the benchmark labels its figures with them).
PRECISION_PARAMETER = "precision"  # fp32 | fp16 | int8
RECIPE_PARAMETER = "recipe"  # the export candidate that won: fp32, fp32_optimized, an int8 recipe, fp16_optimized
# Rows per ONNX Runtime call of NAME_encoder (0 or absent: no limit). Export writes 1 for dynamic-int8 encoders,
# whose activation scale spans a call: one row per call gives each text its own scale, so a text's vector does
# not depend on the texts it was batched with. `tritonstack tune` searches it for the others.
MAX_ROWS_PER_CALL_PARAMETER = "max_rows_per_call"

# Parameters of a per-release text-in ensemble NAME_vV: the text-in model it is a release of, and V.
RELEASE_OF_PARAMETER = "release_of"
RELEASE_PARAMETER = "release"

TASKS = ("feature-extraction", "text-classification", "token-classification")

OUTPUTS_BY_TASK: dict[str, tuple[str, ...]] = {
    "feature-extraction": (EMBEDDING_OUTPUT,),
    "text-classification": (LABEL_OUTPUT, SCORE_OUTPUT),
    "token-classification": (ENTITIES_OUTPUT,),
}


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
