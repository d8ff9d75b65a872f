"""Deadlines, backoff with jitter, and endpoint failover: the decisions, no I/O.

The sync and async clients run the same loop; only how they wait differs::

    attempts = Attempts(policy, deadline)
    while True:
        endpoint = pool.pick()
        try:
            return call(endpoint)          # bounded by deadline.remaining_s()
        except ClientError as error:
            pool.report_failure(endpoint, error)
            pause_s = attempts.pause_after(error, failover=pool.has_other_healthy(endpoint))
            if pause_s is None:
                raise
            sleep(pause_s)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from tritonstack.client._config import RetryPolicy
from tritonstack.client._exceptions import ClientError

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


class Attempts:
    """Counts the failed attempts of one call and says how long to pause before the next."""

    def __init__(self, policy: RetryPolicy, deadline: Deadline, *, rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.deadline = deadline
        self.failures = 0
        self._rng = rng

    def backoff_s(self, failures: int) -> float:
        """The pause after the ``failures``-th failure, jitter applied."""
        policy = self.policy
        base = min(policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (failures - 1))
        return base * (1.0 - policy.jitter * self._rng())

    def pause_after(self, error: ClientError, *, failover: bool = False) -> float | None:
        """Seconds to pause before retrying, or ``None`` to give up and raise ``error``.

        Gives up on codes outside ``policy.retry_on`` (INVALID_ARGUMENT and
        DEADLINE_EXCEEDED always), after ``max_attempts``, and when the pause
        would outlast the deadline. ``failover``: another healthy endpoint is
        waiting, so retry at once.
        """
        self.failures += 1
        if error.code is None or error.code not in self.policy.retry_on:
            return None
        if self.failures >= self.policy.max_attempts:
            return None
        pause_s = 0.0 if failover else self.backoff_s(self.failures)
        remaining = self.deadline.remaining_s()
        if remaining is not None and pause_s >= remaining:
            return None
        return pause_s


@dataclass
class Endpoint(Generic[T]):
    """One server URL and its connection; ``down_until`` is a monotonic time."""

    url: str
    connection: T
    down_until: float = 0.0


class EndpointPool(Generic[T]):
    """Endpoints in order of preference; an unreachable one is set aside for a cool-down.

    Calls go to the first endpoint that is not cooling down, so a primary is
    used again once its cool-down ends. When all are cooling down, the one that
    comes back first is tried (better a chance than a certain failure).
    Plain float stores: safe to share between threads under the GIL.
    """

    # Only "could not reach it" sets an endpoint aside; a model error would be the same anywhere.
    SET_ASIDE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

    def __init__(self, endpoints: Sequence[Endpoint[T]], cooldown_s: float, *, clock: Clock = time.monotonic):
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.cooldown_s = cooldown_s
        self._clock = clock

    def pick(self) -> Endpoint[T]:
        now = self._clock()
        for endpoint in self.endpoints:
            if endpoint.down_until <= now:
                return endpoint
        return min(self.endpoints, key=lambda endpoint: endpoint.down_until)

    def has_other_healthy(self, endpoint: Endpoint[T]) -> bool:
        now = self._clock()
        return any(other is not endpoint and other.down_until <= now for other in self.endpoints)

    def report_failure(self, endpoint: Endpoint[T], error: ClientError) -> None:
        if error.code in self.SET_ASIDE_CODES:
            endpoint.down_until = self._clock() + self.cooldown_s

    def report_success(self, endpoint: Endpoint[T]) -> None:
        if endpoint.down_until:
            endpoint.down_until = 0.0
