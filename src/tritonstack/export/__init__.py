"""HF model -> ONNX -> optimized/quantized, parity-gated -> Triton model repository.

Public names (imported on first use: torch, transformers and onnxruntime load
only when an export actually runs)::

    export_model(ExportOptions(...)) -> ExportResult     the whole `tritonstack export`
    ExportReport                                         its report; ExportReport.from_json reads one back
    Precision                                            auto, fp32, fp16, int8
    Gate                                                 the accuracy gate: a metric and its threshold
    ensure_exported(model, repository, name)             reuse a valid export there, else export
    export_onnx(model, task, output_dir) -> OnnxExport   fp32 ONNX with the task's output fused in
    Recipe                                               int8 quantization presets
    ExportError, UnsupportedModelError, AccuracyGateError, ParityShapeError
"""

from __future__ import annotations

import importlib
from typing import Any

from tritonstack.export.errors import AccuracyGateError, ExportError, ParityShapeError, UnsupportedModelError

_LAZY = {
    "ExportOptions": "tritonstack.export.options",
    "ExportReport": "tritonstack.export.report",
    "ExportResult": "tritonstack.export.pipeline",
    "Precision": "tritonstack.export.options",
    "Gate": "tritonstack.export.gates",
    "export_model": "tritonstack.export.pipeline",
    "ensure_exported": "tritonstack.export.ensure",
    "OnnxExport": "tritonstack.export.onnx_export",
    "export_onnx": "tritonstack.export.onnx_export",
    "Recipe": "tritonstack.export.quantize",
}

__all__ = [
    "AccuracyGateError",
    "ExportError",
    "ExportOptions",
    "ExportReport",
    "ExportResult",
    "Gate",
    "OnnxExport",
    "ParityShapeError",
    "Precision",
    "Recipe",
    "UnsupportedModelError",
    "ensure_exported",
    "export_model",
    "export_onnx",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
