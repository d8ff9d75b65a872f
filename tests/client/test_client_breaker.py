"""The circuit breaker's state machine alone: a fake clock, no server, no threads."""

from __future__ import annotations

import grpc
import pytest

from tritonstack.client import (
    CircuitBreakerPolicy,
    CircuitOpenError,
    ClientError,
    ConfigurationError,
    OverloadedError,
    ServerUnavailableError,
    TritonServerError,
)
from tritonstack.client._breaker import CircuitBreaker, CircuitState, Outcome, outcome_of
from tritonstack.client._exceptions import STATUS_ERRORS

SUCCESS, FAILURE, NO_VERDICT = Outcome.SUCCESS, Outcome.FAILURE, Outcome.NO_VERDICT


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **policy: float) -> tuple[CircuitBreaker, list[CircuitState]]:
    states: list[CircuitState] = []
    settings: dict[str, float] = {"failure_ratio": 0.5, "min_calls": 10, "window_s": 10.0, "open_s": 5.0}
    settings.update(policy)
    return CircuitBreaker(CircuitBreakerPolicy(**settings), clock=clock, on_state=states.append), states  # type: ignore[arg-type]


def feed(b: CircuitBreaker, *outcomes: Outcome) -> None:
    for outcome in outcomes:
        assert b.admit()
        b.record(outcome)


def test_opens_at_the_failure_ratio_once_enough_calls_were_seen() -> None:
    clock = FakeClock()
    b, states = breaker(clock)
    feed(b, *[FAILURE] * 9)  # every call failed, but 9 < min_calls
    assert b.state is CircuitState.CLOSED
    feed(b, FAILURE)
    assert b.state is CircuitState.OPEN
    assert states == [CircuitState.CLOSED, CircuitState.OPEN]
    assert not b.admit() and not b.can_admit()


def test_stays_closed_below_the_ratio() -> None:
    b, _ = breaker(FakeClock())
    feed(b, *[SUCCESS] * 6, *[FAILURE] * 5)  # 5 of 11 failed: under 50 %
    assert b.state is CircuitState.CLOSED
    feed(b, FAILURE)  # 6 of 12: at it
    assert b.state is CircuitState.OPEN


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = FakeClock()
    b, _ = breaker(clock)
    feed(b, *[FAILURE] * 9)
    clock.now += 10.0  # the window has slid past them
    feed(b, FAILURE)
    assert b.state is CircuitState.CLOSED
    feed(b, *[FAILURE] * 8)
    assert b.state is CircuitState.CLOSED
    feed(b, FAILURE)  # 10 in the window now
    assert b.state is CircuitState.OPEN


def test_calls_without_a_verdict_do_not_count() -> None:
    b, _ = breaker(FakeClock())
    feed(b, *[NO_VERDICT] * 50, *[FAILURE] * 9)
    assert b.state is CircuitState.CLOSED


def open_breaker(clock: FakeClock) -> tuple[CircuitBreaker, list[CircuitState]]:
    b, states = breaker(clock)
    feed(b, *[FAILURE] * 10)
    assert b.state is CircuitState.OPEN
    return b, states


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes() -> None:
    clock = FakeClock()
    b, states = open_breaker(clock)
    clock.now += 4.9
    assert not b.admit()
    clock.now += 0.1
    assert b.can_admit() and b.state is CircuitState.OPEN  # half-opens when a call asks
    assert b.admit() and b.state is CircuitState.HALF_OPEN
    assert not b.admit() and not b.can_admit()  # one probe at a time
    b.record(SUCCESS)
    assert b.state is CircuitState.CLOSED
    assert states == [CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    # closed with a fresh window: the failures from before do not reopen it
    feed(b, FAILURE)
    assert b.state is CircuitState.CLOSED


def test_a_failed_probe_opens_the_breaker_for_another_cool_down() -> None:
    clock = FakeClock()
    b, _ = open_breaker(clock)
    clock.now += 5.0
    assert b.admit()
    b.record(FAILURE)
    assert b.state is CircuitState.OPEN
    clock.now += 4.9
    assert not b.admit()
    clock.now += 0.1
    assert b.admit() and b.state is CircuitState.HALF_OPEN


def test_a_probe_without_verdict_lets_the_next_call_probe() -> None:
    clock = FakeClock()
    b, _ = open_breaker(clock)
    clock.now += 5.0
    assert b.admit()
    b.record(NO_VERDICT)  # e.g. the probe's own deadline passed
    assert b.state is CircuitState.HALF_OPEN
    assert b.admit()


def test_a_probe_that_never_reports_is_given_up_after_the_cool_down() -> None:
    clock = FakeClock()
    b, _ = open_breaker(clock)
    clock.now += 5.0
    assert b.admit()  # its caller is cancelled and never records
    clock.now += 4.9
    assert not b.admit()
    clock.now += 0.1
    assert b.admit()


def test_answers_while_open_change_nothing() -> None:
    clock = FakeClock()
    b, states = open_breaker(clock)
    b.record(SUCCESS)  # a call let through before the breaker opened
    assert b.state is CircuitState.OPEN and states[-1] is CircuitState.OPEN


def test_a_disabled_breaker_never_opens() -> None:
    b = CircuitBreaker(CircuitBreakerPolicy.disabled(), clock=FakeClock())
    feed(b, *[FAILURE] * 1000)
    assert b.state is CircuitState.CLOSED and b.admit()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, FAILURE),  # unreachable, connection lost, shutting down
        (grpc.StatusCode.INTERNAL, NO_VERDICT),  # the server answered: a model's error, maybe one caller's input
        (grpc.StatusCode.UNKNOWN, NO_VERDICT),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, SUCCESS),  # overload: alive
        (grpc.StatusCode.INVALID_ARGUMENT, SUCCESS),  # the caller's mistake, a working server
        (grpc.StatusCode.NOT_FOUND, SUCCESS),
        (grpc.StatusCode.PERMISSION_DENIED, SUCCESS),
        (grpc.StatusCode.DEADLINE_EXCEEDED, NO_VERDICT),  # the caller's budget
        (grpc.StatusCode.CANCELLED, NO_VERDICT),
    ],
)
def test_which_errors_count_as_failures(code: grpc.StatusCode, expected: Outcome) -> None:
    assert outcome_of(STATUS_ERRORS[code]("x", code=code)) is expected


def test_overload_and_open_circuits_are_not_failures() -> None:
    assert outcome_of(OverloadedError("Exceeds maximum queue size", code=grpc.StatusCode.UNAVAILABLE)) is SUCCESS
    assert outcome_of(CircuitOpenError("open", code=grpc.StatusCode.UNAVAILABLE)) is NO_VERDICT
    assert outcome_of(ClientError("refused by tritonclient before sending")) is NO_VERDICT


@pytest.mark.parametrize(
    "bad", [{"failure_ratio": 0.0}, {"failure_ratio": 1.5}, {"min_calls": 0}, {"window_s": 0}, {"open_s": -1}]
)
def test_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreakerPolicy(**bad)  # type: ignore[arg-type]


def test_one_callers_poison_input_does_not_open_a_shared_breaker() -> None:
    """A model that fails on one caller's input answers INTERNAL to every such call; other callers' calls to
    the same endpoint must keep going through. The transport failing is what opens the breaker."""
    b = CircuitBreaker(CircuitBreakerPolicy(min_calls=4), clock=FakeClock())
    poison = TritonServerError("onnxruntime failed: bad input", code=grpc.StatusCode.INTERNAL)
    for _ in range(100):
        b.record(outcome_of(poison))
    assert b.state is CircuitState.CLOSED and b.admit()
    unreachable = ServerUnavailableError("failed to connect", code=grpc.StatusCode.UNAVAILABLE)
    for _ in range(4):
        b.record(outcome_of(unreachable))
    assert b.state is CircuitState.OPEN
