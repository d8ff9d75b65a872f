"""A text-ranking SLO: one query and payload.documents_per_query documents per request, sent through rerank()."""

from __future__ import annotations

from typing import Any

import pytest

from tritonstack.measure.errors import SLOSpecError
from tritonstack.measure.payload import request_call
from tritonstack.measure.slo import DEFAULT_DOCUMENTS_PER_QUERY, parse_slo

BASE: dict[str, Any] = {"model": "rr", "load": {"users": 1, "duration": "1s"}, "objectives": {"p99_ms": 100}}


def test_a_ranking_request_draws_its_query_and_documents() -> None:
    slo = parse_slo({**BASE, "task": "text-ranking", "payload": {"documents_per_query": 5}})
    assert slo.payload.documents_per_query == 5 and slo.payload.texts_drawn(slo.task) == 6
    default = parse_slo({**BASE, "task": "text-ranking"})
    assert default.payload.texts_drawn("text-ranking") == 1 + DEFAULT_DOCUMENTS_PER_QUERY
    texts = parse_slo({**BASE, "payload": {"texts_per_request": 3}})
    assert texts.payload.texts_drawn(texts.task) == 3  # the other tasks as before


@pytest.mark.parametrize(
    ("task", "payload", "message"),
    [
        ("text-ranking", {"texts_per_request": 2}, "a text-ranking request is one query and"),
        ("feature-extraction", {"documents_per_query": 2}, "only means something with task: text-ranking"),
        ("text-ranking", {"documents_per_query": 0}, "must be a positive integer, got 0"),
    ],
)
def test_the_payload_keys_must_fit_the_task(task: str, payload: dict[str, Any], message: str) -> None:
    with pytest.raises(SLOSpecError, match=message):
        parse_slo({**BASE, "task": task, "payload": payload})


def test_the_drawn_texts_become_the_query_and_its_documents() -> None:
    calls: list[tuple[Any, ...]] = []

    def rerank(query: str, documents: list[str]) -> str:
        calls.append((query, documents))
        return "ranked"

    assert request_call(rerank, "text-ranking")(["document 1", "q", "document 2"]) == "ranked"
    assert calls == [("q", ["document 1", "document 2"])]  # the shortest is the query
    embed = request_call(calls.append, "feature-extraction")
    embed(["a", "b"])
    assert calls[-1] == ["a", "b"]
