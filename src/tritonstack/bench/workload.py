"""What one bench request is, by the served model's task: one text, or a rerank query and its k documents.

Every bench mode sends the task's SDK call (``contract.Task.sdk_method``): ``embed``/``classify`` one text per
request, ``rerank`` one query and ``documents_per_query`` documents (the rerank payload of the load test,
``payload.documents_per_query``). A rerank request is k rows -- k (query, document) pairs -- so the figures
count rows: a point's texts/s is rows (pairs) per second, its ``requests_per_s`` detail the calls, and its
latency stays per call. The in-process limit encodes the same rows, request by request, so its batch of k
rows is one request's work.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tritonstack.bench.errors import BenchError
from tritonstack.bench.texts import make_texts
from tritonstack.in_triton import contract
from tritonstack.measure.samples import Round
from tritonstack.measure.slo import DEFAULT_DOCUMENTS_PER_QUERY

# A row the encoder sees: a text, or a (query, document) pair of a pair task.
Row = str | tuple[str, str]
Send = Callable[[int], Awaitable[None]]
# A search query is a few words; the documents are the bench's texts (5-120 words).
QUERY_MIN_WORDS, QUERY_MAX_WORDS = 2, 12
QUERY_SEED_OFFSET = 1  # the queries' own stream of the seed, so the documents stay the texts of that seed


def make_queries(count: int, *, seed: int = 0) -> list[str]:
    """``count`` search queries of a few words: the bench's own, the same for the same ``seed``."""
    return make_texts(count, seed=seed + QUERY_SEED_OFFSET, min_words=QUERY_MIN_WORDS, max_words=QUERY_MAX_WORDS)


def documents_call(method: Callable[..., Any], *, seed: int = 0, queries: int = 64) -> Callable[[Sequence[str]], Any]:
    """``method`` (``rerank``, sync or async) as a call on a request's documents: the query is one of the bench's
    short queries, picked by the first document, so a request sent again repeats its query too (what a response
    cache needs) -- where a query drawn from the documents' texts could leave them no room."""
    pool = make_queries(queries, seed=seed)

    def call(documents: Sequence[str]) -> Any:
        return method(pool[zlib.crc32(documents[0].encode()) % len(pool)], list(documents))

    return call


def served_task(repository: Path, name: str) -> contract.Task:
    """The task of the text-in model ``name`` in ``repository``, as export recorded it (its ``task`` parameter)."""
    from tritonstack.repository.config import parameter, parse

    path = repository / name / "config.pbtxt"
    if not path.is_file():
        raise BenchError(f"{path} is missing", hint="export the model first: tritonstack export")
    recorded = parameter(parse(path.read_text()), contract.TASK_PARAMETER)
    if not recorded:
        # written before export recorded the task: an embedding model, all that the bench called then
        return contract.FEATURE_EXTRACTION
    try:
        return contract.task(recorded)
    except ValueError as error:
        raise BenchError(f"{path}: {error}") from None


def sdk_call(task: contract.Task) -> str:
    """The SDK method a request of ``task`` is (``contract.Task.sdk_method``); ``BenchError`` where it has none."""
    if task.sdk_method is None:
        raise BenchError(
            f"the SDK has no call for {task.name}, so the bench cannot send it requests",
            hint=f"bench a model of a task the SDK calls: {', '.join(contract.SDK_TASKS)}",
        )
    return task.sdk_method


def rows_round(measured: Round, rows_per_request: int) -> Round:
    """``measured`` (a load generator's window, one completion per request) counted in rows: throughput in
    rows per second, tokens per row; the mean latency per call stays what it was."""
    if rows_per_request == 1:
        return measured
    return replace(
        measured,
        completed=measured.completed * rows_per_request,
        completed_latency_us=measured.completed_latency_us * rows_per_request,
    )


def answer_array(task: contract.Task, answer: Any) -> np.ndarray:
    """An SDK call's answer as float32 numbers that a recomputation must reproduce: a ranking's scores in the
    order the documents were sent, else the answer itself (embeddings)."""
    if task.ranking:
        return np.array([r.score for r in sorted(answer, key=lambda r: r.index)], dtype=np.float32)
    return np.asarray(answer, dtype=np.float32)


@dataclass(frozen=True)
class BenchWorkload:
    """The requests of a bench run: ``requests[i]`` is the texts of request ``i`` -- ``(text,)``, or for a pair
    task ``(query, document_1, ..., document_k)``."""

    task: contract.Task
    requests: tuple[tuple[str, ...], ...]

    @classmethod
    def for_task(
        cls,
        task: contract.Task,
        texts: Sequence[str],
        *,
        documents_per_query: int = DEFAULT_DOCUMENTS_PER_QUERY,
        seed: int = 0,
    ) -> BenchWorkload:
        """One request per text; for a pair task, ``len(texts) // documents_per_query`` requests (at least one),
        each a short query of its own and the next ``documents_per_query`` of ``texts`` (cycled) as documents."""
        sdk_call(task)  # refuses a task without one
        if not task.pair:
            return cls(task, tuple((text,) for text in texts))
        if documents_per_query < 1:
            raise BenchError(f"a rerank request needs at least one document, got {documents_per_query}")
        count = max(1, len(texts) // documents_per_query)
        queries = make_queries(count, seed=seed)
        requests = tuple(
            (query, *(texts[(i * documents_per_query + j) % len(texts)] for j in range(documents_per_query)))
            for i, query in enumerate(queries)
        )
        return cls(task, requests)

    @classmethod
    def of_texts(cls, texts: Sequence[str]) -> BenchWorkload:
        """One ``embed`` request per text: the workload of an embedding model."""
        return cls.for_task(contract.FEATURE_EXTRACTION, texts)

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def rows_per_request(self) -> int:
        """Rows (texts, or pairs) one request carries: what the server encodes for it."""
        return len(self.requests[0]) - 1 if self.task.pair else len(self.requests[0])

    def request_rows(self, index: int) -> list[Row]:
        texts = self.requests[index]
        if self.task.pair:
            return [(texts[0], document) for document in texts[1:]]
        return list(texts)

    @property
    def rows(self) -> list[Row]:
        """Every request's rows, request after request: what the in-process limit encodes."""
        return [row for index in range(len(self.requests)) for row in self.request_rows(index)]

    def request_token_counts(self, row_token_counts: Sequence[int]) -> list[int]:
        """Tokens of each request from the tokens of each row of ``rows`` (the pair's, for a pair task)."""
        k = self.rows_per_request
        if len(row_token_counts) != k * len(self.requests):
            raise ValueError(f"expected {k * len(self.requests)} row token counts, got {len(row_token_counts)}")
        return [sum(row_token_counts[i * k : (i + 1) * k]) for i in range(len(self.requests))]

    def sender(self, client: Any) -> Send:
        """``send(index)``: request ``index`` through the task's call of ``client`` (an ``AsyncClient``)."""
        call = self.call(client)

        async def send(index: int) -> None:
            await call(index)

        return send

    def call(self, client: Any) -> Callable[[int], Any]:
        """Request ``index`` through the task's call of ``client`` (sync or async): what it returns."""
        method = getattr(client, sdk_call(self.task))
        if self.task.pair:
            return lambda index: method(self.requests[index][0], list(self.requests[index][1:]))
        return lambda index: method(list(self.requests[index]))

    def per_row(self, measured: Round) -> Round:
        """``measured`` counted in rows (``rows_round``)."""
        return rows_round(measured, self.rows_per_request)

    def annotate(self, points: Sequence[Any]) -> None:
        """Add each point's requests per second beside its rows per second (a pair task's points only)."""
        k = self.rows_per_request
        if not self.task.pair:
            return
        for point in points:
            point.details["rows_per_request"] = k
            point.details["requests_per_s"] = point.throughput_per_s / k

    def describe(self) -> dict[str, Any]:
        """What summary.json's corpus says of the requests."""
        described: dict[str, Any] = {"task": self.task.name, "requests": len(self.requests)}
        if self.task.pair:
            queries = [len(r[0].split()) for r in self.requests]
            described.update(
                documents_per_query=self.rows_per_request, query_words_min=min(queries), query_words_max=max(queries)
            )
        return described
