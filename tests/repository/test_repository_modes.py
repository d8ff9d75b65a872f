"""A repository left by every writer (export, releases, tune, the cache flag) is readable by another user.

The containers run Triton as UID 10001 (docker-compose) or copy the repository in as root-owned files
(Kubernetes): a file only its owner can read (a ``mkstemp`` file is 0600) is a model that does not load.
Where the tests run as root, every file is also read as UID 10001 itself.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import tinymodels
from tritonstack.repository import releases
from tritonstack.repository.validate import check_repository

UNPRIVILEGED_UID = 10001  # the containers' Triton user (docker-compose.yml, deploy/)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A folder other users can reach (pytest's own temporary folders are private to their owner)."""
    root = Path(tempfile.mkdtemp(prefix="tritonstack-modes-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def unreadable_by_others(repository: Path) -> list[str]:
    """Every file others cannot read and every folder others cannot list or enter, with its mode."""
    found = []
    for path in [repository, *sorted(repository.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        needed = 0o055 if path.is_dir() else 0o044
        if mode & needed != needed:
            found.append(f"{path.relative_to(repository.parent)} {mode:04o}")
    return found


def unreadable_as(uid: int, repository: Path) -> str:
    """What reading every file of ``repository`` as ``uid`` printed on stderr ('' when all could be read)."""

    def drop() -> None:
        os.setgid(uid)
        os.setgroups([])
        os.setuid(uid)

    result = subprocess.run(
        ["find", str(repository), "-type", "f", "-exec", "cat", "{}", "+"],
        preexec_fn=drop,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    return result.stderr if result.returncode else ""


def assert_readable(repository: Path) -> None:
    assert unreadable_by_others(repository) == []
    if os.geteuid() == 0:  # the nearest thing to the container's user a machine without a container engine has
        assert unreadable_as(UNPRIVILEGED_UID, repository) == ""


def test_every_writer_leaves_a_repository_others_can_read(
    tiny_model_dirs: dict[str, Path], shared_root: Path, umask_022: None
) -> None:
    from tritonstack.bench.cache import _scratch_repository, _switch_cache
    from tritonstack.tune.apply import write_winner
    from tritonstack.tune.knobs import apply_knobs, load_steps, read_knobs

    repository = shared_root / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")  # export
    assert_readable(repository)
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")  # a candidate release
    assert_readable(repository)
    releases.promote(repository, "tiny")
    assert_readable(repository)
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")
    releases.rollback(repository, "tiny")
    assert_readable(repository)

    before = load_steps(repository, "tiny")  # tune's winner, in the fused layout: a new model folder too
    after = apply_knobs(before, replace(read_knobs(before), layout="fused", encoder_delay_us=7))
    written = write_winner(repository, before, after, shared_root / "tune-report")
    assert written.created == (repository / "tiny_fused",)
    check_repository(repository)
    assert_readable(repository)

    cached = _scratch_repository(repository, "tiny", shared_root / "cache-repository")  # bench --cache's switch
    _switch_cache(cached, "tiny", enable=True)
    assert_readable(cached)


def test_a_private_source_file_is_copied_readable(shared_root: Path, umask_022: None) -> None:
    from tritonstack.repository import files

    source = shared_root / "tokenizer.json"
    source.write_text("{}")
    source.chmod(0o600)  # a private cache's file
    copied = files.copy_file(source, shared_root / "copied.json")
    assert stat.S_IMODE(copied.stat().st_mode) == 0o644
    written = files.write_text(shared_root / "config.pbtxt", "name: 'x'")
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert sorted(p.name for p in shared_root.iterdir()) == ["config.pbtxt", "copied.json", "tokenizer.json"]


def test_the_umask_is_honoured(shared_root: Path) -> None:
    from tritonstack.repository import files

    previous = os.umask(0o077)
    try:
        assert files.umask() == 0o077
        written = files.write_text(shared_root / "config.pbtxt", "name: 'x'")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
