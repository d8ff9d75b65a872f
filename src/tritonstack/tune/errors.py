"""Errors of ``tritonstack tune``."""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class TuneError(TritonStackError):
    """The search cannot run (budget, repository, server), or what it found cannot be written."""
