"""Parity: an ONNX candidate against the PyTorch model, on real text.

The reference is what users of the PyTorch model get: for feature-extraction
``SentenceTransformer(model_dir, device="cpu").encode(texts)`` (pooling,
normalisation and max_seq_length from the model's own files); for
classification the transformers model's softmax. The ONNX side tokenizes with
the exported tokenizer, ``rows_per_call`` texts per ONNX Runtime call padded
to the longest of them -- one text per call for a dynamic-int8 model, as it is
served, because its activation scale spans the whole call.

Every figure is computed for every candidate; the ``Gate`` (``gates.py``)
picks the one that decides:

* feature-extraction: min and mean cosine, max abs diff, and retrieval
  agreement among the texts themselves -- the overlap of each text's 10
  nearest neighbours and of its nearest one, and the Spearman correlation of
  all pairwise similarities;
* classification: label agreement (token-classification: over real tokens)
  and the largest probability difference;
* text-ranking: per query (the reference's rows grouped by their query), the
  Spearman correlation of the documents' scores, whether the best document is
  the same, the overlap of the 3 best; and the largest score difference. The
  reference is ``AutoModelForSequenceClassification`` on the (query, document)
  pairs, tokenized with truncation ``only_second`` as served, its raw logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tritonstack.export._errors import ExportError, ParityShapeError
from tritonstack.export.gates import RANK_TOP_K, TOP_K, Gate, GateMetric
from tritonstack.in_triton import contract

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport

BATCH_SIZE = 32  # texts per reference batch, and per ONNX Runtime call where a model may be batched


@dataclass(frozen=True)
class Reference:
    """PyTorch outputs on one split's texts, computed once for all candidates."""

    task: str
    texts: tuple[str, ...]  # a pair task: the query of each row
    values: np.ndarray  # embeddings [n, dim], probabilities [n, labels] / [n, seq, labels], or scores [n, 1]
    token_mask: np.ndarray | None = None  # token-classification: [n, seq] real-token mask
    text_pairs: tuple[str, ...] | None = None  # a pair task: the document of each row


@dataclass(frozen=True)
class Parity:
    """Parity figures of one candidate on one split, and whether the gate's figure passes."""

    metric: str  # the gate's metric (a GateMetric value)
    value: float  # details[metric]
    gate: float  # the threshold
    details: dict[str, float]  # every figure of the task (the gate's included), worst_text_index

    @property
    def passed(self) -> bool:
        return Gate(self.gate, GateMetric(self.metric)).passes(self.value)

    def figure(self, metric: GateMetric | str) -> float | None:
        """One figure by name, ``None`` when the task has no such figure."""
        value = self.value if str(metric) == self.metric else self.details.get(str(metric))
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "gate": self.gate, "passed": self.passed, **self.details}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        """The inverse of ``to_dict`` (``passed`` is derived from value and gate)."""
        details = {k: v for k, v in data.items() if k not in ("metric", "value", "gate", "passed")}
        return cls(data["metric"], data["value"], data["gate"], details)


def tokenize_batches(
    tokenizer_dir: Path,
    texts: Sequence[str],
    max_length: int,
    input_names: Sequence[str],
    *,
    rows_per_call: int = BATCH_SIZE,
    text_pairs: Sequence[str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The texts in batches of ``rows_per_call``, padded to the longest of each batch, int64, one array per input.

    ``rows_per_call=1``: each text alone, unpadded. A tokenizer that emits no
    ``token_type_ids`` for a model that takes them gets zeros (segment A), as
    transformers itself defaults them. ``text_pairs``: row i is the pair
    (``texts[i]``, ``text_pairs[i]``), in the tokenizer's pair template, only the
    second text truncated (as the served tokenizer does).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if text_pairs is not None:
        _check_queries(tokenizer, texts, max_length)
    batches = []
    for start in range(0, len(texts), rows_per_call):
        stop = start + rows_per_call
        encoded = tokenizer(
            list(texts[start:stop]),
            None if text_pairs is None else list(text_pairs[start:stop]),
            padding="longest",
            truncation=True if text_pairs is None else "only_second",
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


def _check_queries(tokenizer: Any, queries: Sequence[str], max_length: int) -> None:
    """Each query must leave its document a token (only documents are truncated), as the server requires."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    for query in dict.fromkeys(queries):
        tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        if tokens >= room:
            raise ExportError(
                f"the parity query {query[:60]!r} is {tokens} tokens, which leaves its documents no room in "
                f"--max-sequence-length {max_length} (only documents are truncated)",
                hint="raise --max-sequence-length",
            )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def _pad_tokens(chunks: list[np.ndarray]) -> np.ndarray:
    # token-level outputs of different batches differ in length: pad to one array
    longest = max(c.shape[1] for c in chunks)
    return np.concatenate([np.pad(c, ((0, 0), (0, longest - c.shape[1]), (0, 0))) for c in chunks])


def compute_reference(export: OnnxExport, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> Reference:
    """What the PyTorch model returns for ``texts`` (a pair task: for the pairs of ``texts`` and ``text_pairs``)."""
    import torch

    task = contract.task(export.task)
    if task.embedding:
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(str(export.model_dir), device="cpu")
        st_model.max_seq_length = export.max_sequence_length
        values = st_model.encode(list(texts), batch_size=BATCH_SIZE, convert_to_numpy=True)
        return Reference(export.task, tuple(texts), np.asarray(values, dtype=np.float32))

    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if task.token_level else AutoModelForSequenceClassification
    model = auto.from_pretrained(str(export.model_dir)).eval()
    outputs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    with torch.no_grad():
        batches = tokenize_batches(
            export.tokenizer_dir, texts, export.max_sequence_length, export.input_names, text_pairs=text_pairs
        )
        for batch in batches:
            feeds = {k: torch.from_numpy(v) for k, v in batch.items()}
            logits = model(**feeds).logits.float().numpy()
            outputs.append(logits if task.ranking else _softmax(logits))  # a ranking's score is the raw logit
            masks.append(batch["attention_mask"])
    if task.ranking:
        pairs = None if text_pairs is None else tuple(text_pairs)
        return Reference(export.task, tuple(texts), np.concatenate(outputs), text_pairs=pairs)
    if not task.token_level:
        return Reference(export.task, tuple(texts), np.concatenate(outputs))
    mask = _pad_tokens([m[:, :, None] for m in masks])[:, :, 0]
    return Reference(export.task, tuple(texts), _pad_tokens(outputs), token_mask=mask.astype(bool))


def run_onnx(
    session: Any, batches: list[dict[str, np.ndarray]], token_level: bool, extra: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """The session's single output over all batches (``extra``: more inputs, the same for every call)."""
    names = [i.name for i in session.get_inputs() if not extra or i.name not in extra]
    chunks = [
        np.asarray(session.run(None, {**{n: b[n] for n in names}, **(extra or {})})[0], dtype=np.float32)
        for b in batches
    ]
    return _pad_tokens(chunks) if token_level else np.concatenate(chunks)


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """How alike the two embeddings rank the texts against each other.

    ``top10_overlap``: the mean share of each text's ``k`` nearest other texts (cosine) that both
    agree on; ``top1_agreement``: the share of texts whose nearest other text is the same;
    ``pairwise_spearman``: Spearman's rank correlation of all pairwise cosine similarities.
    """
    n = len(reference)
    if n < 3:  # no neighbours to rank
        return {GateMetric.TOP10_OVERLAP.value: 1.0, "top1_agreement": 1.0, GateMetric.PAIRWISE_SPEARMAN.value: 1.0}
    k = min(k, n - 1)
    similarities = []
    for values in (reference, candidate):
        unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)  # a text is not its own neighbour
        similarities.append(similarity)
    ref_sim, got_sim = similarities
    ref_top = np.argsort(-ref_sim, axis=1, kind="stable")[:, :k]
    got_top = np.argsort(-got_sim, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, got_top, strict=True)])
    upper = np.triu_indices(n, 1)
    spearman = np.corrcoef(_ranks(ref_sim[upper]), _ranks(got_sim[upper]))[0, 1]
    return {
        GateMetric.TOP10_OVERLAP.value: float(overlap),
        "top1_agreement": float(np.mean(ref_top[:, 0] == got_top[:, 0])),
        GateMetric.PAIRWISE_SPEARMAN.value: float(spearman),
    }


def _spearman(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Spearman's rank correlation; two constant (or single) score lists agree, one constant one does not."""
    if len(reference) < 2:
        return 1.0
    ref_ranks, got_ranks = _ranks(reference), _ranks(candidate)
    if np.ptp(reference) == 0 or np.ptp(candidate) == 0:
        return 1.0 if np.ptp(reference) == np.ptp(candidate) == 0 else 0.0
    return float(np.corrcoef(ref_ranks, got_ranks)[0, 1])


def ranking_agreement(
    queries: Sequence[str], reference: np.ndarray, candidate: np.ndarray, k: int = RANK_TOP_K
) -> dict[str, float]:
    """How alike two score lists rank each query's documents (rows grouped by their query, in first-seen order).

    Means over queries of: ``rank_spearman``, Spearman's correlation of the documents' scores;
    ``rank_top1_agreement``, the same best document; ``rank_top3_overlap``, the share of the ``k`` best both
    agree on. Also the worst query's Spearman and its index (in first-seen order) and the number of queries.
    """
    groups: dict[str, list[int]] = {}
    for row, query in enumerate(queries):
        groups.setdefault(query, []).append(row)
    top1, overlap, spearman = [], [], []
    for rows in groups.values():
        ref, got = reference[rows], candidate[rows]
        ref_order, got_order = np.argsort(-ref, kind="stable"), np.argsort(-got, kind="stable")
        top = min(k, len(rows))
        top1.append(float(ref_order[0] == got_order[0]))
        overlap.append(len(set(ref_order[:top].tolist()) & set(got_order[:top].tolist())) / top)
        spearman.append(_spearman(ref, got))
    return {
        GateMetric.RANK_SPEARMAN.value: float(np.mean(spearman)),
        GateMetric.RANK_TOP1_AGREEMENT.value: float(np.mean(top1)),
        GateMetric.RANK_TOP3_OVERLAP.value: float(np.mean(overlap)),
        "min_query_spearman": float(np.min(spearman)),
        "worst_query_index": int(np.argmin(spearman)),
        "queries": len(groups),
    }


def figures(reference: Reference, candidate: np.ndarray) -> dict[str, float]:
    """Every parity figure of ONNX outputs ``candidate`` against the reference."""
    if candidate.shape != reference.values.shape:
        raise ParityShapeError(
            f"ONNX output shape {candidate.shape} differs from the PyTorch reference {reference.values.shape}",
            hint="the export is broken (not a tolerance miss): check the task and the model's files",
        )
    if contract.task(reference.task).embedding:
        ref, got = reference.values.astype(np.float64), candidate.astype(np.float64)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosine = (ref * got).sum(axis=1) / np.maximum(norms, 1e-12)
        return {
            GateMetric.MIN_COSINE.value: float(cosine.min()),
            "mean_cosine": float(cosine.mean()),
            "max_abs_diff": float(np.abs(ref - got).max()),
            "worst_text_index": int(cosine.argmin()),
            **retrieval_agreement(ref, got),
        }
    if contract.task(reference.task).ranking:
        ref_scores, got_scores = reference.values[:, 0].astype(np.float64), candidate[:, 0].astype(np.float64)
        return {
            **ranking_agreement(reference.texts, ref_scores, got_scores),
            GateMetric.MAX_ABS_SCORE_DIFF.value: float(np.abs(ref_scores - got_scores).max()),
            "mean_abs_score_diff": float(np.abs(ref_scores - got_scores).mean()),
        }
    probs = _softmax(candidate)
    ref = reference.values
    if reference.token_mask is not None:
        ref, probs = ref[reference.token_mask], probs[reference.token_mask]
    return {
        GateMetric.LABEL_AGREEMENT.value: float((ref.argmax(-1) == probs.argmax(-1)).mean()),
        GateMetric.MAX_ABS_PROB_DIFF.value: float(np.abs(ref - probs).max()),
        "compared": int(ref.shape[0]),
    }


def compare(reference: Reference, candidate: np.ndarray, gate: Gate) -> Parity:
    """Parity of ONNX outputs ``candidate`` against the reference, judged by ``gate``."""
    metric = gate.for_task(reference.task).metric
    assert metric is not None
    details = figures(reference, candidate)
    return Parity(metric.value, details[metric.value], gate.threshold, details)


def check_parity(session: Any, reference: Reference, batches: list[dict[str, np.ndarray]], gate: Gate) -> Parity:
    """Run ``session`` on ``batches`` (the reference's texts, in order) and compare with the reference."""
    candidate = run_onnx(session, batches, token_level=contract.task(reference.task).token_level)
    return compare(reference, candidate, gate)
