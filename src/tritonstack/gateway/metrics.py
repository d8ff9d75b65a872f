"""The gateway's Prometheus metrics: one registry per app, the names and labels of docs/gateway.md."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Seconds: the gateway adds ~1 ms; a served tiny call takes a few ms, MiniLM on a CPU tens.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Requests, latency, inputs, tokens, errors and cache lookups per route template and model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tritonstack_gateway_requests", "Requests answered, by HTTP status", ["route", "model", "code"], registry=r
        )
        self.duration = Histogram(
            "tritonstack_gateway_request_duration_seconds", "Time from request to response",
            ["route", "model"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.inputs = Counter("tritonstack_gateway_inputs", "Texts or documents sent", ["route", "model"], registry=r)
        self.tokens = Counter("tritonstack_gateway_tokens", "Tokens the models ran", ["route", "model"], registry=r)
        self.errors = Counter(
            "tritonstack_gateway_errors", "Error responses, by the error code sent", ["route", "model", "type"],
            registry=r,
        )  # fmt: skip
        self.cache_lookups = Counter(
            "tritonstack_gateway_cache_lookups", "Response-cache lookups per input (error: Redis down)",
            ["route", "model", "result"], registry=r,
        )  # fmt: skip

    def observe(self, route: str, model: str, code: int, seconds: float) -> None:
        self.requests.labels(route, model, str(code)).inc()
        self.duration.labels(route, model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
