"""Optional prometheus-client instrumentation of SDK calls; off by default.

``Client(..., metrics=True)`` records into prometheus-client's default registry
(one shared set of metrics per process); ``metrics=ClientMetrics(registry)``
into a registry of your own. Needs ``pip install tritonstack[metrics]``.

    tritonstack_sdk_call_duration_seconds{model,method}   histogram of whole SDK calls
    tritonstack_sdk_errors_total{model,method,error}      failed calls by error class
    tritonstack_sdk_retries_total{model,code}             retries by gRPC status
    tritonstack_sdk_retries_throttled_total{model}        retries not made: the client's retry budget was empty
    tritonstack_sdk_shed_total{model,endpoint}            attempts an overloaded server refused (OverloadedError)
    tritonstack_sdk_fast_failures_total{model}            calls not sent: every endpoint's circuit was open
    tritonstack_sdk_circuit_state{endpoint}               each endpoint's breaker: 0 closed, 1 half-open, 2 open

Not ``tritonstack_client_*``: those names belong to the load test's exporter
(``tritonstack.loadtest.exporter.LoadTestMetrics``, which extends this class with
them, an ``outcome`` label and a registry of its own) and the dashboards built on
them; an application's SDK metrics must not mix into them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from tritonstack.client._breaker import CircuitState
from tritonstack.client._exceptions import ClientError, ConfigurationError

_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()  # reusable and reentrant

# Seconds; from a local CPU call (~1 ms) to a batch near a 30 s deadline.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NoMetrics:
    """The default: records nothing, costs a method call."""

    def timed(self, model: str, method: str) -> contextlib.AbstractContextManager[None]:
        """Around one SDK call: its duration, and its error class when it raises one."""
        return _NULL

    def observe(self, model: str, method: str, duration_s: float) -> None:
        pass

    def error(self, model: str, method: str, error: ClientError) -> None:
        pass

    def retry(self, model: str, error: ClientError) -> None:
        pass

    def retry_throttled(self, model: str) -> None:
        pass

    def shed(self, model: str, url: str) -> None:
        pass

    def fast_failure(self, model: str) -> None:
        pass

    def circuit_state(self, url: str, state: CircuitState) -> None:
        pass


class ClientMetrics(NoMetrics):
    """Latency, errors, retries, load shed and circuit breakers of SDK calls as Prometheus metrics."""

    _shared: ClientMetrics | None = None
    _shared_lock = threading.Lock()

    def __init__(self, registry: Any = None, *, namespace: str = "tritonstack_sdk") -> None:
        try:
            from prometheus_client import REGISTRY, Counter, Gauge, Histogram
        except ImportError as error:
            raise ConfigurationError(
                "client metrics need prometheus-client", hint="pip install 'tritonstack[metrics]'"
            ) from error
        registry = REGISTRY if registry is None else registry
        self.latency = Histogram(
            f"{namespace}_call_duration_seconds",
            "Duration of tritonstack SDK calls, retries and split batches included.",
            ["model", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.errors = Counter(
            f"{namespace}_errors",
            "Failed tritonstack SDK calls by error class.",
            ["model", "method", "error"],
            registry=registry,
        )
        self.retries = Counter(
            f"{namespace}_retries",
            "Retried attempts of tritonstack SDK calls by gRPC status.",
            ["model", "code"],
            registry=registry,
        )
        self.retries_throttled = Counter(
            f"{namespace}_retries_throttled",
            "Retries of tritonstack SDK calls not made because the client's retry budget was empty.",
            ["model"],
            registry=registry,
        )
        self.shed_attempts = Counter(
            f"{namespace}_shed",
            "Attempts of tritonstack SDK calls that an overloaded server refused (queue full, queue timeout).",
            ["model", "endpoint"],
            registry=registry,
        )
        self.fast_failures = Counter(
            f"{namespace}_fast_failures",
            "tritonstack SDK calls failed without being sent: every endpoint's circuit breaker was open.",
            ["model"],
            registry=registry,
        )
        # Per endpoint URL: clients that share a registry and a URL share the series (the last change shows).
        self.circuit_states = Gauge(
            f"{namespace}_circuit_state",
            "The circuit breaker of each endpoint tritonstack SDK clients call: 0 closed, 1 half-open, 2 open.",
            ["endpoint"],
            registry=registry,
        )

    @contextlib.contextmanager
    def timed(self, model: str, method: str) -> Iterator[None]:
        """Around one SDK call: its duration, and its error class when it raises one."""
        start_s = time.perf_counter()
        try:
            yield
        except ClientError as error:
            self.error(model, method, error)
            raise
        finally:
            self.observe(model, method, time.perf_counter() - start_s)

    @classmethod
    def shared(cls) -> ClientMetrics:
        """One instance on the default registry (registering twice there would fail)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def observe(self, model: str, method: str, duration_s: float) -> None:
        self.latency.labels(model, method).observe(duration_s)

    def error(self, model: str, method: str, error: ClientError) -> None:
        self.errors.labels(model, method, type(error).__name__).inc()

    def retry(self, model: str, error: ClientError) -> None:
        self.retries.labels(model, error.code.name if error.code else "NONE").inc()

    def retry_throttled(self, model: str) -> None:
        self.retries_throttled.labels(model).inc()

    def shed(self, model: str, url: str) -> None:
        self.shed_attempts.labels(model, url).inc()

    def fast_failure(self, model: str) -> None:
        self.fast_failures.labels(model).inc()

    def circuit_state(self, url: str, state: CircuitState) -> None:
        self.circuit_states.labels(url).set(int(state))


def resolve(metrics: NoMetrics | bool | None) -> NoMetrics:
    if metrics is True:
        return ClientMetrics.shared()
    if metrics is None or metrics is False:
        return NoMetrics()
    return metrics
