"""A hub id's files, at a revision: only those an export reads.

``snapshot_download`` without patterns fetches the whole repository at whatever the default branch is now:
TensorFlow, Flax, ONNX and Core ML copies of the weights included, and a different model tomorrow. Export
asks for one ``revision`` (a branch, tag or commit; the default branch when ``None``), and for the files it
reads: the config, the tokenizer's files, sentence-transformers' pooling files, and one format of weights --
safetensors where the repository has them, else PyTorch's ``.bin``. The snapshot's folder is named after
the commit it holds, which the export report records.
"""

from __future__ import annotations

from pathlib import Path

from tritonstack.repository.python_models import TOKENIZER_FILES

# What export_onnx, transformers' Auto* loaders and pooling.py read, besides the weights.
MODEL_FILES = (
    "config.json",
    *TOKENIZER_FILES,
    "added_tokens.json",
    "modules.json",  # sentence-transformers: the pipeline and its pooling folder ...
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "*_Pooling/config.json",  # ... such as 1_Pooling/config.json
)
SAFETENSORS = ("*.safetensors", "*.safetensors.index.json")
PYTORCH_BIN = ("pytorch_model*.bin", "pytorch_model*.bin.index.json")


def download(model_id: str, revision: str | None) -> Path:
    """The local snapshot of ``model_id`` at ``revision`` holding :data:`MODEL_FILES` and one format of weights
    (the hub's errors as they come: the caller words them)."""
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(model_id, revision=revision, allow_patterns=[*MODEL_FILES, *SAFETENSORS]))
    if not any(snapshot.glob("*.safetensors")):  # an older repository: PyTorch's pickled weights
        snapshot = Path(snapshot_download(model_id, revision=revision, allow_patterns=[*MODEL_FILES, *PYTORCH_BIN]))
    return snapshot


def commit_of(snapshot: Path) -> str | None:
    """The commit a hub snapshot holds (its folder's name in the hub cache: ``snapshots/<commit>``)."""
    name = Path(snapshot).name
    if Path(snapshot).parent.name == "snapshots" and len(name) == 40 and all(c in "0123456789abcdef" for c in name):
        return name
    return None
