"""Which response cache the embedded server runs, and the sizes ``serve --cache-size`` accepts.

A model opts in with ``response_cache { enable: true }`` in its config (``tritonstack export --cache``).
Triton 2.51 then still needs a cache implementation at start-up: without ``--cache-config`` such a model
loads and never hits (measured). So the embedded server starts the wheel's ``local`` cache whenever a
model of its repository opts in, :data:`~tritonstack.server.flags.DEFAULT_LOCAL_CACHE_BYTES` large
unless told otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

from tritonstack.server.flags import DEFAULT_LOCAL_CACHE_BYTES, LocalCache

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?P<binary>i?)b?", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size_bytes(text: str) -> int:
    """Bytes in ``"268435456"``, ``"256MiB"``, ``"256M"`` (MiB too: sizes of memory), ``"1.5GB"`` (10**9)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a size such as 256MiB, 1GiB or a number of bytes, got {text!r}")
    unit = match["unit"].lower()
    # "M" and "MiB" are binary, as memory is; only an explicit "MB" is decimal.
    decimal = bool(unit) and not match["binary"] and text.strip().lower().endswith("b")
    size = float(match["number"]) * (1000 if decimal else 1024) ** _POWERS[unit]
    if size < 1:
        raise ValueError(f"a cache size must be at least one byte, got {text!r}")
    return int(size)


def format_size(size_bytes: int) -> str:
    """``268435456`` -> ``"256 MiB"``: the largest binary unit that leaves a whole number, else bytes."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size_bytes % 1024**power == 0:
            return f"{size_bytes // 1024**power} {unit}"
    return f"{size_bytes} B"


def models_with_cache(repository: Path) -> list[str]:
    """The models of ``repository`` whose config enables the response cache (unreadable configs skipped:
    ``tritonstack validate`` reports them)."""
    # imported here: the protobuf config pulls in tritonclient's gRPC, which `serve --help` need not load
    from google.protobuf import text_format

    from tritonstack.repository.config import parse, response_cache_enabled

    names = []
    for config_path in sorted(Path(repository).glob("*/config.pbtxt")):
        if config_path.parent.name.startswith("."):
            continue
        try:
            config = parse(config_path.read_text())
        except (OSError, text_format.ParseError):
            continue
        if response_cache_enabled(config):
            names.append(config_path.parent.name)
    return names


def embedded_cache(repository: Path, size_bytes: int | None = None) -> LocalCache | None:
    """The cache for an embedded server over ``repository``: ``size_bytes`` when given, else the default
    size when a model enables the cache, else none."""
    if size_bytes is not None:
        return LocalCache(size_bytes)
    return LocalCache(DEFAULT_LOCAL_CACHE_BYTES) if models_with_cache(repository) else None
