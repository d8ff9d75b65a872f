"""Percentiles, summary, windows and the samples CSV."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tritonstack.loadtest.stats import (
    Sample,
    percentile_ms,
    read_samples_csv,
    summarize,
    window_width_s,
    windows,
    write_samples_csv,
)


def test_percentile_interpolates_between_ranks() -> None:
    latencies_us = [1000, 2000, 3000, 4000]
    assert percentile_ms(latencies_us, 0) == 1.0
    assert percentile_ms(latencies_us, 50) == 2.5
    assert percentile_ms(latencies_us, 100) == 4.0
    assert percentile_ms([], 99) is None
    # the same definition as the standard library's inclusive quantiles
    values = [137, 5, 901, 77, 12, 3000, 45, 610, 222, 18, 99]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in (1, 50, 95, 99):
        assert percentile_ms(values, p) == pytest.approx(cuts[p - 1] / 1000)


def test_percentiles_keep_microseconds() -> None:
    # Locust would report all of these as 0 or 1 ms.
    assert percentile_ms([250, 260, 270], 50) == 0.26


def test_summary_counts_failures_apart_from_latency() -> None:
    samples = [Sample(100.0 + i * 0.1, 1000 * (i + 1)) for i in range(10)]
    samples.append(Sample(100.5, 5, "DeadlineExceededError"))
    samples.append(Sample(99.0, 1))  # before the window: not counted
    summary = summarize(samples, 100.0, 102.0, percentiles=[99.9])
    assert summary.requests == 11
    assert summary.successes == 10
    assert summary.failures == 1
    assert summary.errors_by_type == {"DeadlineExceededError": 1}
    assert summary.error_ratio == pytest.approx(1 / 11)
    assert summary.throughput_rps == pytest.approx(5.0)
    assert summary.latency_ms[50.0] == 5.5  # the 5 µs failure does not pull it down
    assert 99.9 in summary.latency_ms
    assert summary.max_ms == 10.0


def test_empty_summary() -> None:
    summary = summarize([], 0.0, 1.0)
    assert summary.requests == 0
    assert summary.error_ratio is None
    assert summary.latency_ms[99.0] is None


def test_windows_split_the_run() -> None:
    samples = [
        Sample(10.0 + t, 1000, "success" if t != 2.5 else "ServerUnavailableError") for t in (0.1, 0.2, 1.5, 2.5)
    ]
    series = windows(samples, 10.0, 13.0, 1.0, [50.0])
    assert [w.successes for w in series] == [2, 1, 0]
    assert [w.failures for w in series] == [0, 0, 1]
    assert series[2].latency_ms[50.0] is None
    assert window_width_s(30) == 1.0
    assert window_width_s(600) == 10.0


def test_csv_round_trip(tmp_path: Path) -> None:
    samples = [Sample(1700000000.123456, 1234, "success", "w1"), Sample(1700000000.5, 7, "ModelNotFoundError")]
    write_samples_csv(samples, tmp_path / "s.csv")
    assert read_samples_csv(tmp_path / "s.csv") == samples


def test_csv_keeps_the_kind_and_reads_files_written_before_it(tmp_path: Path) -> None:
    samples = [Sample(1.5, 10, "success", "w1", "repeat"), Sample(2.5, 20, "success", "w2", "unique")]
    write_samples_csv(samples, tmp_path / "s.csv")
    assert read_samples_csv(tmp_path / "s.csv") == samples
    (tmp_path / "old.csv").write_text("start_s,latency_us,outcome,worker\n1.500000,10,success,local\n")
    assert read_samples_csv(tmp_path / "old.csv") == [Sample(1.5, 10, "success", "local", "")]
    (tmp_path / "bad.csv").write_text("start,latency\n1,2\n")
    with pytest.raises(ValueError, match="expected columns"):
        read_samples_csv(tmp_path / "bad.csv")
