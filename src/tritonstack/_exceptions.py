"""The root of every error tritonstack raises on purpose.

    TritonStackError                 (tritonstack._exceptions)
    ├── ExportError, AccuracyGateError, ...     (tritonstack.export.errors)
    ├── RepositoryError, ConfigValidationError  (tritonstack.repository.errors)
    ├── ServerError, ServerStartError           (tritonstack.server.errors)
    ├── client errors                           (tritonstack.client._exceptions)
    ├── load-test errors                        (tritonstack.measure.errors)
    ├── MonitoringError                         (tritonstack.monitoring.errors)
    ├── BenchError                              (tritonstack.bench.errors)
    └── TuneError                               (tritonstack.tune.errors)

Every error has a one-line message and, where we know one, a hint that tells
the user what to try. The CLI prints both and exits with ``exit_code``.
"""

from __future__ import annotations


class TritonStackError(Exception):
    """Base class of all tritonstack errors."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
