"""Cost per million inferences: one formula for the load test, the benchmark and the docs.

    USD per million = price per hour / (successful inferences per second x 3600 s/h) x 1,000,000

An inference is one successful request (one SDK call; one text unless the load
sends several per request). The price is whatever the measured capacity costs
per hour -- one machine for the embedded server, every replica for a
deployment. The Prometheus rule ``tritonstack:inference_cost:usd_per_million``
applies the same formula to the live success rate (docs/cost.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0
PER_MILLION = 1_000_000.0


def usd_per_million(price_per_hour_usd: float, throughput_per_s: float) -> float | None:
    """USD per million inferences at ``throughput_per_s`` successful inferences per second;
    ``None`` when nothing succeeded (no throughput buys nothing at any price)."""
    if not math.isfinite(throughput_per_s) or throughput_per_s <= 0:
        return None
    return price_per_hour_usd / (throughput_per_s * SECONDS_PER_HOUR) * PER_MILLION


@dataclass(frozen=True)
class Cost:
    """Cost per million inferences at one measured throughput.

    ``basis`` says which throughput: ``"run"`` (the load test's own), ``"capacity"``
    (the best step of a capacity search that held the SLO), or a benchmark point.
    """

    price_per_hour_usd: float
    throughput_per_s: float
    basis: str

    @property
    def usd_per_million(self) -> float | None:
        return usd_per_million(self.price_per_hour_usd, self.throughput_per_s)

    def describe(self) -> str:
        """``"$0.84 per million at 827.0/s and $2.50/h (capacity)"``."""
        value = self.usd_per_million
        figure = "n/a (nothing succeeded)" if value is None else f"${value:,.4g} per million"
        return f"{figure} at {self.throughput_per_s:.1f}/s and ${self.price_per_hour_usd:,.2f}/h ({self.basis})"

    def to_dict(self) -> dict[str, object]:
        return {
            "price_per_hour_usd": self.price_per_hour_usd,
            "throughput_per_s": self.throughput_per_s,
            "basis": self.basis,
            "usd_per_million": self.usd_per_million,
        }
