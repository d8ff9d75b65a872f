"""Token counts for ``usage``: the one place that asks the SDK for them (``usage=``, GATEWAY.md section 1).

Until the SDK has ``Usage`` (an older SDK) or a model has no TOKENS output (an older export), nothing is counted:
``usage`` reports 0 tokens and ``truncate=false`` cannot be checked (the texts are cut, as the model does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(slots=True)
class Counted:
    """What one request's model calls counted: tokens in all, and per row whether the model cut it."""

    tokens: int = 0
    per_row: np.ndarray | None = None
    truncated: np.ndarray | None = None


def new_usage() -> Any | None:
    """A fresh ``tritonstack.client.Usage`` to pass as ``usage=``; ``None`` where the SDK has none."""
    from tritonstack import client

    usage_class = getattr(client, "Usage", None)
    return None if usage_class is None else usage_class()


def usage_kwargs(usage: Any | None) -> dict[str, Any]:
    return {} if usage is None else {"usage": usage}


def counted(usage: Any | None) -> Counted:
    """What ``usage`` holds after the calls; empty when it was not counted."""
    if usage is None or not getattr(usage, "counted", False):
        return Counted()
    return Counted(int(usage.tokens), np.asarray(usage.per_row), np.asarray(usage.truncated, dtype=bool))
