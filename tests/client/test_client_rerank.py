"""rerank() in the pure core both clients share: pair requests, validation, ranking the scores; no server."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_client_core import CLASSIFIER, model_info

from tritonstack.client import Client, InvalidInputError, RerankResult, TritonServerError, _core
from tritonstack.in_triton import contract

RERANKER = model_info("rr", [("TEXT", "BYTES", [1]), ("TEXT_PAIR", "BYTES", [1])], [("SCORE", "FP32", [1])])
# A model with SCORE alone but no TEXT_PAIR is no reranker (nor a classifier: it has no LABEL).
SCORER = model_info("scorer", [("TEXT", "BYTES", [1])], [("SCORE", "FP32", [1])])


def test_a_ranking_model_is_known_by_its_score_and_its_pair_input() -> None:
    assert RERANKER.task == "text-ranking"
    assert SCORER.task is None
    assert CLASSIFIER.task == "text-classification"
    _core.require_task(RERANKER, contract.TEXT_RANKING)
    with pytest.raises(InvalidInputError, match=r"rerank\(\) needs a text-ranking model; 'cls' is text-classification"):
        _core.require_task(CLASSIFIER, contract.TEXT_RANKING)


def test_the_query_goes_on_every_row_beside_each_document_split_at_the_batch_limit() -> None:
    chunks = _core.text_chunks([b"d0", b"d1", b"d2", b"d3", b"d4"], 2, query=b"q")
    assert [len(c[contract.TEXT_INPUT]) for c in chunks] == [2, 2, 1]
    for chunk in chunks:
        assert chunk[contract.TEXT_INPUT].shape == chunk[contract.TEXT_PAIR_INPUT].shape
        assert chunk[contract.TEXT_INPUT].dtype == np.object_
        assert set(chunk[contract.TEXT_INPUT].reshape(-1).tolist()) == {b"q"}
    documents = np.concatenate([c[contract.TEXT_PAIR_INPUT] for c in chunks]).reshape(-1).tolist()
    assert documents == [b"d0", b"d1", b"d2", b"d3", b"d4"]
    assert list(_core.text_chunks([b"t"], 2)[0]) == [contract.TEXT_INPUT]  # single texts as before


def test_results_are_best_first_ties_in_the_order_sent_and_cut_to_top_n() -> None:
    outputs = {contract.SCORE_OUTPUT: np.array([[0.5], [2.0], [-1.0], [2.0]], dtype=np.float32)}
    ranked = _core.rankings_from(outputs, 4, "rr")
    assert [(r.index, r.score) for r in ranked] == [(1, 2.0), (3, 2.0), (0, 0.5), (2, -1.0)]
    assert all(r.document is None for r in ranked)
    top = _core.rankings_from(outputs, 4, "rr", top_n=2, documents=["a", "b", "c", "d"])
    assert top == [RerankResult(1, 2.0, "b"), RerankResult(3, 2.0, "d")]
    assert len(_core.rankings_from(outputs, 4, "rr", top_n=10)) == 4
    with pytest.raises(TritonServerError, match="expected 5 scores, got 4"):
        _core.rankings_from(outputs, 5, "rr")


def test_relevance_is_the_sigmoid_of_the_raw_score() -> None:
    assert RerankResult(0, 0.0).relevance == 0.5
    assert math.isclose(RerankResult(0, 2.0).relevance, 1 / (1 + math.exp(-2.0)))
    assert RerankResult(0, -1000.0).relevance == 0.0  # no overflow
    assert RerankResult(0, 1000.0).relevance == 1.0


@pytest.mark.parametrize(
    ("query", "documents", "top_n", "message"),
    [
        ("", ["d"], None, "query is empty or only whitespace"),
        (7, ["d"], None, "query is int, not str"),
        ("q", [], None, "documents is empty: nothing to send"),
        ("q", "one document", None, "documents must be a list of strings, got a single string"),
        ("q", ["d", "  "], None, "documents\\[1\\] is empty or only whitespace"),
        ("q", ["d"], 0, "top_n must be a positive int or None, got 0"),
        ("q", ["d"], True, "top_n must be a positive int or None, got True"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(
    query: object, documents: object, top_n: object, message: str
) -> None:
    # an address nothing listens on: validation must fail first, without a connection attempt
    with Client("127.0.0.1:9", model="rr") as client, pytest.raises(InvalidInputError, match=message):
        client.rerank(query, documents, top_n=top_n)  # type: ignore[arg-type]
