"""Shared fixtures of the tune tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import tinymodels


@pytest.fixture(scope="module")
def exported(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported once per test module; each test copies it (tune and its rollback rewrite it)."""
    repository = tmp_path_factory.mktemp("tune-export") / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")
    return repository
