"""The release split at the gateway (sticky by ``user``, the release that answered in a header) and a gateway
restart under load: every request accepted before SIGTERM is answered."""

from __future__ import annotations

import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_process import RELEASED, GatewayProcess, post, start_gateway

from tritonstack.client import Client, TrafficSplit

pytestmark = pytest.mark.integration


def test_the_split_is_sticky_per_user_and_named_in_a_header(gateway: GatewayProcess, gateway_triton: Any) -> None:
    split = TrafficSplit(RELEASED, baseline=1, candidate=2, weight=0.5)  # as the fixture's config says
    with Client(gateway_triton.grpc_url) as client:
        references = {v: client.embed(["same text"], model=f"{RELEASED}_v{v}")[0] for v in (1, 2)}
    seen = set()
    for user in (f"user-{i}" for i in range(12)):
        expected = split.choose(key=user, draw=0.0).served_as
        for _ in range(2):  # sticky: the same user, the same release
            status, body, headers = post(
                gateway.url + "/v1/embeddings", {"model": RELEASED, "input": "same text", "user": user}
            )
            assert status == 200 and headers["x-tritonstack-release"] == expected
            version = int(expected.rsplit("_v", 1)[1])
            np.testing.assert_allclose(body["data"][0]["embedding"], references[version], atol=1e-5)
            assert body["model"] == RELEASED
        seen.add(expected)
    assert seen == {f"{RELEASED}_v1", f"{RELEASED}_v2"}
    status, _, headers = post(gateway.url + "/v1/embeddings", {"model": "emb", "input": "x"})
    assert status == 200 and "x-tritonstack-release" not in headers  # no split configured: no header


def test_a_restart_under_load_loses_no_accepted_request(gateway_triton: Any, tmp_path: Path) -> None:
    running = start_gateway(gateway_triton.grpc_url, tmp_path)
    port = running.url.rsplit(":", 1)[1]
    texts = [f"text {i} of a request long enough to be in flight" for i in range(64)]
    outcomes: list[tuple[float, float, str]] = []  # (sent, answered, outcome)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = post(f"http://127.0.0.1:{port}/v1/embeddings", {"model": "emb", "input": texts})[0]
                outcome = str(status)
            except (urllib.error.URLError, ConnectionError) as error:  # refused / reset: never accepted
                outcome = f"not accepted: {error}"
                time.sleep(0.02)
            outcomes.append((sent, time.monotonic(), outcome))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.5)
        terminated_at = time.monotonic()
        assert running.stop() == 0
        running = start_gateway(gateway_triton.grpc_url, tmp_path, "--port", port)
        time.sleep(1.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        running.stop()
    before = [o for sent, _, o in outcomes if sent < terminated_at - 0.2]  # sent well before SIGTERM: accepted
    assert before and all(outcome == "200" for outcome in before), before
    in_flight = [o for sent, answered, o in outcomes if sent < terminated_at < answered and o == "200"]
    after = [o for sent, _, o in outcomes if sent > terminated_at]
    assert in_flight  # some were in flight when SIGTERM came, and were answered
    assert "200" in after  # the restarted gateway serves
    assert all(o == "200" or o.startswith("not accepted") for o in after), after
    print(f"{len(in_flight)} requests in flight at SIGTERM answered 200; {len(after)} sent after it")
