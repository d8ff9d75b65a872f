"""Errors about model repositories and their configs."""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class RepositoryError(TritonStackError):
    """The repository cannot be read or written."""


class ConfigValidationError(TritonStackError):
    """A model's config disagrees with its model file or with the text-in wiring."""

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        self.problems = problems
        summary = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n  " + "\n  ".join(problems)
        super().__init__(summary, hint=hint)
