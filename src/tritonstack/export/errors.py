"""Errors of ``tritonstack export``.

TritonStackError
└── ExportError                  any export failure we diagnose (bad path, hub miss offline, ...)
    ├── UnsupportedModelError    model type or task outside the registry (lists the supported ones)
    ├── ParityShapeError         ONNX and PyTorch output shapes differ: a broken export, not a miss
    └── AccuracyGateError        the parity numbers missed the gate; carries the measured numbers

The first three live in ``_errors.py``, which the export's steps import; this module adds the one that
carries the export report (built from those steps), so no step imports the report through its errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tritonstack.export._errors import ExportError as ExportError
from tritonstack.export._errors import ParityShapeError as ParityShapeError
from tritonstack.export._errors import UnsupportedModelError as UnsupportedModelError

if TYPE_CHECKING:
    from tritonstack.export.report import ExportReport


class AccuracyGateError(ExportError):
    """Parity against the PyTorch reference missed the gate.

    ``measured`` holds the numbers (e.g. ``{"min_cosine": 0.953, "gate": 0.99}``)
    and ``report`` the export report so far (the candidate table included) so the
    CLI can print or emit it even though nothing is written.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        measured: dict[str, Any] | None = None,
        report: ExportReport | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.measured = dict(measured or {})
        self.report = report
