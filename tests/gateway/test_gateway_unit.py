"""The gateway's app with no Triton behind it: uvicorn in a thread over ``create_app`` with a stand-in client.
Error mapping (429 with Retry-After, which a real Triton is hard to push into on demand), the config file, the
key check, and garbage in (nothing a caller sends crashes it; after tests/server's HTTP fuzz)."""

from __future__ import annotations

import inspect
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_process import get, post

from tritonstack.client import _exceptions as sdk
from tritonstack.client._models import Classification, ModelInfo, RerankResult, TensorSpec
from tritonstack.gateway import GatewaySettings, create_app, errors
from tritonstack.gateway.auth import authorized, load_api_keys
from tritonstack.gateway.settings import GatewayConfigError, parse_config
from tritonstack.in_triton import contract

HIDDEN = 8


class StandIn:
    """What the routes ask of ``AsyncClient``; ``fail`` makes every model call raise it."""

    def __init__(self) -> None:
        self.fail: Exception | None = None

    async def model_info(self, *, model: str, **_: Any) -> ModelInfo:
        if self.fail is not None:
            raise self.fail
        outputs = (TensorSpec(contract.EMBEDDING_OUTPUT, "FP32", (HIDDEN,)),)
        return ModelInfo(model, ("1",), "ensemble", 8, (TensorSpec(contract.TEXT_INPUT, "BYTES", (1,)),), outputs)

    async def embed(self, texts: list[str], **_: Any) -> np.ndarray:
        if self.fail is not None:
            raise self.fail
        return np.ones((len(texts), HIDDEN), np.float32) / np.sqrt(HIDDEN)

    async def classify(self, texts: list[str], **_: Any) -> list[Classification]:
        return [Classification("POSITIVE", 0.75) for _ in texts]

    async def rerank(self, query: str, documents: list[str], **_: Any) -> list[RerankResult]:
        return [RerankResult(i, float(-i)) for i in range(len(documents))]

    async def ready(self, **_: Any) -> bool:
        return self.fail is None

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, StandIn]]:
    import uvicorn

    client = StandIn()
    app = create_app(GatewaySettings(max_body_bytes=64 * 1024), client=client)  # type: ignore[arg-type]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", client
    server.should_exit = True
    thread.join(10)


def test_every_sdk_error_has_a_status() -> None:
    classes = [c for _, c in inspect.getmembers(sdk, inspect.isclass) if issubclass(c, sdk.ClientError)]
    for cls in classes:
        mapped = errors.from_sdk(cls("boom"))
        assert mapped.kind.status in (400, 404, 429, 500, 503, 504), cls
    assert errors.from_sdk(sdk.OverloadedError("shed")).headers == {"retry-after": "1"}


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (sdk.OverloadedError("queue full"), 429, "overloaded"),
        (sdk.ResourceExhaustedError("limit"), 429, "overloaded"),
        (sdk.DeadlineExceededError("late"), 504, "deadline_exceeded"),
        (sdk.CircuitOpenError("open"), 503, "circuit_open"),
        (sdk.ServerUnavailableError("down"), 503, "triton_unavailable"),
        (sdk.ModelNotFoundError("no", model="m"), 404, "model_not_found"),
        (sdk.InvalidInputError("bad"), 400, "invalid_input"),
        (sdk.TritonServerError("oops"), 500, "internal_error"),
    ],
)
def test_sdk_errors_become_openai_errors(served: tuple[str, StandIn], error: Exception, status: int, code: str) -> None:
    url, client = served
    client.fail = error
    try:
        got, body, headers = post(url + "/v1/embeddings", {"model": "m", "input": "x"})
    finally:
        client.fail = None
    assert (got, body["error"]["code"]) == (status, code)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert headers["retry-after"] == "1" and body["error"]["type"] == "rate_limit_error"


def test_health_follows_triton(served: tuple[str, StandIn]) -> None:
    url, client = served
    assert get(url + "/health")[0] == 200
    client.fail = sdk.ServerUnavailableError("down")
    try:
        assert get(url + "/health")[0] == 503
    finally:
        client.fail = None


def _raw(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    """Send ``data``; what came back until the server closed (or the first chunk, without ``half_close``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        answer = b""
        try:
            connection.sendall(data)
            if not half_close:
                return connection.recv(65536)
            connection.shutdown(socket.SHUT_WR)
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        return answer


def _garbage(rng: random.Random) -> list[bytes]:
    shapes: list[object] = [
        None, 1, "x", [], {}, {"input": None}, {"model": 5, "input": "x"}, {"model": "m", "input": [None]},
        {"model": "m", "input": "x", "dimensions": -3}, {"model": "m", "input": "x", "dimensions": 10**30},
        {"model": "m", "input": "x", "encoding_format": None}, {"model": "m", "input": ["\ud800"]},
        {"model": "m", "query": 1, "documents": [{"nope": 1}]}, {"model": "m", "query": "q", "documents": "abc"},
        {"model": "m", "input": [[1.5]]}, {"model": "m", "input": "x", "user": []},
    ]  # fmt: skip
    bodies = [json.dumps(shape).encode() for shape in shapes]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(20)]
    bodies += [b'{"model": "m", "input": "' + b"\xff\xfe" * 10 + b'"}', b"[" * 5000 + b"]" * 5000]
    return bodies


def test_garbage_never_crashes_it(served: tuple[str, StandIn]) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    rng = random.Random(25)
    refused = 0
    for path in ("/v1/embeddings", "/v1/rerank", "/v2/rerank", "/v1/classify"):
        for body in _garbage(rng):
            status, answer, _ = post(url + path, body)
            assert status < 500, (path, body[:80], status, answer)  # some are valid for some routes
            if status >= 400:
                assert set(answer["error"]) == {"message", "type", "param", "code"}
            refused += status >= 400
    assert refused > 3 * 30
    for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/embeddings HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"\x00" * 100,
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n{}"):  # fmt: skip
        _raw(port, raw)  # any answer, or a closed connection: the server must live on
    assert get(url + "/health")[0] == 200
    assert post(url + "/v1/embeddings", {"model": "m", "input": ["ok"]})[0] == 200
    assert post(url + "/v1/embeddings", {"model": "m" * 10_000, "input": "x"})[0] == 200  # a long name is a name


def test_a_chunked_body_over_the_limit_is_413(served: tuple[str, StandIn]) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"x" * 32 * 1024
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    assert _raw(port, head + body, half_close=False).startswith(b"HTTP/1.1 413")


def test_config_file(tmp_path: Path) -> None:
    config = parse_config(
        {
            "models": {"m": {"prefixes": {"query": "q: "}, "truncate": False}},
            "releases": {"m": {"baseline": 1, "candidate": 2, "weight": 0.1, "key": "header:X-Session"}},
            "cache": {"ttl_s": 60},
        }
    )
    assert config.options("m").prefixes == {"query": "q: "} and config.options("m").truncate is False
    assert config.options("other").truncate is True
    assert config.releases["m"].header == "x-session" and config.cache_ttl_s == 60
    for bad in ({"modles": {}}, {"releases": {"m": {"baseline": 1}}}, {"models": {"m": {"prefixes": {"q": "x"}}}},
                {"releases": {"m": {"baseline": 1, "candidate": 2, "weight": 2}}}):  # fmt: skip
        with pytest.raises(GatewayConfigError):
            parse_config(bad)


def test_keys_compare_as_bearer_tokens(tmp_path: Path) -> None:
    assert authorized(b"Bearer k1", {"k1", "k2"}) and authorized(b"bearer  k2", {"k1", "k2"})
    assert not authorized(b"Bearer k3", {"k1"}) and not authorized(b"k1", {"k1"}) and not authorized(None, {"k1"})
    path = tmp_path / "keys"
    path.write_text("# comment\n k1 \n\n")
    assert load_api_keys(path, {}) == {"k1"}
    assert load_api_keys(None, {"TRITONSTACK_GATEWAY_API_KEYS": "a, b,"}) == {"a", "b"}
    assert load_api_keys(None, {}) == frozenset()


def test_a_module_of_the_package_does_not_import_the_app() -> None:
    loaded = "sorted(m for m in ('fastapi', 'tritonstack.gateway.app') if m in sys.modules)"
    probe = f"import sys, tritonstack.gateway.cache; print({loaded})"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert create_app.__module__ == "tritonstack.gateway.app"  # the package's names still resolve
