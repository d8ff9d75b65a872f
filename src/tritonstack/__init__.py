"""tritonstack: a Hugging Face model to a measured, monitored NVIDIA Triton deployment.

The base install is the client SDK::

    import tritonstack

    with tritonstack.Client("127.0.0.1:8001", model="minilm") as client:
        vectors = client.embed(["hello world"])

``export``, ``serve`` and ``loadtest`` come with their extras
(``pip install 'tritonstack[export,serve,loadtest]'``). The SDK's names are
imported on first use, so ``import tritonstack`` (and the CLI's ``--help``)
stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tritonstack._exceptions import TritonStackError

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "Classification",
    "Client",
    "ClientError",
    "ConfigurationError",
    "DeadlineExceededError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "RetryBudget",
    "RetryPolicy",
    "ServerUnavailableError",
    "TLSConfig",
    "Timeouts",
    "TritonServerError",
    "TritonStackError",
    "__version__",
]

if TYPE_CHECKING:
    from tritonstack.client import (
        AsyncClient,
        CircuitBreakerPolicy,
        CircuitOpenError,
        Classification,
        Client,
        ClientError,
        ConfigurationError,
        DeadlineExceededError,
        InvalidInputError,
        ModelInfo,
        ModelNotFoundError,
        OverloadedError,
        PermissionDeniedError,
        RequestCancelledError,
        ResourceExhaustedError,
        RetryBudget,
        RetryPolicy,
        ServerUnavailableError,
        Timeouts,
        TLSConfig,
        TritonServerError,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:  # the SDK's names, imported on first use
        return getattr(importlib.import_module("tritonstack.client"), name)
    raise AttributeError(f"module 'tritonstack' has no attribute {name!r}")
