"""Every error status the gateway sends, from the real process in front of a real Triton (or of none): 400, 401,
404, 413, 503, 504, in OpenAI's error shape; auth on and off; a non-loopback bind without keys refused."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from gateway_process import CLASSIFIER, EMBEDDER, GatewayProcess, closed_port, get, post, start_gateway

from tritonstack.cli import main

pytestmark = pytest.mark.integration


def error_of(status: int, body: Any) -> tuple[int, str]:
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return status, body["error"]["code"]


def test_bad_requests_are_400_with_the_field_named(gateway: GatewayProcess) -> None:
    url = gateway.url + "/v1/embeddings"
    status, body, _ = post(url, {"model": EMBEDDER, "input": [101, 2023, 102]})
    assert error_of(status, body) == (400, "invalid_input") and "Token-id" in body["error"]["message"]
    status, body, _ = post(url, {"model": EMBEDDER, "input": [[101, 102]]})
    assert error_of(status, body) == (400, "invalid_input")
    status, body, _ = post(url, {"model": EMBEDDER})
    assert error_of(status, body) == (400, "invalid_input") and body["error"]["param"] == "input"
    status, body, _ = post(url, {"model": EMBEDDER, "input": "x", "encoding_format": "int8"})
    assert error_of(status, body) == (400, "invalid_input") and body["error"]["param"] == "encoding_format"
    status, body, _ = post(url, {"model": EMBEDDER, "input": []})
    assert error_of(status, body) == (400, "invalid_input")
    status, body, _ = post(url, b"{not json")
    assert error_of(status, body) == (400, "invalid_input")
    status, body, _ = post(url, {"model": CLASSIFIER, "input": "x"})
    assert error_of(status, body) == (400, "invalid_input") and body["error"]["param"] == "model"
    status, body, _ = post(gateway.url + "/v1/rerank", {"model": "rank", "query": "q", "documents": ["a"], "top_n": 0})
    assert error_of(status, body) == (400, "invalid_input")
    status, body, _ = post(gateway.url + "/v1/rerank", {"model": EMBEDDER, "query": "q", "documents": ["a"]})
    assert error_of(status, body) == (400, "invalid_input")  # an embedder does not rerank (docs/gateway.md)
    status, body, _ = post(gateway.url + "/v1/classify", {"model": EMBEDDER, "input": "x"})
    assert error_of(status, body) == (400, "invalid_input")


def test_unknown_model_is_404(gateway: GatewayProcess) -> None:
    for path, body in (
        ("/v1/embeddings", {"model": "absent", "input": "x"}),
        ("/v1/rerank", {"model": "absent", "query": "q", "documents": ["a"]}),
        ("/v1/classify", {"model": "absent", "input": "x"}),
    ):
        status, answer, _ = post(gateway.url + path, body)
        assert error_of(status, answer) == (404, "model_not_found")
        assert answer["error"]["param"] == "model" and "absent" in answer["error"]["message"]
    assert get(gateway.url + "/v1/nothing")[0] == 404


def test_body_and_list_limits_are_413(gateway: GatewayProcess) -> None:
    url = gateway.url + "/v1/embeddings"
    status, body, _ = post(url, {"model": EMBEDDER, "input": ["x"] * 2049})
    assert error_of(status, body) == (413, "request_too_large") and "2048" in body["error"]["message"]
    huge = json.dumps({"model": EMBEDDER, "input": "x" * (9 * 1024 * 1024)}).encode()
    status, body, _ = post(url, huge)
    assert error_of(status, body) == (413, "request_too_large")
    assert post(url, {"model": EMBEDDER, "input": ["x"] * 2048})[0] == 200  # OpenAI's limit itself is served


def test_triton_down_is_503_and_health_says_so(tmp_path: Path) -> None:
    running = start_gateway(f"127.0.0.1:{closed_port()}", tmp_path)
    try:
        status, body, _ = post(running.url + "/v1/embeddings", {"model": EMBEDDER, "input": "x"})
        assert error_of(status, body)[0] == 503
        assert body["error"]["code"] in ("triton_unavailable", "circuit_open")
        assert get(running.url + "/health")[0] == 503
    finally:
        assert running.stop() == 0


def test_a_spent_deadline_is_504(gateway_triton: Any, tmp_path: Path) -> None:
    running = start_gateway(gateway_triton.grpc_url, tmp_path, "--timeout-s", "0.0001")
    try:
        status, body, _ = post(running.url + "/v1/embeddings", {"model": EMBEDDER, "input": ["x"] * 64})
        assert error_of(status, body) == (504, "deadline_exceeded")
    finally:
        running.stop()


def test_auth_on_needs_a_key_but_not_for_health_and_metrics(gateway_triton: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# gateway keys\nsecret-one\nsecret-two\n")
    running = start_gateway(gateway_triton.grpc_url, tmp_path, "--api-key-file", str(key_file))
    assert "auth on" in running.output[-1]
    url, body = running.url + "/v1/embeddings", {"model": EMBEDDER, "input": "x"}
    try:
        status, answer, _ = post(url, body)
        assert error_of(status, answer) == (401, "invalid_api_key")
        assert post(url, body, {"Authorization": "Bearer wrong"})[0] == 401
        assert post(url, body, {"Authorization": "Basic secret-one"})[0] == 401
        assert post(url, body, {"Authorization": "Bearer secret-two"})[0] == 200
        assert get(running.url + "/health")[0] == 200 and get(running.url + "/metrics")[0] == 200
        from openai import AuthenticationError, OpenAI

        assert OpenAI(base_url=running.url + "/v1", api_key="secret-one").embeddings.create(model=EMBEDDER, input="x")
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=running.url + "/v1", api_key="nope", max_retries=0).embeddings.create(
                model=EMBEDDER, input="x"
            )
    finally:
        running.stop()


def test_auth_from_the_environment(gateway_triton: Any, tmp_path: Path) -> None:
    env = {"TRITONSTACK_GATEWAY_API_KEYS": "k1, k2"}
    running = start_gateway(gateway_triton.grpc_url, tmp_path, env=env)
    try:
        request = urllib.request.Request(running.url + "/v1/models", headers={"Authorization": "Bearer k2"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        assert get(running.url + "/v1/models")[0] == 401
    finally:
        running.stop()


def test_a_non_loopback_bind_without_keys_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("TRITONSTACK_GATEWAY_API_KEYS", raising=False)
    assert main(["gateway", "--host", "0.0.0.0", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "without API keys" in err and "TRITONSTACK_GATEWAY_API_KEYS" in err
