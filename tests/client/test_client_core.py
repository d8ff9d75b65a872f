"""The pure core shared by both clients: validation, batching, request building, parsing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2, service_pb2

from tritonstack.client import Classification, InvalidInputError, ModelInfo, TritonServerError, _core
from tritonstack.client._models import parse_model_info
from tritonstack.in_triton import contract


def model_info(
    name: str,
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    max_batch_size: int = 4,
    optional: tuple[str, ...] = (),
) -> ModelInfo:
    """A ModelInfo parsed from the protobufs Triton sends (metadata shapes carry the batch axis)."""
    batch = [-1] if max_batch_size else []
    metadata = service_pb2.ModelMetadataResponse(
        name=name,
        versions=["1"],
        platform="python",
        inputs=[
            service_pb2.ModelMetadataResponse.TensorMetadata(name=n, datatype=d, shape=batch + s) for n, d, s in inputs
        ],
        outputs=[
            service_pb2.ModelMetadataResponse.TensorMetadata(name=n, datatype=d, shape=batch + s) for n, d, s in outputs
        ],
    )
    config = service_pb2.ModelConfigResponse(
        config=model_config_pb2.ModelConfig(
            name=name,
            max_batch_size=max_batch_size,
            input=[model_config_pb2.ModelInput(name=n, optional=n in optional) for n, _, _ in inputs],
        )
    )
    return parse_model_info(metadata, config)


TEXT_EMBEDDER = model_info("emb", [("TEXT", "BYTES", [1])], [("EMBEDDING", "FP32", [8])], max_batch_size=4)
CLASSIFIER = model_info("cls", [("TEXT", "BYTES", [1])], [("LABEL", "BYTES", [1]), ("SCORE", "FP32", [1])])
ENCODER = model_info(
    "enc",
    [("input_ids", "INT64", [-1]), ("attention_mask", "INT64", [-1]), ("scale", "FP32", [2])],
    [("logits", "FP32", [3])],
    optional=("scale",),
)


def test_model_info_strips_the_batch_axis_and_knows_the_task() -> None:
    assert TEXT_EMBEDDER.input("TEXT") is not None and TEXT_EMBEDDER.inputs[0].shape == (1,)
    assert TEXT_EMBEDDER.outputs[0].shape == (8,)
    assert (TEXT_EMBEDDER.task, CLASSIFIER.task, ENCODER.task) == ("feature-extraction", "text-classification", None)
    assert ENCODER.inputs[2].optional and not ENCODER.inputs[0].optional
    flat = model_info("flat", [("x", "FP32", [3])], [("y", "FP32", [3])], max_batch_size=0)
    assert flat.inputs[0].shape == (3,) and not flat.batches


# --- texts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("one string", "single string"),
        (b"bytes", "single string"),
        ([], "empty"),
        (None, "list of strings"),
        (42, "list of strings"),
        (["ok", 3], r"texts\[1\] is int"),
        (["ok", None], r"texts\[1\] is NoneType"),
        (["ok", b"bytes"], r"texts\[1\] is bytes"),
        ([""], "empty"),
        (["  \n\t"], "whitespace"),
        (["\ud800 lone surrogate"], "not valid Unicode"),
        (["é" * 6], "12 bytes"),  # the limit counts UTF-8 bytes, not characters
    ],
)
def test_bad_texts_are_refused_with_a_reason(texts: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        _core.encode_texts(texts, max_text_bytes=10, model="m")
    assert info.value.model == "m" and info.value.code is None


def test_texts_are_utf8_and_any_iterable_of_str_is_accepted() -> None:
    assert _core.encode_texts(iter(["a", "é"]), max_text_bytes=None, model="m") == [b"a", "é".encode()]
    assert _core.encode_texts(np.array(["x", "y"]), max_text_bytes=10, model="m") == [b"x", b"y"]
    assert _core.encode_texts(["x" * 10_000], max_text_bytes=None, model="m")[0] == b"x" * 10_000


def test_texts_are_split_at_the_batch_limit_in_order() -> None:
    encoded = [f"t{i}".encode() for i in range(10)]
    chunks = _core.text_chunks(encoded, 4)
    assert [chunk["TEXT"].shape for chunk in chunks] == [(4, 1), (4, 1), (2, 1)]
    assert all(chunk["TEXT"].dtype == np.object_ for chunk in chunks)
    assert _core.merge_chunks(chunks)["TEXT"][:, 0].tolist() == encoded


def test_text_methods_need_the_right_task() -> None:
    _core.require_task(TEXT_EMBEDDER, contract.FEATURE_EXTRACTION)
    with pytest.raises(InvalidInputError, match="classify") as info:
        _core.require_task(TEXT_EMBEDDER, contract.TEXT_CLASSIFICATION)
    assert info.value.hint == "use embed()"
    with pytest.raises(InvalidInputError, match="not a tritonstack text model"):
        _core.require_task(ENCODER, contract.FEATURE_EXTRACTION)


# --- tensors ---------------------------------------------------------------------------------

IDS = np.ones((2, 5), np.int64)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([IDS], "mapping"),
        ({}, "empty"),
        ({"input_ids": IDS, "attention_mask": IDS, "nope": IDS}, "unknown input 'nope'"),
        ({"input_ids": IDS}, "missing input 'attention_mask'"),
        ({"input_ids": IDS.tolist(), "attention_mask": IDS}, "numpy array, got list"),
        ({"input_ids": IDS.astype(np.int32), "attention_mask": IDS}, "int32 .INT32., the model takes INT64"),
        ({"input_ids": IDS.astype(np.float32), "attention_mask": IDS}, "the model takes INT64"),
        ({"input_ids": IDS[0], "attention_mask": IDS}, "rank 1, the model takes rank 2"),
        ({"input_ids": IDS[None], "attention_mask": IDS}, "rank 3"),
        ({"input_ids": IDS[:0], "attention_mask": IDS[:0]}, "empty batch"),
        ({"input_ids": np.ones((5, 3), np.int64), "attention_mask": np.ones((5, 3), np.int64)}, "max_batch_size 4"),
        ({"input_ids": IDS, "attention_mask": IDS[:1]}, "disagree on the batch size"),
        ({"input_ids": IDS, "attention_mask": IDS, "scale": np.ones((2, 3), np.float32)}, "has 3 on axis 1"),
        ({"input_ids": IDS, "attention_mask": IDS, "scale": np.array([[1, np.nan]] * 2, np.float32)}, "NaN"),
    ],
)
def test_bad_tensors_are_refused_before_sending(inputs: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _core.check_inputs(inputs, ENCODER)


def test_good_tensors_pass_and_optional_inputs_may_be_left_out() -> None:
    checked = _core.check_inputs({"input_ids": IDS, "attention_mask": IDS}, ENCODER)
    assert set(checked) == {"input_ids", "attention_mask"}
    with_scale = {"input_ids": IDS, "attention_mask": IDS, "scale": np.ones((2, 2), np.float32)}
    assert set(_core.check_inputs(with_scale, ENCODER)) == set(with_scale)


def test_bytes_tensors_take_str_or_bytes_objects_only() -> None:
    ok = _core.check_inputs({"TEXT": np.array([["a"], [b"b"]], dtype=np.object_)}, TEXT_EMBEDDER)
    assert ok["TEXT"].shape == (2, 1)
    unicode = _core.check_inputs({"TEXT": np.array([["héllo"]])}, TEXT_EMBEDDER)["TEXT"]
    assert unicode.dtype == np.object_ and unicode[0, 0] == "héllo".encode()
    with pytest.raises(InvalidInputError, match=r"holds a int at \[1, 0\]"):
        _core.check_inputs({"TEXT": np.array([["a"], [7]], dtype=np.object_)}, TEXT_EMBEDDER)
    with pytest.raises(InvalidInputError, match="takes BYTES"):
        _core.check_inputs({"TEXT": np.ones((1, 1), np.float32)}, TEXT_EMBEDDER)


def test_requested_outputs_must_exist() -> None:
    assert _core.check_outputs(None, CLASSIFIER) == ("LABEL", "SCORE")
    assert _core.check_outputs("SCORE", CLASSIFIER) == ("SCORE",)
    with pytest.raises(InvalidInputError, match="unknown output 'PROBS'"):
        _core.check_outputs(["PROBS"], CLASSIFIER)


def test_build_inputs_serialises_with_the_model_datatype() -> None:
    inputs = _core.build_inputs(_core.text_chunks([b"a", b"bc"], 4)[0], TEXT_EMBEDDER)
    tensor = inputs[0]._get_tensor()
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("TEXT", "BYTES", [2, 1])
    # Triton's BYTES wire format: 4-byte little-endian length before each element.
    assert inputs[0]._get_content() == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"


# --- responses -------------------------------------------------------------------------------


def test_chunks_are_merged_in_order() -> None:
    chunks = [{"EMBEDDING": np.full((2, 3), i, np.float32)} for i in range(3)]
    merged = _core.merge_chunks(chunks)["EMBEDDING"]
    assert merged.shape == (6, 3) and merged[:, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_embeddings_and_classifications_are_parsed_and_counted() -> None:
    embedding = _core.embeddings_from({contract.EMBEDDING_OUTPUT: np.ones((2, 8), np.float64)}, 2, "m")
    assert embedding.dtype == np.float32 and embedding.shape == (2, 8)
    with pytest.raises(TritonServerError, match=r"\[3, hidden\]"):
        _core.embeddings_from({contract.EMBEDDING_OUTPUT: np.ones((2, 8), np.float32)}, 3, "m")
    outputs = {
        contract.LABEL_OUTPUT: np.array([[b"POSITIVE"], [b"NEGATIVE"]], dtype=np.object_),
        contract.SCORE_OUTPUT: np.array([[0.75], [0.5]], np.float32),
    }
    assert _core.classifications_from(outputs, 2, "m") == [
        Classification("POSITIVE", 0.75),
        Classification("NEGATIVE", 0.5),
    ]
    with pytest.raises(TritonServerError):
        _core.classifications_from(outputs, 3, "m")


def test_request_ids_are_unique_and_chunks_are_numbered() -> None:
    assert len({_core.new_request_id() for _ in range(100)}) == 100
    assert _core.chunk_request_id("abc", 0, 1) == "abc"
    assert _core.chunk_request_id("abc", 2, 3) == "abc.2"


@pytest.mark.parametrize(("version", "expected"), [(None, ""), (2, "2"), ("3", "3")])
def test_versions_become_triton_strings(version: Any, expected: str) -> None:
    assert _core.version_string(version) == expected


def test_a_bad_version_type_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        _core.version_string(1.5)  # type: ignore[arg-type]


def test_the_remaining_deadline_goes_to_triton_in_whole_microseconds() -> None:
    assert _core.triton_timeout_us(None) is None  # no deadline: the queue policy's own timeout
    assert _core.triton_timeout_us(0.2) == 200_000
    assert _core.triton_timeout_us(2.5e-7) == 1  # never 0, which Triton reads as "no timeout"
