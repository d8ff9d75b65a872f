"""The load test's HTTP client for the gateway, against a real HTTP server in a thread answering in the gateway's
shapes: the requests it sends (OpenAI/Cohere bodies, the key from the environment) and the SDK errors it raises.
The real gateway: tests/loadtest/test_loadtest_gateway.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tritonstack.client import (
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ServerUnavailableError,
    TritonServerError,
)
from tritonstack.loadtest.gateway_client import API_KEY_ENV, STATUS_ERRORS, GatewayClient, error_for, is_gateway_url


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], Any]]] = []
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if type(self).status != 200:
            answer: Any = {"error": {"message": "queue full", "type": "rate_limit_exceeded", "param": None}}
        elif self.path.endswith("/v1/embeddings"):
            answer = {"object": "list", "data": [{"index": i} for i in range(len(body["input"]))]}
        elif self.path.endswith("/v1/rerank"):
            answer = {"results": [{"index": i, "relevance_score": 0.5} for i in range(len(body["documents"]))]}
        else:
            answer = {"object": "list", "data": [{"label": "x"}] * (len(body["input"]) - 1)}  # one row short
        self._answer(type(self).status, answer)

    def do_GET(self) -> None:
        self._answer(200, {"status": "ok"})

    def _answer(self, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[str]:
    _Gateway.received = []
    _Gateway.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_gateway_is_told_apart_from_a_grpc_endpoint_by_its_scheme() -> None:
    assert is_gateway_url("http://127.0.0.1:8080") and is_gateway_url("HTTPS://gw.example.com/api")
    assert not is_gateway_url("127.0.0.1:8001") and not is_gateway_url("grpc://triton:8001")


def test_requests_have_the_shapes_applications_send(gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "k-123")
    client = GatewayClient(gateway + "/", model="minilm")
    try:
        client.model_info()
        assert len(client.embed(["a", "b", "c"])) == 3
        assert len(client.rerank("q", ["d1", "d2"])) == 2
    finally:
        client.close()
    (embed_path, headers, embed), (rerank_path, _, rerank) = _Gateway.received
    assert embed_path == "/v1/embeddings" and rerank_path == "/v1/rerank"
    # base64: what the official openai client asks for when its caller does not choose
    assert embed == {"model": "minilm", "input": ["a", "b", "c"], "encoding_format": "base64"}
    assert rerank == {"model": "minilm", "query": "q", "documents": ["d1", "d2"]}
    assert headers["authorization"] == "Bearer k-123"


def test_no_key_no_authorization_header_and_a_path_prefix_is_kept(
    gateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    client = GatewayClient(gateway + "/api", model="m")
    try:
        client.embed(["a"])
    finally:
        client.close()
    ((path, headers, _),) = _Gateway.received
    assert path == "/api/v1/embeddings" and "authorization" not in headers


def test_a_row_missing_from_the_answer_fails_the_request(gateway: str) -> None:
    client = GatewayClient(gateway, model="m")
    try:
        with pytest.raises(TritonServerError, match="1 rows for 2 inputs"):
            client.classify(["a", "b"])
    finally:
        client.close()


def test_a_refusal_raises_the_sdk_error_with_the_gateways_message(gateway: str) -> None:
    _Gateway.status = 429
    client = GatewayClient(gateway, model="m")
    try:
        with pytest.raises(OverloadedError, match="HTTP 429: queue full"):
            client.embed(["a"])
    finally:
        client.close()


def test_a_gateway_that_is_not_there_is_unavailable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = GatewayClient(f"http://127.0.0.1:{port}", model="m", connect_timeout_s=2)
    try:
        with pytest.raises(ServerUnavailableError, match="cannot reach"):
            client.embed(["a"])
    finally:
        client.close()


def test_every_status_the_gateway_documents_has_its_sdk_error() -> None:
    # docs/gateway.md, "Errors": bad input 400/422, unknown model 404, limits 413, overload 429,
    # Triton down or circuit open 503, deadline 504; auth 401.
    expected = {
        400: InvalidInputError, 401: PermissionDeniedError, 404: ModelNotFoundError, 413: InvalidInputError,
        422: InvalidInputError, 429: OverloadedError, 503: ServerUnavailableError, 504: DeadlineExceededError,
    }  # fmt: skip
    for status, cls in expected.items():
        assert STATUS_ERRORS[status] is cls
        assert type(error_for(status, b"{}", model="m", url="u")) is cls
    assert type(error_for(500, b"not json", model="m", url="u")) is TritonServerError
    assert "not json" in error_for(500, b"not json", model="m", url="u").message
