"""Client-observed latency as Prometheus metrics, served during the run.

The names are a contract with ``monitoring/`` (dashboards and recording rules):

* ``tritonstack_client_request_duration_seconds`` histogram, labels ``model``, ``outcome``
* ``tritonstack_client_requests_total`` counter, labels ``model``, ``outcome``

``outcome`` is ``"success"`` or the error's type name. The SDK's own metrics
(``tritonstack_sdk_*``) share the exporter's registry. In master-worker mode
the master exports what the workers report (every few seconds), so the
exporter runs once, wherever the verdict is computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tritonstack._ports import LOADTEST_EXPORTER_PORT, LOOPBACK
from tritonstack.client._metrics import ClientMetrics

if TYPE_CHECKING:
    from tritonstack.measure.samples import Sample

# prometheus-client is an extra: it is imported where the metrics are made, as the SDK's metrics do.
DEFAULT_PORT = LOADTEST_EXPORTER_PORT
DEFAULT_ADDR = LOOPBACK
REQUEST_DURATION = "tritonstack_client_request_duration_seconds"
REQUESTS_TOTAL = "tritonstack_client_requests_total"
# From sub-millisecond (tiny models on loopback) to the load test's default call timeout.
# 0.25 is part of the contract: monitoring's latency SLI counts requests under le="0.25".
BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
SLO_BUCKET_S = 0.25


class LoadTestMetrics(ClientMetrics):
    """The SDK's client metrics (``client/_metrics.py``) in a registry of the run's own (so two runs in one
    process never collide), plus the load test's two series: every request's latency and outcome.

    An SDK client given ``metrics=`` this object records its calls, retries and shed attempts here too.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        super().__init__(self.registry)
        self.duration = Histogram(
            REQUEST_DURATION,
            "Request latency seen by the load-test client (SDK call to result), in seconds.",
            labelnames=("model", "outcome"),
            buckets=BUCKETS_S,
            registry=self.registry,
        )
        # prometheus_client appends "_total" to counter names itself.
        self.requests = Counter(
            REQUESTS_TOTAL.removesuffix("_total"),
            "Requests sent by the load-test client, by outcome.",
            labelnames=("model", "outcome"),
            registry=self.registry,
        )

    def observe_samples(self, model: str, samples: Iterable[Sample]) -> None:
        for sample in samples:
            self.duration.labels(model, sample.outcome).observe(sample.latency_us / 1e6)
            self.requests.labels(model, sample.outcome).inc()


class ClientMetricsExporter:
    """Serves :class:`LoadTestMetrics` over HTTP on ``addr:port`` (port 0 picks a free one)."""

    def __init__(self, metrics: LoadTestMetrics, port: int = DEFAULT_PORT, addr: str = DEFAULT_ADDR) -> None:
        from prometheus_client import start_http_server

        self.metrics = metrics
        self._server, self._thread = start_http_server(port, addr=addr, registry=metrics.registry)
        self.port: int = self._server.server_address[1]
        self.addr = addr

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
