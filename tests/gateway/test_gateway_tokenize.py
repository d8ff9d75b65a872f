"""The experimental ``tokenize_at: gateway`` against the real server: a gateway that tokenizes and sends token ids
to ``NAME_encoder`` answers the vectors and usage the text-in model answers through the shipped gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_process import EMBEDDER, MAX_BATCH, GatewayProcess, post, start_gateway

from tritonstack.gateway.tokenize import THREAD_ROWS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokenizing_gateway(
    gateway_triton: Any, gateway_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = f"models:\n  {EMBEDDER}: {{tokenize_at: gateway, repository: {gateway_repository}}}\n"
    running = start_gateway(
        gateway_triton.grpc_url, tmp_path_factory.mktemp("gw-tokenize"), config=config,
        env={"TRITONSTACK_GATEWAY_API_KEYS": ""},
    )  # fmt: skip
    yield running
    running.stop()


def _embed(url: str, texts: list[str], **extra: object) -> tuple[int, Any]:
    status, body, _ = post(f"{url}/v1/embeddings", {"model": EMBEDDER, "input": texts, **extra})
    return status, body


def test_equal_vectors_and_usage_to_the_text_in_path(
    tokenizing_gateway: GatewayProcess, gateway: GatewayProcess
) -> None:
    # more rows than the encoder's max_batch_size (split) and than THREAD_ROWS (tokenized off the event loop)
    texts = [f"text {i} " + "word " * (i % 40) for i in range(THREAD_ROWS + MAX_BATCH + 3)]
    texts[5] = "a long one " * 400  # cut to max_sequence_length by both
    status, ours = _embed(tokenizing_gateway.url, texts)
    assert status == 200, ours
    status, shipped = _embed(gateway.url, texts)
    assert status == 200, shipped
    a = np.array([d["embedding"] for d in ours["data"]])
    b = np.array([d["embedding"] for d in shipped["data"]])
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999
    assert [d["index"] for d in ours["data"]] == list(range(len(texts)))
    assert ours["usage"] == shipped["usage"]
    assert ours["usage"]["prompt_tokens"] > len(texts)


def test_truncate_false_is_refused_as_the_text_in_path_refuses(
    tokenizing_gateway: GatewayProcess, gateway: GatewayProcess
) -> None:
    texts = ["short", "a long one " * 400]
    status, ours = _embed(tokenizing_gateway.url, texts, truncate=False)
    shipped_status, shipped = _embed(gateway.url, texts, truncate=False)
    assert (
        (status, ours["error"]["code"]) == (shipped_status, shipped["error"]["code"]) == (413, shipped["error"]["code"])
    )
    assert "input 1" in ours["error"]["message"]
