"""How two releases answer the same texts, by task: cosine, equal labels, or the same document at each rank.

Pure comparison (no I/O, no Locust): ``canary`` collects the answers and reports the figure, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritonstack.in_triton import contract


@dataclass(frozen=True)
class Agreement:
    """How the two releases answer the same ``texts``: per text cosine (embeddings), equal label (0/1), or per
    rank the same document (0/1) for a ranking."""

    metric: str  # agreement_metric(task): "cosine" | "same label" | "same document at each rank"
    texts: int
    mean: float
    min: float

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "texts": self.texts, "mean": self.mean, "min": self.min}


def agreement_metric(task: contract.Task) -> str:
    """What the agreement figure of ``task`` compares, by the task table's fields."""
    if task.embedding:
        return "cosine"
    return "same document at each rank" if task.ranking else "same label"


def compare_answers(task: contract.Task, first: np.ndarray | list[str], second: np.ndarray | list[str]) -> Agreement:
    """How two releases' answers to the same texts agree (``canary._answers``: vectors, labels, or
    document indices best first), as ``agreement_metric(task)`` says."""
    metric = agreement_metric(task)
    if not task.embedding:  # labels, or the document at each rank: equal or not
        same = np.array([a == b for a, b in zip(first, second, strict=True)], dtype=np.float64)
        return Agreement(metric, len(same), float(same.mean()), float(same.min()))
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return Agreement(metric, len(cosine), float(cosine.mean()), float(cosine.min()))
