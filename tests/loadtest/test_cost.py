"""Cost per million inferences follows from throughput and price exactly."""

from __future__ import annotations

import pytest

from tritonstack.cost import Cost, usd_per_million


@pytest.mark.parametrize(
    ("price_per_hour", "throughput", "expected"),
    [
        (3.6, 1.0, 1000.0),  # $3.60/h = $0.001/s; one inference per second: $1000 per million
        (3.6, 1000.0, 1.0),
        (2.5, 50.0, 2.5 / 180_000 * 1_000_000),
        (0.0, 10.0, 0.0),
    ],
)
def test_usd_per_million_is_price_over_inferences_per_hour(
    price_per_hour: float, throughput: float, expected: float
) -> None:
    assert usd_per_million(price_per_hour, throughput) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("throughput", [0.0, -1.0, float("nan")])
def test_no_throughput_has_no_cost_per_million(throughput: float) -> None:
    assert usd_per_million(2.5, throughput) is None


def test_cost_reports_its_inputs_and_figure() -> None:
    cost = Cost(price_per_hour_usd=2.5, throughput_per_s=50.0, basis="capacity")
    assert cost.to_dict() == {
        "price_per_hour_usd": 2.5,
        "throughput_per_s": 50.0,
        "basis": "capacity",
        "usd_per_million": cost.usd_per_million,
    }
    assert cost.usd_per_million == pytest.approx(13.888888888888891)
    assert cost.describe() == "$13.89 per million at 50.0/s and $2.50/h (capacity)"
    assert Cost(2.5, 0.0, "run").describe().startswith("n/a")
