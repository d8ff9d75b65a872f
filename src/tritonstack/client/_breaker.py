"""One endpoint's circuit breaker: the state machine alone, no I/O, its clock injected.

    CLOSED ── failure_ratio reached over window_s (at least min_calls) ──► OPEN
    OPEN ──── open_s passed, a call asks to go through: it is the probe ──► HALF_OPEN
    HALF_OPEN ── the probe succeeded ──► CLOSED;  the probe failed ──► OPEN

``CircuitBreakerPolicy`` (``_config``) holds the thresholds and says which
errors count as failures; ``outcome_of`` is that rule as code. The clients ask
``admit()`` before an attempt and ``record()`` its outcome after it.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from tritonstack.client._config import CircuitBreakerPolicy
from tritonstack.client._exceptions import (
    CircuitOpenError,
    ClientError,
    DeadlineExceededError,
    RequestCancelledError,
    ServerUnavailableError,
    TritonServerError,
)

Clock = Callable[[], float]

# The window is kept as this many buckets of window_s / BUCKETS each: memory and time
# per call stay constant at any call rate; the window slides in steps of one bucket.
BUCKETS = 10


class CircuitState(enum.IntEnum):
    """A breaker's state; the value is what the ``tritonstack_sdk_circuit_state`` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Outcome(enum.Enum):
    """What one attempt says about the endpoint's health."""

    SUCCESS = "success"
    FAILURE = "failure"
    NO_VERDICT = "no verdict"


def outcome_of(error: ClientError) -> Outcome:
    """The breaker's reading of a failed attempt (see ``CircuitBreakerPolicy``)."""
    if isinstance(error, CircuitOpenError):
        return Outcome.NO_VERDICT  # never sent; counting it would keep the breaker open by itself
    if isinstance(error, ServerUnavailableError):
        return Outcome.FAILURE  # the transport: unreachable, connection lost, shutting down
    # TritonServerError (INTERNAL, UNKNOWN, ...): the server answered, and a model that fails on one caller's
    # input would otherwise open a shared client's breaker for every caller; it proves no health either.
    if error.code is None or isinstance(error, DeadlineExceededError | RequestCancelledError | TritonServerError):
        return Outcome.NO_VERDICT
    # The server answered: overloaded (alive, shedding) or the caller's mistake.
    return Outcome.SUCCESS


class CircuitBreaker:
    """The breaker of one endpoint. Thread-safe: one lock, held only for arithmetic."""

    def __init__(
        self,
        policy: CircuitBreakerPolicy,
        *,
        clock: Clock = time.monotonic,
        on_state: Callable[[CircuitState], None] | None = None,
    ) -> None:
        """``on_state`` is called with the first state and after every change (a metrics gauge);
        it runs under the breaker's lock and must not call back into it."""
        self.policy = policy
        self._clock = clock
        self._on_state = on_state
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._open_until = 0.0
        self._probe_since: float | None = None  # when the half-open probe in flight was let through
        self._bucket_s = policy.window_s / BUCKETS
        self._bucket_ids = [-1] * BUCKETS  # which bucket (now // bucket_s) each slot counts
        self._calls = [0] * BUCKETS
        self._failures = [0] * BUCKETS
        if on_state is not None:
            on_state(self._state)

    @property
    def state(self) -> CircuitState:
        """The state now; OPEN stays OPEN past ``open_s`` until a call asks to go through."""
        return self._state

    def can_admit(self) -> bool:
        """Whether ``admit()`` would let a call through now (changes nothing)."""
        if self._state is CircuitState.CLOSED:  # every call's path: no lock (a stale read admits one more)
            return True
        with self._lock:
            return self._admits(self._clock())

    def admit(self) -> bool:
        """Let a call through or not; a call let through while half-open is the probe."""
        if self._state is CircuitState.CLOSED:
            return True
        with self._lock:
            now = self._clock()
            if not self._admits(now):
                return False
            if self._state is CircuitState.OPEN:
                self._change(CircuitState.HALF_OPEN)
            if self._state is CircuitState.HALF_OPEN:
                self._probe_since = now
            return True

    def record(self, outcome: Outcome) -> None:
        """The outcome of an attempt that ``admit()`` let through."""
        if not self.policy.enabled:
            return
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.CLOSED:
                if outcome is Outcome.NO_VERDICT:
                    return
                self._count(now, failed=outcome is Outcome.FAILURE)
                if outcome is Outcome.FAILURE and self._tripped(now):
                    self._open(now)
            elif self._state is CircuitState.HALF_OPEN:
                # Any answer decides, the probe's or a straggler's let through before the breaker opened.
                if outcome is Outcome.SUCCESS:
                    self._close()
                elif outcome is Outcome.FAILURE:
                    self._open(now)
                else:
                    self._probe_since = None  # no verdict: let the next call probe
            # OPEN: answers to calls let through before it opened change nothing.

    # --- under the lock --------------------------------------------------------------------

    def _admits(self, now: float) -> bool:
        if not self.policy.enabled or self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            return now >= self._open_until
        # HALF_OPEN: one probe at a time; one that never reported is presumed lost after open_s.
        return self._probe_since is None or now - self._probe_since >= self.policy.open_s

    def _count(self, now: float, *, failed: bool) -> None:
        bucket = int(now // self._bucket_s)
        slot = bucket % BUCKETS
        if self._bucket_ids[slot] != bucket:
            self._bucket_ids[slot] = bucket
            self._calls[slot] = self._failures[slot] = 0
        self._calls[slot] += 1
        self._failures[slot] += failed

    def _tripped(self, now: float) -> bool:
        oldest = int(now // self._bucket_s) - BUCKETS + 1
        live = [slot for slot in range(BUCKETS) if self._bucket_ids[slot] >= oldest]
        calls = sum(self._calls[slot] for slot in live)
        failures = sum(self._failures[slot] for slot in live)
        return calls >= self.policy.min_calls and failures >= self.policy.failure_ratio * calls

    def _open(self, now: float) -> None:
        self._open_until = now + self.policy.open_s
        self._probe_since = None
        self._change(CircuitState.OPEN)

    def _close(self) -> None:
        self._probe_since = None
        # A fresh window: failures from before the breaker opened must not trip it again.
        self._bucket_ids = [-1] * BUCKETS
        self._change(CircuitState.CLOSED)

    def _change(self, state: CircuitState) -> None:
        self._state = state
        if self._on_state is not None:
            self._on_state(state)
