"""Errors of a load run (``loadtest``, and the SLO file and texts that ``bench`` and ``tune`` read too).

    TritonStackError
    └── LoadTestError            the load itself could not run (exit 2)
        ├── SLOSpecError         the SLO file is invalid; names the field
        └── ServerUnreachableError   Triton did not answer the pre-flight request

An SLO that is *violated* is not an error: it is a verdict, and the command
exits 1 after printing which objective broke.
"""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class LoadTestError(TritonStackError):
    """The load test could not run: bad input, server down, workers missing."""

    exit_code = 2


class SLOSpecError(LoadTestError):
    """The SLO file is invalid. The message names the file and the field."""


class ServerUnreachableError(LoadTestError):
    """The server did not answer before the load started."""
