"""What a run produced: samples, summary, verdict, the server's view, capacity steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tritonstack.cost import Cost
from tritonstack.loadtest.verdict import Check, violated
from tritonstack.measure.samples import Sample, Summary
from tritonstack.measure.slo import SLO
from tritonstack.measure.triton_metrics import Snapshot


@dataclass
class CapacityStep:
    users: int
    summary: Summary
    checks: list[Check]

    @property
    def held(self) -> bool:
        return self.summary.requests > 0 and not violated(self.checks)

    def to_dict(self) -> dict[str, object]:
        broken = [c.key for c in violated(self.checks)]
        return {
            "users": self.users,
            "throughput_rps": self.summary.throughput_rps,
            "latency_ms": {f"p{p:g}": v for p, v in sorted(self.summary.latency_ms.items())},
            "error_ratio": self.summary.error_ratio,
            "requests": self.summary.requests,
            "held": self.held,
            "violated": broken,
        }


@dataclass
class CapacityResult:
    steps: list[CapacityStep]

    @property
    def best(self) -> CapacityStep | None:
        """The step with the highest throughput among those that held the SLO."""
        held = [step for step in self.steps if step.held]
        return max(held, key=lambda step: step.summary.throughput_rps) if held else None

    @property
    def capacity_rps(self) -> float | None:
        best = self.best
        return best.summary.throughput_rps if best else None

    @property
    def stopped_by(self) -> str:
        if self.steps and not self.steps[-1].held:
            broken = violated(self.steps[-1].checks)
            names = ", ".join(c.objective for c in broken) or "no successful request"
            return f"{names} broke at {self.steps[-1].users} users"
        return "reached capacity.max_users with every objective holding"

    def to_dict(self) -> dict[str, object]:
        best = self.best
        return {
            "capacity_rps": self.capacity_rps,
            "best_users": best.users if best else None,
            "stopped_by": self.stopped_by,
            "steps": [step.to_dict() for step in self.steps],
        }


@dataclass
class RunResult:
    slo: SLO
    host: str
    samples: Sequence[Sample]
    summary: Summary
    checks: list[Check]
    processes: int = 1
    metrics_url: str | None = None
    metrics_error: str | None = None
    snapshots: Sequence[Snapshot] = field(default_factory=list)
    capacity: CapacityResult | None = None

    @property
    def passed(self) -> bool:
        """Every objective held (for a capacity search: at the best step that held)."""
        return self.summary.requests > 0 and not violated(self.checks)

    @property
    def cost(self) -> Cost | None:
        """Cost per million inferences when the SLO names a price: at the capacity that held the SLO for
        a capacity search (the figure to plan with), else at the run's throughput."""
        if self.slo.cost is None:
            return None
        price = self.slo.cost.price_per_hour_usd
        if self.capacity is not None:
            return Cost(price, self.capacity.capacity_rps or 0.0, "capacity")
        return Cost(price, self.summary.throughput_rps, "run")
