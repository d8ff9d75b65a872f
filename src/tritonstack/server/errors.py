"""Errors of the embedded Triton server."""

from __future__ import annotations

from tritonstack._exceptions import TritonStackError


class ServerError(TritonStackError):
    """The embedded server cannot be prepared or controlled."""


class ServerStartError(ServerError):
    """Triton did not become ready; ``model_errors`` maps model name -> Triton's own reason."""

    def __init__(
        self, message: str, *, hint: str | None = None, model_errors: dict[str, str] | None = None, log_tail: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.model_errors = model_errors or {}
        self.log_tail = log_tail


class ExposureRefusedError(ServerError):
    """Binding beyond loopback was not asked for explicitly, or without an admin key the user chose."""
