"""Triton's metrics: parsing its exposition text and the per-interval server view."""

from __future__ import annotations

import pytest

from tritonstack.measure.triton_metrics import (
    MetricsScraper,
    Snapshot,
    cache_interval,
    interval,
    models_seen,
    parse_metrics,
    series,
    summary,
)

# The shape of Triton 2.51's /metrics (trimmed): counters per model and version, failures per reason,
# summaries with NaN quantiles before the first request, and process-wide gauges without a model.
EXPOSITION = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="tiny_encoder",version="1"} 40
nv_inference_request_success{model="tiny",version="1"} 40
nv_inference_request_success{model="tiny",version="2"} 2
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="tiny",reason="OTHER",version="1"} 0
nv_inference_request_failure{model="tiny",reason="BACKEND",version="1"} 3
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="tiny_encoder",version="1"} 40
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="tiny_encoder",version="1"} 10
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="tiny_encoder",version="1"} 8000
# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="tiny_encoder",version="1"} 20000
# HELP nv_inference_request_duration_us Cumulative inference request duration in microseconds
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="tiny_encoder",version="1"} 30000
# HELP nv_inference_queue_summary_us Summary of inference queuing duration in microseconds
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us_count{model="tiny",version="1"} 0
nv_inference_queue_summary_us_sum{model="tiny",version="1"} 0
nv_inference_queue_summary_us{model="tiny",version="1",quantile="0.5"} Nan
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.51
"""

# A model with response_cache enabled adds these (Triton 2.51, read from the embedded server).
CACHE_EXPOSITION = """\
# HELP nv_cache_num_hits_per_model Number of cache hits per model
# TYPE nv_cache_num_hits_per_model counter
nv_cache_num_hits_per_model{model="tiny",version="1"} 30
# HELP nv_cache_hit_duration_per_model Total cache hit duration per model, in microseconds
# TYPE nv_cache_hit_duration_per_model counter
nv_cache_hit_duration_per_model{model="tiny",version="1"} 300
# HELP nv_cache_num_misses_per_model Number of cache misses per model
# TYPE nv_cache_num_misses_per_model counter
nv_cache_num_misses_per_model{model="tiny",version="1"} 10
# HELP nv_cache_miss_duration_per_model Total cache miss (insert+lookup) duration per model, in microseconds
# TYPE nv_cache_miss_duration_per_model counter
nv_cache_miss_duration_per_model{model="tiny",version="1"} 250
"""


def test_parse_sums_versions_and_reasons() -> None:
    values = parse_metrics(EXPOSITION)
    assert values["nv_inference_request_success"] == {"tiny_encoder": 40.0, "tiny": 42.0}
    assert values["nv_inference_request_failure"] == {"tiny": 3.0}
    assert values["nv_inference_exec_count"] == {"tiny_encoder": 10.0}
    assert "nv_cpu_utilization" not in values
    assert "nv_inference_queue_summary_us" not in values


def test_interval_per_request_figures_and_batch_size() -> None:
    first = Snapshot(100.0, parse_metrics(EXPOSITION))
    later = parse_metrics(EXPOSITION)
    later["nv_inference_request_success"]["tiny_encoder"] += 100
    later["nv_inference_count"]["tiny_encoder"] += 100
    later["nv_inference_exec_count"]["tiny_encoder"] += 25  # 4 inferences per execution
    later["nv_inference_queue_duration_us"]["tiny_encoder"] += 50_000
    later["nv_inference_compute_infer_duration_us"]["tiny_encoder"] += 200_000
    later["nv_inference_request_duration_us"]["tiny_encoder"] += 300_000
    view = interval(first, Snapshot(102.0, later), "tiny_encoder")
    assert view.requests == 100
    assert view.queue_us == 500.0
    assert view.compute_us == 2000.0
    assert view.request_us == 3000.0
    assert view.batch_size == 4.0
    assert (view.start_s, view.end_s) == (100.0, 102.0)


def test_idle_interval_has_no_per_request_figures() -> None:
    snapshot = Snapshot(1.0, parse_metrics(EXPOSITION))
    view = interval(snapshot, Snapshot(2.0, snapshot.values), "tiny_encoder")
    assert view.requests == 0
    assert view.queue_us is None and view.batch_size is None


def test_counters_that_appear_later_count_from_zero() -> None:
    empty = Snapshot(0.0, {})
    view = interval(empty, Snapshot(1.0, parse_metrics(EXPOSITION)), "tiny_encoder")
    assert view.requests == 40 and view.batch_size == 4.0


def test_series_summary_and_models() -> None:
    snapshots = [Snapshot(float(t), parse_metrics(EXPOSITION)) for t in range(3)]
    assert len(series(snapshots, "tiny")) == 2
    assert models_seen(snapshots) == ["tiny", "tiny_encoder"]
    assert summary(snapshots[:1], ["tiny"]) == {}
    assert summary(snapshots, ["tiny"])["tiny"]["requests"] == 0


def test_cache_interval_hit_ratio_and_time_per_lookup() -> None:
    first = Snapshot(0.0, parse_metrics(EXPOSITION + CACHE_EXPOSITION))
    later = parse_metrics(EXPOSITION + CACHE_EXPOSITION)
    later["nv_cache_num_hits_per_model"]["tiny"] += 60
    later["nv_cache_hit_duration_per_model"]["tiny"] += 600
    later["nv_cache_num_misses_per_model"]["tiny"] += 20
    later["nv_cache_miss_duration_per_model"]["tiny"] += 1000
    view = cache_interval(first, Snapshot(1.0, later), "tiny")
    assert view is not None
    assert (view.hits, view.misses, view.hit_ratio) == (60, 20, 0.75)
    assert (view.us_per_hit, view.us_per_miss) == (10.0, 50.0)
    # the encoder has no cache of its own: no cache view, rather than a ratio of zeros
    assert cache_interval(first, Snapshot(1.0, later), "tiny_encoder") is None
    idle = cache_interval(first, first, "tiny")
    assert idle is not None and idle.hit_ratio is None and idle.us_per_hit is None


def test_scraper_counts_failures_instead_of_raising() -> None:
    scraper = MetricsScraper("http://127.0.0.1:9/metrics", interval_s=0.05).start()  # port 9: discard, closed
    snapshots = scraper.stop()
    assert snapshots == []
    assert scraper.failures >= 2
    assert scraper.last_error


@pytest.mark.integration
def test_scrapes_the_real_server(triton: object) -> None:
    from tritonstack.measure.triton_metrics import fetch

    snapshot = fetch(triton.metrics_url)  # type: ignore[attr-defined]
    assert "tiny_encoder" in snapshot.values["nv_inference_exec_count"]
