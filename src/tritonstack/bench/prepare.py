"""The repository the benchmark serves: reused when present, else exported from the model.

Exporting goes through ``tritonstack export`` (parity-gated, the fastest passing
candidate) -- the same path a user takes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tritonstack.bench.errors import BenchError

Log = Callable[[str], None]


def ensure_repository(model_dir: Path, repository: Path, name: str, *, reexport: bool, log: Log = print) -> str:
    """Make ``repository`` hold text-in model ``name``; return how (for the report)."""
    if (repository / name).is_dir() and not reexport:
        log(f"==> using {name} in {repository} (--reexport to export again)")
        return f"reused {repository / name}"
    from tritonstack.cli import main as cli_main

    command = ["export", str(model_dir), "--name", name, "--repository", str(repository)]
    log("==> tritonstack " + " ".join(command))
    code = cli_main(command)
    if code != 0:
        raise BenchError(f"tritonstack export failed with exit code {code}")
    return "exported with tritonstack export"
