"""Where repository writers build what they move into place, and the sweep of what a killed writer left.

Triton loads every folder at the top of a repository as a model, hidden ones too: a staging folder left
inside it by a writer that was killed (SIGKILL, the OOM killer) made the next ``serve`` fail ("failed to
load all models"). So a writer stages *beside* the repository, in ``.<repository>.staging-*`` next to it,
when that folder is on the same filesystem (a rename must stay atomic) and writable; only where it is not
(the repository is a mount point, its parent read-only) inside, as ``.tritonstack-staging-*``. Either
kind left by a dead writer is swept by the next writer and by the embedded server before it starts,
under the repository's lock (``lock.py``), which every writer holds while its staging folder exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

INSIDE_PREFIX = ".tritonstack-staging-"


def _beside_prefix(repository: Path) -> str:
    return f".{repository.name}.staging-"


def _stage_beside(repository: Path) -> bool:
    parent = repository.parent
    try:
        same_filesystem = parent.stat().st_dev == repository.stat().st_dev
    except OSError:
        return False
    return same_filesystem and os.access(parent, os.W_OK | os.X_OK)


@contextlib.contextmanager
def staging_dir(repository: Path) -> Iterator[Path]:
    """A fresh, empty folder on the repository's filesystem that Triton does not scan (where it can be),
    removed on exit. ``repository`` exists."""
    repository = Path(repository).resolve()
    if _stage_beside(repository):
        staging = Path(tempfile.mkdtemp(prefix=_beside_prefix(repository), dir=repository.parent))
    else:
        staging = Path(tempfile.mkdtemp(prefix=INSIDE_PREFIX, dir=repository))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def stale(repository: Path) -> list[Path]:
    """The staging folders of ``repository``, inside it and beside it (stale when nobody holds its lock)."""
    repository = Path(repository).resolve()
    found = []
    if repository.is_dir():
        found += sorted(p for p in repository.iterdir() if p.is_dir() and p.name.startswith(INSIDE_PREFIX))
    if repository.parent.is_dir():
        prefix = _beside_prefix(repository)
        found += sorted(p for p in repository.parent.iterdir() if p.is_dir() and p.name.startswith(prefix))
    return found


def sweep(repository: Path) -> list[Path]:
    """Remove the staging folders dead writers left (the caller holds the repository's lock); those removed."""
    removed = []
    for path in stale(repository):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def sweep_before_serving(repository: Path) -> list[Path]:
    """:func:`sweep` under the repository's lock, waiting for a writer at work (its staging folder is live);
    nothing where the lock cannot be taken (a read-only repository, where nothing could be removed anyway)."""
    from tritonstack.repository import lock

    try:
        with lock.locked(repository, "serve"):
            return sweep(repository)
    except OSError:
        return []


def retire(path: Path, staging: Path) -> None:
    """Take the folder ``path`` out of the repository at once (a rename into ``staging``), then delete it:
    a crash mid-delete must not leave a model folder with half its files for Triton to load."""
    retired = staging / f"retired-{path.name}"
    os.replace(path, retired)
    shutil.rmtree(retired, ignore_errors=True)
