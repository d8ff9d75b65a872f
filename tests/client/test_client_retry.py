"""Backoff with jitter bounded by the deadline, the retry budget, and endpoint failover: the decisions alone."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonstack.client import (
    Client,
    ClientError,
    ConfigurationError,
    InvalidInputError,
    OverloadedError,
    RetryBudget,
    RetryPolicy,
)
from tritonstack.client._core import SendStamp
from tritonstack.client._exceptions import STATUS_ERRORS
from tritonstack.client._models import ModelInfo, TensorSpec
from tritonstack.client._retry import Attempts, Deadline, Endpoint, EndpointPool, RetryThrottle, shed_for_age
from tritonstack.in_triton import contract


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def error(code: grpc.StatusCode) -> ClientError:
    return STATUS_ERRORS[code]("x", code=code)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_only_unavailable_and_resource_exhausted_are_retried(code: grpc.StatusCode) -> None:
    attempts = Attempts(RetryPolicy(), Deadline(None), rng=lambda: 0.5)
    retried = attempts.pause_after(error(code)) is not None
    assert retried == (code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def test_client_side_errors_without_a_code_are_not_retried() -> None:
    assert Attempts(RetryPolicy(), Deadline(None)).pause_after(ClientError("local")) is None


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter_below_it() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, multiplier=2, max_backoff_s=0.5, jitter=1.0)
    no_jitter = Attempts(policy, Deadline(None), rng=lambda: 0.0)
    pauses = [no_jitter.pause_after(error(grpc.StatusCode.UNAVAILABLE)) for _ in range(5)]
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    full_jitter = Attempts(policy, Deadline(None), rng=lambda: 0.999)
    assert full_jitter.pause_after(error(grpc.StatusCode.UNAVAILABLE)) == pytest.approx(0.0001)
    half = Attempts(RetryPolicy(initial_backoff_s=0.1, jitter=0.5), Deadline(None), rng=lambda: 1.0)
    assert half.pause_after(error(grpc.StatusCode.UNAVAILABLE)) == pytest.approx(0.05)


def test_gives_up_after_max_attempts() -> None:
    attempts = Attempts(RetryPolicy(max_attempts=3), Deadline(None), rng=lambda: 0.0)
    results = [attempts.pause_after(error(grpc.StatusCode.UNAVAILABLE)) for _ in range(3)]
    assert [r is not None for r in results] == [True, True, False]


def test_a_pause_never_outlasts_the_deadline() -> None:
    clock = FakeClock()
    deadline = Deadline(1.0, clock=clock)
    attempts = Attempts(RetryPolicy(max_attempts=100, initial_backoff_s=0.4, multiplier=1), deadline, rng=lambda: 0.0)
    assert attempts.pause_after(error(grpc.StatusCode.UNAVAILABLE)) == pytest.approx(0.4)
    clock.now += 0.7  # 0.3 s left: a 0.4 s pause would pass the deadline
    assert attempts.pause_after(error(grpc.StatusCode.UNAVAILABLE)) is None
    assert not deadline.expired() and deadline.remaining_s() == pytest.approx(0.3)
    clock.now += 1
    assert deadline.expired() and deadline.remaining_s() == 0.0
    assert Deadline(None).remaining_s() is None and not Deadline(None).expired()


def test_failover_to_a_healthy_endpoint_does_not_pause() -> None:
    attempts = Attempts(RetryPolicy(initial_backoff_s=5), Deadline(1.0), rng=lambda: 0.0)
    assert attempts.pause_after(error(grpc.StatusCode.UNAVAILABLE), failover=True) == 0.0


def pool(clock: FakeClock, count: int = 3) -> EndpointPool[int]:
    return EndpointPool([Endpoint(f"h:{i}", i) for i in range(count)], cooldown_s=10, clock=clock)


def test_an_unreachable_endpoint_is_set_aside_for_the_cool_down() -> None:
    clock = FakeClock()
    endpoints = pool(clock)
    first = endpoints.pick()
    assert first.connection == 0
    endpoints.report_failure(first, error(grpc.StatusCode.UNAVAILABLE))
    assert endpoints.pick().connection == 1
    assert endpoints.has_other_healthy(endpoints.pick())
    clock.now += 9.9
    assert endpoints.pick().connection == 1
    clock.now += 0.2  # cool-down over: the preferred endpoint is tried again
    assert endpoints.pick().connection == 0


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED]
)
def test_answers_from_a_reachable_server_do_not_set_it_aside(code: grpc.StatusCode) -> None:
    endpoints = pool(FakeClock())
    endpoints.report_failure(endpoints.pick(), error(code))
    assert endpoints.pick().connection == 0


def test_when_all_are_down_the_first_to_come_back_is_tried_and_success_restores() -> None:
    clock = FakeClock()
    endpoints = pool(clock, 2)
    a, b = endpoints.endpoints
    endpoints.report_failure(a, error(grpc.StatusCode.UNAVAILABLE))
    clock.now += 1
    endpoints.report_failure(b, error(grpc.StatusCode.UNAVAILABLE))
    assert endpoints.pick() is a and not endpoints.has_other_healthy(a)
    endpoints.report_success(a)
    assert endpoints.pick() is a and a.down_until == 0.0
    with pytest.raises(ValueError):
        EndpointPool([], 1.0)


def overloaded() -> OverloadedError:
    return OverloadedError("[request id: 7] Exceeds maximum queue size", code=grpc.StatusCode.UNAVAILABLE)


def test_overload_is_retried_after_a_backoff_never_by_failover() -> None:
    attempts = Attempts(RetryPolicy(initial_backoff_s=0.1), Deadline(None), rng=lambda: 0.0)
    # another endpoint is healthy, but it would not make this one less busy
    assert attempts.pause_after(overloaded(), failover=True) == pytest.approx(0.1)


def test_an_overloaded_endpoint_is_not_set_aside() -> None:
    endpoints = pool(FakeClock())
    first = endpoints.pick()
    assert first is not None
    endpoints.report_failure(first, overloaded())
    endpoints.report_failure(first, error(grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert endpoints.pick() is first and first.down_until == 0.0


def test_a_message_over_grpc_size_limit_is_not_retried() -> None:
    too_large = InvalidInputError("Received message larger than max (9 vs. 4)", code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert Attempts(RetryPolicy(), Deadline(None)).pause_after(too_large) is None


def test_the_budget_allows_max_tokens_retries_then_a_fraction_of_successes() -> None:
    throttle = RetryThrottle(RetryBudget(max_tokens=3, token_ratio=0.25))
    assert [throttle.try_spend() for _ in range(4)] == [True, True, True, False]
    for _ in range(3):
        throttle.refund()
    assert not throttle.try_spend()  # 0.75 of a token
    throttle.refund()
    assert throttle.try_spend() and not throttle.try_spend()  # 4 successes bought one retry
    for _ in range(100):
        throttle.refund()
    assert throttle.tokens == 3  # never more than max_tokens
    tenths = RetryThrottle(RetryBudget(max_tokens=1, token_ratio=0.1))
    assert tenths.try_spend() and not tenths.try_spend()
    for _ in range(10):
        tenths.refund()
    assert tenths.try_spend()  # ten refunds of 0.1 make one token exactly, not 0.9999999999999999


def test_retries_to_the_same_endpoint_spend_the_shared_budget_and_failover_does_not() -> None:
    throttle = RetryThrottle(RetryBudget(max_tokens=2))
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.01)
    first = Attempts(policy, Deadline(None), rng=lambda: 0.0, throttle=throttle)
    assert first.pause_after(overloaded()) is not None
    assert first.pause_after(error(grpc.StatusCode.UNAVAILABLE)) is not None
    assert first.pause_after(overloaded()) is None and first.throttled
    # a second call of the same client finds the budget spent ...
    second = Attempts(policy, Deadline(None), rng=lambda: 0.0, throttle=throttle)
    assert second.pause_after(overloaded()) is None and second.throttled
    # ... but may still fail over from an unreachable endpoint to a healthy one
    assert second.pause_after(error(grpc.StatusCode.UNAVAILABLE), failover=True) == 0.0
    assert not second.throttled
    assert RetryThrottle(None).try_spend()  # no budget: no limit


@pytest.mark.parametrize("bad", [{"max_tokens": 0.5}, {"token_ratio": 0.0}, {"token_ratio": 2.0}])
def test_budget_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryBudget(**bad)


def shed_for_its_age() -> OverloadedError:
    return OverloadedError(
        f"in ensemble 'minilm', {contract.SHED_MESSAGE} (612 ms > 500 ms): send less or add capacity",
        code=grpc.StatusCode.UNAVAILABLE,
    )


def test_a_call_shed_for_its_age_is_not_retried_other_overload_is() -> None:
    # its retry would carry the same send stamp (SendStamp), be older still, and be shed again at once
    assert shed_for_age(shed_for_its_age()) and not shed_for_age(overloaded())
    throttle = RetryThrottle(RetryBudget(max_tokens=2))
    attempts = Attempts(RetryPolicy(), Deadline(None), rng=lambda: 0.0, throttle=throttle)
    assert attempts.pause_after(shed_for_its_age()) is None
    assert throttle.tokens == 2  # no token of the budget spent on it
    assert attempts.pause_after(overloaded()) is not None


class RecordingConnection:
    """A tritonclient connection whose every infer is refused as overloaded; records each attempt's parameters."""

    def __init__(self) -> None:
        self.parameters: list[dict[str, int]] = []

    def infer(self, *args: object, parameters: dict[str, int], **kwargs: object) -> None:
        self.parameters.append(parameters)
        time.sleep(0.002)  # a later re-stamp would differ
        raise InferenceServerException("Exceeds maximum queue size", status="StatusCode.UNAVAILABLE")


def test_every_attempt_of_a_call_carries_the_first_attempts_send_stamp() -> None:
    info = ModelInfo("m", ("1",), "python", 8, (TensorSpec("TEXT", "BYTES", (-1, 1)),), ())
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, budget=None)
    with Client("localhost:1", model="m", retry=retry) as client:
        endpoint = client._pool.endpoints[0]
        connection, real = RecordingConnection(), endpoint.connection
        endpoint.connection = connection  # type: ignore[assignment]
        chunk = {"TEXT": np.array([[b"a"]], dtype=np.object_)}
        try:
            with pytest.raises(OverloadedError):
                client._infer_chunks(info, "", [chunk], ["EMBEDDING"], Deadline(5.0), "r")
        finally:
            endpoint.connection = real
    stamps = [p[contract.SENT_AT_PARAMETER] for p in connection.parameters]
    assert len(stamps) == 3 and len(set(stamps)) == 1, stamps
    assert SendStamp().parameters() != connection.parameters[0]  # a new call is stamped anew
