"""The sweep of orphaned /dev/shm regions: this user's only, never a reason for serve to fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tritonstack.server import shared_memory


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(shared_memory, "SHM_DIR", tmp_path)
    return tmp_path


def _gone_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_orphans_of_this_user_are_removed_and_live_servers_kept(shm: Path) -> None:
    orphan = shm / f"tritonstack_{_gone_pid()}_ab12_region"
    live = shm / f"tritonstack_{os.getpid()}_cd34_region"
    for path in (orphan, live):
        path.touch()
    assert shared_memory.remove_orphans() == 1
    assert not orphan.exists() and live.exists()


def test_another_users_regions_are_skipped_not_a_failure(shm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = shm / f"tritonstack_{_gone_pid()}_ef56_region"
    theirs.touch()
    if os.geteuid() == 0:  # root could remove it: it must not (another user's server, its pid not ours to judge)
        os.chown(theirs, 10001, 10001)
    else:  # as that user's file in the sticky /dev/shm would be: removing it fails
        monkeypatch.setattr(shared_memory, "_owned_by_me", lambda path: True)

        def refused(self: Path, missing_ok: bool = False) -> None:
            raise PermissionError(1, "Operation not permitted", str(self))

        monkeypatch.setattr(Path, "unlink", refused)
    assert shared_memory.remove_orphans() == 0
    assert theirs.exists()
