"""How a config is judged: the highest throughput of its sweep at which the SLO's objectives hold.

Pure functions of measured points and the SLO file's objectives. The latency
objectives (any ``pNN_ms``) and ``max_error_ratio`` decide whether a point
holds; ``min_throughput_rps`` is a floor the winner is checked against, not
part of a point's verdict (throughput is what the score maximises anyway). A
config none of whose points held scores no throughput; such configs rank by
how far their closest point missed, so a search that starts out of the SLO
still climbs toward it.

Besides its closed-loop sweep a config has a *half-load point*: Poisson
arrivals at half the sweep's best throughput (``half_load_rate``). A config
holds only if that point holds the same objectives too. A closed loop hides a
scheduler that leaves requests queued while an instance is free (the next
request always arrives soon and wakes it); an open loop at half load shows it
(docs/tune.md: Triton 2.51 with a queue policy). The score stays the
closed-loop throughput.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonstack.measure.slo import Objectives

DISPLAYED_PERCENTILES = (50.0, 99.0)


HALF_LOAD = "half_load"  # names the half-load point's objectives in ``Score.missed``: "half_load p99_ms"


@dataclass(frozen=True)
class SweepPoint:
    """One measured window: closed loop at ``concurrency`` requests in flight, or open loop at ``rate_per_s``."""

    concurrency: int  # callers of a closed loop; 0 for an open-loop point (arrivals do not wait for answers)
    throughput_per_s: float  # successful requests per second
    latency_ms: Mapping[float, float]  # percentile -> ms over successful requests: 50, 99 and the SLO's
    completed: int  # successful requests in the window
    errors: int  # failed requests in the window
    batch: Mapping[str, float | None] = field(default_factory=dict)  # step -> rows per execution, from Triton
    # open loop: the Poisson arrival rate, requests/s (latency then runs from each scheduled arrival); None: closed
    rate_per_s: float | None = None

    @property
    def error_ratio(self) -> float:
        total = self.completed + self.errors
        return self.errors / total if total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "throughput_per_s": self.throughput_per_s,
            "latency_ms": {f"p{q:g}": ms for q, ms in self.latency_ms.items()},
            "completed": self.completed,
            "errors": self.errors,
            "error_ratio": self.error_ratio,
            "batch": dict(self.batch),
            "rate_per_s": self.rate_per_s,
        }


def misses(point: SweepPoint, objectives: Objectives) -> dict[str, float]:
    """Objective -> measured / bound, for every latency or error objective ``point`` misses (empty: it holds).

    A point with no successful request misses every latency objective.
    """
    missed: dict[str, float] = {}
    for percentile, bound_ms in objectives.latency_ms.items():
        measured = point.latency_ms.get(percentile, math.nan)
        if math.isnan(measured):  # nothing succeeded
            missed[f"p{percentile:g}_ms"] = math.inf
        elif measured > bound_ms:
            missed[f"p{percentile:g}_ms"] = measured / bound_ms
    bound = objectives.max_error_ratio
    if bound is not None and point.error_ratio > bound:
        # a bound of 0 has no ratio: rank by the share that failed instead
        missed["max_error_ratio"] = point.error_ratio / bound if bound > 0 else 1.0 + point.error_ratio
    return missed


def half_load_rate(points: Sequence[SweepPoint], objectives: Objectives) -> float | None:
    """Requests/s of the half-load point after the closed-loop ``points``: half the throughput of the best
    point that held, of the best point when none did; ``None`` when nothing was served."""
    held = [p for p in points if not misses(p, objectives)]
    best = max(held or points, key=lambda p: p.throughput_per_s, default=None)
    return best.throughput_per_s / 2 if best is not None and best.throughput_per_s > 0 else None


@dataclass(frozen=True)
class Score:
    """A config's verdict: the throughput at which the SLO held, or how far it missed."""

    throughput_per_s: float  # highest closed-loop throughput of a point that held; 0.0 when the config missed
    point: SweepPoint | None  # that point; when none held, the one that came closest
    # Objective -> measured / bound for each miss (empty: held): the closest point's, then the half-load
    # point's with their names prefixed by HALF_LOAD
    missed: Mapping[str, float] = field(default_factory=dict)
    half_load: SweepPoint | None = None  # the open-loop point at half load; None when not measured

    @property
    def held(self) -> bool:
        return self.point is not None and not self.missed

    @property
    def excess(self) -> float:
        """The closest point's worst measured / bound; 0.0 when held."""
        return max(self.missed.values(), default=0.0) if self.point is not None else math.inf

    def key(self) -> tuple[bool, float, float]:
        """Sort key, best last: held first, then throughput, then the smaller miss."""
        return (self.held, self.throughput_per_s, -self.excess)

    def beats(self, other: Score, min_gain: float) -> bool:
        """Better than ``other`` by more than ``min_gain`` (a fraction): noise must not move the search."""
        if self.held != other.held:
            return self.held
        if self.held:
            return self.throughput_per_s > other.throughput_per_s * (1 + min_gain)
        return self.excess < other.excess * (1 - min_gain)

    def describe(self) -> str:
        if self.point is None:
            return "not measured"
        if self.held:
            return f"{self.throughput_per_s:.1f} req/s at c={self.point.concurrency}"
        worst = max(self.missed, key=lambda k: self.missed[k])
        where = f"even at c={self.point.concurrency}"
        if worst.startswith(HALF_LOAD) and self.half_load is not None and self.half_load.rate_per_s is not None:
            where = f"at half load ({self.half_load.rate_per_s:.1f} req/s arriving, open loop)"
        return f"missed {worst} ({self.missed[worst]:.2f}x its bound) {where}"


def score(points: Sequence[SweepPoint], objectives: Objectives, half_load: SweepPoint | None = None) -> Score:
    """The best closed-loop point of a sweep under ``objectives``, held only if ``half_load`` holds too.

    ``points``: the closed-loop sweep; ``half_load``: its open-loop point at ``half_load_rate`` (``None``
    where none was measured, as after a sweep that served nothing).
    """
    half_missed = {f"{HALF_LOAD} {k}": v for k, v in misses(half_load, objectives).items()} if half_load else {}
    held = [p for p in points if not misses(p, objectives)]
    if held:
        top = max(held, key=lambda p: p.throughput_per_s)
        return Score(0.0 if half_missed else top.throughput_per_s, top, half_missed, half_load)
    if not points:
        return Score(0.0, None)
    closest = min(points, key=lambda p: (max(misses(p, objectives).values()), -p.throughput_per_s))
    return Score(0.0, closest, {**misses(closest, objectives), **half_missed}, half_load)


def combine(scores: Sequence[Score]) -> Score:
    """One verdict from repeated measurements of a config: held only if every one held (a config that
    broke the SLO once must not win), with the mean throughput; otherwise the worst of them."""
    if all(s.held for s in scores):
        last = scores[-1]
        return Score(sum(s.throughput_per_s for s in scores) / len(scores), last.point, half_load=last.half_load)
    return min(scores, key=lambda s: s.key())


@dataclass(frozen=True)
class HalfLoadCheck:
    """A config that beat the export's on throughput, against the export's config at half load: their
    half-load p99s, each measured in this run (side by side in the confirmation round)."""

    chosen_p99_ms: float  # the mean of the chosen config's half-load p99s; NaN when it has none
    start_p99_ms: float  # the highest of the export's config's half-load p99s
    chosen_measurements: int
    start_measurements: int

    @property
    def worse(self) -> bool:
        """The chosen config's half-load tail is worse than the export's: its mean above the highest the
        export's config showed. A difference inside the export's own spread is noise, as a throughput gain
        inside the spread is no gain; a chosen config with no half-load figure cannot show it is not worse."""
        return not math.isfinite(self.chosen_p99_ms) or self.chosen_p99_ms > self.start_p99_ms


def check_half_load(chosen_p99_ms: Sequence[float], start_p99_ms: Sequence[float]) -> HalfLoadCheck | None:
    """The half-load p99s (ms, one per measurement, NaN where none was measured) of a chosen config and of
    the export's config, compared; ``None`` when the export's config has no half-load p99 to be worse than
    (it served nothing at half load)."""
    start = [ms for ms in start_p99_ms if math.isfinite(ms)]
    if not start:
        return None
    chosen = [ms for ms in chosen_p99_ms if math.isfinite(ms)]
    mean = sum(chosen) / len(chosen) if chosen else math.nan
    return HalfLoadCheck(mean, max(start), len(chosen), len(start))
