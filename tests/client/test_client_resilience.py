"""A server killed mid-stream, restarted on its port, and failover to a second server.

Each test starts its own embedded Triton (it kills it); the session ``triton``
serves as the healthy second server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import CollectorRegistry

from tritonstack.client import (
    AsyncClient,
    Client,
    ClientError,
    ClientMetrics,
    DeadlineExceededError,
    RetryPolicy,
    ServerUnavailableError,
    Timeouts,
)
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration

CALL_DEADLINE_S = 2.0
SLACK_S = 0.5  # thread scheduling on a loaded 2-core machine


def kill_9(server: EmbeddedServer) -> None:
    """SIGKILL Triton and its Python-backend stubs: no graceful anything."""
    os.killpg(server.pid, signal.SIGKILL)
    assert server.process is not None
    server.process.wait(timeout=10)


def served_requests(url: str, model: str = "tiny") -> int:
    with grpcclient.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics(model).model_stats
    return sum(int(s.inference_stats.success.count) for s in stats)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Sender:
    """Calls ``embed`` in a loop on its own thread and records (start, duration, outcome)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.results: list[tuple[float, float, object]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                self.call()
                outcome: object = "ok"
            except ClientError as error:
                outcome = error
            except Exception as error:  # anything untyped is a failure of the test
                outcome = error
            self.results.append((start, time.monotonic() - start, outcome))
            if outcome != "ok":
                time.sleep(0.02)  # do not spin on a dead port while Triton restarts

    def oks_after(self, moment: float) -> int:
        return sum(1 for start, _, outcome in self.results if outcome == "ok" and start > moment)

    def failures(self) -> list[object]:
        return [outcome for _, _, outcome in self.results if outcome != "ok"]


def async_sender_call(url: str) -> Callable[[], Any]:
    """An AsyncClient on a private event loop, driven from the sender's thread."""
    loop = asyncio.new_event_loop()
    client = AsyncClient(url, model="tiny", timeouts=Timeouts(CALL_DEADLINE_S, connect_s=0.5))

    def call() -> Any:
        return loop.run_until_complete(client.embed(["async still there?"]))

    call.close = lambda: (loop.run_until_complete(client.close()), loop.close())  # type: ignore[attr-defined]
    return call


def test_calls_fail_typed_within_their_deadline_while_killed_and_recover_after_restart(
    tiny_repository: Path,
) -> None:
    server = EmbeddedServer(tiny_repository).start()
    port = server.grpc_port
    restarted: EmbeddedServer | None = None
    client = Client(server.grpc_url, model="tiny", timeouts=Timeouts(CALL_DEADLINE_S, connect_s=0.5))
    async_call = async_sender_call(server.grpc_url)
    senders = [Sender(lambda: client.embed(["still there?"])) for _ in range(3)] + [Sender(async_call)]
    try:
        for sender in senders:
            sender.thread.start()
        wait_for(lambda: all(s.oks_after(0) >= 5 for s in senders), 30, "calls before the kill")
        kill_9(server)
        killed_at = time.monotonic()
        wait_for(lambda: all(len(s.failures()) >= 3 for s in senders), 20, "failures after the kill")
        server.stop()  # reap and clean up what the kill left
        restarted = EmbeddedServer(tiny_repository, grpc_port=port).start()
        restarted_at = time.monotonic()
        wait_for(lambda: all(s.oks_after(restarted_at) >= 3 for s in senders), 30, "calls after the restart")
    finally:
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.thread.join(timeout=CALL_DEADLINE_S + SLACK_S)
        hung = [sender for sender in senders if sender.thread.is_alive()]
        client.close()
        if not hung:
            async_call.close()  # type: ignore[attr-defined]
        server.stop()
        if restarted is not None:
            restarted.stop()
    assert not hung, "a call hung past its deadline"
    for sender in senders:
        failures = sender.failures()
        assert failures, "no call failed while the server was dead"
        assert all(isinstance(f, ServerUnavailableError | DeadlineExceededError) for f in failures), failures
        assert {f.code for f in failures} <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}  # type: ignore[union-attr]
        assert all(f.url == f"127.0.0.1:{port}" and f.model == "tiny" for f in failures)  # type: ignore[union-attr]
        slowest_s = max(duration for _, duration, _ in sender.results)
        assert slowest_s <= CALL_DEADLINE_S + SLACK_S, f"a call took {slowest_s:.2f} s"
        assert sender.oks_after(killed_at) >= 3


@pytest.fixture()
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_failover_from_a_killed_primary_to_a_second_server(triton: Any, tiny_repository: Path) -> None:
    primary = EmbeddedServer(tiny_repository).start()
    registry = CollectorRegistry()
    client = Client(
        [primary.grpc_url, triton.grpc_url],
        model="tiny",
        retry=RetryPolicy(cooldown_s=60),
        metrics=ClientMetrics(registry),
    )
    try:
        secondary_before = served_requests(triton.grpc_url)
        for _ in range(5):
            client.embed(["on the primary"])
        # Triton counts an ensemble's success just after it sent the response: wait for the count.
        wait_for(lambda: served_requests(primary.grpc_url) == 5, 2, "the primary's count of 5 requests")
        assert served_requests(triton.grpc_url) == secondary_before
        kill_9(primary)
        for _ in range(10):
            assert client.embed(["failed over"]).shape == (1, 32)  # no call fails
        wait_for(lambda: served_requests(triton.grpc_url) - secondary_before == 10, 2, "the secondary's count")
        retries = registry.get_sample_value("tritonstack_sdk_retries_total", {"model": "tiny", "code": "UNAVAILABLE"})
        # Only the first call after the kill tried the primary; the set-aside kept the rest off it.
        assert retries == 1
        assert client.ready()
    finally:
        client.close()
        primary.stop()


def test_both_clients_fail_over_from_an_unreachable_first_url(triton: Any, closed_url: str) -> None:
    with Client([closed_url, triton.grpc_url], model="tiny") as client:
        assert client.embed(["hello"]).shape == (1, 32)
        assert client.ready()

    async def main() -> None:
        async with AsyncClient([closed_url, triton.grpc_url], model="tiny") as aclient:
            assert (await aclient.embed(["hello"])).shape == (1, 32)
            assert await aclient.ready()

    asyncio.run(main())
    # and with nowhere to go, the call says so, typed
    with Client([closed_url, closed_url], model="tiny") as client, pytest.raises(ServerUnavailableError):
        client.embed(["hello"])
