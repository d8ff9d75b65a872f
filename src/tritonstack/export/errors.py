"""Errors of ``tritonstack export``.

TritonStackError
└── ExportError                  any export failure we diagnose (bad path, hub miss offline, ...)
    ├── UnsupportedModelError    model type or task outside the registry (lists the supported ones)
    ├── ParityShapeError         ONNX and PyTorch output shapes differ: a broken export, not a miss
    └── AccuracyGateError        the parity numbers missed the gate; carries the measured numbers
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tritonstack._exceptions import TritonStackError

if TYPE_CHECKING:
    from tritonstack.export.report import ExportReport


class ExportError(TritonStackError):
    """An export failed for a reason we can name."""


class UnsupportedModelError(ExportError):
    """The model type or task is not in the export registry."""


class ParityShapeError(ExportError):
    """The exported model's output shape differs from the PyTorch reference."""


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
