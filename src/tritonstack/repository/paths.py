"""The folders of a Triton model repository: ``REPOSITORY/MODEL/VERSION/``.

Kept free of heavy imports: the commands read :data:`DEFAULT_REPOSITORY` while
they build their parsers.
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
