"""Files of a model repository: written atomically, with the mode a normal file gets (the umask's).

The containers run Triton as another user (UID 10001 in docker-compose, root-owned files copied into the
Kubernetes image): every file of a repository must be readable by others. ``tempfile.mkstemp`` makes a
file 0600 and ``shutil.copy2`` copies the source's mode, so every writer of a repository file goes
through here instead: a staged file is given ``0o666 & ~umask`` before it is renamed into place, a copy
``0o666 & ~umask`` (``0o777`` for an executable source), whatever the source had.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_STATUS = Path("/proc/self/status")


def umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it while reading it: a race with
    threads that create files meanwhile)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no /proc (not Linux, or a kernel before 4.7): the one way left
    os.umask(current)
    return current


def file_mode(*, executable: bool = False) -> int:
    """The mode ``open()`` gives a new file here (``0o777`` based for an executable one)."""
    return (0o777 if executable else 0o666) & ~umask()


def dir_mode() -> int:
    """The mode ``mkdir()`` gives a new folder here."""
    return 0o777 & ~umask()


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` by an atomic rename (a reader sees the old file or the new one, never a
    part), with the mode a normal file gets; its path. ``OSError`` as it comes."""
    path = Path(path)
    descriptor, staged = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".staged", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), file_mode())
            os.fsync(file.fileno())  # the rename must not land before the data (a crash would leave it empty)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return path


def copy_file(source: Path, destination: Path) -> Path:
    """Copy ``source``'s bytes to ``destination`` with the mode a normal file gets (not the source's: a 0600
    tokenizer file from a private cache would stay unreadable to the serving user); ``destination``."""
    shutil.copyfile(source, destination)
    os.chmod(destination, file_mode(executable=os.access(source, os.X_OK) and Path(source).is_file()))
    return Path(destination)


def make_dir_readable(path: Path) -> Path:
    """Give a folder made by ``tempfile.mkdtemp`` (0700) the mode ``mkdir()`` gives; ``path``."""
    os.chmod(path, dir_mode())
    return Path(path)
