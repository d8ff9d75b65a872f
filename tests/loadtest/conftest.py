"""The load tests' fixtures: the tiny cross-encoder served fused as ``rerank`` by a real embedded Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tinymodels


@pytest.fixture(scope="module")
def rerank_triton(tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path) -> Iterator[Any]:
    """A Triton per test module (its metrics start from zero for each), serving ``rerank`` (text-ranking)."""
    from tritonstack.server import EmbeddedServer

    repository = tmp_path_factory.mktemp("rerank-load") / "model_repository"
    tinymodels.export_fp32(tiny_reranker_dir, repository, "rerank", layout="fused")
    with EmbeddedServer(repository) as server:
        yield server
