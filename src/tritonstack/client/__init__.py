"""The tritonstack client SDK: call models served by Triton over gRPC.

    from tritonstack.client import Client

    with Client("127.0.0.1:8001", model="minilm") as client:
        vectors = client.embed(["hello world", "good morning"])   # float32 [2, hidden]

``AsyncClient`` is the same API for asyncio. Errors are ``ClientError``
subclasses (``tritonstack.client._exceptions`` draws the tree). The base
install needs only tritonclient[grpc] and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use: `tritonstack infer --help` (this package's command) must not load gRPC.
_HOMES = {
    "AsyncClient": "_async",
    "UNSET": "_config",
    "CircuitBreakerPolicy": "_config",
    "RetryBudget": "_config",
    "RetryPolicy": "_config",
    "Timeouts": "_config",
    "TLSConfig": "_config",
    "CircuitOpenError": "_exceptions",
    "ClientError": "_exceptions",
    "ConfigurationError": "_exceptions",
    "DeadlineExceededError": "_exceptions",
    "InvalidInputError": "_exceptions",
    "ModelNotFoundError": "_exceptions",
    "OverloadedError": "_exceptions",
    "PermissionDeniedError": "_exceptions",
    "RequestCancelledError": "_exceptions",
    "ResourceExhaustedError": "_exceptions",
    "ServerUnavailableError": "_exceptions",
    "TritonServerError": "_exceptions",
    "ClientMetrics": "_metrics",
    "Classification": "_models",
    "ModelInfo": "_models",
    "RerankResult": "_models",
    "TensorSpec": "_models",
    "Usage": "_models",
    "Release": "_releases",
    "Routed": "_releases",
    "TrafficSplit": "_releases",
    "Client": "_sync",
}

if TYPE_CHECKING:
    from tritonstack.client._async import AsyncClient
    from tritonstack.client._config import UNSET, CircuitBreakerPolicy, RetryBudget, RetryPolicy, Timeouts, TLSConfig
    from tritonstack.client._exceptions import (
        CircuitOpenError,
        ClientError,
        ConfigurationError,
        DeadlineExceededError,
        InvalidInputError,
        ModelNotFoundError,
        OverloadedError,
        PermissionDeniedError,
        RequestCancelledError,
        ResourceExhaustedError,
        ServerUnavailableError,
        TritonServerError,
    )
    from tritonstack.client._metrics import ClientMetrics
    from tritonstack.client._models import Classification, ModelInfo, RerankResult, TensorSpec, Usage
    from tritonstack.client._releases import Release, Routed, TrafficSplit
    from tritonstack.client._sync import Client

__all__ = [
    "UNSET",
    "AsyncClient",
    "CircuitBreakerPolicy",
    "CircuitOpenError",
    "Classification",
    "Client",
    "ClientError",
    "ClientMetrics",
    "ConfigurationError",
    "DeadlineExceededError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "Release",
    "RequestCancelledError",
    "RerankResult",
    "ResourceExhaustedError",
    "RetryBudget",
    "RetryPolicy",
    "Routed",
    "ServerUnavailableError",
    "TLSConfig",
    "TensorSpec",
    "Timeouts",
    "TrafficSplit",
    "TritonServerError",
    "Usage",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tritonstack.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tritonstack.client.{home}"), name)
