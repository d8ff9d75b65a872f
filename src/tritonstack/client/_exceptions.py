"""The client's errors, and the one place where backend errors are translated.

    TritonStackError                     (tritonstack._exceptions)
    └── ClientError                      any failed SDK call; .model .version .code .request_id .url
        ├── ConfigurationError           invalid settings (url, timeouts, retry policy, TLS); nothing was sent
        ├── InvalidInputError            bad input, caught before sending; or INVALID_ARGUMENT, OUT_OF_RANGE;
        │                                or RESOURCE_EXHAUSTED for a message over gRPC's size limit
        ├── ModelNotFoundError           NOT_FOUND: no such model or version, or it failed to load
        ├── ServerUnavailableError       UNAVAILABLE: cannot connect, connection lost, server shutting down
        │   └── CircuitOpenError         not sent: the endpoint's circuit breaker is open after recent failures
        ├── OverloadedError              UNAVAILABLE with one of Triton's overload messages: the server is alive
        │   │                            and shed the call (its queue was full, or the call waited past its timeout)
        │   └── ResourceExhaustedError   RESOURCE_EXHAUSTED: a resource limit of the server or of a proxy
        ├── DeadlineExceededError        DEADLINE_EXCEEDED: the call's deadline (``Timeouts.call_s``) passed
        ├── RequestCancelledError        CANCELLED
        ├── PermissionDeniedError        PERMISSION_DENIED, UNAUTHENTICATED (restricted APIs, TLS identity)
        └── TritonServerError            the server failed: INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ...

``translate`` maps ``tritonclient``'s ``InferenceServerException`` to this tree
by its gRPC status code (``.status()`` is ``str(grpc.StatusCode.X)``).
``STATUS_ERRORS`` covers every ``grpc.StatusCode``; a unit test fails when a
code has no entry.

The code alone cannot tell an overloaded server from a dead one: Triton 2.51
answers a full queue (``max_queue_size``) and a request that waited past its
queue policy's timeout (``timeout_action: REJECT``) with UNAVAILABLE, the code
gRPC itself uses for "cannot connect" and Triton for "shutting down". The two
need opposite handling: a dead endpoint is set aside and the call fails over;
an overloaded one is alive, and failing over or retrying at once would only
move or multiply the load. Triton sends nothing else that differs (no other
code, no trailing metadata), and the channel's connectivity state does not
help either (a server that is shutting down answers on a READY channel just
like an overloaded one). So within UNAVAILABLE, and only there,
``MESSAGE_ERRORS`` looks for Triton's two overload messages, which it
prefixes with a request id and, through an ensemble, with ``in ensemble 'x',``,
and for the one the exported Python steps send when they shed a request that
queued past their budget (``contract.SHED_MESSAGE``: exports write no Triton
queue policy, which stalls Triton 2.51's batcher; docs/export.md).
An integration test floods a real Triton and fails if its texts change. The
same table keeps gRPC's "message larger than max" out of the overload class:
every other RESOURCE_EXHAUSTED is a resource limit, and so overload.
"""

from __future__ import annotations

import grpc

from tritonstack._exceptions import TritonStackError
from tritonstack.in_triton import contract


class ClientError(TritonStackError):
    """A failed SDK call.

    Attributes: ``model`` and ``version`` (what was called, where known), ``code``
    (the ``grpc.StatusCode``, ``None`` for errors found client-side), ``request_id``
    (sent to Triton as the request's id; find it in the server's log), ``url``
    (the endpoint that answered, ``None`` when nothing was sent).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        model: str | None = None,
        version: str | None = None,
        code: grpc.StatusCode | None = None,
        request_id: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.model = model
        self.version = version or None  # Triton's "" means the server's choice
        self.code = code
        self.request_id = request_id
        self.url = url

    def __str__(self) -> str:
        where = []
        if self.model is not None:
            where.append(f"model={self.model!r}" + (f" version={self.version!r}" if self.version else ""))
        if self.code is not None:
            where.append(f"status={self.code.name}")
        if self.url is not None:
            where.append(f"url={self.url}")
        if self.request_id is not None:
            where.append(f"request_id={self.request_id}")
        return self.message + (f" [{' '.join(where)}]" if where else "")


class ConfigurationError(ClientError):
    """The client's settings are invalid: url, limits, timeouts, retry policy, TLS (an unreadable PEM
    file too). Found before anything is sent, mostly when the value is made."""


class InvalidInputError(ClientError):
    """The input does not fit the model (names, dtypes, shapes, values)."""


class ModelNotFoundError(ClientError):
    """The server cannot serve the model: no such model or version, or it is not ready.

    Triton (2.51) answers NOT_FOUND both for a name it does not know and for a
    model in its repository that failed to load or was unloaded; only the
    message text tells them apart, and we do not branch on text. ``ready()``
    says whether the model is ready; the server's log or repository index says why not.
    """


class ServerUnavailableError(ClientError):
    """No server could be reached, or it went away during the call."""

    retryable = True


class CircuitOpenError(ServerUnavailableError):
    """Not sent: the endpoint's circuit breaker is open because many recent calls to it failed.

    ``url`` names the endpoint (the preferred one when several are open);
    ``code`` is UNAVAILABLE, as for gRPC's own refusal on a channel it knows to
    be down. The breaker lets a probe call through after
    ``CircuitBreakerPolicy.open_s``: retry then, not at once.
    """

    retryable = False


class OverloadedError(ClientError):
    """The server is alive but shed the call: its queue was full, or the call waited in it past the queue's timeout.

    ``message`` is the server's. The SDK retries it with backoff only within
    the client's retry budget (``RetryBudget``), never fails over for it and
    never sets the endpoint aside: another retry at once would add to the load
    that caused it.
    """

    retryable = True


class ResourceExhaustedError(OverloadedError):
    """RESOURCE_EXHAUSTED: a resource limit of the server or of a proxy in front of it (not message size)."""


class DeadlineExceededError(ClientError):
    """The call's deadline passed before an answer came."""


class RequestCancelledError(ClientError):
    """The call was cancelled."""


class PermissionDeniedError(ClientError):
    """The server refused the caller (missing admin key, client certificate)."""


class TritonServerError(ClientError):
    """The server failed to carry out a well-formed call."""


STATUS_ERRORS: dict[grpc.StatusCode, type[ClientError]] = {
    # OK is never raised by grpc; listed so that the table is total.
    grpc.StatusCode.OK: TritonServerError,
    grpc.StatusCode.CANCELLED: RequestCancelledError,
    grpc.StatusCode.UNKNOWN: TritonServerError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: ModelNotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: TritonServerError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: TritonServerError,
    grpc.StatusCode.ABORTED: TritonServerError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInputError,
    grpc.StatusCode.UNIMPLEMENTED: TritonServerError,
    grpc.StatusCode.INTERNAL: TritonServerError,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.DATA_LOSS: TritonServerError,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
}

# Within one status code, the few verdicts that need different handling, by a text the
# sender always includes (see the module docstring). Checked in order, first match wins.
MESSAGE_ERRORS: dict[grpc.StatusCode, tuple[tuple[str, type[ClientError]], ...]] = {
    grpc.StatusCode.UNAVAILABLE: (
        # Triton's dynamic batcher, queue at the policy's max_queue_size
        ("Exceeds maximum queue size", OverloadedError),
        # Triton's dynamic batcher, queued past the policy's (or the request's) timeout, timeout_action REJECT
        ("Request timeout expired", OverloadedError),
        # an exported Python step, queued past its queue budget (in_triton/models/error_responses.py)
        (contract.SHED_MESSAGE, OverloadedError),
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (
        # gRPC's own "Received/Sent message larger than max (N vs. M)": the same call fails again anywhere
        ("message larger than max", InvalidInputError),
    ),
}

_HINTS: dict[type[ClientError], str] = {
    ServerUnavailableError: "check that the server runs and that the URL (host:port of its gRPC port) is right",
    OverloadedError: "the server sheds load: send less, or add capacity; the model's queue budget "
    "(export --queue-timeout-ms) decides when it sheds",
    DeadlineExceededError: "raise Timeouts(call_s=...) or send smaller batches",
    ModelNotFoundError: "check the model name and version; a model that failed to load is not found either "
    "(see the server log)",
    PermissionDeniedError: "restricted APIs need the admin key header; TLS may need a client certificate",
}

_STATUS_BY_NAME: dict[str, grpc.StatusCode] = {str(code): code for code in grpc.StatusCode}


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status of a ``tritonclient`` or ``grpc`` error, ``None`` when it has none.

    ``InferenceServerException.status()`` is ``str(grpc.StatusCode.X)``, e.g.
    ``"StatusCode.UNAVAILABLE"``; errors raised inside ``tritonclient`` before
    anything is sent carry ``None``.
    """
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        code = exc.code()
        return code if isinstance(code, grpc.StatusCode) else None
    status = getattr(exc, "status", None)
    if callable(status):
        value = status()
        if isinstance(value, grpc.StatusCode):
            return value
        if isinstance(value, str):
            return _STATUS_BY_NAME.get(value)
    return None


def _message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return str(text or type(exc).__name__)


def call_errors() -> tuple[type[BaseException], ...]:
    """What a call to tritonclient may raise that :func:`translate` turns into this tree: its own exception, a
    raw ``grpc.RpcError``, and the ``ClientError`` our parsing raises (passed through). Imported on first use."""
    from tritonclient.utils import InferenceServerException

    return (InferenceServerException, grpc.RpcError, ClientError)


def translate(
    exc: BaseException,
    *,
    model: str | None,
    version: str | None,
    request_id: str | None,
    url: str | None,
) -> ClientError:
    """The ``ClientError`` for a backend error: by its gRPC status code, refined by ``MESSAGE_ERRORS``."""
    if isinstance(exc, ClientError):
        return exc
    code = status_code(exc)
    message = _message_of(exc)
    # No status: tritonclient refused the call locally; no server verdict to map.
    cls = STATUS_ERRORS[code] if code is not None else ClientError
    if code is not None:
        cls = next((refined for text, refined in MESSAGE_ERRORS.get(code, ()) if text in message), cls)
    return cls(
        message,
        hint=_HINTS.get(cls),
        model=model,
        version=version,
        code=code,
        request_id=request_id,
        url=url,
    )
