"""What a benchmark run measured: one ``Point`` per variant and setting, from the load generator's rounds.

A point's throughput is the median over its rounds; its latency percentiles
pool the samples of all rounds (more samples make a steadier p99).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonstack.measure.samples import Round, mean_ms, percentile_ms

INPROCESS = "in-process"
SERVED = "served"
BASELINE = "baseline"
VARIANTS = (INPROCESS, SERVED, BASELINE)
# The served layout with a step that does no model work (floor.py): the serving path's own cost. Not a way to
# embed texts, so not among VARIANTS (no GFLOP/s, no best-of ratio).
FLOOR = "floor"


@dataclass(frozen=True)
class Point:
    variant: str
    setting: str  # "batch", "sorted" (batches of length-sorted texts), "concurrency" or "rate"
    value: float
    throughput_per_s: float  # texts per second, median over rounds
    round_throughputs: tuple[float, ...]
    p50_ms: float
    p99_ms: float
    mean_ms: float
    samples: int
    errors: int
    tokens_per_text: float
    client_cpu: float | None = None  # fraction of the client cores busy
    server_cpu: float | None = None  # fraction of the server cores busy
    others_cpu: float | None = None  # fraction of the whole machine busy with processes not under test
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        short = {"batch": "b", "sorted": "s", "concurrency": "c", "rate": "rate"}[self.setting]
        value = f"{self.value:.0f}/s" if self.setting == "rate" else f"{self.value:g}"
        return f"{short}={value}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def summarize_rounds(
    variant: str,
    setting: str,
    value: float,
    rounds: Sequence[Round],
    *,
    client_cores: int = 1,
    server_cores: int = 1,
    details: dict[str, Any] | None = None,
) -> Point:
    """A ``Point`` from the rounds measured at one setting."""
    latencies_us = [x for r in rounds for x in r.latencies_us]
    completed = sum(r.completed for r in rounds)
    elapsed = sum(r.elapsed_s for r in rounds)

    def busy(values: list[float | None], cores: int) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / (elapsed * cores) if known and elapsed > 0 else None

    others = None
    if elapsed > 0 and all(r.machine_cpu_s is not None for r in rounds):
        ours = sum((r.client_cpu_s or 0.0) + (r.server_cpu_s or 0.0) for r in rounds)
        machine = sum(r.machine_cpu_s or 0.0 for r in rounds)
        others = max(0.0, machine - ours) / (elapsed * (os.cpu_count() or 1))
    return Point(
        variant=variant,
        setting=setting,
        value=value,
        throughput_per_s=statistics.median(r.throughput_per_s for r in rounds),
        round_throughputs=tuple(r.throughput_per_s for r in rounds),
        p50_ms=_or_nan(percentile_ms(latencies_us, 50)),
        p99_ms=_or_nan(percentile_ms(latencies_us, 99)),
        mean_ms=_or_nan(mean_ms(latencies_us)),
        samples=len(latencies_us),
        errors=sum(r.errors for r in rounds),
        tokens_per_text=sum(r.tokens for r in rounds) / completed if completed else 0.0,
        client_cpu=busy([r.client_cpu_s for r in rounds], client_cores),
        server_cpu=busy([r.server_cpu_s for r in rounds], server_cores),
        others_cpu=others,
        details=details or {},
    )


def best(points: Sequence[Point], variant: str) -> Point | None:
    """The point of ``variant`` with the highest throughput (open-loop points excluded)."""
    candidates = [p for p in points if p.variant == variant and p.setting != "rate" and p.samples]
    return max(candidates, key=lambda p: p.throughput_per_s, default=None)


def ratio(numerator: Point | None, denominator: Point | None) -> float | None:
    if numerator is None or denominator is None or denominator.throughput_per_s <= 0:
        return None
    return numerator.throughput_per_s / denominator.throughput_per_s


SUMMARY_FILE = "summary.json"


def write_summary(summary: Mapping[str, Any], report_dir: Path) -> Path:
    """``report_dir``/summary.json (made if missing), strict JSON: a NaN or infinity fails here, not in a reader."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path
