"""The load test's HTTP client for ``tritonstack gateway``: the SDK's call shapes over the OpenAI/Cohere routes.

A Locust user talks to the gateway through :class:`GatewayClient` exactly as it
talks to Triton through the SDK's ``Client``: ``embed(texts)``, ``rerank(query,
documents)``, ``classify(texts)``, ``model_info()``, ``close()``; a refused call
raises the SDK's error for the HTTP status (:data:`STATUS_ERRORS`), so a
sample's outcome reads the same (``OverloadedError`` for a 429, ...) over gRPC
and over HTTP. The requests are what applications send: ``/v1/embeddings`` in
the OpenAI shape with ``encoding_format: base64`` (what the official ``openai``
client asks for when the caller does not choose), ``/v1/rerank`` in the Cohere
shape, ``/v1/classify``. It runs on geventhttpclient (Locust's own fast HTTP
client: one keep-alive connection per user, cooperative under gevent).

The API key comes from ``TRITONSTACK_GATEWAY_API_KEY`` (never a command line).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any

from tritonstack.client._exceptions import (
    ClientError,
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ServerUnavailableError,
    TritonServerError,
)

API_KEY_ENV = "TRITONSTACK_GATEWAY_API_KEY"
SCHEMES = ("http://", "https://")
EMBEDDINGS = "/v1/embeddings"
RERANK = "/v1/rerank"
CLASSIFY = "/v1/classify"

# The gateway's answers (docs/gateway.md, "Errors") as the SDK's errors.
STATUS_ERRORS: dict[int, type[ClientError]] = {
    400: InvalidInputError,
    401: PermissionDeniedError,
    403: PermissionDeniedError,
    404: ModelNotFoundError,
    413: InvalidInputError,
    422: InvalidInputError,
    429: OverloadedError,
    503: ServerUnavailableError,
    504: DeadlineExceededError,
}


def is_gateway_url(host: str) -> bool:
    """Whether a load test's host is the gateway's HTTP base URL rather than Triton's gRPC endpoint."""
    return host.strip().lower().startswith(SCHEMES)


def error_for(status: int, body: bytes, *, model: str, url: str) -> ClientError:
    """The SDK error for a non-2xx answer, with the gateway's own message (OpenAI's error shape)."""
    message = body[:500].decode("utf-8", "replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):  # not the gateway's error shape: the raw text
        message = str(json.loads(body)["error"]["message"])
    cls = STATUS_ERRORS.get(status, TritonServerError if status >= 500 else ClientError)
    return cls(f"HTTP {status}: {message}", model=model, url=url)


class GatewayClient:
    """One keep-alive connection to the gateway, with the SDK ``Client``'s call methods (see the module)."""

    protocol = "http"

    def __init__(
        self, base_url: str, *, model: str, timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
        api_key: str | None = None,
    ) -> None:  # fmt: skip
        from geventhttpclient import URL, HTTPClient

        self.base_url = base_url.rstrip("/")
        self.model = model
        url = URL(self.base_url)
        self._prefix = url.path.rstrip("/")  # a gateway behind a path prefix
        self._http = HTTPClient.from_url(
            url, concurrency=1, connection_timeout=connect_timeout_s, network_timeout=timeout_s
        )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._headers = {"content-type": "application/json", "connection": "keep-alive"}
        if key:
            self._headers["authorization"] = f"Bearer {key}"

    def _post(self, route: str, body: dict[str, Any]) -> Any:
        url = self.base_url + route
        try:
            response = self._http.post(self._prefix + route, json.dumps(body).encode(), headers=self._headers)
            status, content = response.status_code, response.read()
        except TimeoutError as error:
            raise DeadlineExceededError(f"no answer from {url}: {error}", model=self.model, url=url) from error
        except OSError as error:
            raise ServerUnavailableError(f"cannot reach {url}: {error}", model=self.model, url=url) from error
        if not 200 <= status < 300:
            raise error_for(status, content, model=self.model, url=url)
        return json.loads(content)

    def embed(self, texts: Sequence[str]) -> list[Any]:
        answer = self._post(EMBEDDINGS, {"model": self.model, "input": list(texts), "encoding_format": "base64"})
        return self._rows(answer["data"], len(texts))

    def rerank(self, query: str, documents: Sequence[str]) -> list[Any]:
        answer = self._post(RERANK, {"model": self.model, "query": query, "documents": list(documents)})
        return self._rows(answer["results"], len(documents))

    def classify(self, texts: Sequence[str]) -> list[Any]:
        answer = self._post(CLASSIFY, {"model": self.model, "input": list(texts)})
        return self._rows(answer["data"], len(texts))

    def _rows(self, rows: list[Any], expected: int) -> list[Any]:
        # An answer with a row missing is a failed request, not a fast one.
        if len(rows) != expected:
            raise TritonServerError(f"{len(rows)} rows for {expected} inputs", model=self.model, url=self.base_url)
        return rows

    def model_info(self) -> None:
        """Connect now (the SDK's ``model_info`` warms its channel the same way); the answer is not needed."""
        response = self._http.get(self._prefix + "/health", headers=self._headers)
        response.read()

    def close(self) -> None:
        self._http.close()
