"""One call's way through the endpoints (``CallPlan``): failover, overload, breakers, budget, metrics.

The decisions alone, with a fake clock; the connections are plain strings.
"""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tritonstack.client import (
    CircuitBreakerPolicy,
    CircuitOpenError,
    ClientMetrics,
    DeadlineExceededError,
    OverloadedError,
    RetryBudget,
    RetryPolicy,
    ServerUnavailableError,
)
from tritonstack.client._breaker import CircuitState
from tritonstack.client._retry import Deadline, Endpoint, EndpointPool
from tritonstack.client._routing import CallPlan

BREAKER = CircuitBreakerPolicy(failure_ratio=0.5, min_calls=4, window_s=10, open_s=5)
POLICY = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, jitter=0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self, urls: tuple[str, ...] = ("a:1", "b:2"), budget: RetryBudget | None = None) -> None:
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.pool = EndpointPool(
            [Endpoint(url, url) for url in urls],
            cooldown_s=30,
            breaker=BREAKER,
            budget=budget if budget is not None else RetryBudget(),
            metrics=ClientMetrics(self.registry),
            clock=self.clock,
        )

    def plan(self, timeout_s: float | None = None) -> CallPlan[str]:
        deadline = Deadline(timeout_s, clock=self.clock)
        return CallPlan(self.pool, POLICY, deadline, model="tiny", version="", request_id="r1")

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def trip(self, url: str) -> None:
        """Fail enough calls on ``url`` to open its breaker."""
        endpoint = next(e for e in self.pool.endpoints if e.url == url)
        for _ in range(BREAKER.min_calls):
            assert endpoint.breaker.admit()
            self.pool.report_failure(endpoint, unavailable(url))
        assert endpoint.breaker.state is CircuitState.OPEN


def unavailable(url: str) -> ServerUnavailableError:
    return ServerUnavailableError("failed to connect to all addresses", code=grpc.StatusCode.UNAVAILABLE, url=url)


def overloaded(url: str) -> OverloadedError:
    message = "in ensemble 'tiny', [request id: r1] Exceeds maximum queue size"
    return OverloadedError(message, code=grpc.StatusCode.UNAVAILABLE, url=url)


def test_a_dead_endpoint_fails_over_at_once_and_is_set_aside() -> None:
    setup = Setup()
    plan = setup.plan()
    first = plan.next_endpoint()
    assert plan.failed(first, unavailable(first.url)) == 0.0
    assert plan.next_endpoint().url == "b:2"
    assert setup.plan().next_endpoint().url == "b:2"  # later calls too, for the cool-down


def test_an_overloaded_endpoint_keeps_the_call_after_a_backoff_and_stays_in_use() -> None:
    setup = Setup()
    plan = setup.plan()
    first = plan.next_endpoint()
    assert plan.failed(first, overloaded(first.url)) == pytest.approx(0.1)
    assert plan.next_endpoint() is first
    assert first.down_until == 0.0 and first.breaker.state is CircuitState.CLOSED
    assert setup.metric("tritonstack_sdk_shed_total", model="tiny", endpoint="a:1") == 1
    assert setup.metric("tritonstack_sdk_retries_total", model="tiny", code="UNAVAILABLE") == 1


def test_overload_alone_never_opens_the_breaker() -> None:
    setup = Setup(budget=RetryBudget(max_tokens=1000))
    endpoint = setup.pool.endpoints[0]
    for _ in range(100):
        plan = setup.plan()
        assert plan.next_endpoint() is endpoint
        plan.failed(endpoint, overloaded(endpoint.url))
    assert endpoint.breaker.state is CircuitState.CLOSED
    assert setup.metric("tritonstack_sdk_circuit_state", endpoint="a:1") == CircuitState.CLOSED


def test_an_empty_budget_ends_the_call_with_its_error() -> None:
    setup = Setup(budget=RetryBudget(max_tokens=2, token_ratio=0.5))
    outcomes = []
    for _ in range(3):
        plan = setup.plan()
        endpoint = plan.next_endpoint()
        outcomes.append(plan.failed(endpoint, overloaded(endpoint.url)))
    assert outcomes[:2] == [pytest.approx(0.1)] * 2 and outcomes[2] is None
    assert setup.metric("tritonstack_sdk_retries_throttled_total", model="tiny") == 1
    for _ in range(2):  # two successes put one token back
        plan = setup.plan()
        plan.succeeded(plan.next_endpoint())
    plan = setup.plan()
    assert plan.failed(plan.next_endpoint(), overloaded("a:1")) is not None


def test_an_open_circuit_sends_calls_to_the_next_endpoint() -> None:
    setup = Setup()
    setup.trip("a:1")
    setup.pool.endpoints[0].down_until = 0.0  # not set aside: the open breaker alone keeps calls off a:1
    assert setup.plan().next_endpoint().url == "b:2"
    assert setup.metric("tritonstack_sdk_circuit_state", endpoint="a:1") == CircuitState.OPEN
    assert setup.metric("tritonstack_sdk_circuit_state", endpoint="b:2") == CircuitState.CLOSED


def test_when_every_circuit_is_open_calls_fail_fast_typed() -> None:
    setup = Setup(urls=("a:1",))
    setup.trip("a:1")
    with pytest.raises(CircuitOpenError) as info:
        setup.plan().next_endpoint()
    error = info.value
    assert isinstance(error, ServerUnavailableError)  # code that handles "unavailable" handles this too
    assert (error.code, error.url, error.model, error.request_id) == (grpc.StatusCode.UNAVAILABLE, "a:1", "tiny", "r1")
    assert "open" in str(error) and error.hint
    assert setup.metric("tritonstack_sdk_fast_failures_total", model="tiny") == 1
    # after the cool-down one probe goes through, and its success closes the circuit
    setup.clock.now += BREAKER.open_s
    probe = setup.plan()
    endpoint = probe.next_endpoint()
    assert setup.metric("tritonstack_sdk_circuit_state", endpoint="a:1") == CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        setup.plan().next_endpoint()  # one probe at a time
    probe.succeeded(endpoint)
    assert setup.plan().next_endpoint() is endpoint
    assert setup.metric("tritonstack_sdk_circuit_state", endpoint="a:1") == CircuitState.CLOSED


def test_a_spent_deadline_is_typed_and_gives_back_a_half_open_probe() -> None:
    setup = Setup(urls=("a:1",))
    setup.trip("a:1")
    setup.clock.now += BREAKER.open_s
    plan = setup.plan(timeout_s=1.0)
    setup.clock.now += 1.0
    with pytest.raises(DeadlineExceededError) as info:
        plan.next_endpoint()
    assert info.value.url == "a:1"
    assert setup.plan().next_endpoint().url == "a:1"  # the probe was not kept by the failed call
