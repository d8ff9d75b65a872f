"""The gateway's errors in OpenAI's shape, and the one table that maps the SDK's errors to HTTP statuses.

Every error the gateway sends is ``{"error": {"message", "type", "param", "code"}}``. ``type`` is OpenAI's class
(``invalid_request_error``, ``authentication_error``, ``rate_limit_error``, ``server_error``); ``code`` names the
case (``model_not_found``, ``overloaded``, ...) and is the ``type`` label of ``tritonstack_gateway_errors_total``.
A test fails if an SDK error class has no row in ``SDK_ERRORS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tritonstack.client import _exceptions as sdk

RETRY_AFTER_S = 1  # an overloaded Triton sheds for a moment; a caller that waits a second usually gets in


@dataclass(frozen=True, slots=True)
class Kind:
    status: int
    type: str
    code: str


INVALID = Kind(400, "invalid_request_error", "invalid_input")
UNAUTHORIZED = Kind(401, "authentication_error", "invalid_api_key")
NOT_FOUND = Kind(404, "invalid_request_error", "model_not_found")
ROUTE_NOT_FOUND = Kind(404, "invalid_request_error", "not_found")
METHOD_NOT_ALLOWED = Kind(405, "invalid_request_error", "method_not_allowed")
TOO_LARGE = Kind(413, "invalid_request_error", "request_too_large")
TOO_LONG = Kind(413, "invalid_request_error", "context_length_exceeded")  # a text over the model's max tokens
OVERLOADED = Kind(429, "rate_limit_error", "overloaded")
INTERNAL = Kind(500, "server_error", "internal_error")
UNAVAILABLE = Kind(503, "server_error", "triton_unavailable")
CIRCUIT_OPEN = Kind(503, "server_error", "circuit_open")
DEADLINE = Kind(504, "server_error", "deadline_exceeded")

# The SDK's error classes, most specific first (isinstance order): each to what the caller is told.
SDK_ERRORS: tuple[tuple[type[sdk.ClientError], Kind], ...] = (
    (sdk.CircuitOpenError, CIRCUIT_OPEN),
    (sdk.ServerUnavailableError, UNAVAILABLE),
    (sdk.ResourceExhaustedError, OVERLOADED),
    (sdk.OverloadedError, OVERLOADED),
    (sdk.DeadlineExceededError, DEADLINE),
    (sdk.InvalidInputError, INVALID),
    (sdk.ModelNotFoundError, NOT_FOUND),
    (sdk.ConfigurationError, INTERNAL),  # the gateway's own settings: not the caller's fault
    (sdk.RequestCancelledError, UNAVAILABLE),
    (sdk.PermissionDeniedError, INTERNAL),
    (sdk.TritonServerError, INTERNAL),
    (sdk.ClientError, INTERNAL),
)


class APIError(Exception):
    """An error response: its kind, the message for the caller and the request field it is about."""

    def __init__(self, kind: Kind, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(RETRY_AFTER_S)} if self.kind is OVERLOADED else {}

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.kind.type, "param": self.param, "code": self.kind.code}
        return json.dumps({"error": error}).encode()


def from_sdk(error: sdk.ClientError) -> APIError:
    """The response for a failed SDK call: its message (with its hint) under the table's status."""
    kind = next(kind for cls, kind in SDK_ERRORS if isinstance(error, cls))
    message = error.message + (f" ({error.hint})" if error.hint and kind.status < 500 else "")
    if kind is NOT_FOUND and error.model:
        message = f"The model '{error.model}' does not exist or is not ready: {error.message}"
    return APIError(kind, message, param="model" if kind is NOT_FOUND else None)
