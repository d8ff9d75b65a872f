"""The bench's requests by the served model's task (bench/workload.py): one text, or a rerank query and k documents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonstack.bench.errors import BenchError
from tritonstack.bench.texts import make_texts
from tritonstack.bench.workload import BenchWorkload, answer_array, documents_call, rows_round, served_task
from tritonstack.client import RerankResult
from tritonstack.in_triton import contract
from tritonstack.measure.samples import Round, completed_mean_ms

TEXTS = make_texts(20, seed=4)


def test_a_rerank_request_is_a_short_query_and_k_documents_counted_as_k_rows() -> None:
    workload = BenchWorkload.for_task(contract.TEXT_RANKING, TEXTS, documents_per_query=8, seed=4)
    assert len(workload) == 2 and workload.rows_per_request == 8  # 20 texts // 8 documents
    assert all(len(request) == 9 for request in workload.requests)
    assert [r[1:] for r in workload.requests] == [tuple(TEXTS[:8]), tuple(TEXTS[8:16])]
    assert all(len(r[0].split()) <= 12 for r in workload.requests)  # a search query: a few words
    rows = workload.rows
    assert len(rows) == 16 and rows[0] == (workload.requests[0][0], TEXTS[0]) and rows[8][1] == TEXTS[8]
    assert workload.request_token_counts(list(range(16))) == [sum(range(8)), sum(range(8, 16))]
    with pytest.raises(ValueError, match="expected 16 row token counts"):
        workload.request_token_counts([1, 2])
    # the same seed, the same requests; fewer texts than documents still make one request (texts cycled)
    assert BenchWorkload.for_task(contract.TEXT_RANKING, TEXTS, documents_per_query=8, seed=4) == workload
    small = BenchWorkload.for_task(contract.TEXT_RANKING, TEXTS[:3], documents_per_query=4)
    assert small.requests[0][1:] == (*TEXTS[:3], TEXTS[0])
    described = workload.describe()
    assert described["task"] == "text-ranking" and described["documents_per_query"] == 8
    assert described["requests"] == 2


def test_an_embedding_request_is_one_text_as_before() -> None:
    workload = BenchWorkload.of_texts(TEXTS)
    assert workload.task is contract.FEATURE_EXTRACTION and workload.rows_per_request == 1
    assert workload.rows == TEXTS and workload.request_token_counts([3] * 20) == [3] * 20
    assert workload.describe() == {"task": "feature-extraction", "requests": 20}
    measured = Round((1.0,), 1.0, 5, 50, completed_latency_us=500.0)
    assert workload.per_row(measured) is measured


def test_a_task_without_an_sdk_call_is_refused_with_the_tasks_the_bench_can_send() -> None:
    with pytest.raises(BenchError, match="no call for token-classification") as refused:
        BenchWorkload.for_task(contract.TOKEN_CLASSIFICATION, TEXTS)
    assert refused.value.hint and "text-ranking" in refused.value.hint
    with pytest.raises(BenchError, match="at least one document"):
        BenchWorkload.for_task(contract.TEXT_RANKING, TEXTS, documents_per_query=0)


def test_rows_per_second_keep_the_latency_per_call() -> None:
    measured = Round((2000.0, 4000.0), 2.0, 2, 80, completed_latency_us=6000.0)
    rows = rows_round(measured, 8)
    assert rows.completed == 16 and rows.throughput_per_s == 8.0 and rows.latencies_us == measured.latencies_us
    assert completed_mean_ms([rows]) == completed_mean_ms([measured]) == 3.0
    assert rows.tokens / rows.completed == 5.0  # tokens per row, not per request


class _Client:
    """Records the SDK calls a request becomes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def rerank(self, query: str, documents: list[str]) -> None:
        self.calls.append(("rerank", (query, documents)))

    async def embed(self, texts: list[str]) -> None:
        self.calls.append(("embed", (texts,)))


def test_each_request_is_the_tasks_sdk_call() -> None:
    client = _Client()
    rerank = BenchWorkload.for_task(contract.TEXT_RANKING, TEXTS, documents_per_query=3)
    asyncio.run(rerank.sender(client)(1))
    query, *documents = rerank.requests[1]
    embed = BenchWorkload.of_texts(TEXTS)
    asyncio.run(embed.sender(client)(2))
    assert client.calls == [("rerank", (query, documents)), ("embed", ([TEXTS[2]],))]


def test_a_repeated_rerank_request_repeats_its_short_query() -> None:
    """The cache bench draws documents; the query is the bench's own, a function of them (a repeat is a hit)."""
    calls: list[tuple[str, list[str]]] = []
    call = documents_call(lambda query, documents: calls.append((query, documents)), seed=2)
    for request in (TEXTS[:3], TEXTS[3:6], TEXTS[:3]):
        call(request)
    assert [documents for _, documents in calls] == [TEXTS[:3], TEXTS[3:6], TEXTS[:3]]
    assert calls[0][0] == calls[2][0] and all(len(query.split()) <= 12 for query, _ in calls)


def test_points_say_requests_per_second_beside_rows_per_second() -> None:
    from tritonstack.bench.results import SERVED, summarize_rounds

    point = summarize_rounds(SERVED, "concurrency", 4, [Round((1.0,), 1.0, 40, 400)])
    BenchWorkload.for_task(contract.TEXT_RANKING, TEXTS, documents_per_query=8).annotate([point])
    assert point.details == {"rows_per_request": 8, "requests_per_s": 5.0}
    plain = summarize_rounds(SERVED, "concurrency", 4, [Round((1.0,), 1.0, 40, 400)])
    BenchWorkload.of_texts(TEXTS).annotate([plain])
    assert plain.details == {}


def test_a_rankings_answer_is_its_scores_in_the_order_sent() -> None:
    ranked = [RerankResult(2, 3.5), RerankResult(0, 1.25), RerankResult(1, -2.0)]
    assert answer_array(contract.TEXT_RANKING, ranked).tolist() == [1.25, -2.0, 3.5]
    vectors = [[0.5, 0.25]]
    assert answer_array(contract.FEATURE_EXTRACTION, vectors).dtype == np.float32


def test_the_served_task_is_what_export_recorded(tmp_path: Path) -> None:
    for name, task in (("rr", "text-ranking"), ("old", None), ("bad", "summarization")):
        (tmp_path / name).mkdir()
        parameters = f'parameters {{ key: "task" value {{ string_value: "{task}" }} }}' if task else ""
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\nplatform: "ensemble"\n{parameters}\n')
    assert served_task(tmp_path, "rr") is contract.TEXT_RANKING
    assert served_task(tmp_path, "old") is contract.FEATURE_EXTRACTION  # before export recorded it: embeddings
    with pytest.raises(BenchError, match="unknown task 'summarization'"):
        served_task(tmp_path, "bad")
    with pytest.raises(BenchError, match="missing"):
        served_task(tmp_path, "absent")
