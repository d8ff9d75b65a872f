"""Immutable configuration values: timeouts, retry policy and budget, circuit breaker, TLS.

"Not passed" differs from ``None`` everywhere: not passing a timeout means the
default, ``None`` means "no limit".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import grpc

from tritonstack.client._exceptions import ConfigurationError

DEFAULT_CONNECT_S: Final = 5.0
DEFAULT_CALL_S: Final = 30.0

# The only codes worth retrying: the server was unreachable or shed load. INVALID_ARGUMENT
# would fail again; DEADLINE_EXCEEDED means the call's time is spent.
RETRYABLE_CODES: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset.UNSET
"""The value of an argument that was not passed (as opposed to ``None``)."""

UnsetType: TypeAlias = _Unset
TimeoutArg: TypeAlias = float | _Unset | None


def _check_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return float(value)


@dataclass(frozen=True, init=False)
class Timeouts:
    """Connect and per-call timeouts, in seconds; ``None`` disables one.

    ``Timeouts()`` is connect 5 s, call 30 s. ``Timeouts(10)`` sets both to 10 s;
    ``Timeouts(10, connect_s=1)`` sets the call to 10 s and connect to 1 s.

    * ``connect_s`` bounds each attempt to open a connection (TCP, TLS and HTTP/2
      handshake; gRPC's ``grpc.min_reconnect_backoff_ms``). ``None`` leaves gRPC's
      own 20 s.
    * ``call_s`` is the deadline of one SDK call, all retries, failovers and split
      batches included. ``None``: wait as long as the server takes.
    """

    connect_s: float | None
    call_s: float | None

    def __init__(
        self,
        default_s: float | _Unset | None = UNSET,
        *,
        connect_s: float | _Unset | None = UNSET,
        call_s: float | _Unset | None = UNSET,
    ) -> None:
        def pick(value: float | _Unset | None, fallback: float) -> float | None:
            if value is not UNSET:
                return value
            return fallback if default_s is UNSET else default_s

        object.__setattr__(self, "connect_s", _check_seconds("connect_s", pick(connect_s, DEFAULT_CONNECT_S)))
        object.__setattr__(self, "call_s", _check_seconds("call_s", pick(call_s, DEFAULT_CALL_S)))

    @classmethod
    def coerce(cls, value: Timeouts | float | _Unset | None) -> Timeouts:
        """A ``Timeouts`` from what a constructor accepts: an instance, seconds, ``None`` or not passed."""
        if isinstance(value, Timeouts):
            return value
        return cls(value)


@dataclass(frozen=True)
class RetryBudget:
    """How many retries one client may send, like gRPC's retry throttling (``maxTokens``, ``tokenRatio``).

    A bucket holds up to ``max_tokens`` tokens and starts full. A retry to the
    same endpoint takes one token, and is not made when less than one is left
    (the call then fails with its error); each successful attempt puts back
    ``token_ratio``. So a client's retries never exceed ``max_tokens`` plus
    ``token_ratio`` times its successes: when a server sheds most calls,
    retries stop after a burst and cannot multiply its load. A failover to
    another endpoint takes no token: that server has not seen the call.
    """

    max_tokens: float = 10.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not self.max_tokens >= 1:
            raise ConfigurationError("max_tokens must be >= 1 (one retry costs one token)")
        if not 0.001 <= self.token_ratio <= 1:
            raise ConfigurationError("token_ratio is the fraction of a token a success puts back: in [0.001, 1]")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter on UNAVAILABLE and RESOURCE_EXHAUSTED, within a retry budget.

    Attempt ``n`` (1-based) that fails is followed, while the call's deadline
    allows, by a pause of ``min(max_backoff_s, initial_backoff_s * multiplier**(n-1))``
    shortened by a random fraction of up to ``jitter`` (1.0 is "full jitter").
    A failover to another healthy endpoint happens without pause. An endpoint
    that was unreachable is set aside for ``cooldown_s``. An overloaded server
    (``OverloadedError``) is neither set aside nor failed over from: it is
    retried after the backoff, and only while ``budget`` has tokens
    (``None``: no budget, every retry the policy allows is made).
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 1.0
    cooldown_s: float = 5.0
    retry_on: frozenset[grpc.StatusCode] = field(default=RETRYABLE_CODES)
    budget: RetryBudget | None = field(default_factory=RetryBudget)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts counts the first attempt: it must be >= 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.cooldown_s < 0:
            raise ConfigurationError("backoff and cool-down times must be >= 0 seconds")
        if self.multiplier < 1:
            raise ConfigurationError("multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("jitter is a fraction in [0, 1]")
        unsafe = set(self.retry_on) - RETRYABLE_CODES
        if unsafe:
            names = ", ".join(sorted(code.name for code in unsafe))
            raise ConfigurationError(f"retry_on may hold only UNAVAILABLE and RESOURCE_EXHAUSTED, not {names}")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt per endpoint choice, no retries (failover cool-down still applies)."""
        return cls(max_attempts=1)


@dataclass(frozen=True)
class CircuitBreakerPolicy:
    """When an endpoint's circuit breaker opens, and how it closes again; one breaker per endpoint.

    Closed (calls go through): the breaker counts each endpoint's attempts over
    the last ``window_s``. Once at least ``min_calls`` reached a verdict there
    and the failed fraction reaches ``failure_ratio``, it opens: calls to the
    endpoint fail at once with ``CircuitOpenError`` (another endpoint, if there
    is one, takes them) for ``open_s``. Then it is half-open: one probe call
    goes through; success closes the breaker, failure opens it for another
    ``open_s``. A probe that reports nothing within ``open_s`` (its caller was
    cancelled) is given up and another is let through.

    Failures: the transport's alone -- the server could not be reached or went
    away (``ServerUnavailableError``). Not failures, but proof of a working
    server: overload (a shedding server is alive, and opening would turn a
    partial shed into a total one), and the caller's own errors (invalid
    input, unknown model, permission). No verdict: deadlines and
    cancellations, which are the caller's budget, not the server's health,
    and the server's own errors (``TritonServerError``: INTERNAL, UNKNOWN, ...),
    which a model raises for one caller's input: counted, one caller's poison
    input would open a shared client's breaker for everyone.

    Defaults: open at 50 % failures over 10 s with at least 20 attempts, probe
    after 5 s. A client sending fewer than 2 calls a second never opens; the
    failover set-aside (``RetryPolicy.cooldown_s``) still guards it.
    """

    failure_ratio: float = 0.5
    min_calls: int = 20
    window_s: float = 10.0
    open_s: float = 5.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise ConfigurationError("failure_ratio is a fraction of attempts: in (0, 1]")
        if self.min_calls < 1:
            raise ConfigurationError("min_calls must be >= 1")
        if not self.window_s > 0 or not self.open_s > 0:
            raise ConfigurationError("window_s and open_s must be > 0 seconds")

    @classmethod
    def disabled(cls) -> CircuitBreakerPolicy:
        """No breaker: every call is sent, however many failed before."""
        return cls(enabled=False)


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the gRPC channel: paths to PEM files.

    ``root_cert`` verifies the server (``None``: the system's roots). ``client_cert``
    and ``client_key`` together present a client identity (mutual TLS).
    ``server_hostname`` overrides the name checked against the server's
    certificate (a certificate issued for ``localhost`` served on ``127.0.0.1``).
    """

    root_cert: str | Path | None = None
    client_cert: str | Path | None = None
    client_key: str | Path | None = None
    server_hostname: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigurationError(
                "client_cert and client_key go together (mutual TLS needs both)", hint="pass both, or neither"
            )

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the PEM files, read now."""

        def read(path: str | Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as error:
                raise ConfigurationError(
                    f"cannot read the TLS {what} {path}: {error.strerror}", hint="pass PEM file paths"
                ) from error

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.root_cert, "root certificate"),
            private_key=read(self.client_key, "client key"),
            certificate_chain=read(self.client_cert, "client certificate"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.server_hostname is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_hostname)]
