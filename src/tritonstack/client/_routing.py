"""One call's way through a client's endpoints: the loop both clients share, minus the I/O.

The sync and async clients run it; only how they send and wait differs::

    plan = CallPlan(pool, policy, deadline, model=..., version=..., request_id=...)
    while True:
        endpoint = plan.next_endpoint()    # raises DeadlineExceededError, CircuitOpenError
        try:
            result = send(endpoint.connection, deadline.remaining_s())
        except backend errors as exc:
            pause_s = plan.failed(endpoint, translate(exc, ...))
            if pause_s is None:
                raise
            sleep(pause_s)
        else:
            plan.succeeded(endpoint)
            return result

What a failure means: an unreachable endpoint is set aside and the call fails
over at once; an overloaded one stays in use and the call is retried there
after a backoff, within the retry budget; every attempt's outcome feeds the
endpoint's circuit breaker; and a call finds every breaker open fails fast.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import grpc

from tritonstack.client._breaker import Outcome
from tritonstack.client._config import RetryPolicy
from tritonstack.client._core import deadline_error
from tritonstack.client._exceptions import CircuitOpenError, ClientError, OverloadedError
from tritonstack.client._retry import Attempts, Deadline, Endpoint, EndpointPool

T = TypeVar("T")


class CallPlan(Generic[T]):
    """The decisions of one SDK call against ``pool``: which endpoint next, and whether to retry."""

    def __init__(
        self,
        pool: EndpointPool[T],
        policy: RetryPolicy,
        deadline: Deadline,
        *,
        model: str | None,
        version: str,
        request_id: str | None,
    ) -> None:
        self.pool = pool
        self.deadline = deadline
        self.attempts = Attempts(policy, deadline, throttle=pool.throttle)
        self.model = model
        self.version = version
        self.request_id = request_id

    def next_endpoint(self) -> Endpoint[T]:
        """Where to send the next attempt; raises when the deadline is spent or every circuit is open."""
        endpoint = self.pool.pick()
        if endpoint is None:
            self.pool.metrics.fast_failure(self.model or "")
            url = self.pool.endpoints[0].url
            raise CircuitOpenError(
                f"not sent: the circuit breaker of {url}"
                + (" and of every other endpoint" if len(self.pool.endpoints) > 1 else "")
                + " is open after recent failures",
                hint=_open_hint(self.pool),
                model=self.model,
                version=self.version,
                code=grpc.StatusCode.UNAVAILABLE,
                request_id=self.request_id,
                url=url,
            )
        if self.deadline.expired():
            endpoint.breaker.record(Outcome.NO_VERDICT)  # gives back a half-open probe it may hold
            raise deadline_error(self.deadline, self.model, self.version, self.request_id, endpoint.url)
        return endpoint

    def failed(self, endpoint: Endpoint[T], error: ClientError) -> float | None:
        """Seconds to pause before the next attempt, or ``None``: raise ``error``."""
        self.pool.report_failure(endpoint, error)
        if isinstance(error, OverloadedError):
            self.pool.metrics.shed(self.model or "", endpoint.url)
        pause_s = self.attempts.pause_after(error, failover=self.pool.has_other_healthy(endpoint))
        if pause_s is None:
            if self.attempts.throttled:
                self.pool.metrics.retry_throttled(self.model or "")
            return None
        self.pool.metrics.retry(self.model or "", error)
        return pause_s

    def succeeded(self, endpoint: Endpoint[T]) -> None:
        self.pool.report_success(endpoint)


def _open_hint(pool: EndpointPool[T]) -> str:
    open_s = pool.endpoints[0].breaker.policy.open_s
    return f"a probe call goes through {open_s:g} s after the breaker opened; check the server and its log"
