"""The gateway in front of a TLS-only Triton (mutual TLS on gRPC, certificates made in the test): it answers with
the CA and a client certificate, by host:port and by grpcs:// URL, and gets a 503 without a client certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_process import EMBEDDER, get, post, start_gateway

from pki import mutual_tls
from tritonstack.client import Client, TLSConfig
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_triton(gateway_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The gateway's repository served by a Triton that speaks gRPC only with mutual TLS (flags.GrpcTLS)."""
    pki = tmp_path_factory.mktemp("gateway-pki")
    tls = mutual_tls(pki)
    with EmbeddedServer(gateway_repository, extra_args=tls.args()) as server:
        yield server, pki


def _client_flags(pki: Path) -> list[str]:
    return ["--root-cert", str(pki / "ca.crt"), "--client-cert", str(pki / "client.crt"),
            "--client-key", str(pki / "client.key")]  # fmt: skip


@pytest.mark.parametrize("scheme", ["", "grpcs://"], ids=["host:port", "grpcs URL"])
def test_the_gateway_reaches_a_mutual_tls_triton(tls_triton: tuple[Any, Path], tmp_path: Path, scheme: str) -> None:
    server, pki = tls_triton
    env = {"TRITONSTACK_ADMIN_KEY": server.admin_key, "TRITONSTACK_GATEWAY_API_KEYS": ""}
    running = start_gateway(scheme + server.grpc_url, tmp_path, *_client_flags(pki), env=env)
    try:
        assert "gRPC mutual TLS" in running.output[-1]
        assert get(running.url + "/health")[0] == 200
        status, body, _ = post(running.url + "/v1/embeddings", {"model": EMBEDDER, "input": ["over TLS"],
                                                                  "encoding_format": "float"})  # fmt: skip
        assert status == 200, body
        tls = TLSConfig(root_cert=pki / "ca.crt", client_cert=pki / "client.crt", client_key=pki / "client.key")
        with Client(server.grpc_url, model=EMBEDDER, tls=tls) as client:
            expected = client.embed(["over TLS"])[0]
        assert np.allclose(body["data"][0]["embedding"], expected, atol=1e-5)
        # /v1/models reads Triton's repository index over its own connection: with the same TLS
        status, raw = get(running.url + "/v1/models")
        assert status == 200 and f'"id":"{EMBEDDER}"' in raw.decode(), raw
    finally:
        assert running.stop() == 0


def test_without_a_client_certificate_triton_is_unreachable_503(tls_triton: tuple[Any, Path], tmp_path: Path) -> None:
    server, pki = tls_triton
    running = start_gateway(server.grpc_url, tmp_path, "--root-cert", str(pki / "ca.crt"), "--timeout-s", "3",
                            env={"TRITONSTACK_GATEWAY_API_KEYS": ""})  # fmt: skip
    try:
        assert "gRPC TLS)" in running.output[-1]
        status, body, _ = post(running.url + "/v1/embeddings", {"model": EMBEDDER, "input": "refused"})
        assert status == 503, body
        assert body["error"]["code"] in ("triton_unavailable", "circuit_open")
        assert get(running.url + "/health")[0] == 503
    finally:
        running.stop()
