"""``usage=``'s pure parts: ``Usage`` accumulating, which outputs a text call asks for, recording TOKENS."""

from __future__ import annotations

import numpy as np
import pytest
from test_client_core import model_info

from tritonstack.client import ModelInfo, TritonServerError, Usage, _core
from tritonstack.in_triton import contract

TEXT = ("TEXT", "BYTES", [1])
EMBEDDING = ("EMBEDDING", "FP32", [8])
TOKENS = ("TOKENS", "INT32", [2])


def _embedder(*outputs: tuple[str, str, list[int]]) -> ModelInfo:
    return model_info("m", [TEXT], [EMBEDDING, *outputs])


def test_tokens_are_asked_for_only_with_usage_and_where_the_model_lists_them() -> None:
    task = contract.FEATURE_EXTRACTION
    counting, older = _embedder(TOKENS), _embedder()
    assert counting.task == older.task == "feature-extraction"  # TOKENS is not a task output
    assert _core.text_outputs(task, counting, Usage()) == ("EMBEDDING", "TOKENS")
    assert _core.text_outputs(task, counting, None) == ("EMBEDDING",)  # usage=None: the call costs what it did
    assert _core.text_outputs(task, older, Usage()) == ("EMBEDDING",)


def test_a_ranking_models_task_stays_with_tokens_among_its_outputs() -> None:
    pair = ("TEXT_PAIR", "BYTES", [1])
    ranker = model_info("r", [TEXT, pair], [("SCORE", "FP32", [1]), TOKENS])
    classifier = model_info("c", [TEXT], [("LABEL", "BYTES", [1]), ("SCORE", "FP32", [1]), TOKENS])
    assert (ranker.task, classifier.task) == ("text-ranking", "text-classification")


def test_usage_records_each_row_in_order_and_accumulates_over_calls() -> None:
    usage = Usage()
    assert (usage.counted, usage.tokens, usage.per_row.tolist(), usage.calls) == (False, 0, [], 0)
    outputs = {"EMBEDDING": np.zeros((3, 8), np.float32), "TOKENS": np.array([[5, 0], [12, 1], [7, 0]], np.int32)}
    _core.record_usage(usage, outputs, 3, "m")
    assert usage.counted and usage.tokens == 24
    assert usage.per_row.dtype == np.int64 and usage.per_row.tolist() == [5, 12, 7]
    assert usage.truncated.dtype == np.bool_ and usage.truncated.tolist() == [False, True, False]
    _core.record_usage(usage, {"TOKENS": np.array([[4, 0]], np.int32)}, 1, "m")
    assert (usage.counted, usage.tokens, usage.per_row.tolist(), usage.calls) == (True, 28, [5, 12, 7, 4], 2)
    assert usage.truncated.tolist() == [False, True, False, False]


def test_a_call_to_a_model_without_tokens_leaves_usage_not_counted() -> None:
    usage = Usage()
    _core.record_usage(usage, {"EMBEDDING": np.zeros((2, 8), np.float32)}, 2, "m")
    assert (usage.counted, usage.tokens, usage.per_row.tolist(), usage.calls) == (False, 0, [], 1)
    # a later counted call adds its rows, but the total no longer covers every call
    _core.record_usage(usage, {"TOKENS": np.array([[4, 0]], np.int32)}, 1, "m")
    assert (usage.counted, usage.tokens, usage.per_row.tolist()) == (False, 4, [4])


def test_no_usage_records_nothing_and_a_wrong_shape_is_a_server_error() -> None:
    _core.record_usage(None, {"TOKENS": np.zeros((1, 3), np.int32)}, 1, "m")  # not even looked at
    usage = Usage()
    with pytest.raises(TritonServerError, match=r"expected TOKENS of shape \[2, 2\], got \[1, 2\]"):
        _core.record_usage(usage, {"TOKENS": np.zeros((1, 2), np.int32)}, 2, "m")
    assert usage.calls == 0


def test_split_requests_keep_the_rows_in_the_order_sent() -> None:
    chunks = [{"TOKENS": np.array([[i, 0], [i + 1, 0]], np.int32)} for i in (10, 20, 30)]
    usage = Usage()
    _core.record_usage(usage, _core.merge_chunks(chunks), 6, "m")
    assert usage.per_row.tolist() == [10, 11, 20, 21, 30, 31]
