"""The client-metrics exporter: the metric names and labels monitoring relies on, over real HTTP."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tritonstack.loadtest.exporter import (
    REQUEST_DURATION,
    REQUESTS_TOTAL,
    SLO_BUCKET_S,
    ClientMetricsExporter,
    LoadTestMetrics,
)
from tritonstack.measure.samples import Sample


def test_exports_histogram_and_counter_by_model_and_outcome() -> None:
    metrics = LoadTestMetrics()
    exporter = ClientMetricsExporter(metrics, port=0)
    try:
        sent = [Sample(0.0, 1500), Sample(0.0, 2500), Sample(0.0, 30, "ServerUnavailableError")]
        metrics.observe_samples("tiny", sent)
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            text = response.read().decode()
    finally:
        exporter.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = (("model", "tiny"), ("outcome", "success"))
    failed = (("model", "tiny"), ("outcome", "ServerUnavailableError"))
    assert samples[(REQUESTS_TOTAL, ok)] == 2
    assert samples[(REQUESTS_TOTAL, failed)] == 1
    assert samples[(f"{REQUEST_DURATION}_count", ok)] == 2
    assert samples[(f"{REQUEST_DURATION}_sum", ok)] == pytest.approx(0.004)
    assert samples[(f"{REQUEST_DURATION}_bucket", (("le", "0.001"), *ok))] == 0
    assert samples[(f"{REQUEST_DURATION}_bucket", (("le", "0.0025"), *ok))] == 2
    # monitoring's latency SLI reads this exact bucket
    assert samples[(f"{REQUEST_DURATION}_bucket", (("le", str(SLO_BUCKET_S)), *ok))] == 2


def test_two_runs_in_one_process_do_not_collide() -> None:
    first, second = LoadTestMetrics(), LoadTestMetrics()
    first.observe_samples("m", [Sample(0.0, 1)])
    assert second.registry.get_sample_value(REQUESTS_TOTAL, {"model": "m", "outcome": "success"}) is None


def test_the_load_test_metrics_are_the_sdks_client_metrics_in_their_own_registry() -> None:
    from tritonstack.client import ClientMetrics

    metrics = LoadTestMetrics()
    assert isinstance(metrics, ClientMetrics)
    metrics.observe("m", "embed", 0.003)  # what an SDK client given metrics=... records
    assert (
        metrics.registry.get_sample_value(
            "tritonstack_sdk_call_duration_seconds_count", {"model": "m", "method": "embed"}
        )
        == 1
    )
    # the SDK's series stay apart from the load test's contract series
    assert metrics.registry.get_sample_value(REQUESTS_TOTAL, {"model": "m", "outcome": "success"}) is None
