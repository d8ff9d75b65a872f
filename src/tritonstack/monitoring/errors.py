"""Errors of the local monitoring stack (``tritonstack monitor``).

TritonStackError
└── MonitoringError      Prometheus could not be configured, started or queried (exit 2)
"""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class MonitoringError(TritonStackError):
    """The local Prometheus could not run: config missing or invalid, binary missing, start-up or a query failed."""

    # As for a load test that could not run: 2 is "the tool could not do its job", not a verdict.
    exit_code = 2
