"""A repository writer killed at any step leaves a repository that validates and serves.

Each writer runs in a child process with ``TRITONSTACK_FAULT=<point>`` (``tritonstack/_faults.py``), which
makes it SIGKILL itself at that point, as the OOM killer would: nothing of it cleans up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tinymodels
from tritonstack.repository import releases, staging
from tritonstack.repository.validate import check_repository

TESTS = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Path:
    """A repository that serves ``base``, to export ``tiny`` into."""
    repository = tmp_path_factory.mktemp("crash-base") / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "base")
    return repository


@pytest.fixture
def repository(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "model_repository"))


def run_killed(fault: str, code: str) -> None:
    """Run ``code`` in a child Python that dies at ``fault``; assert that it did."""
    env = {**os.environ, "TRITONSTACK_FAULT": fault}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, f"did not die at {fault!r}:\n{done.stderr[-3000:]}"


def export_killed_at(fault: str, model_dir: Path, repository: Path) -> None:
    run_killed(
        fault,
        f"""
        import tinymodels
        from pathlib import Path
        tinymodels.export_fp32(Path({str(model_dir)!r}), Path({str(repository)!r}), "tiny")
        """,
    )


EXPORT_POINTS = [
    "export-staged",
    "export-moved-tiny_encoder",
    "export-moved-tiny_tokenizer",
    "export-moved-tiny",
    "export-configs",
]


@pytest.mark.parametrize("fault", EXPORT_POINTS)
def test_a_first_export_killed_at_any_step_leaves_a_repository_that_validates(
    repository: Path, tiny_model_dirs: dict[str, Path], fault: str
) -> None:
    export_killed_at(fault, tiny_model_dirs["tiny"], repository)
    assert not [p.name for p in repository.iterdir() if p.name.startswith(".") and p.is_dir()]
    check_repository(repository)
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")  # and the next export sweeps and works
    assert staging.stale(repository) == []
    check_repository(repository)


@pytest.mark.parametrize("fault", ["export-staged", "export-moved-tiny_encoder", "export-configs"])
def test_a_second_export_killed_at_any_step_keeps_the_stable_release(
    repository: Path, tiny_model_dirs: dict[str, Path], fault: str
) -> None:
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")
    export_killed_at(fault, tiny_model_dirs["tiny"], repository)
    check_repository(repository)
    assert releases.read_releases(repository, "tiny").stable == 1


@pytest.mark.integration
def test_serve_starts_over_a_repository_a_killed_writer_left_staging_in(
    repository: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    from tritonstack.client import Client
    from tritonstack.server import EmbeddedServer

    export_killed_at("export-moved-tiny_tokenizer", tiny_model_dirs["tiny"], repository)
    # what a writer staging inside the repository (its parent read-only, or another filesystem) leaves
    leftover = repository / f"{staging.INSIDE_PREFIX}stale"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"half")
    with EmbeddedServer(repository) as server:
        assert Client(server.grpc_url, model="base").embed(["hello"]).shape == (1, 32)
    assert not leftover.exists()
