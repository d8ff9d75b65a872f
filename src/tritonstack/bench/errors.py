"""Errors of ``tritonstack bench``."""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class BenchError(TritonStackError):
    """The benchmark cannot run or a variant failed to produce a measurement."""
