"""The folders of a Triton model repository: ``REPOSITORY/MODEL/VERSION/``.

The writer, the validator, releases and the bench's in-process limit walk
version folders with :func:`versions`; the commands show
:data:`DEFAULT_REPOSITORY` in their ``--help``. Standard library only, like the
rest of what a command's ``--help`` imports (the config modules load protobuf).
"""

from __future__ import annotations

from pathlib import Path

# Where export writes and serve, validate and demo read, unless told otherwise.
DEFAULT_REPOSITORY = Path("model_repository")


def versions(model_dir: Path) -> list[Path]:
    """The version folders of a model (Triton's: a whole number as the name), oldest first.

    A model folder that does not exist has none.
    """
    if not model_dir.is_dir():
        return []
    found = (child for child in model_dir.iterdir() if child.is_dir() and child.name.isdigit())
    return sorted(found, key=lambda child: int(child.name))
