"""The repository's writer lock: export, tune and release change a repository one at a time.

Two writers at once could interleave their renames (an export's candidate retired by a promote that read
the releases before it) or sweep each other's staging folder. Every writer holds an exclusive ``flock`` on
``<repository>/.tritonstack.lock`` while it changes the repository; a second one waits up to ``wait_s`` and
then fails with :class:`RepositoryBusyError`. The file stays empty (a writer's name in it would change
the repository's bytes with every run). A plain file at the top of a repository
is not a model to Triton (2.51 loads folders only; checked with the embedded server), so the lock lives
inside the repository it guards, wherever that is mounted. The lock is the process's: a writer that
calls another (export -> releases) takes it again without waiting. ``flock`` dies with its process, so a
killed writer leaves no lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tritonstack.repository import files
from tritonstack.repository.errors import RepositoryError

LOCK_FILENAME = ".tritonstack.lock"
DEFAULT_WAIT_S = 60.0  # an export writes for seconds, tune and release for less
_POLL_S = 0.1

# (lock path, thread) -> how many times that thread holds it: a thread re-enters its own hold; another thread
# opens its own descriptor, which flock excludes like another process's
_held: dict[tuple[Path, int], int] = {}
_held_guard = threading.Lock()


class RepositoryBusyError(RepositoryError):
    """Another writer holds the repository's lock."""


@contextlib.contextmanager
def locked(repository: Path, what: str, *, wait_s: float | None = None) -> Iterator[None]:
    """Hold ``repository``'s writer lock (it exists) for ``what`` (the command, for the reader of the code);
    wait up to ``wait_s`` (``None``: :data:`DEFAULT_WAIT_S`) for another writer. ``OSError`` when the lock
    file cannot be opened (a read-only repository)."""
    path = (Path(repository) / LOCK_FILENAME).resolve()
    key = (path, threading.get_ident())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, files.file_mode())
    try:
        deadline = time.monotonic() + (DEFAULT_WAIT_S if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RepositoryBusyError(
                        f"{repository} is being changed by another writer (export, tune or release), "
                        f"still after {wait_s if wait_s is not None else DEFAULT_WAIT_S:g} s",
                        hint="wait for it to finish and run this again; export, tune and release change a "
                        f"repository one at a time (the lock: {path})",
                    ) from None
                time.sleep(_POLL_S)
        with _held_guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
    finally:
        os.close(descriptor)  # releases the flock
