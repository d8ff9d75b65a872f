"""One check of ``gpu-check`` and the JSON summary they add up to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    """``ok``: passed (True), failed (False), or could not be checked here (None: not a failure)."""

    name: str
    ok: bool | None
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, **self.data}


def verdict(checks: list[Check], gpu_found: bool) -> tuple[bool, str]:
    """Whether the run passed, and the one line that says so."""
    failed = [check.name for check in checks if check.ok is False]
    if failed:
        return False, f"failed: {', '.join(failed)}"
    unchecked = [check.name for check in checks if check.ok is None]
    note = f" ({', '.join(unchecked)} not checked here)" if unchecked else ""
    if not gpu_found:
        return True, f"no GPU found: the CPU-side checks passed{note}; the GPU checks need a GPU host"
    return True, f"passed{note}"
