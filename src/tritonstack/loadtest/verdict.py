"""Objectives against what was measured: one :class:`Check` per objective, and the table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tritonstack.cost import Cost
from tritonstack.measure.samples import Summary
from tritonstack.measure.slo import Objectives


@dataclass(frozen=True)
class Check:
    """One objective: ``measured`` must be ``<=`` (or ``>=``) ``target``.

    ``measured`` is ``None`` when nothing could be measured (no successful
    request for a latency percentile); such a check fails.
    """

    key: str  # "p99_ms", "max_error_ratio", "min_throughput_rps": the SLO file's own key
    objective: str  # "p99 latency"
    target: float
    measured: float | None
    unit: str
    comparator: str  # "<=" or ">="

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured <= self.target if self.comparator == "<=" else self.measured >= self.target

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "objective": self.objective,
            "target": self.target,
            "measured": self.measured,
            "unit": self.unit,
            "comparator": self.comparator,
            "passed": self.passed,
        }


def evaluate(objectives: Objectives, summary: Summary, *, include_throughput: bool = True) -> list[Check]:
    """Checks in a stable order: latency percentiles ascending, errors, throughput.

    ``include_throughput=False`` is for capacity steps, where throughput is what
    is being measured rather than an objective to hold.
    """
    checks = [
        Check(f"p{p:g}_ms", f"p{p:g} latency", bound, summary.latency_ms.get(p), "ms", "<=")
        for p, bound in sorted(objectives.latency_ms.items())
    ]
    if objectives.max_error_ratio is not None:
        checks.append(
            Check("max_error_ratio", "error ratio", objectives.max_error_ratio, summary.error_ratio, "", "<=")
        )
    if include_throughput and objectives.min_throughput_rps is not None:
        checks.append(
            Check(
                "min_throughput_rps", "throughput", objectives.min_throughput_rps, summary.throughput_rps, "req/s", ">="
            )
        )
    return checks


def violated(checks: Sequence[Check]) -> list[Check]:
    return [check for check in checks if not check.passed]


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "":
        return f"{value:.3%}"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    return f"{value:.1f} {unit}"


def render_table(checks: Sequence[Check], cost: Cost | None = None) -> str:
    """A plain-text table: objective, target, measured, PASS/FAIL; with ``cost`` a last, informational
    row: USD per million inferences at the run's (or the capacity's) throughput."""
    rows = [("objective", "target", "measured", "result")]
    for check in checks:
        rows.append(
            (
                check.objective,
                f"{check.comparator} {_format(check.target, check.unit)}",
                _format(check.measured, check.unit),
                "PASS" if check.passed else "FAIL",
            )
        )
    if cost is not None:
        value = cost.usd_per_million
        rows.append(
            (
                "cost per 1M inferences",
                f"at ${cost.price_per_hour_usd:,.2f}/h",
                "n/a" if value is None else f"${value:,.4g}",
                f"info ({cost.basis} {cost.throughput_per_s:.1f} req/s)",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def verdict_line(checks: Sequence[Check]) -> str:
    broken = violated(checks)
    if not broken:
        return f"SLO held: all {len(checks)} objectives passed"
    names = ", ".join(f"{c.objective} ({c.key})" for c in broken)
    return f"SLO violated: {names}"
