"""matplotlib for the PNG plots of the load test, the bench and tune: the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, imported on first use (the CLI starts without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, path: Path, *, dpi: float | None = None) -> Path:
    """Lay out ``figure``, write it to ``path`` (its folder made if missing) at ``dpi`` (default: the
    figure's own) and close it."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path
