"""The accuracy gate a candidate must pass: one metric and its threshold.

Kept free of heavy imports: the CLI parses ``--gate`` with it.

| metric | task | passes | what it says |
|---|---|---|---|
| ``min_cosine`` (default) | embeddings | >= | the worst text's embedding still points the same way |
| ``top10_overlap`` | embeddings | >= | each gate text's 10 nearest gate texts stay the same |
| ``pairwise_spearman`` | embeddings | >= | all pairwise similarities keep their order |
| ``label_agreement`` (default) | classification | >= | the same label (token-classification: per real token) |
| ``max_abs_prob_diff`` | classification | <= | no probability moved more than this |
| ``rank_spearman`` (default) | text-ranking | >= | each query's documents keep their order (mean Spearman) |
| ``rank_top1_agreement`` | text-ranking | >= | each query's best document stays the best |
| ``rank_top3_overlap`` | text-ranking | >= | each query's 3 best documents stay the 3 best |
| ``max_abs_score_diff`` | text-ranking | <= | no relevance logit moved more than this |

Every figure is reported whichever one gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from tritonstack.export._errors import ExportError
from tritonstack.in_triton import contract

DEFAULT_THRESHOLD = 0.99
TOP_K = 10  # neighbours compared by top10_overlap
RANK_TOP_K = 3  # a query's best documents compared by rank_top3_overlap
# What a task's answer is, for the metrics that judge it: a vector, labels, or a score that ranks documents.
EMBEDDING_KIND, LABELS_KIND, RANKING_KIND = "embedding", "labels", "ranking"


class GateMetric(str, Enum):
    """A parity figure a gate can be set on."""

    MIN_COSINE = "min_cosine"
    TOP10_OVERLAP = "top10_overlap"
    PAIRWISE_SPEARMAN = "pairwise_spearman"
    LABEL_AGREEMENT = "label_agreement"
    MAX_ABS_PROB_DIFF = "max_abs_prob_diff"
    RANK_SPEARMAN = "rank_spearman"
    RANK_TOP1_AGREEMENT = "rank_top1_agreement"
    RANK_TOP3_OVERLAP = "rank_top3_overlap"
    MAX_ABS_SCORE_DIFF = "max_abs_score_diff"

    def __str__(self) -> str:
        return self.value

    @property
    def higher_is_better(self) -> bool:
        return self not in (GateMetric.MAX_ABS_PROB_DIFF, GateMetric.MAX_ABS_SCORE_DIFF)

    @property
    def for_embeddings(self) -> bool:
        return self.kind == EMBEDDING_KIND

    @property
    def kind(self) -> str:
        """The kind of answer this metric judges (``task_kind``)."""
        if self in (GateMetric.MIN_COSINE, GateMetric.TOP10_OVERLAP, GateMetric.PAIRWISE_SPEARMAN):
            return EMBEDDING_KIND
        if self in (GateMetric.LABEL_AGREEMENT, GateMetric.MAX_ABS_PROB_DIFF):
            return LABELS_KIND
        return RANKING_KIND


def task_kind(task: str) -> str:
    """What ``task``'s answer is to the gate: ``embedding``, ``ranking`` or ``labels`` (``contract.Task``)."""
    found = contract.task(task)
    return EMBEDDING_KIND if found.embedding else RANKING_KIND if found.ranking else LABELS_KIND


def default_metric(task: str) -> GateMetric:
    """What the gate compares for ``task`` when ``--gate`` names no metric (``contract.Task.gate_metric``)."""
    return GateMetric(contract.task(task).gate_metric)


@dataclass(frozen=True)
class Gate:
    """``metric`` must reach ``threshold`` (at most, for ``max_abs_prob_diff``); ``metric=None``: the task's default."""

    threshold: float = DEFAULT_THRESHOLD
    metric: GateMetric | None = None

    @classmethod
    def parse(cls, text: str) -> Gate:
        """``0.99`` (the task's default metric) or ``METRIC=THRESHOLD``, e.g. ``top10_overlap=0.95``."""
        name, separator, number = text.strip().rpartition("=")
        try:
            threshold = float(number)
        except ValueError:
            raise ExportError(f"--gate {text!r}: {number!r} is not a number", hint=_GATE_HINT) from None
        if not separator:
            return cls(threshold)
        try:
            return cls(threshold, GateMetric(name.strip()))
        except ValueError:
            raise ExportError(f"--gate {text!r}: unknown metric {name.strip()!r}", hint=_GATE_HINT) from None

    def for_task(self, task: str) -> Gate:
        """This gate with its metric resolved for ``task``; a metric the task has no figure for is refused."""
        metric = self.metric or default_metric(task)
        kind = task_kind(task)
        if metric.kind != kind:
            fitting = [m.value for m in GateMetric if m.kind == kind]
            raise ExportError(
                f"--gate {metric} does not apply to {task}", hint=f"for {task} use one of: {', '.join(fitting)}"
            )
        return Gate(self.threshold, metric)

    def passes(self, value: float) -> bool:
        """Whether ``value`` of this gate's metric passes (the metric must be resolved: ``for_task``)."""
        if self.metric is None:
            raise ValueError("resolve the gate's metric first (Gate.for_task)")
        return value >= self.threshold if self.metric.higher_is_better else value <= self.threshold

    def __str__(self) -> str:
        if self.metric is None:
            return f"{self.threshold}"
        return f"{self.metric} {'>=' if self.metric.higher_is_better else '<='} {self.threshold}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": None if self.metric is None else self.metric.value, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Gate:
        return cls(data["threshold"], None if data["metric"] is None else GateMetric(data["metric"]))


_GATE_HINT = "pass a threshold (0.99) or METRIC=THRESHOLD with METRIC one of: " + ", ".join(m.value for m in GateMetric)
