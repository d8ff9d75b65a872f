"""Both clients against sockets that are not Triton: validation before I/O, timeouts, metrics.

Real sockets, no server needed: a port nobody listens on (refused at once) and
a listener that accepts and never speaks HTTP/2 (a hung server).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tritonstack.client import (
    AsyncClient,
    Client,
    ClientError,
    ClientMetrics,
    DeadlineExceededError,
    InvalidInputError,
    RetryPolicy,
    ServerUnavailableError,
    Timeouts,
)


@pytest.fixture()
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture()
def silent_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("texts", ["single", [], [""], [1], ["x" * 70_000]])
def test_bad_texts_fail_before_anything_is_sent(closed_url: str, texts: object) -> None:
    # Nothing listens: had the client tried the network, this would be ServerUnavailableError.
    with Client(closed_url, model="m") as client:
        with pytest.raises(InvalidInputError):
            client.embed(texts)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            client.classify(texts)  # type: ignore[arg-type]


def test_no_model_anywhere_is_invalid_input(closed_url: str) -> None:
    with Client(closed_url) as client, pytest.raises(InvalidInputError, match="no model"):
        client.embed(["x"])


def test_a_refused_connection_is_server_unavailable_within_the_deadline(closed_url: str) -> None:
    with Client(closed_url, model="m", timeouts=Timeouts(2.0)) as client:
        start = time.monotonic()
        with pytest.raises(ServerUnavailableError) as info:
            client.embed(["x"])
        assert time.monotonic() - start < 2.0
    error = info.value
    assert (error.model, error.url, error.code.name) == ("m", closed_url, "UNAVAILABLE")  # type: ignore[union-attr]
    assert error.request_id and error.hint
    with Client(closed_url, model="m") as probe:
        assert not probe.ready()


def test_connect_timeout_bounds_a_hung_server(silent_url: str) -> None:
    timeouts = Timeouts(10.0, connect_s=0.3)
    with Client(silent_url, model="m", timeouts=timeouts, retry=RetryPolicy.disabled()) as client:
        start = time.monotonic()
        with pytest.raises(ServerUnavailableError):
            client.model_info()
        assert 0.25 < time.monotonic() - start < 2.0


def test_call_deadline_bounds_a_hung_server(silent_url: str) -> None:
    with Client(silent_url, model="m", timeouts=Timeouts(0.3, connect_s=None)) as client:
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError) as info:
            client.embed(["x"])
        assert 0.25 < time.monotonic() - start < 1.5
        assert info.value.code is not None and info.value.code.name == "DEADLINE_EXCEEDED"
        # a per-call timeout_s overrides the client's
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.embed(["x"], timeout_s=0.1)
        assert time.monotonic() - start < 0.6


def test_async_client_fails_the_same_way(closed_url: str, silent_url: str) -> None:
    async def main() -> None:
        async with AsyncClient(closed_url, model="m", timeouts=Timeouts(2.0)) as client:
            with pytest.raises(InvalidInputError):
                await client.embed([])
            with pytest.raises(ServerUnavailableError):
                await client.embed(["x"])
            assert not await client.ready()
        async with AsyncClient(silent_url, model="m", timeouts=Timeouts(0.3, connect_s=None)) as client:
            start = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                await client.infer({"TEXT": np.array([[b"x"]], dtype=np.object_)})
            assert time.monotonic() - start < 1.5

    asyncio.run(main())


def test_metrics_count_calls_errors_and_retries(closed_url: str) -> None:
    registry = CollectorRegistry()
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.01)
    with Client(closed_url, model="m", retry=retry, metrics=ClientMetrics(registry)) as client:
        with pytest.raises(ServerUnavailableError):
            client.embed(["x"])
        with pytest.raises(InvalidInputError):
            client.embed([])

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("tritonstack_sdk_call_duration_seconds_count", model="m", method="embed") == 2
    assert value("tritonstack_sdk_errors_total", model="m", method="embed", error="ServerUnavailableError") == 1
    assert value("tritonstack_sdk_errors_total", model="m", method="embed", error="InvalidInputError") == 1
    assert value("tritonstack_sdk_retries_total", model="m", code="UNAVAILABLE") == 2


def test_metrics_are_off_by_default(closed_url: str) -> None:
    from prometheus_client import REGISTRY

    with Client(closed_url, model="m") as client, pytest.raises(InvalidInputError):
        client.embed([])
    assert (
        REGISTRY.get_sample_value(
            "tritonstack_sdk_errors_total", {"model": "m", "method": "embed", "error": "InvalidInputError"}
        )
        is None
    )


def test_calls_after_close_fail_typed(closed_url: str) -> None:
    client = Client(closed_url, model="m")
    client.close()
    with pytest.raises(ClientError, match="closed"):
        client.embed(["x"])

    async def main() -> None:
        aclient = AsyncClient(closed_url, model="m")
        await aclient.close()
        with pytest.raises(ClientError, match="closed"):
            await aclient.embed(["x"])

    asyncio.run(main())
