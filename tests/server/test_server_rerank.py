"""A tiny cross-encoder served by the real embedded Triton, in both layouts, reranking as its PyTorch model does.

The model is exported twice into one repository: ``rerank`` in the ensemble layout (tokenizer -> encoder, the
GPU layout) and ``rerank_f`` in the fused one. The reference is ``AutoModelForSequenceClassification`` on the
same (query, document) pairs, tokenized with truncation ``only_second`` -- on the gate split's pairs, which the
export's search never looked at.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import tinymodels
from tritonstack.cli import main
from tritonstack.client import AsyncClient, Client, InvalidInputError
from tritonstack.export.texts import load_splits
from tritonstack.in_triton import contract

pytestmark = pytest.mark.integration

LAYOUTS = {"rerank": "ensemble", "rerank_f": "fused"}
MAX_LENGTH = 256  # the tiny cross-encoder's max_sequence_length
MAX_BATCH = 8  # small, so that a long document list is split into several requests


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path) -> Path:
    repository = tmp_path_factory.mktemp("rerank") / "model_repository"
    for name, layout in LAYOUTS.items():
        tinymodels.export_fp32(tiny_reranker_dir, repository, name, layout=layout, max_batch_size=MAX_BATCH)
    return repository


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[Any]:
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(repository, log_path=repository.parent / "triton.log") as running:
        yield running


@pytest.fixture(scope="module")
def reference(tiny_reranker_dir: Path) -> Any:
    """The PyTorch scores of (query, document) pairs: the raw logit, documents truncated only."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_reranker_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_reranker_dir)).eval()

    def scores(query: str, documents: Sequence[str]) -> np.ndarray:
        encoded = tokenizer(
            [query] * len(documents), list(documents), truncation="only_second", max_length=MAX_LENGTH,
            padding=True, return_tensors="pt",
        )  # fmt: skip
        with torch.no_grad():
            return model(**encoded).logits[:, 0].numpy()

    return scores


def held_out() -> dict[str, list[str]]:
    """The gate split's pairs: each query and its documents."""
    split = load_splits().gate.paired()
    assert split.text_pairs is not None
    queries: dict[str, list[str]] = {}
    for query, document in zip(split.texts, split.text_pairs, strict=True):
        queries.setdefault(query, []).append(document)
    return queries


@pytest.mark.parametrize("name", LAYOUTS)
def test_served_scores_and_order_are_the_pytorch_models_on_held_out_pairs(
    server: Any, reference: Any, name: str
) -> None:
    with Client(server.grpc_url, model=name) as client:
        for query, documents in held_out().items():
            expected = reference(query, documents)
            ranked = client.rerank(query, documents, return_documents=True)
            assert [r.index for r in ranked] == np.argsort(-expected, kind="stable").tolist(), query
            served = np.array([r.score for r in sorted(ranked, key=lambda r: r.index)])
            np.testing.assert_allclose(served, expected, atol=1e-4, err_msg=query)
            assert [r.document for r in ranked] == [documents[r.index] for r in ranked]
            assert np.ptp(expected) > 1.0  # the scores spread: the order was worth checking


def test_the_score_is_what_cross_encoder_predict_returns(server: Any, tiny_reranker_dir: Path) -> None:
    from sentence_transformers import CrossEncoder

    query, documents = "quick brown fox", ["the lazy dog", "rain sun cloud", "hello world", "time request"]
    predicted = CrossEncoder(str(tiny_reranker_dir), device="cpu").predict([(query, d) for d in documents])
    with Client(server.grpc_url, model="rerank_f") as client:
        ranked = client.rerank(query, documents)
    served = np.array([r.score for r in sorted(ranked, key=lambda r: r.index)])
    np.testing.assert_allclose(served, predicted, atol=1e-4)  # its config names Identity: the raw logit


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_long_document_is_cut_and_the_query_kept(server: Any, reference: Any, name: str) -> None:
    query = " ".join(tinymodels.WORDS[:40])  # 40 tokens, longer than the short document
    documents = [" ".join(tinymodels.WORDS) * 6, "hello world", "the quick brown fox " * 80]
    expected = reference(query, documents)
    with Client(server.grpc_url, model=name) as client:
        ranked = client.rerank(query, documents)
    served = np.array([r.score for r in sorted(ranked, key=lambda r: r.index)])
    np.testing.assert_allclose(served, expected, atol=1e-4)


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_long_list_is_split_across_requests_and_cut_to_top_n(server: Any, reference: Any, name: str) -> None:
    query = "data test export"
    documents = [" ".join(tinymodels.WORDS[i : i + 7]) for i in range(3 * MAX_BATCH + 3)]
    expected = reference(query, documents)
    with Client(server.grpc_url, model=name) as client:
        top = client.rerank(query, documents, top_n=5)
    assert [r.index for r in top] == np.argsort(-expected, kind="stable")[:5].tolist()


def test_the_async_client_ranks_alike_and_concurrent_callers_share_batches(server: Any) -> None:
    queries = list(held_out().items())[:6]

    async def rank_all() -> list[list[int]]:
        async with AsyncClient(server.grpc_url, model="rerank_f") as client:
            results = await asyncio.gather(*(client.rerank(q, d) for q, d in queries))
            return [[r.index for r in ranked] for ranked in results]

    with Client(server.grpc_url, model="rerank_f") as client:
        expected = [[r.index for r in client.rerank(q, d)] for q, d in queries]
    assert asyncio.run(rank_all()) == expected


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_query_too_long_for_its_document_fails_that_request_alone(server: Any, name: str) -> None:
    too_long = " ".join(tinymodels.WORDS * 4)  # each word one token: far more than 256
    with Client(server.grpc_url, model=name) as client:
        with pytest.raises(InvalidInputError, match=r"the query is .* tokens; .* leaves the document no room"):
            client.rerank(too_long, ["hello world"])
        assert len(client.rerank("hello", ["hello world"])) == 1  # the model still serves


@pytest.mark.parametrize("name", LAYOUTS)
def test_the_model_refuses_rows_without_their_documents(server: Any, name: str) -> None:
    with Client(server.grpc_url, model=name) as client:
        with pytest.raises(InvalidInputError, match="missing input 'TEXT_PAIR'"):
            client.infer({contract.TEXT_INPUT: np.array([[b"q"]], dtype=np.object_)})
        with pytest.raises(InvalidInputError, match=r"embed\(\) needs a feature-extraction model; .* text-ranking"):
            client.embed(["hello"])
    # past the SDK's checks, Triton itself refuses the request
    array = np.array([[b"q"]], dtype=np.object_)
    tensor = grpcclient.InferInput(contract.TEXT_INPUT, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    with grpcclient.InferenceServerClient(server.grpc_url) as raw, pytest.raises(InferenceServerException):
        raw.infer(name, [tensor])


def test_infer_ranks_from_the_command_line(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    documents = ["the lazy dog", "rain sun cloud", "hello world"]
    args = ["infer", "--url", server.grpc_url, "--model", "rerank", "--query", "quick brown fox", "--json"]
    assert main([*args, *(arg for d in documents for arg in ("--text", d))]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["task"] == "text-ranking" and printed["query"] == "quick brown fox"
    with Client(server.grpc_url, model="rerank") as client:
        ranked = client.rerank("quick brown fox", documents)
    assert [(r["index"], r["text"]) for r in printed["results"]] == [(r.index, documents[r.index]) for r in ranked]
    assert main(["infer", "--url", server.grpc_url, "--model", "rerank", "--text", "no query"]) != 0
    assert "pass --query" in capsys.readouterr().err
