"""API keys: read from a key file or the environment (never a command line), checked in constant time."""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tritonstack._exceptions import TritonStackError

API_KEYS_ENV = "TRITONSTACK_GATEWAY_API_KEYS"  # comma-separated
OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/openapi.json"})  # probes, scrapes and the schema


class ApiKeyError(TritonStackError):
    """The API keys cannot be read."""


def load_api_keys(path: Path | None, environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """Keys from ``path`` (one a line, ``#`` comments) if given, else ``$TRITONSTACK_GATEWAY_API_KEYS``."""
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as error:
            raise ApiKeyError(f"cannot read the API key file {path}: {error.strerror}") from None
        keys = frozenset(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
        if not keys:
            raise ApiKeyError(f"the API key file {path} holds no key", hint="one key a line")
        return keys
    return frozenset(key.strip() for key in environ.get(API_KEYS_ENV, "").split(",") if key.strip())


def authorized(header: bytes | None, keys: Iterable[str]) -> bool:
    """Whether ``Authorization: Bearer KEY`` names one of ``keys``; every key is compared, in constant time."""
    if header is None:
        return False
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    token = token.strip()
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key.encode())
    return found
