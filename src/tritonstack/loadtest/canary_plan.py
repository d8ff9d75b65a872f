"""What a canary compares and how much worse the candidate may be: the values ``canary.py`` runs.

Apart from ``canary.py`` because that imports Locust, whose gevent patching of the
process on import must not happen where ``tritonstack canary --help`` or the CLI
reference reads the default tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the baseline the candidate may be under the same load."""

    p99_ratio: float = 0.2  # candidate p99 <= baseline p99 * (1 + p99_ratio) + p99_slack_ms
    p99_slack_ms: float = 5.0
    error_ratio: float = 0.001  # candidate error ratio <= baseline's + this


@dataclass(frozen=True)
class CanaryPlan:
    model: str
    baseline: int
    candidate: int
    weight: float  # the candidate's share of the requests, 0 to 1
    tolerances: Tolerances = Tolerances()

    def roles(self) -> dict[int, str]:
        return {self.baseline: "baseline", self.candidate: "candidate"}
