"""HF -> ONNX: tiny bert/distilbert/roberta built locally, pooling fused, tasks inferred, bad input typed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tinymodels
from tritonstack.export.errors import ExportError, UnsupportedModelError
from tritonstack.export.gates import Gate
from tritonstack.export.onnx_export import export_onnx
from tritonstack.export.parity import compare, compute_reference, run_onnx, tokenize_batches
from tritonstack.export.pooling import PoolingSpec, read_pooling_spec
from tritonstack.export.registry import REGISTRY, infer_task, lookup
from tritonstack.export.texts import GATE, builtin_split

TEXTS = builtin_split(GATE).texts[:24]


def _write_st_files(model_dir: Path, pooling: dict[str, bool], *, normalize: bool, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (model_dir / "2_Normalize").mkdir(exist_ok=True)
    (model_dir / "modules.json").write_text(json.dumps(modules))
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    (model_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )


def _onnx_outputs(export, texts):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    session = ort.InferenceSession(str(export.onnx_path), providers=["CPUExecutionProvider"])
    batches = tokenize_batches(export.tokenizer_dir, texts, export.max_sequence_length, export.input_names)
    return session, batches


@pytest.mark.parametrize(
    ("pooling", "normalize", "modes"),
    [
        ({"pooling_mode_mean_tokens": True}, True, ("mean",)),
        ({"pooling_mode_cls_token": True}, False, ("cls",)),
        ({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": True}, True, ("max", "mean")),
    ],
)
def test_bert_embedding_matches_sentence_transformers(
    tmp_path: Path, pooling: dict[str, bool], normalize: bool, modes: tuple[str, ...]
) -> None:
    model_dir = tinymodels.build(tmp_path / "st", "bert", "feature-extraction")
    _write_st_files(model_dir, pooling, normalize=normalize, max_seq_length=48)

    export = export_onnx(model_dir, None, tmp_path / "out")

    assert export.task == "feature-extraction"
    assert export.pooling == PoolingSpec(modes, normalize, 48, export.pooling.source if export.pooling else "")
    assert export.max_sequence_length == 48
    assert export.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert (export.output_name, export.output_dim) == ("sentence_embedding", 32 * len(modes))
    assert (export.tokenizer_dir / "tokenizer.json").is_file()
    session, batches = _onnx_outputs(export, TEXTS)
    output = run_onnx(session, batches, token_level=False)
    reference = compute_reference(export, TEXTS)  # SentenceTransformer(model_dir).encode
    parity = compare(reference, output, gate=Gate(0.99))
    assert parity.value > 0.9999, parity
    assert parity.details["max_abs_diff"] < 1e-4
    norms = np.linalg.norm(output, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_onnx_graph_contract(tmp_path: Path) -> None:
    import onnx

    model_dir = tinymodels.build(tmp_path / "plain", "bert", "feature-extraction")
    export = export_onnx(model_dir, None, tmp_path / "out")
    graph = onnx.load(str(export.onnx_path)).graph

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    for value in graph.input:
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert dims(value) == ["batch_size", "sequence_length"]
    [output] = graph.output
    assert output.name == "sentence_embedding"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims(output) == ["batch_size", 32]
    assert not (tmp_path / "out" / "optimum").exists()


def test_plain_transformers_model_gets_sentence_transformers_defaults(tmp_path: Path) -> None:
    model_dir = tinymodels.build(tmp_path / "plain", "bert", "feature-extraction")
    assert read_pooling_spec(model_dir) == PoolingSpec()  # mean, no normalisation
    export = export_onnx(model_dir, None, tmp_path / "out")
    assert export.max_sequence_length == 64  # tokenizer limit, below the 68 positions
    session, batches = _onnx_outputs(export, TEXTS)
    output = run_onnx(session, batches, token_level=False)
    assert compare(compute_reference(export, TEXTS), output, gate=Gate(0.99)).value > 0.9999


def test_distilbert_text_classification(tmp_path: Path) -> None:
    model_dir = tinymodels.build(tmp_path / "cls", "distilbert", "text-classification", seed=3)
    export = export_onnx(model_dir, None, tmp_path / "out")
    assert export.task == "text-classification"
    assert export.input_names == ("input_ids", "attention_mask")
    assert (export.output_name, export.output_dim, export.labels) == ("logits", 2, tinymodels.LABELS)
    session, batches = _onnx_outputs(export, TEXTS)
    logits = run_onnx(session, batches, token_level=False)
    assert logits.shape == (len(TEXTS), 2)
    parity = compare(compute_reference(export, TEXTS), logits, gate=Gate(0.99))
    assert parity.value == 1.0
    assert parity.details["max_abs_prob_diff"] < 1e-4


def test_roberta_token_classification(tmp_path: Path) -> None:
    model_dir = tinymodels.build(tmp_path / "tok", "roberta", "token-classification", seed=4)
    export = export_onnx(model_dir, None, tmp_path / "out")
    assert export.task == "token-classification"
    assert export.max_sequence_length == 64
    session, batches = _onnx_outputs(export, TEXTS)
    logits = run_onnx(session, batches, token_level=True)
    assert logits.ndim == 3 and logits.shape[-1] == 2
    parity = compare(compute_reference(export, TEXTS), logits, gate=Gate(0.99))
    assert parity.value == 1.0
    assert parity.details["compared"] > len(TEXTS)  # real tokens, not texts


def test_max_sequence_length_above_the_model_limit_is_refused(tmp_path: Path) -> None:
    model_dir = tinymodels.build(tmp_path / "m", "bert", "feature-extraction")
    with pytest.raises(ExportError, match="exceeds the model's limit of 64"):
        export_onnx(model_dir, None, tmp_path / "out", max_sequence_length=512)


@pytest.mark.parametrize(
    ("architectures", "st_files", "task"),
    [
        (["BertForSequenceClassification"], False, "text-classification"),
        (["RobertaForTokenClassification"], False, "token-classification"),
        (["BertModel"], False, "feature-extraction"),
        (["BertForMaskedLM"], False, "feature-extraction"),
        ([], True, "feature-extraction"),
        (["XLMRobertaForSequenceClassification"], True, "text-classification"),
    ],
)
def test_task_inference(tmp_path: Path, architectures: list[str], st_files: bool, task: str) -> None:
    if st_files:
        (tmp_path / "modules.json").write_text("[]")
    assert infer_task(tmp_path, {"architectures": architectures}) == task


def test_task_inference_without_a_hint_asks_for_task(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError) as caught:
        infer_task(tmp_path, {"architectures": ["BertForQuestionAnswering"]})
    assert "--task" in (caught.value.hint or "")


def test_unsupported_architecture_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2Model"]}))
    with pytest.raises(UnsupportedModelError) as caught:
        export_onnx(tmp_path, None, tmp_path / "out")
    message = str(caught.value)
    assert "'gpt2'" in message
    for model_type in ("bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "electra"):
        assert model_type in message
    assert not (tmp_path / "out").exists()


def test_unsupported_task_lists_supported() -> None:
    with pytest.raises(UnsupportedModelError, match="feature-extraction, text-classification, token-classification"):
        lookup("bert", "summarization")
    assert {"bert", "distilbert", "roberta"} <= set(REGISTRY)


def test_missing_path_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist") as caught:
        export_onnx(str(tmp_path / "no" / "such" / "model"), None, tmp_path / "out")
    assert caught.value.hint


def test_directory_without_config_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no config\.json"):
        export_onnx(tmp_path, None, tmp_path / "out")


def test_unknown_hub_id_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ExportError, match="neither a local directory nor a reachable hub id") as caught:
        export_onnx("no-such-org/no-such-model", None, tmp_path / "out")
    assert "HF_HUB_OFFLINE" in (caught.value.hint or "")
