"""Objectives against measurements, and the printed table."""

from __future__ import annotations

from tritonstack.cost import Cost
from tritonstack.loadtest.verdict import evaluate, render_table, verdict_line, violated
from tritonstack.measure.samples import Sample, summarize
from tritonstack.measure.slo import Objectives


def _summary():  # type: ignore[no-untyped-def]
    samples = [Sample(i * 0.01, 2000 + 10 * i) for i in range(100)] + [Sample(0.5, 10, "TritonServerError")]
    return summarize(samples, 0.0, 1.0, percentiles=[99.0])


def test_all_objectives_hold() -> None:
    objectives = Objectives(latency_ms={50.0: 10, 99.0: 10}, max_error_ratio=0.05, min_throughput_rps=50)
    checks = evaluate(objectives, _summary())
    assert [c.key for c in checks] == ["p50_ms", "p99_ms", "max_error_ratio", "min_throughput_rps"]
    assert violated(checks) == []
    assert verdict_line(checks).startswith("SLO held")


def test_violations_are_named() -> None:
    objectives = Objectives(latency_ms={99.0: 0.001}, max_error_ratio=0.0, min_throughput_rps=1000)
    checks = evaluate(objectives, _summary())
    assert [c.key for c in violated(checks)] == ["p99_ms", "max_error_ratio", "min_throughput_rps"]
    line = verdict_line(checks)
    assert "p99 latency" in line and "p99_ms" in line
    table = render_table(checks)
    assert table.splitlines()[0].split() == ["objective", "target", "measured", "result"]
    assert table.count("FAIL") == 3


def test_throughput_can_be_left_out_for_capacity_steps() -> None:
    objectives = Objectives(latency_ms={99.0: 100}, min_throughput_rps=1000)
    assert [c.key for c in evaluate(objectives, _summary(), include_throughput=False)] == ["p99_ms"]


def test_nothing_measured_fails() -> None:
    checks = evaluate(Objectives(latency_ms={99.0: 100}), summarize([], 0.0, 1.0))
    assert checks[0].measured is None and not checks[0].passed
    assert "n/a" in render_table(checks)


def test_boundaries_are_inclusive() -> None:
    summary = summarize([Sample(0.0, 5000)], 0.0, 1.0)
    assert evaluate(Objectives(latency_ms={50.0: 5.0}, min_throughput_rps=1.0), summary)[0].passed
    assert all(c.passed for c in evaluate(Objectives(latency_ms={50.0: 5.0}, min_throughput_rps=1.0), summary))


def test_the_table_ends_with_the_cost_when_a_price_is_given() -> None:
    checks = evaluate(Objectives(latency_ms={99.0: 100}), _summary())
    assert "cost" not in render_table(checks)
    last = render_table(checks, Cost(2.5, 50.0, "run")).splitlines()[-1]
    assert last.split() == [
        "cost",
        "per",
        "1M",
        "inferences",
        "at",
        "$2.50/h",
        "$13.89",
        "info",
        "(run",
        "50.0",
        "req/s)",
    ]
