"""Load testing against an SLO: Locust users over the SDK, verdict, report, capacity search.

Importing this package does not import Locust (Locust monkey-patches the
process with gevent on import); the Locust-facing modules are
:mod:`tritonstack.loadtest.users`, :mod:`tritonstack.loadtest.plugin` and
:mod:`tritonstack.loadtest.runner`.
"""

from __future__ import annotations

from tritonstack.measure.errors import LoadTestError, ServerUnreachableError, SLOSpecError
from tritonstack.measure.slo import SLO, LoadSpec, Objectives, PayloadSpec, load_slo

__all__ = [
    "SLO",
    "LoadSpec",
    "LoadTestError",
    "Objectives",
    "PayloadSpec",
    "SLOSpecError",
    "ServerUnreachableError",
    "load_slo",
]
