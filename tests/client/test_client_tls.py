"""TLS and mutual TLS with certificates made in the test and Triton's gRPC SSL flags."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pki import issue, make_ca, mutual_tls
from tritonstack.client import AsyncClient, Client, RetryPolicy, ServerUnavailableError, Timeouts, TLSConfig
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """Triton with mutual TLS on gRPC: a server certificate from one CA, client certificates from it too."""
    pki = tmp_path_factory.mktemp("pki")
    tls = mutual_tls(pki)
    stranger_ca = make_ca(pki, "stranger")
    issue(pki, "stranger-client", stranger_ca, server=False)
    with EmbeddedServer(tiny_repository, extra_args=tls.args()) as server:
        yield server, pki


FAST_FAIL = {"timeouts": Timeouts(5.0, connect_s=2.0), "retry": RetryPolicy.disabled()}


def test_mutual_tls_with_a_client_certificate(tls_server: tuple[Any, Path]) -> None:
    server, pki = tls_server
    tls = TLSConfig(root_cert=pki / "ca.crt", client_cert=pki / "client.crt", client_key=pki / "client.key")
    with Client(server.grpc_url, model="tiny", tls=tls) as client:
        assert client.embed(["over TLS"]).shape == (1, 32)
        assert client.ready()

    async def main() -> None:
        async with AsyncClient(server.grpc_url, model="tiny", tls=tls) as aclient:
            assert (await aclient.embed(["over TLS, async"])).shape == (1, 32)

    asyncio.run(main())
    # a certificate issued for "localhost" checked as such while dialling the IP
    named = TLSConfig(
        root_cert=pki / "ca.crt",
        client_cert=pki / "client.crt",
        client_key=pki / "client.key",
        server_hostname="localhost",
    )
    with Client(server.grpc_url, model="tiny", tls=named) as client:
        assert client.embed(["by name"]).shape == (1, 32)


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param(None, id="plaintext to a TLS server"),
        pytest.param("no-client-cert", id="no client certificate"),
        pytest.param("stranger-client", id="client certificate from another CA"),
        pytest.param("wrong-root", id="server not trusted"),
    ],
)
def test_the_wrong_credentials_fail_typed(tls_server: tuple[Any, Path], tls: str | None) -> None:
    server, pki = tls_server
    config = {
        None: None,
        "no-client-cert": TLSConfig(root_cert=pki / "ca.crt"),
        "stranger-client": TLSConfig(
            root_cert=pki / "ca.crt", client_cert=pki / "stranger-client.crt", client_key=pki / "stranger-client.key"
        ),
        "wrong-root": TLSConfig(
            root_cert=pki / "stranger.crt", client_cert=pki / "client.crt", client_key=pki / "client.key"
        ),
    }[tls]
    with Client(server.grpc_url, model="tiny", tls=config, **FAST_FAIL) as client:  # type: ignore[arg-type]
        with pytest.raises(ServerUnavailableError) as info:
            client.embed(["should not pass"])
        assert info.value.url == server.grpc_url
        assert not client.ready()
