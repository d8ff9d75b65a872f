"""Fault injection for the crash tests: ``TRITONSTACK_FAULT=<point>`` kills the process at that point.

A repository writer calls :func:`point` between the steps whose order keeps the repository servable after
a crash (``export-staged``, ``release-widened``, ...; the names are at the call sites, grep ``_faults.point``).
With ``TRITONSTACK_FAULT`` naming the point, the process sends itself SIGKILL there, as the OOM killer
would: no ``finally``, no ``atexit``. Unset (always, outside the tests), a call costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "TRITONSTACK_FAULT"


def point(name: str) -> None:
    """Die here, at once and uncleanly, if ``$TRITONSTACK_FAULT`` is ``name``."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
