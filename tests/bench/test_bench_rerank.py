"""``tritonstack bench`` on a tiny cross-encoder: the in-process limit scores the pairs the served model scores,
the PyTorch baseline's service too, and a short real run measures rerank requests and names the task."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import tinymodels
from tritonstack.bench.inprocess import InProcessModel
from tritonstack.bench.texts import make_texts
from tritonstack.bench.workload import BenchWorkload, served_task
from tritonstack.cli import main
from tritonstack.in_triton import contract
from tritonstack.measure.served_files import locate

pytestmark = pytest.mark.integration

NAME = "tiny_rr"
MAX_LENGTH = 256  # the tiny cross-encoder's max_sequence_length
DOCUMENTS = 8
# fp32 on both sides; the served encoder pads each Triton batch to its own longest pair
SCORE_ATOL = 1e-3


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path) -> Path:
    """The tiny cross-encoder in the CPU default layout (fused), as the bench's own export writes it."""
    repository = tmp_path_factory.mktemp("bench-rerank") / "model_repository"
    tinymodels.export_fp32(tiny_reranker_dir, repository, NAME, layout=contract.FUSED_LAYOUT)
    return repository


@pytest.fixture(scope="module")
def workload(repository: Path) -> BenchWorkload:
    task = served_task(repository, NAME)
    assert task is contract.TEXT_RANKING
    return BenchWorkload.for_task(task, make_texts(2 * DOCUMENTS, seed=5), documents_per_query=DOCUMENTS, seed=5)


@pytest.fixture(scope="module")
def inprocess_scores(repository: Path, workload: BenchWorkload) -> np.ndarray:
    """The in-process limit's scores of every request's pairs, request by request (rows of ``DOCUMENTS``)."""
    model = InProcessModel(locate(repository, NAME), threads=1, pair=True)
    scores = model.encode(workload.rows)
    assert scores.shape == (len(workload.rows), 1)
    return scores[:, 0].reshape(len(workload), DOCUMENTS)


def test_the_inprocess_limit_scores_the_pairs_the_served_model_scores(
    repository: Path, workload: BenchWorkload, inprocess_scores: np.ndarray
) -> None:
    from tritonstack.client import Client
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(repository, log_path=repository.parent / "triton.log") as server:
        client = Client(server.grpc_url, model=NAME)
        try:
            for index in range(len(workload)):
                ranked = workload.call(client)(index)  # the bench's own request: rerank(query, documents)
                served = np.array([r.score for r in sorted(ranked, key=lambda r: r.index)])
                np.testing.assert_allclose(inprocess_scores[index], served, atol=SCORE_ATOL)
                assert [r.index for r in ranked] == list(np.argsort(-inprocess_scores[index], kind="stable"))
        finally:
            client.close()
    assert np.ptp(inprocess_scores) > 0.1  # the tiny model's scores spread: the order is worth comparing


def test_the_pytorch_baseline_scores_the_same_pairs(
    tiny_reranker_dir: Path, workload: BenchWorkload, inprocess_scores: np.ndarray
) -> None:
    pytest.importorskip("fastapi", reason="the bench extra is not installed")
    from tritonstack.bench.baseline_app import RerankRequest, create_app

    app = create_app(str(tiny_reranker_dir), 1, task=contract.TEXT_RANKING.name, max_length=MAX_LENGTH)
    rerank = next(route for route in app.routes if getattr(route, "path", None) == "/rerank")
    for index, (query, *documents) in enumerate(workload.requests):
        answer = rerank.endpoint(RerankRequest(query=query, documents=documents))  # type: ignore[attr-defined]
        np.testing.assert_allclose(answer.scores, inprocess_scores[index], atol=SCORE_ATOL)


def test_a_short_bench_measures_rerank_requests_as_pairs(
    tiny_reranker_dir: Path, repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    report = tmp_path / "report"
    argv = [
        "bench", "--model-dir", str(tiny_reranker_dir), "--repository", str(repository), "--name", NAME,
        "--report-dir", str(report), "--texts", "32", "--rounds", "1", "--warmup-s", "0.2", "--duration-s", "0.5",
        "--concurrency", "1,4", "--batch-sizes", "1,4", "--no-baseline", "--documents-per-query", str(DOCUMENTS),
    ]  # fmt: skip
    assert main(argv) == 0
    assert time.perf_counter() - started < 60
    summary = json.loads((report / "summary.json").read_text())
    corpus = summary["corpus"]
    assert corpus["task"] == "text-ranking" and corpus["documents_per_query"] == DOCUMENTS
    assert corpus["requests"] == 32 // DOCUMENTS
    points = {(p["variant"], p["label"]): p for p in summary["points"]}
    # the batch of one request's pairs joins the in-process sweep: the single-request latency the targets use
    assert {("in-process", "b=1"), ("in-process", f"b={DOCUMENTS}"), ("served", "c=1"), ("served", "c=4")} <= set(
        points
    )
    assert all(p["errors"] == 0 and p["samples"] > 0 for p in points.values())
    for point in points.values():  # texts/s counts pairs; requests/s beside it
        assert point["details"]["requests_per_s"] == pytest.approx(point["throughput_per_s"] / DOCUMENTS)
    served = points[("served", "c=4")]
    assert served["details"]["models"]["fused"]["requests"] > 0  # Triton's statistics cover the window
    # Triton's own count of rows agrees: each request reaches the fused step as DOCUMENTS rows
    assert served["details"]["models"]["fused"]["batch_size"] >= DOCUMENTS
    assert summary["inprocess_single_request_ms"] == points[("in-process", f"b={DOCUMENTS}")]["p50_ms"]
    assert summary["half_load"]["rate_per_s"] == pytest.approx(
        max(p["throughput_per_s"] for p in points.values() if p["variant"] == "served" and p["setting"] != "rate") / 2
    )
    printed = capsys.readouterr().out
    assert "text-ranking: 4 requests of one query" in printed and "served / in-process" in printed
