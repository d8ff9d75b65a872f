"""The real ``tritonstack gateway`` process in front of a real Triton: the official ``openai`` client's embeddings
equal the SDK's (float and base64, dimensions), rerank and classify over raw HTTP, /v1/models, /health, /metrics."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from gateway_process import CLASSIFIER, EMBEDDER, RERANKER, GatewayProcess, get, post

from tritonstack.client import Client

pytestmark = pytest.mark.integration

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world", "good morning to you"]


def sdk_embed(triton: Any, texts: list[str], model: str = EMBEDDER) -> np.ndarray:
    with Client(triton.grpc_url) as client:
        return client.embed(texts, model=model)


def vectors(data: Any) -> np.ndarray:
    """The rows of an embeddings response; base64 strings (what the client hands back as sent when the caller
    chose base64 itself) decoded as OpenAI documents them: little-endian float32."""
    rows = [item.embedding if hasattr(item, "embedding") else item["embedding"] for item in data]
    return np.array([np.frombuffer(base64.b64decode(r), "<f4") if isinstance(r, str) else r for r in rows], "f4")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_openai_client_embeddings_equal_the_sdks(gateway: GatewayProcess, gateway_triton: Any) -> None:
    from openai import OpenAI

    reference = sdk_embed(gateway_triton, TEXTS)
    client = OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    by_default = client.embeddings.create(model=EMBEDDER, input=TEXTS)  # the client asks for base64 itself
    as_float = client.embeddings.create(model=EMBEDDER, input=TEXTS, encoding_format="float")
    as_base64 = client.embeddings.create(model=EMBEDDER, input=TEXTS, encoding_format="base64")
    assert isinstance(as_base64.data[0].embedding, str) and isinstance(by_default.data[0].embedding, list)
    for response in (by_default, as_float, as_base64):
        assert [item.index for item in response.data] == list(range(len(TEXTS)))
        got = vectors(response.data)
        assert got.shape == reference.shape
        assert cosines(got, reference).min() >= 0.9999
        assert response.model == EMBEDDER
    one = client.embeddings.create(model=EMBEDDER, input=TEXTS[0], encoding_format="float")
    assert cosines(np.array([one.data[0].embedding]), reference[:1])[0] >= 0.9999


def test_dimensions_cut_and_renormalise_the_full_vector(gateway: GatewayProcess, gateway_triton: Any) -> None:
    from openai import OpenAI

    full = sdk_embed(gateway_triton, TEXTS)
    dimensions = full.shape[1] // 4
    expected = full[:, :dimensions] / np.linalg.norm(full[:, :dimensions], axis=1, keepdims=True)
    client = OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    for encoding in ("float", "base64"):
        response = client.embeddings.create(
            model=EMBEDDER,
            input=TEXTS,
            dimensions=dimensions,
            encoding_format=encoding,  # type: ignore[arg-type]
        )
        got = vectors(response.data)
        assert got.shape == (len(TEXTS), dimensions)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    status, body, _ = post(gateway.url + "/v1/embeddings", {"model": EMBEDDER, "input": "x", "dimensions": 10_000})
    assert status == 400 and body["error"]["param"] == "dimensions"
    assert str(full.shape[1]) in body["error"]["message"]


def test_many_inputs_are_split_and_keep_their_order(gateway: GatewayProcess, gateway_triton: Any) -> None:
    texts = [f"text number {i} about {TEXTS[i % 4]}" for i in range(50)]  # > MAX_BATCH: several Triton calls
    status, body, _ = post(gateway.url + "/v1/embeddings", {"model": EMBEDDER, "input": texts})
    assert status == 200
    got = vectors(body["data"])
    assert cosines(got, sdk_embed(gateway_triton, texts)).min() >= 0.9999
    assert body["usage"].keys() == {"prompt_tokens", "total_tokens"}


def test_input_type_selects_the_configured_prefix(gateway: GatewayProcess, gateway_triton: Any) -> None:
    status, body, _ = post(gateway.url + "/v1/embeddings", {"model": EMBEDDER, "input": TEXTS, "input_type": "query"})
    assert status == 200
    got = vectors(body["data"])
    prefixed = sdk_embed(gateway_triton, ["query: " + text for text in TEXTS])
    assert cosines(got, prefixed).min() >= 0.9999


def test_rerank_in_cohere_shape_sorted_by_the_sdks_relevance(gateway: GatewayProcess, gateway_triton: Any) -> None:
    query, documents = "where did the cat sit", TEXTS
    with Client(gateway_triton.grpc_url) as client:
        reference = client.rerank(query, documents, model=RERANKER)
    for path in ("/v1/rerank", "/v2/rerank"):
        sent = [documents[0], {"text": documents[1]}, *documents[2:]]
        body: dict[str, object] = {"model": RERANKER, "query": query, "documents": sent, "return_documents": True}
        status, answer, _ = post(gateway.url + path, {**body, "top_n": 3})
        assert status == 200, answer
        results = answer["results"]
        assert [r["index"] for r in results] == [r.index for r in reference[:3]]
        assert [r["relevance_score"] for r in results] == pytest.approx([r.relevance for r in reference[:3]], abs=1e-5)
        assert [r["document"]["text"] for r in results] == [documents[r.index] for r in reference[:3]]
        assert "usage" in answer and "meta" in answer
    status, answer, _ = post(gateway.url + "/v1/rerank", {"model": RERANKER, "query": query, "documents": documents})
    assert len(answer["results"]) == len(documents) and "document" not in answer["results"][0]


def test_classify(gateway: GatewayProcess, gateway_triton: Any) -> None:
    with Client(gateway_triton.grpc_url) as client:
        reference = client.classify(TEXTS, model=CLASSIFIER)
    status, answer, _ = post(gateway.url + "/v1/classify", {"model": CLASSIFIER, "input": TEXTS})
    assert status == 200, answer
    assert [(d["index"], d["label"]) for d in answer["data"]] == [(i, c.label) for i, c in enumerate(reference)]
    assert [d["score"] for d in answer["data"]] == pytest.approx([c.score for c in reference], abs=1e-6)


def test_models_lists_the_text_in_models_with_task_and_size(gateway: GatewayProcess) -> None:
    status, raw = get(gateway.url + "/v1/models")
    assert status == 200
    listed = {entry["id"]: entry for entry in json.loads(raw)["data"]}
    assert listed[EMBEDDER]["task"] == "feature-extraction" and listed[EMBEDDER]["dimensions"] == 32
    assert listed[CLASSIFIER]["task"] == "text-classification"
    assert listed[RERANKER]["task"] == "text-ranking"
    assert not any(name.endswith(("_tokenizer", "_encoder", "_fused", "_postprocess")) for name in listed)


def test_health_and_metrics(gateway: GatewayProcess) -> None:
    assert get(gateway.url + "/health") == (200, b'{"status":"ok"}')
    post(gateway.url + "/v1/embeddings", {"model": EMBEDDER, "input": "metrics"})
    post(gateway.url + "/v1/embeddings", {"model": "absent", "input": "metrics"})
    status, raw = get(gateway.url + "/metrics")
    text = raw.decode()
    assert status == 200
    assert f'tritonstack_gateway_requests_total{{code="200",model="{EMBEDDER}",route="/v1/embeddings"}}' in text
    # a name Triton does not serve is labelled "unknown": callers cannot grow the registry with made-up names
    assert 'tritonstack_gateway_errors_total{model="unknown",route="/v1/embeddings",type="model_not_found"}' in text
    assert 'model="absent"' not in text
    assert "tritonstack_gateway_request_duration_seconds_bucket" in text
    assert f'tritonstack_gateway_inputs_total{{model="{EMBEDDER}",route="/v1/embeddings"}}' in text


def test_usage_counts_the_tokens_the_model_ran(gateway: GatewayProcess, gateway_triton: Any) -> None:
    from tritonstack.client import Usage

    usage = Usage()
    with Client(gateway_triton.grpc_url) as client:
        client.embed(TEXTS, model=EMBEDDER, usage=usage)
    status, body, _ = post(gateway.url + "/v1/embeddings", {"model": EMBEDDER, "input": TEXTS})
    assert status == 200 and usage.counted and usage.tokens > len(TEXTS)
    assert body["usage"] == {"prompt_tokens": usage.tokens, "total_tokens": usage.tokens}
    status, body, _ = post(gateway.url + "/v1/rerank", {"model": RERANKER, "query": "q", "documents": TEXTS})
    assert body["usage"]["total_tokens"] > len(TEXTS) and body["meta"]["tokens"]["input_tokens"] > 0


def test_truncate_false_refuses_a_text_the_model_would_cut(gateway: GatewayProcess) -> None:
    long_text = " ".join(TEXTS * 20)  # far over the tiny model's 64 tokens
    url, body = gateway.url + "/v1/embeddings", {"model": EMBEDDER, "input": ["short", long_text]}
    assert post(url, body)[0] == 200  # the documented default: cut, as the model does
    status, answer, _ = post(url, {**body, "truncate": False})
    assert status == 413 and answer["error"]["code"] == "context_length_exceeded"
    assert "input 1" in answer["error"]["message"] and "64 tokens" in answer["error"]["message"]
    assert post(url, {"model": EMBEDDER, "input": ["short"], "truncate": False})[0] == 200
