"""Where the int8 search keeps what it measured, so that exporting the same model again is quick.

Entries are keyed by the fp32 ONNX file's SHA-256 (the export is byte-for-byte
deterministic for a model folder) and by everything else the measurements
depend on (``search_key``): a different model, calibration text, gate metric
or ONNX Runtime version is a different entry. A corrupt or unreadable entry is
a miss, never an error: the cache only saves time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "TRITONSTACK_CACHE_DIR"


def cache_root() -> Path:
    """``$TRITONSTACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/tritonstack``, else ``~/.cache/tritonstack``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tritonstack"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def search_key(material: dict[str, Any]) -> str:
    """A short stable digest of ``material`` (JSON types only)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


class SearchCache:
    """One JSON document per (model, search key), under ``cache_root()/export``; ``root=None`` disables it."""

    def __init__(self, model_sha256: str, key: str, root: Path | None) -> None:
        self.path = None if root is None else root / "export" / f"{model_sha256[:16]}-{key}.json"

    def load(self) -> dict[str, Any] | None:
        if self.path is None:
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def store(self, data: dict[str, Any]) -> None:
        """Write ``data`` atomically; a cache that cannot be written is skipped."""
        if self.path is None:
            return
        staged: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, staged = tempfile.mkstemp(prefix=".search-", dir=self.path.parent)
            with os.fdopen(descriptor, "w") as file:
                json.dump(data, file)
            os.replace(staged, self.path)
        except OSError:
            if staged is not None:
                Path(staged).unlink(missing_ok=True)
