"""HF model (local directory or hub id) -> fp32 ONNX with the task's output fused in.

The encoder is exported with optimum-onnx (``main_export``), dynamic axes
``batch_size`` and ``sequence_length``, int64 token inputs. Per task the graph
ends in exactly the tensor ``tritonstack.in_triton.contract`` names:

* feature-extraction: ``sentence_embedding`` FP32 [batch_size, dim] -- pooling
  and normalisation appended (see ``pooling.py``), matching ``SentenceTransformer.encode``;
* text-classification: ``logits`` FP32 [batch_size, num_labels];
* token-classification: ``logits`` FP32 [batch_size, sequence_length, num_labels];
* text-ranking: ``logits`` FP32 [batch_size, 1] -- optimum's sequence-classification
  graph of a cross-encoder, which must have exactly one label (its relevance logit).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack.export import hub
from tritonstack.export._errors import ExportError, UnsupportedModelError
from tritonstack.export._quiet import quiet
from tritonstack.export.pooling import PoolingSpec, append_pooling, read_pooling_spec
from tritonstack.export.registry import infer_task, lookup, optimum_task
from tritonstack.in_triton import contract
from tritonstack.repository.model_spec import ModelSpec

ONNX_FILE = "model.onnx"
TOKENIZER_DIR = "tokenizer"
# RoBERTa-family position ids start after the padding index, so 514 positions hold 512 tokens.
_POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert")


@dataclass(frozen=True, kw_only=True)
class OnnxExport(ModelSpec):
    """An fp32 ONNX export (its ``ModelSpec``: what the writer reads) and what the export's later steps need."""

    model_dir: Path  # the resolved local HF model directory (the PyTorch reference)
    model_type: str
    ort_model_type: str  # onnxruntime.transformers.optimizer's name for it
    hidden_size: int
    num_attention_heads: int
    pooling: PoolingSpec | None = None
    export_s: float = 0.0
    revision: str | None = None  # the hub commit exported; None: a local directory


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model)


def resolve_model(model: str | Path, revision: str | None = None) -> Path:
    """A local directory holding the model: the path itself, or the hub snapshot of a hub id at ``revision``
    (the files an export reads, ``hub.py``)."""
    path = Path(model).expanduser()
    if revision is not None and (path.exists() or isinstance(model, Path) or _looks_like_path(str(model))):
        raise ExportError(
            f"--revision {revision} names a version on the hub, but {str(model)!r} is a local path",
            hint="pass a hub id with --revision, or drop --revision",
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ExportError(f"{path} has no config.json", hint="point at a Hugging Face model directory")
        return path.resolve()
    if path.exists():
        raise ExportError(f"{path} is a file, not a model directory", hint="point at the model's directory")
    if isinstance(model, Path) or _looks_like_path(str(model)):
        raise ExportError(f"model path {str(model)!r} does not exist", hint="check the path")

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return hub.download(str(model), revision)
    except Exception as error:  # the hub raises a zoo of types (offline, 404, invalid id, network)
        hint = (
            "HF_HUB_OFFLINE is set and the model is not in the local cache: pass a local model directory "
            "or download it first on a machine with network"
            if offline
            else "check the hub id, or pass a local model directory"
        )
        raise ExportError(
            f"model {str(model)!r} is neither a local directory nor a reachable hub id ({type(error).__name__})",
            hint=hint,
        ) from error


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {model_dir / 'config.json'}: {error}") from error
    return config


def _default_max_sequence_length(model_type: str, tokenizer_max: int, max_positions: int | None) -> int:
    # What sentence-transformers does without sentence_bert_config.json: the tokenizer's
    # limit capped by the position table (minus RoBERTa's padding offset).
    limit = tokenizer_max
    if max_positions:
        if model_type in _POSITION_OFFSET_TYPES:
            max_positions -= 2
        limit = min(limit, max_positions)
    if limit > 100_000:  # tokenizer without a limit and a config without positions
        limit = 512
    return int(limit)


def export_onnx(
    model: str | Path,
    task: str | None,
    output_dir: Path,
    *,
    max_sequence_length: int | None = None,
    revision: str | None = None,
) -> OnnxExport:
    """Export ``model`` to ``output_dir/model.onnx`` (fp32, task output fused in).

    ``task=None`` infers it from the model's config (see ``registry.infer_task``).
    ``max_sequence_length`` (tokens) defaults to the model's own limit. ``revision``: of a hub id.
    """
    started = time.perf_counter()
    model_dir = resolve_model(model, revision)
    config = _read_config(model_dir)
    model_type = str(config.get("model_type", ""))
    task = task or infer_task(model_dir, config)
    spec = lookup(model_type, task)
    embedding = contract.task(task).embedding

    from transformers import AutoConfig, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise UnsupportedModelError(
            f"{model_dir.name} has no fast tokenizer (tokenizer.json); the server needs one",
            hint="save the tokenizer with a recent transformers (AutoTokenizer(...).save_pretrained)",
        )

    if contract.task(task).ranking and hf_config.num_labels != 1:  # before the minutes of the export
        raise UnsupportedModelError(
            f"{model_dir.name} has {hf_config.num_labels} labels; a text-ranking model (a cross-encoder) has one "
            "relevance logit",
            hint="export it with --task text-classification, or pass a one-logit cross-encoder",
        )

    pooling = read_pooling_spec(model_dir) if embedding else None
    model_limit = (pooling.max_seq_length if pooling else None) or _default_max_sequence_length(
        model_type, int(tokenizer.model_max_length), getattr(hf_config, "max_position_embeddings", None)
    )
    if max_sequence_length is not None and max_sequence_length > model_limit:
        raise ExportError(
            f"--max-sequence-length {max_sequence_length} exceeds the model's limit of {model_limit} tokens",
            hint=f"pass --max-sequence-length {model_limit} or less",
        )
    max_len = max_sequence_length or model_limit

    output_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = output_dir / "optimum"
    _run_main_export(model_dir, optimum_task(task), raw_dir)

    import onnx

    graph = onnx.load(str(raw_dir / ONNX_FILE))
    input_names = tuple(i.name for i in graph.graph.input)
    hidden_size = int(hf_config.hidden_size)
    labels: tuple[str, ...] = ()
    if embedding:
        assert pooling is not None
        graph = append_pooling(graph, pooling, hidden_size)
        output_dim = hidden_size * len(pooling.modes)
    else:
        id2label = {int(k): str(v) for k, v in hf_config.id2label.items()}
        labels = tuple(id2label[i] for i in sorted(id2label))
        output_dim = len(labels)
    onnx_path = output_dir / ONNX_FILE
    onnx.save(graph, str(onnx_path))
    shutil.rmtree(raw_dir, ignore_errors=True)

    tokenizer.model_max_length = max_len
    tokenizer_dir = output_dir / TOKENIZER_DIR
    tokenizer.save_pretrained(str(tokenizer_dir))

    return OnnxExport(
        model_dir=model_dir,
        onnx_path=onnx_path,
        tokenizer_dir=tokenizer_dir,
        task=task,
        model_type=model_type,
        ort_model_type=spec.ort_model_type,
        input_names=input_names,
        output_name=contract.task(task).encoder_output,
        output_dim=output_dim,
        labels=labels,
        max_sequence_length=max_len,
        hidden_size=hidden_size,
        num_attention_heads=int(hf_config.num_attention_heads),
        pooling=pooling,
        export_s=time.perf_counter() - started,
        revision=hub.commit_of(model_dir),
    )


def _run_main_export(model_dir: Path, task: str, out_dir: Path) -> None:
    from optimum.exporters.onnx import main_export

    # optimum's tracer/deprecation chatter is upstream noise for the user; our own parity
    # gate replaces its validation step (do_validation=False), on real text.
    with quiet():
        try:
            main_export(
                str(model_dir),
                output=str(out_dir),
                task=task,
                library_name="transformers",
                do_validation=False,
                local_files_only=True,
            )
        except (ValueError, KeyError, OSError) as error:
            raise ExportError(
                f"optimum could not export {model_dir.name} for {task}: {error}".splitlines()[0],
                hint="check that the model directory is complete (config, weights, tokenizer)",
            ) from error
    if not (out_dir / ONNX_FILE).is_file():
        raise ExportError(f"optimum wrote no {ONNX_FILE} for {model_dir.name}")
