"""A real Prometheus, with the project's rules, scraping a real embedded Triton
under load and the load test's own exporter of client-observed latency (run
in-process): every dashboard query returns data, every rule evaluates, the
alerts react. A second embedded Triton serves a model with the response cache
(``cached_triton``) and gets repeated texts, for the cache and cost panels.
Two real ``tritonstack gateway`` processes in front of the first Triton, one
caching in a real redis-server and one whose Redis is down, get embeddings
(repeated: hits), a call for a model nobody serves (an error by type) and
Redis errors, for the Gateway row."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from test_monitoring_promtool import TRITON_CACHE_METRICS, TRITON_METRICS
from tritonclient.utils import InferenceServerException

from tritonstack.bench.gateway import GatewayServer
from tritonstack.loadtest.exporter import ClientMetricsExporter, LoadTestMetrics
from tritonstack.monitoring import (
    LocalPrometheus,
    PanelQuery,
    find_monitoring_dir,
    panel_queries,
    render_config,
)

pytestmark = pytest.mark.integration

MONITORING = find_monitoring_dir()
LOAD_DURATION_S = 4.0
LOAD_CONCURRENCY = 8
INVALID_EVERY = 10  # one request in ten is malformed: client-observed errors Triton never counts
MODEL = "tiny"
CACHED_MODEL = "tiny_cached"
REPEATED_TEXTS = 4  # each sent REPEATS times: one miss, then hits
REPEATS = 10
GATEWAY_CALLS = 20  # per gateway; the texts repeat, so the caching one hits
WORDS = "the quick brown fox jumps over the lazy dog while monitoring watches every request".split()


@dataclass
class Live:
    prometheus: LocalPrometheus
    queries: list[PanelQuery]
    outcomes: dict[str, int]
    gateway_statuses: dict[int, int]


def _outcome(exc: InferenceServerException) -> str:
    # "StatusCode.INVALID_ARGUMENT" -> "invalid_argument"
    return str(exc.status() or "unknown").rsplit(".", 1)[-1].lower()


def _send_load(grpc_url: str, metrics: LoadTestMetrics) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_DURATION_S

    def worker(index: int) -> None:
        client = grpcclient.InferenceServerClient(grpc_url)
        sent = 0
        try:
            while time.monotonic() < deadline and sent < 2000:
                sent += 1
                text = " ".join(WORDS[: 1 + (index * 7 + sent) % len(WORDS)])
                name = "NOT_TEXT" if sent % INVALID_EVERY == 0 else "TEXT"
                tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
                start = time.perf_counter()
                try:
                    client.infer(MODEL, [tensor], client_timeout=10)
                    outcome = "success"
                except InferenceServerException as exc:
                    outcome = _outcome(exc)
                elapsed_s = time.perf_counter() - start
                metrics.duration.labels(model=MODEL, outcome=outcome).observe(elapsed_s)
                metrics.requests.labels(model=MODEL, outcome=outcome).inc()
                with lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        finally:
            client.close()

    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        list(pool.map(worker, range(LOAD_CONCURRENCY)))
    return outcomes


def _send_repeats(grpc_url: str) -> None:
    """Texts the cached model has not seen, each sent ``REPEATS`` times: a miss and ``REPEATS - 1`` hits."""
    nonce = time.time_ns()
    with grpcclient.InferenceServerClient(grpc_url) as client:
        for _ in range(REPEATS):
            for index in range(REPEATED_TEXTS):
                tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[f"repeated text {index} {nonce}".encode()]], dtype=np.object_))
                client.infer(CACHED_MODEL, [tensor], client_timeout=10)


def _post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _send_through_gateways(gateways: list[GatewayServer], prometheus: LocalPrometheus) -> dict[int, int]:
    """Embeddings of a few texts, each sent several times, and one call for a model nobody serves, per gateway.

    In two halves, the second once Prometheus has scraped the first: rate() needs a counter seen rising
    between two scrapes, and a burst that ends between two scrapes of a busy machine is seen only at its end."""
    statuses: dict[int, int] = {}

    def send(calls: range) -> None:
        for gateway in gateways:
            for index in calls:
                text = " ".join(WORDS[: 2 + index % 4])
                status = _post(f"{gateway.url}/v1/embeddings", {"model": MODEL, "input": [text, "fixed text"]})
                statuses[status] = statuses.get(status, 0) + 1

    half = GATEWAY_CALLS // 2
    send(range(half))
    seen = 'sum(tritonstack_gateway_requests_total{route="/v1/embeddings"})'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        float(sample["value"][1]) >= half * len(gateways) for sample in prometheus.query(seen)
    ):
        time.sleep(0.5)
    send(range(half, GATEWAY_CALLS))
    for gateway in gateways:
        status = _post(f"{gateway.url}/v1/embeddings", {"model": "no_such_model", "input": "x"})
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def _target(server: Any) -> str:
    return str(server.metrics_url).removeprefix("http://").removesuffix("/metrics")


@pytest.fixture(scope="module")
def gateways(triton: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayServer]]:
    """A gateway caching in a real Redis and one whose Redis is down (a closed port), both before ``triton``."""
    from tritonstack._process import free_port
    from tritonstack.gateway.redis_server import RedisServer

    logs = tmp_path_factory.mktemp("gateways")
    with RedisServer() as redis:
        cached = GatewayServer(triton.grpc_url, log_path=logs / "cached.log", extra=["--redis-url", redis.url])
        down = GatewayServer(
            triton.grpc_url, log_path=logs / "down.log", extra=["--redis-url", f"redis://127.0.0.1:{free_port()}/0"]
        )
        with cached, down:
            yield [cached, down]


@pytest.fixture(scope="module")
def live(triton: Any, cached_triton: Any, gateways: list[GatewayServer]) -> Iterator[Live]:
    metrics = LoadTestMetrics()
    exporter = ClientMetricsExporter(metrics, port=0)
    config = render_config(
        MONITORING,
        triton_targets=[_target(triton), _target(cached_triton)],
        loadtest_targets=[f"{exporter.addr}:{exporter.port}"],
        gateway_targets=[gateway.url.removeprefix("http://") for gateway in gateways],
        scrape_interval_s=1,
        evaluation_interval_s=1,
    )
    queries = [
        query
        for path in sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
        for query in panel_queries(json.loads(path.read_text()))
    ]
    try:
        with LocalPrometheus(config) as prometheus:
            prometheus.wait_for_targets()
            outcomes = _send_load(triton.grpc_url, metrics)
            _send_repeats(cached_triton.grpc_url)
            gateway_statuses = _send_through_gateways(gateways, prometheus)
            # Wait for the scrapes after the load and the rules that read them;
            # every rate window is 1m, so there is time before the data ages out.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                missing = [q for q in queries if not q.gpu_only and not _has_data(prometheus.query(q.expr))]
                if not missing:
                    break
                time.sleep(1)
            yield Live(prometheus, queries, outcomes, gateway_statuses)
    finally:
        exporter.close()


def test_the_load_produced_successes_and_client_errors(live: Live) -> None:
    assert live.outcomes.get("success", 0) > 50
    assert live.outcomes.get("invalid_argument", 0) > 5
    assert set(live.outcomes) == {"success", "invalid_argument"}


def test_every_target_is_scraped(live: Live) -> None:
    up = {sample["metric"]["job"]: sample["value"][1] for sample in live.prometheus.query("up")}
    assert up == {"triton": "1", "tritonstack-loadtest": "1", "tritonstack-gateway": "1"}
    assert len(live.prometheus.query('up{job="triton"} == 1')) == 2, "both embedded servers"
    assert len(live.prometheus.query('up{job="tritonstack-gateway"} == 1')) == 2, "both gateways"


def test_gateway_figures_the_dashboard_shows(live: Live) -> None:
    # every embeddings call answered (the Redis that is down only costs the cache), the unknown model a 404
    assert live.gateway_statuses == {200: 2 * GATEWAY_CALLS, 404: 2}

    def by(expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in live.prometheus.query(expr)}

    lookups = 'sum by (result) (tritonstack_gateway_cache_lookups_total{route="/v1/embeddings"})'
    results = by(lookups, "result")
    # one gateway: 2 texts per call, 4 distinct + "fixed text" -> 5 misses, the rest hits; the other: all errors
    assert results == {"hit": 2 * GATEWAY_CALLS - 5, "miss": 5, "error": 2 * GATEWAY_CALLS}
    codes = by('sum by (code) (tritonstack_gateway_requests_total{route="/v1/embeddings"})', "code")
    assert codes == {"200": 2 * GATEWAY_CALLS, "404": 2}
    assert set(by("sum by (type) (tritonstack_gateway_errors_total)", "type")) == {"model_not_found"}


def test_every_dashboard_panel_returns_data(live: Live) -> None:
    gpu_server = bool(live.prometheus.query("nv_gpu_utilization"))
    empty = []
    for query in live.queries:
        if query.gpu_only and not gpu_server:
            continue  # marked GPU-only; a CPU-only Triton exports no nv_gpu_* metric
        if not _has_data(live.prometheus.query(query.expr)):
            empty.append(f"{query.dashboard_uid} / {query.panel_title} / {query.ref_id}: {query.expr}")
    assert empty == []
    checked = [q for q in live.queries if gpu_server or not q.gpu_only]
    assert len(checked) >= 30


@pytest.mark.gpu
def test_on_a_gpu_host_the_gpu_panels_show_data_too(live: Live) -> None:
    # The embedded server turns GPU metrics on where it sees a GPU; DCGM samples every couple of seconds.
    gpu_panels = [query for query in live.queries if query.gpu_only]
    assert len(gpu_panels) >= 5
    deadline = time.monotonic() + 20
    while (empty := [q.expr for q in gpu_panels if not _has_data(live.prometheus.query(q.expr))]) and (
        time.monotonic() < deadline
    ):
        time.sleep(1)
    assert empty == []


def test_figures_the_dashboards_show(live: Live) -> None:
    def value(expr: str) -> float:
        (sample,) = live.prometheus.query(expr)
        return float(sample["value"][1])

    batch = value(f'model:nv_inference_batch_size:mean_rate1m{{model="{MODEL}_encoder"}}')
    client_p99_s = value('model:tritonstack_client_request_duration_seconds:quantile_rate1m{quantile="0.99"}')
    server_p99_s = value(f'model_quantile:nv_inference_request_summary_seconds:max{{model="{MODEL}",quantile="0.99"}}')
    errors = value(f'model:tritonstack_slo_errors:ratio_rate5m{{model="{MODEL}"}}')
    print(
        f"\nachieved batch size {MODEL}_encoder {batch:.2f}; client p99 {client_p99_s * 1000:.1f} ms; "
        f"server p99 {server_p99_s * 1000:.1f} ms; client error ratio {errors:.3f}; outcomes {live.outcomes}"
    )
    assert batch >= 1
    # the client sees the malformed requests that Triton never counts
    expected = live.outcomes["invalid_argument"] / sum(live.outcomes.values())
    assert errors == pytest.approx(expected, abs=0.03)
    assert value(f'model:nv_inference_request_failure:ratio_rate1m{{model="{MODEL}"}}') == 0
    # same order of magnitude: the rules' microsecond-to-second conversion and the
    # client's seconds agree (the client's view adds network and serialisation)
    # (a unit slip is a factor of 1000 or more; a slow first call can put the client's p99 40x above Triton's)
    assert 0.2 < client_p99_s / server_p99_s < 100


def test_cache_and_cost_figures(live: Live) -> None:
    def value(expr: str) -> float:
        (sample,) = live.prometheus.query(expr)
        return float(sample["value"][1])

    # REPEATED_TEXTS misses, then hits for every other request, all inside the rate window
    hit_ratio = value(f'model:nv_cache_hit:ratio_rate1m{{model="{CACHED_MODEL}"}}')
    assert hit_ratio == pytest.approx((REPEATS - 1) / REPEATS, abs=0.02)
    per_hit_s = value(f'model:nv_cache_hit_duration_seconds:per_hit_rate1m{{model="{CACHED_MODEL}"}}')
    per_miss_s = value(f'model:nv_cache_miss_duration_seconds:per_miss_rate1m{{model="{CACHED_MODEL}"}}')
    assert 0 < per_hit_s < 0.01 and 0 < per_miss_s < 0.01  # microseconds, converted to seconds
    # two replicas up at the placeholder price of 1 USD per hour each
    price = value("tritonstack:triton_replica_price:usd_per_hour")
    assert value("tritonstack:triton_cost:usd_per_hour") == 2 * price
    rate = value("tritonstack:text_in_request_success:rate1m")
    cost = value("tritonstack:inference_cost:usd_per_million")
    assert cost == pytest.approx(2 * price / (rate * 3600) * 1e6, rel=1e-9)
    print(f"\ncache hit ratio {hit_ratio:.3f}, {per_hit_s * 1e6:.1f} µs per hit, {per_miss_s * 1e6:.1f} µs per miss;"
          f" {rate:.2f} text-in requests/s: ${cost:.2f} per million at ${2 * price:.2f}/h")  # fmt: skip


def test_release_rules_see_one_stable_release_per_text_in_model(live: Live) -> None:
    # tiny and tiny_v1 are two entry points of release 1 (docs/releases.md): one series, stable
    stable = live.prometheus.query(f'release_model_version:tritonstack_release_stable:info{{release_model="{MODEL}"}}')
    assert [sample["metric"]["version"] for sample in stable] == ["1"]
    (requests,) = live.prometheus.query(
        f'release_model_version:nv_inference_request_success:rate1m{{release_model="{MODEL}"}}'
    )
    assert requests["metric"]["version"] == "1"
    # the steps are not releases of their own
    assert not live.prometheus.query(
        f'release_model_version:tritonstack_release_stable:info{{release_model="{MODEL}_encoder"}}'
    )
    assert not live.prometheus.query('ALERTS{alertname=~"TritonStackCandidate.*"}')


def test_every_rule_evaluates_without_error(live: Live) -> None:
    groups = live.prometheus.get("rules")["groups"]
    rule_list = [rule for group in groups for rule in group["rules"]]
    assert len(rule_list) >= 50
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rule_list if rule["health"] != "ok"}
    assert unhealthy == {}


def test_alerts_react_to_the_load(live: Live) -> None:
    # One request in ten failed: both error burn windows (1h, 5m) exceed 14.4x
    # the 0.1% budget, so the page alert is pending (it needs 2 minutes to fire).
    # Alert groups evaluate on their own clock, up to one interval after the
    # recording rules the fixture waited for.
    deadline = time.monotonic() + 10
    while True:
        alerts = {
            (alert["labels"]["alertname"], alert["labels"].get("severity")): alert["state"]
            for alert in live.prometheus.get("alerts")["alerts"]
        }
        if ("TritonStackErrorBudgetBurn", "page") in alerts or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert alerts.get(("TritonStackErrorBudgetBurn", "page")) == "pending"
    for quiet in ("TritonDown", "TritonTargetsAbsent", "TritonModelNotReady", "TritonNoModelsLoaded"):
        assert (quiet, "page") not in alerts
    assert ("TritonStackGatewayDown", "page") not in alerts and ("TritonStackGatewayErrors", "page") not in alerts
    assert ("TritonStackLatencyThresholdBucketMissing", "ticket") not in alerts


def _exported(server: Any) -> set[str]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_the_pinned_triton_exports_every_metric_the_rules_rely_on(triton: Any, cached_triton: Any) -> None:
    exported = _exported(triton)
    assert exported >= TRITON_METRICS
    assert not any(name.startswith("nv_gpu_") for name in exported - TRITON_METRICS), "update TRITON_METRICS"
    # the cache's counters exist only where a model enables the cache
    assert not exported & TRITON_CACHE_METRICS
    assert _exported(cached_triton) >= TRITON_METRICS | TRITON_CACHE_METRICS
