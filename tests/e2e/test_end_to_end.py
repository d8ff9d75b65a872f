"""The real all-MiniLM-L6-v2: exported, served by the embedded Triton, against its PyTorch reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# (The SDK refuses empty texts client-side; tests/server/test_server.py sends them to the server directly.)
TEXTS = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "Triton batches requests of different lengths into one execution. " * 6,
    "ok",
    "😀 emoji, 中文, العربية, e\u0301",
    "word " * 400,  # past max_seq_length: truncated exactly as sentence-transformers truncates
]


@pytest.fixture(scope="module")
def minilm_server(minilm_repository: Path) -> Any:
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(minilm_repository) as server:
        yield server


def test_served_embeddings_match_sentence_transformers(minilm_server: Any, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from tritonstack.client import Client

    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, normalize_embeddings=False)
    with Client(minilm_server.grpc_url, model="minilm") as client:
        served = client.embed(TEXTS)
    assert served.shape == (len(TEXTS), 384) and served.dtype == np.float32
    cosine = np.sum(served * reference, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= 0.99, cosine
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)  # the model's Normalize module


def test_export_report_records_the_gate(minilm_repository: Path) -> None:
    from tritonstack.export.options import DEFAULT_GATE

    report = json.loads((minilm_repository / "minilm" / "1" / "export_report.json").read_text())
    assert report["name"] == "minilm" and report["version"] == 1
    parity = report["parity"]
    # The default gate, on the minimum cosine over the parity texts, and the written model met it.
    assert parity["metric"] == "min_cosine" and parity["gate"] == DEFAULT_GATE, parity
    assert parity["passed"] is True and float(parity["value"]) >= parity["gate"], parity
