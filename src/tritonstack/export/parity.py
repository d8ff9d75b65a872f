"""The accuracy gate: an ONNX candidate against the PyTorch model, on real text.

The reference is what users of the PyTorch model get: for feature-extraction
``SentenceTransformer(model_dir, device="cpu").encode(texts)`` (pooling,
normalisation and max_seq_length from the model's own files); for
classification the transformers model's softmax. The ONNX side tokenizes with
the exported tokenizer, padded to the longest text of each batch -- exactly
what the served tokenizer model does.

feature-extraction is gated on the minimum cosine over all texts;
classification on label agreement (token-classification: over real tokens),
with the largest probability difference reported alongside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tritonstack._texts import parse_texts, read_texts
from tritonstack.export.errors import ExportError, ParityShapeError

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport

BATCH_SIZE = 32


def sample_texts() -> list[str]:
    """The built-in parity sample: 64 sentences, 3-106 words, a few non-English and emoji."""
    text = resources.files("tritonstack.export").joinpath("data/sample_texts.txt").read_text(encoding="utf-8")
    return parse_texts(text)


def load_texts(user_file: Path | None) -> list[str]:
    """The built-in sample plus the texts of ``user_file`` (:mod:`tritonstack._texts`' rule)."""
    texts = sample_texts()
    if user_file is not None:
        texts += read_texts(user_file, what="parity texts file", error=ExportError)
    return texts


@dataclass(frozen=True)
class Reference:
    """PyTorch outputs on the parity texts, computed once for all candidates."""

    task: str
    texts: tuple[str, ...]
    values: np.ndarray  # embeddings [n, dim] or probabilities [n, labels] / [n, seq, labels]
    token_mask: np.ndarray | None = None  # token-classification: [n, seq] real-token mask


@dataclass(frozen=True)
class Parity:
    """Parity numbers of one candidate and whether they pass the gate."""

    metric: str  # "min_cosine" or "label_agreement"
    value: float
    gate: float
    details: dict[str, float]

    @property
    def passed(self) -> bool:
        return self.value >= self.gate

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "gate": self.gate,
            "passed": self.passed,
            **self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        """The inverse of ``to_dict`` (``passed`` is derived from value and gate)."""
        details = {k: v for k, v in data.items() if k not in ("metric", "value", "gate", "passed")}
        return cls(data["metric"], data["value"], data["gate"], details)


def reference_metric(task: str) -> str:
    """What the gate compares for ``task``, in words."""
    return "min cosine" if task == "feature-extraction" else "label agreement"


def tokenize_batches(
    tokenizer_dir: Path, texts: Sequence[str], max_length: int, input_names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Batches of ``BATCH_SIZE`` texts, padded to the longest of each batch, int64, one array per input.

    A tokenizer that emits no ``token_type_ids`` for a model that takes them
    gets zeros (segment A), as transformers itself defaults them.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    batches = []
    for start in range(0, len(texts), BATCH_SIZE):
        encoded = tokenizer(
            list(texts[start : start + BATCH_SIZE]),
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        batch = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        for name in input_names:
            if name not in batch:
                if name != "token_type_ids":
                    raise ExportError(f"the tokenizer produces no {name!r}, which the model takes")
                batch[name] = np.zeros_like(batch["input_ids"])
        batches.append({name: batch[name] for name in input_names})
    return batches


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def _pad_tokens(chunks: list[np.ndarray]) -> np.ndarray:
    # token-level outputs of different batches differ in length: pad to one array
    longest = max(c.shape[1] for c in chunks)
    return np.concatenate([np.pad(c, ((0, 0), (0, longest - c.shape[1]), (0, 0))) for c in chunks])


def compute_reference(export: OnnxExport, texts: Sequence[str]) -> Reference:
    """What the PyTorch model returns for ``texts``."""
    import torch

    if export.task == "feature-extraction":
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(str(export.model_dir), device="cpu")
        st_model.max_seq_length = export.max_sequence_length
        values = st_model.encode(list(texts), batch_size=BATCH_SIZE, convert_to_numpy=True)
        return Reference(export.task, tuple(texts), np.asarray(values, dtype=np.float32))

    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = (
        AutoModelForSequenceClassification if export.task == "text-classification" else AutoModelForTokenClassification
    )
    model = auto.from_pretrained(str(export.model_dir)).eval()
    outputs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    with torch.no_grad():
        batches = tokenize_batches(export.tokenizer_dir, texts, export.max_sequence_length, export.input_names)
        for batch in batches:
            feeds = {k: torch.from_numpy(v) for k, v in batch.items()}
            outputs.append(_softmax(model(**feeds).logits.float().numpy()))
            masks.append(batch["attention_mask"])
    if export.task == "text-classification":
        return Reference(export.task, tuple(texts), np.concatenate(outputs))
    mask = _pad_tokens([m[:, :, None] for m in masks])[:, :, 0]
    return Reference(export.task, tuple(texts), _pad_tokens(outputs), token_mask=mask.astype(bool))


def run_onnx(session: Any, batches: list[dict[str, np.ndarray]], token_level: bool) -> np.ndarray:
    """The session's single output over all batches."""
    names = [i.name for i in session.get_inputs()]
    chunks = [np.asarray(session.run(None, {n: b[n] for n in names})[0], dtype=np.float32) for b in batches]
    return _pad_tokens(chunks) if token_level else np.concatenate(chunks)


def compare(reference: Reference, candidate: np.ndarray, gate: float) -> Parity:
    """Parity of ONNX outputs ``candidate`` against the reference."""
    if candidate.shape != reference.values.shape:
        raise ParityShapeError(
            f"ONNX output shape {candidate.shape} differs from the PyTorch reference {reference.values.shape}",
            hint="the export is broken (not a tolerance miss): check the task and the model's files",
        )
    if reference.task == "feature-extraction":
        ref, got = reference.values.astype(np.float64), candidate.astype(np.float64)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosine = (ref * got).sum(axis=1) / np.maximum(norms, 1e-12)
        return Parity(
            "min_cosine",
            float(cosine.min()),
            gate,
            {
                "mean_cosine": float(cosine.mean()),
                "max_abs_diff": float(np.abs(ref - got).max()),
                "worst_text_index": int(cosine.argmin()),
            },
        )
    probs = _softmax(candidate)
    ref = reference.values
    if reference.token_mask is not None:
        ref, probs = ref[reference.token_mask], probs[reference.token_mask]
    agreement = float((ref.argmax(-1) == probs.argmax(-1)).mean())
    return Parity(
        "label_agreement",
        agreement,
        gate,
        {"max_abs_prob_diff": float(np.abs(ref - probs).max()), "compared": int(ref.shape[0])},
    )


def check_parity(session: Any, reference: Reference, batches: list[dict[str, np.ndarray]], gate: float) -> Parity:
    """Run ``session`` on the parity batches and compare with the reference."""
    candidate = run_onnx(session, batches, token_level=reference.task == "token-classification")
    return compare(reference, candidate, gate)
