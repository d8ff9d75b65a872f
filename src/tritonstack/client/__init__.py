"""The tritonstack client SDK: call models served by Triton over gRPC.

    from tritonstack.client import Client

    with Client("127.0.0.1:8001", model="minilm") as client:
        vectors = client.embed(["hello world", "good morning"])   # float32 [2, hidden]

``AsyncClient`` is the same API for asyncio. Errors are ``ClientError``
subclasses (``tritonstack.client._exceptions`` draws the tree). The base
install needs only tritonclient[grpc] and numpy.
"""

from __future__ import annotations

from tritonstack.client._async import AsyncClient
from tritonstack.client._config import UNSET, RetryPolicy, Timeouts, TLSConfig
from tritonstack.client._exceptions import (
    ClientError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    PermissionDeniedError,
    RequestCancelledError,
    ResourceExhaustedError,
    ServerUnavailableError,
    TritonServerError,
)
from tritonstack.client._metrics import ClientMetrics
from tritonstack.client._models import Classification, ModelInfo, TensorSpec
from tritonstack.client._sync import Client

__all__ = [
    "UNSET",
    "AsyncClient",
    "Classification",
    "Client",
    "ClientError",
    "ClientMetrics",
    "DeadlineExceededError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ServerUnavailableError",
    "TLSConfig",
    "TensorSpec",
    "Timeouts",
    "TritonServerError",
]
