"""The ``/dev/shm`` regions the embedded server's Python-backend stubs share with Triton.

Triton names them ``<prefix><uuid>`` and removes them when it stops gracefully.
After a kill -9 some stay behind, one or two per model instance, and pile up
with every crash. So each embedded server gets its own prefix,
``tritonstack_<launcher pid>_<random>_`` (the Python backend's and our
Python-based onnxruntime backend's ``shm-region-prefix-name``): its regions
are removed when it stops, however it ended, and a new start removes those of
servers whose launcher is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

SHM_DIR = Path("/dev/shm")
_OURS = re.compile(r"^tritonstack_(?P<pid>\d+)_[0-9a-f]+_")
BACKENDS = ("python", "onnxruntime")  # every backend whose models run in stubs on the embedded server


def new_prefix() -> str:
    return f"tritonstack_{os.getpid()}_{secrets.token_hex(4)}_"


def backend_args(prefix: str) -> list[str]:
    return [f"--backend-config={backend},shm-region-prefix-name={prefix}" for backend in BACKENDS]


def regions(prefix: str) -> list[Path]:
    return sorted(SHM_DIR.glob(f"{prefix}*")) if SHM_DIR.is_dir() else []


def remove(prefix: str) -> int:
    """Remove the regions named ``prefix...``; how many. A process that still maps one keeps its mapping."""
    removed = 0
    for path in regions(prefix):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owned_by_me(path: Path) -> bool:
    try:
        return path.lstat().st_uid == os.geteuid()
    except FileNotFoundError:
        return False


def remove_orphans() -> int:
    """Remove the regions of embedded servers whose launching process is gone; how many.

    Only this user's: ``/dev/shm`` is shared by every local user, another user's embedded server has regions
    there too (its launcher's pid is not ours to judge), and removing them would fail -- a
    ``PermissionError`` that used to stop this server from starting -- or, as root, break that server."""
    removed = 0
    for path in regions("tritonstack_"):
        match = _OURS.match(path.name)
        if match and _owned_by_me(path) and not _running(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError, PermissionError):
                path.unlink()
                removed += 1
    return removed
