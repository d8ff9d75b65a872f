"""Token counts for ``usage``: the one place that reads the SDK's ``Usage`` (``usage=``, GATEWAY.md section 1).

A model exported before token counts has no TOKENS output: its ``Usage`` is not ``counted``, ``usage`` then
reports 0 tokens and ``truncate=false`` cannot be checked (the texts are cut, as the model does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritonstack.client import Usage


@dataclass(slots=True)
class Counted:
    """What one request's model calls counted: tokens in all, and per row sent whether the model cut it."""

    tokens: int = 0
    per_row: np.ndarray | None = None
    truncated: np.ndarray | None = None


def new_usage() -> Usage:
    """A fresh ``Usage`` for one request's calls (``usage=``)."""
    return Usage()


def counted(usage: Usage) -> Counted:
    """What ``usage`` holds after the calls; empty when it was not counted (an older export)."""
    if not usage.counted:
        return Counted()
    return Counted(int(usage.tokens), np.asarray(usage.per_row), np.asarray(usage.truncated, dtype=bool))
