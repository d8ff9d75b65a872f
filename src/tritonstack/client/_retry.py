"""Deadlines, backoff with jitter, the retry budget, and endpoint failover: the decisions, no I/O.

``Attempts`` decides, per call, whether and after what pause to try again;
``RetryThrottle`` is the client's retry budget that all its calls share;
``EndpointPool`` holds the client's endpoints, each with its set-aside time and
circuit breaker (``_breaker``). ``_routing.CallPlan`` runs them together for
one call, in the loop the sync and async clients share.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc

from tritonstack.client._breaker import CircuitBreaker, Outcome, outcome_of
from tritonstack.client._config import CircuitBreakerPolicy, RetryBudget, RetryPolicy
from tritonstack.client._exceptions import ClientError, OverloadedError
from tritonstack.client._metrics import NoMetrics
from tritonstack.in_triton import contract

T = TypeVar("T")
Clock = Callable[[], float]


class Deadline:
    """A point in time (monotonic clock) by which a call must be done; ``None``: never."""

    def __init__(self, timeout_s: float | None, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.timeout_s = timeout_s
        self._end = None if timeout_s is None else clock() + timeout_s

    def remaining_s(self) -> float | None:
        """Seconds left (never negative), ``None`` without a deadline."""
        if self._end is None:
            return None
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        remaining = self.remaining_s()
        return remaining is not None and remaining <= 0.0


class RetryThrottle:
    """A client's retry budget (``RetryBudget``): a token bucket its calls share; thread-safe.

    ``None`` as the budget: no limit, every retry is allowed. Tokens are kept in
    thousandths, as gRPC does, so that ten refunds of 0.1 make exactly one.
    """

    def __init__(self, budget: RetryBudget | None) -> None:
        self.budget = budget
        self._max_milli = round(budget.max_tokens * 1000) if budget is not None else 0
        self._refund_milli = round(budget.token_ratio * 1000) if budget is not None else 0
        self._milli = self._max_milli
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        return self._milli / 1000 if self.budget is not None else float("inf")

    def try_spend(self) -> bool:
        """Take the token a retry costs; ``False`` (and nothing taken) when less than one is left."""
        if self.budget is None:
            return True
        with self._lock:
            if self._milli < 1000:
                return False
            self._milli -= 1000
            return True

    def refund(self) -> None:
        """A successful attempt puts back ``token_ratio`` of a token, up to ``max_tokens``."""
        if self.budget is None:
            return
        with self._lock:
            self._milli = min(self._max_milli, self._milli + self._refund_milli)


class Attempts:
    """Counts the failed attempts of one call and says how long to pause before the next."""

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: Deadline,
        *,
        rng: Callable[[], float] = random.random,
        throttle: RetryThrottle | None = None,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.failures = 0
        self.throttled = False  # the last refusal was the retry budget's
        self._rng = rng
        self._throttle = throttle if throttle is not None else RetryThrottle(None)

    def backoff_s(self, failures: int) -> float:
        """The pause after the ``failures``-th failure, jitter applied."""
        policy = self.policy
        base = min(policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (failures - 1))
        return base * (1.0 - policy.jitter * self._rng())

    def pause_after(self, error: ClientError, *, failover: bool = False) -> float | None:
        """Seconds to pause before retrying, or ``None`` to give up and raise ``error``.

        Gives up on codes outside ``policy.retry_on`` (INVALID_ARGUMENT and
        DEADLINE_EXCEEDED always) and on errors that are not ``retryable``,
        on a call a served step shed for its age (:func:`shed_for_age`),
        after ``max_attempts``, when the pause would outlast the deadline, and
        when a retry to the same endpoint finds the retry budget empty.
        ``failover``: another healthy endpoint is waiting, so retry at once
        (free of the budget) -- except on overload, which is retried after the
        backoff: another server would not make this one less busy.
        """
        self.failures += 1
        self.throttled = False
        if error.code is None or error.code not in self.policy.retry_on or not error.retryable:
            return None
        if shed_for_age(error):
            return None
        if self.failures >= self.policy.max_attempts:
            return None
        failover = failover and not isinstance(error, OverloadedError)
        pause_s = 0.0 if failover else self.backoff_s(self.failures)
        remaining = self.deadline.remaining_s()
        if remaining is not None and pause_s >= remaining:
            return None
        if not failover and not self._throttle.try_spend():
            self.throttled = True
            return None
        return pause_s


def shed_for_age(error: ClientError) -> bool:
    """Whether a served step shed the call because it had queued past the step's budget
    (``contract.SHED_MESSAGE``). Its retries carry its first send time (``_core.SendStamp``), so a retry would
    be older still and shed again at once: not worth a round trip, a backoff and a token of the retry budget.
    Other overload (a full queue, no CPU turn in time) may pass on a retry and is retried as before."""
    return isinstance(error, OverloadedError) and contract.SHED_MESSAGE in error.message


def _no_breaker() -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerPolicy.disabled())


@dataclass
class Endpoint(Generic[T]):
    """One server URL and its connection; ``down_until`` is a monotonic time."""

    url: str
    connection: T
    down_until: float = 0.0
    breaker: CircuitBreaker = field(default_factory=_no_breaker)  # the pool gives it the client's policy


class EndpointPool(Generic[T]):
    """A client's endpoints in order of preference, and what all its calls share.

    An unreachable endpoint is set aside for a cool-down: calls go to the first
    endpoint that is not cooling down, so a primary is used again once its
    cool-down ends. When all are cooling down, the one that comes back first is
    tried (better a chance than a certain failure). An endpoint whose circuit
    breaker is open is skipped as well, and unlike a set-aside one it is not
    tried even when nothing else is left: then ``pick()`` finds nothing.
    ``throttle`` is the client's retry budget.
    Set-aside times are plain float stores (safe between threads under the
    GIL); breakers and the budget lock.
    """

    # Only "could not reach it" sets an endpoint aside; a model error would be the same anywhere,
    # and an overloaded server is alive (OverloadedError is UNAVAILABLE too, and is excluded).
    SET_ASIDE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

    def __init__(
        self,
        endpoints: Sequence[Endpoint[T]],
        cooldown_s: float,
        *,
        breaker: CircuitBreakerPolicy | None = None,
        budget: RetryBudget | None = None,
        metrics: NoMetrics | None = None,
        clock: Clock = time.monotonic,
    ):
        """``breaker`` ``None``: no circuit breakers; ``budget`` ``None``: retries are not budgeted."""
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.cooldown_s = cooldown_s
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.throttle = RetryThrottle(budget)
        self._clock = clock
        if breaker is not None and breaker.enabled:
            for endpoint in self.endpoints:
                on_state = functools.partial(self.metrics.circuit_state, endpoint.url)
                endpoint.breaker = CircuitBreaker(breaker, clock=clock, on_state=on_state)

    def pick(self) -> Endpoint[T] | None:
        """The endpoint to try next, its breaker's go-ahead taken; ``None`` when every breaker is open."""
        for _ in self.endpoints:  # another thread may take a half-open probe between choosing and admitting
            endpoint = self._choose()
            if endpoint is None or endpoint.breaker.admit():
                return endpoint
        return None

    def _choose(self) -> Endpoint[T] | None:
        now = self._clock()
        soonest_back: Endpoint[T] | None = None
        for endpoint in self.endpoints:
            if not endpoint.breaker.can_admit():
                continue
            if endpoint.down_until <= now:
                return endpoint
            if soonest_back is None or endpoint.down_until < soonest_back.down_until:
                soonest_back = endpoint
        return soonest_back

    def has_other_healthy(self, endpoint: Endpoint[T]) -> bool:
        now = self._clock()
        return any(
            other is not endpoint and other.down_until <= now and other.breaker.can_admit() for other in self.endpoints
        )

    def report_failure(self, endpoint: Endpoint[T], error: ClientError) -> None:
        if error.code in self.SET_ASIDE_CODES and not isinstance(error, OverloadedError):
            endpoint.down_until = self._clock() + self.cooldown_s
        endpoint.breaker.record(outcome_of(error))

    def report_success(self, endpoint: Endpoint[T]) -> None:
        if endpoint.down_until:
            endpoint.down_until = 0.0
        endpoint.breaker.record(Outcome.SUCCESS)
        self.throttle.refund()
