"""A candidate of the export race, the choice among candidates, and the frontier they draw.

Each candidate is one ONNX file with what was measured about it: its figures
on the gate split (``parity``, which decides) and on the calibration split
(``calibration``, which guided the int8 search), and its speed. The frontier
is the set of candidates no other candidate beats on both speed and the gate's
figure: the trade-offs worth looking at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tritonstack.export.gates import GateMetric
from tritonstack.export.options import Precision
from tritonstack.export.parity import Parity
from tritonstack.export.quantize import Recipe, short_name

BASELINE = "fp32"
OPTIMIZED_FP32 = "fp32_optimized"


@dataclass
class Candidate:
    """One ONNX file under consideration and what we measured about it."""

    name: str
    precision: Precision  # FP32, FP16 or INT8: what this file is (never AUTO)
    description: str
    selectable: bool = True  # False: measured for comparison only (the fp32 baseline of an int8 search)
    path: Path | None = None
    size_bytes: int = 0
    build_s: float = 0.0
    parity: Parity | None = None  # on the gate split: what decides
    seq_per_s: float | None = None
    error: str | None = None
    recipe: Recipe | None = None
    calibration: Parity | None = None  # on the calibration split, which guided the int8 search

    @property
    def passed(self) -> bool:
        return self.error is None and self.parity is not None and self.parity.passed

    @property
    def max_rows_per_call(self) -> int:
        """Rows per ONNX Runtime call the served encoder must use (0: no limit), see ``Recipe``."""
        return self.recipe.max_rows_per_call if self.recipe else 0

    @property
    def fp32_nodes(self) -> tuple[str, ...]:
        """The MatMuls a smoothed int8 mix keeps fp32."""
        return self.recipe.fp32_nodes if self.recipe else ()

    def published(self) -> Candidate:
        """This candidate as a report states it: timings to the digits they hold, no temporary file."""
        return replace(
            self,
            path=None,
            build_s=round(self.build_s, 2),
            seq_per_s=None if self.seq_per_s is None else round(self.seq_per_s, 1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision.value,
            "description": self.description,
            "selectable": self.selectable,
            "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 2),
            "build_s": self.build_s,
            "seq_per_s": self.seq_per_s,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "passed": self.passed,
            "error": self.error,
            "recipe": None if self.recipe is None else self.recipe.to_dict(),
            "max_rows_per_call": self.max_rows_per_call,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """The inverse of ``to_dict`` (``size_mb``, ``passed``, ``max_rows_per_call`` are derived; no file path)."""
        calibration = data.get("calibration")
        return cls(
            data["name"],
            Precision(data["precision"]),
            data["description"],
            selectable=data["selectable"],
            size_bytes=data["size_bytes"],
            build_s=data["build_s"],
            parity=None if data["parity"] is None else Parity.from_dict(data["parity"]),
            seq_per_s=data["seq_per_s"],
            error=data["error"],
            recipe=None if data["recipe"] is None else Recipe.from_dict(data["recipe"]),
            calibration=None if calibration is None else Parity.from_dict(calibration),
        )


def select(candidates: Sequence[Candidate]) -> Candidate | None:
    """The fastest selectable candidate that passes the gate (unmeasured speed counts as 0)."""
    passing = [c for c in candidates if c.selectable and c.passed]
    if not passing:
        return None
    return max(passing, key=lambda c: c.seq_per_s or 0.0)


def _accuracy(candidate: Candidate) -> float:
    """The gate's figure on the gate split, oriented so that higher is better."""
    assert candidate.parity is not None
    sign = 1.0 if GateMetric(candidate.parity.metric).higher_is_better else -1.0
    return sign * candidate.parity.value


def frontier(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The measured candidates that no other beats on both speed and the gate's figure (ties beat nobody)."""
    measured = [c for c in candidates if c.error is None and c.parity is not None and c.seq_per_s]
    return [
        c
        for c in measured
        if not any(
            (o.seq_per_s or 0.0) >= (c.seq_per_s or 0.0)
            and _accuracy(o) >= _accuracy(c)
            and ((o.seq_per_s or 0.0) > (c.seq_per_s or 0.0) or _accuracy(o) > _accuracy(c))
            for o in measured
        )
    ]


_FIGURES = {  # the figure columns of the table, embeddings, classification or ranking: figure, header
    "embeddings": (
        (GateMetric.MIN_COSINE, "min cos"),
        (GateMetric.TOP10_OVERLAP, "top10"),
        (GateMetric.PAIRWISE_SPEARMAN, "spearman"),
    ),
    "classification": ((GateMetric.LABEL_AGREEMENT, "labels"), (GateMetric.MAX_ABS_PROB_DIFF, "max dp")),
    "ranking": (
        (GateMetric.RANK_SPEARMAN, "rank rho"),
        (GateMetric.RANK_TOP1_AGREEMENT, "top1"),
        (GateMetric.RANK_TOP3_OVERLAP, "top3"),
        (GateMetric.MAX_ABS_SCORE_DIFF, "max ds"),
    ),
}


def _figure(parity: Parity | None, metric: GateMetric) -> str:
    value = None if parity is None else parity.figure(metric)
    return "-" if value is None else f"{value:.4f}"


def format_table(candidates: Sequence[Candidate], chosen: Candidate | None) -> str:
    """The frontier table: every candidate's speed, gate-split figures, calibration figure and verdict."""
    baseline = next((c for c in candidates if c.name == BASELINE and c.seq_per_s), None)
    on_frontier = {c.name for c in frontier(candidates)}
    gated = next((c.parity for c in candidates if c.parity is not None), None)
    if gated is None or gated.figure(GateMetric.MIN_COSINE) is not None:
        columns = _FIGURES["embeddings"]
    else:
        columns = _FIGURES["ranking" if gated.figure(GateMetric.RANK_SPEARMAN) is not None else "classification"]
    gate_metric = GateMetric(gated.metric) if gated else columns[0][0]
    header = (
        "",
        "candidate",
        "precision",
        "rows/call",
        "size MB",
        "seq/s",
        "vs fp32",
        *(f"{label}{'*' if metric is gate_metric else ''}" for metric, label in columns),
        f"calib {dict(columns).get(gate_metric, gate_metric.value)}",
        "fp32 MatMuls",
        "gate",
        "frontier",
    )
    rows = [header]
    for c in candidates:
        verdict = "error" if c.error else ("-" if c.parity is None else ("pass" if c.parity.passed else "FAIL"))
        speed = f"{c.seq_per_s:.1f}" if c.seq_per_s else "-"
        ratio = f"{c.seq_per_s / baseline.seq_per_s:.2f}x" if c.seq_per_s and baseline and baseline.seq_per_s else "-"
        mark = "*" if c is chosen else ("" if c.selectable else "(b)")
        size = f"{c.size_bytes / 1e6:.1f}" if c.size_bytes else "-"
        if c.error:
            figures = [c.error[:60], *[""] * (len(columns) - 1)]
        else:
            figures = [_figure(c.parity, metric) for metric, _ in columns]
        rows.append(
            (
                mark,
                c.name,
                str(c.precision),
                str(c.max_rows_per_call or "any"),
                size,
                speed,
                ratio,
                *figures,
                _figure(c.calibration, gate_metric),
                ", ".join(short_name(n) for n in c.fp32_nodes) or "-",
                verdict,
                "yes" if c.name in on_frontier else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    legend = "* chosen" + ("   (b) baseline, not selectable" if any(not c.selectable for c in candidates) else "")
    lines.append(f"{legend}   {gate_metric}* gates (gate split); calib: the same figure on the calibration split")
    return "\n".join(lines)
