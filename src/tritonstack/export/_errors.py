"""The export's errors that carry nothing of the export: what every step of it raises.

``errors.py`` is their public home (and draws the tree); it adds ``AccuracyGateError``, which carries the
export report. The steps import these from here, so that the report, built from the steps, never closes a
circle through the error that carries it (``tests/test_import_cycles.py``).
"""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class ExportError(TritonStackError):
    """An export failed for a reason we can name."""


class UnsupportedModelError(ExportError):
    """The model type or task is not in the export registry."""


class ParityShapeError(ExportError):
    """The exported model's output shape differs from the PyTorch reference."""
