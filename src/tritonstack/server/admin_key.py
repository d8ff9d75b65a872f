"""The embedded server's admin key: where it comes from, and the file a generated one goes to.

A key the user gave (``--admin-key`` or ``$TRITONSTACK_ADMIN_KEY``) is theirs to
keep. A key ``serve`` generates is written to a file only the user can read, and
the command prints the file's path, never the key: printed, it would end up in
terminal scrollback, CI logs and shared screen recordings.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from tritonstack.server import flags

KEY_FILE_MODE = 0o600
GENERATED_KEY_BYTES = 24  # 32 URL-safe characters


class KeySource(Enum):
    FLAG = "--admin-key"
    ENVIRONMENT = f"${flags.ADMIN_KEY_ENV}"
    GENERATED = "generated for this run"


@dataclass(frozen=True)
class AdminKey:
    """A key and where it came from; ``repr`` leaves the key out, so a traceback or log line cannot show it."""

    value: str = field(repr=False)
    source: KeySource

    @property
    def chosen(self) -> bool:
        """Whether the user gave the key (as opposed to ``serve`` generating it)."""
        return self.source is not KeySource.GENERATED

    @classmethod
    def resolve(cls, given: str | None, environ: Mapping[str, str] = os.environ) -> AdminKey:
        """``--admin-key`` first, then ``$TRITONSTACK_ADMIN_KEY``, else a fresh random key (empty counts as unset)."""
        if given:
            return cls(given, KeySource.FLAG)
        if environ.get(flags.ADMIN_KEY_ENV):
            return cls(environ[flags.ADMIN_KEY_ENV], KeySource.ENVIRONMENT)
        return cls(secrets.token_urlsafe(GENERATED_KEY_BYTES), KeySource.GENERATED)


def write_key_file(key: AdminKey, path: Path) -> Path:
    """Write ``key`` to ``path``, readable and writable by the user only (mode 0600); return the path.

    The key goes to a new file created with mode 0600 (never a moment with wider
    permissions, whatever the umask) and then replaces ``path`` in one rename, so
    a file or symlink already at ``path`` is replaced, not written through.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, KEY_FILE_MODE)
    try:
        with os.fdopen(descriptor, "w") as file:
            os.fchmod(file.fileno(), KEY_FILE_MODE)
            file.write(key.value + "\n")
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        raise
    return path
