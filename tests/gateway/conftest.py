"""The gateway's fixtures: one real embedded Triton serving an embedder (two releases of a second one), a
classifier and a reranker, and ``tritonstack gateway`` started as a user starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_process import CLASSIFIER, EMBEDDER, MAX_BATCH, RELEASED, RERANKER, GatewayProcess, start_gateway

import tinymodels


@pytest.fixture(scope="session")
def gateway_repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path], tiny_reranker_dir: Path
) -> Path:
    root = tmp_path_factory.mktemp("gateway")
    repository = root / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, EMBEDDER, max_batch_size=MAX_BATCH)
    tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, CLASSIFIER, layout="fused")
    tinymodels.export_fp32(tiny_reranker_dir, repository, RERANKER, max_batch_size=MAX_BATCH)
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, RELEASED)
    second = tinymodels.build(root / "seed7", "bert", "feature-extraction", seed=7)
    tinymodels.export_fp32(second, repository, RELEASED)  # release 2: other weights
    return repository


@pytest.fixture(scope="session")
def gateway_triton(gateway_repository: Path) -> Iterator[Any]:
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(gateway_repository, log_path=gateway_repository.parent / "triton.log") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(gateway_triton: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The gateway in front of ``gateway_triton``, auth off, the admin key given (so /v1/models lists the index)."""
    env = {"TRITONSTACK_ADMIN_KEY": gateway_triton.admin_key, "TRITONSTACK_GATEWAY_API_KEYS": ""}
    running = start_gateway(gateway_triton.grpc_url, tmp_path_factory.mktemp("gw"), env=env)
    yield running
    running.stop()
