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


@pytest.fixture
def two_releases(repository: Path, tiny_model_dirs: dict[str, Path]) -> Path:
    """``tiny`` exported twice into ``repository``: a stable release and a candidate."""
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")
    return repository


RELEASE_POINTS = ["release-widened", "release-repinned", "release-retired"]


@pytest.mark.parametrize("command", ["promote", "rollback"])
@pytest.mark.parametrize("fault", RELEASE_POINTS)
def test_a_release_command_killed_at_any_step_leaves_a_repository_that_validates(
    two_releases: Path, command: str, fault: str
) -> None:
    before = releases.read_releases(two_releases, "tiny")
    run_killed(
        fault,
        f"""
        from pathlib import Path
        from tritonstack.repository import releases
        releases.{command}(Path({str(two_releases)!r}), "tiny")
        """,
    )
    check_repository(two_releases)
    after = releases.read_releases(two_releases, "tiny")
    assert after.stable in (before.stable, before.candidate)
    if after.candidate is not None:  # killed before the repin: the command can be run again
        getattr(releases, command)(two_releases, "tiny")
        check_repository(two_releases)


def test_a_second_writer_waits_for_the_first_or_fails_clearly(two_releases: Path) -> None:
    from tritonstack.repository import lock

    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from tritonstack.repository import lock
            with lock.locked(Path({str(two_releases)!r}), "test"):
                print("held", flush=True)
                time.sleep(float(sys.argv[1]))
            """), "1.5"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        busy = pytest.raises(lock.RepositoryBusyError, match="being changed by another writer")
        with busy as raised, lock.locked(two_releases, "release promote tiny", wait_s=0.2):
            pass
        assert raised.value.hint and "one at a time" in raised.value.hint
        assert releases.promote(two_releases, "tiny").candidate is None
        assert holder.poll() is not None  # promote waited for the holder to let go
    finally:
        holder.wait(timeout=30)
    check_repository(two_releases)


def test_the_lock_excludes_another_thread_and_lets_a_thread_re_enter(tmp_path: Path) -> None:
    import threading

    from tritonstack.repository import lock

    held, release, outcome = threading.Event(), threading.Event(), []

    def holder() -> None:
        with lock.locked(tmp_path, "first"), lock.locked(tmp_path, "first, again"):  # re-entered by its thread
            held.set()
            release.wait(timeout=10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=10)
        try:
            with lock.locked(tmp_path, "second", wait_s=0.2):
                outcome.append("entered")
        except lock.RepositoryBusyError:
            outcome.append("busy")
    finally:
        release.set()
        thread.join(timeout=10)
    assert outcome == ["busy"]  # not let in beside the first thread's hold
    with lock.locked(tmp_path, "third", wait_s=0.2):  # free again once the holder let go
        pass
