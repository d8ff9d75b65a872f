"""What an export made, as the repository writer reads it: the ONNX encoder, its tokenizer and the task's output.

Declared once: ``export/onnx_export.py``'s ``OnnxExport`` is a ``ModelSpec`` (plus what the export's later
steps need), and the writer's ``ExportedModel`` is one (plus how to serve it), so the export passes one
value on instead of re-listing its fields at each hop. Standard library only: the export imports it early.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """An exported encoder and what the served models need to know of it."""

    task: str  # a contract.Task name
    onnx_path: Path
    tokenizer_dir: Path  # AutoTokenizer.save_pretrained output (tokenizer.json included)
    input_names: tuple[str, ...]
    output_name: str  # the graph's output: contract.Task.encoder_output
    output_dim: int  # embedding size or num_labels
    labels: tuple[str, ...]  # id2label order; () for an embedding
    max_sequence_length: int  # tokens

    def spec(self, **changes: Any) -> dict[str, Any]:
        """This value's ``ModelSpec`` fields (not a subclass's own) with ``changes``, as keywords for another."""
        return {f.name: getattr(self, f.name) for f in fields(ModelSpec)} | changes
