"""Overload against a real Triton: a bounded queue sheds, the SDK tells it from a dead endpoint.

The server here serves ``tiny`` with its encoder step's queue bounded to one
request, held there for ``QUEUE_DELAY_S`` by the dynamic batcher (it waits to
fill a batch), so that concurrent calls find the queue full at once -- the
overload of a busy server, made deterministic on a 2-core machine. The queue
policy also lets a request's own timeout shorten the queue's (10 s), which is
what the SDK's deadline pass-through needs.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from prometheus_client import CollectorRegistry
from test_client_resilience import served_requests, wait_for
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from tritonstack.client import (
    AsyncClient,
    CircuitBreakerPolicy,
    Client,
    ClientError,
    ClientMetrics,
    DeadlineExceededError,
    OverloadedError,
    RetryBudget,
    RetryPolicy,
    Timeouts,
)
from tritonstack.client._exceptions import translate
from tritonstack.repository import config
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration

QUEUE_DELAY_S = 0.5
QUEUE_TIMEOUT_US = 10_000_000
FLOOD = 8  # concurrent calls against a queue of 1
SLACK_S = 0.5  # thread scheduling on a loaded 2-core machine


def bound_the_queue(step_dir: Path) -> None:
    """Give a step a queue of one request, a 10 s queue timeout (REJECT) that requests may shorten."""
    path = step_dir / "config.pbtxt"
    proto = config.parse(path.read_text())
    batching = proto.dynamic_batching
    batching.max_queue_delay_microseconds = int(QUEUE_DELAY_S * 1_000_000)
    queue = batching.default_queue_policy
    queue.max_queue_size = 1
    queue.timeout_action = model_config_pb2.ModelQueuePolicy.REJECT
    queue.default_timeout_microseconds = QUEUE_TIMEOUT_US
    queue.allow_timeout_override = True
    path.write_text(text_format.MessageToString(proto))


@pytest.fixture(scope="module")
def busy(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A Triton serving ``tiny`` whose encoder step has a queue of one."""
    repository = tmp_path_factory.mktemp("bounded") / "model_repository"
    for name in ("tiny", "tiny_tokenizer", "tiny_encoder"):
        shutil.copytree(tiny_repository / name, repository / name)
    bound_the_queue(repository / "tiny_encoder")
    with EmbeddedServer(repository) as server:
        yield server


def encoder_stats(url: str) -> tuple[int, int]:
    """The encoder step's (successful, failed) request counts."""
    with grpcclient.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics("tiny_encoder").model_stats[0].inference_stats
    return int(stats.success.count), int(stats.fail.count)


def flood(call: Any, count: int) -> list[object]:
    """``count`` calls at once, on threads; each one's result or error."""
    outcomes: list[object] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        try:
            call()
            outcomes[index] = "ok"
        except Exception as error:  # anything untyped fails the assertions below
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_a_full_queue_is_overload_not_a_dead_endpoint(busy: EmbeddedServer, triton: Any) -> None:
    registry = CollectorRegistry()
    budget = RetryBudget(max_tokens=3, token_ratio=0.1)
    client = Client(
        [busy.grpc_url, triton.grpc_url],  # had overload been taken for death, calls would move to triton
        model="tiny",
        timeouts=Timeouts(5),
        retry=RetryPolicy(budget=budget),
        # opens after 4 failed attempts of 4: a flood of overload would open it, were overload a failure
        breaker=CircuitBreakerPolicy(min_calls=4),
        metrics=ClientMetrics(registry),
    )

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    try:
        client.embed(["warm up: metadata cached"])
        secondary_before = served_requests(triton.grpc_url)
        outcomes = flood(lambda: client.embed(["a flood"]), FLOOD)

        assert all(outcome == "ok" or isinstance(outcome, OverloadedError) for outcome in outcomes), outcomes
        shed = [outcome for outcome in outcomes if isinstance(outcome, OverloadedError)]
        oks = outcomes.count("ok")
        assert shed, "8 calls at once against a queue of one: some must be refused"
        for error in shed:
            # Triton 2.51's own text, through the ensemble: MESSAGE_ERRORS must keep matching it
            assert "Exceeds maximum queue size" in error.message, error.message
            assert (error.url, error.code, error.model) == (busy.grpc_url, grpc.StatusCode.UNAVAILABLE, "tiny")
        assert served_requests(triton.grpc_url) == secondary_before, "overload failed over to the second server"

        # The retry budget held: at most max_tokens retries plus a tenth of a token per success.
        retries = value("tritonstack_sdk_retries_total", model="tiny", code="UNAVAILABLE")
        assert retries <= budget.max_tokens + budget.token_ratio * oks
        assert value("tritonstack_sdk_retries_throttled_total", model="tiny") >= 1
        assert value("tritonstack_sdk_shed_total", model="tiny", endpoint=busy.grpc_url) >= len(shed)
        # The breaker stayed closed and failed nothing fast.
        assert value("tritonstack_sdk_circuit_state", endpoint=busy.grpc_url) == 0
        assert value("tritonstack_sdk_fast_failures_total", model="tiny") == 0

        # Once the load stops, the next call goes to the same endpoint: it was never set aside.
        primary_before = served_requests(busy.grpc_url)
        assert client.embed(["after the flood"]).shape == (1, 32)
        wait_for(lambda: served_requests(busy.grpc_url) == primary_before + 1, 2, "the busy server's count")
        assert served_requests(triton.grpc_url) == secondary_before
    finally:
        client.close()


def test_the_async_client_tells_overload_apart_too(busy: EmbeddedServer) -> None:
    async def main() -> list[object]:
        retry = RetryPolicy.disabled()
        async with AsyncClient(busy.grpc_url, model="tiny", timeouts=Timeouts(5), retry=retry) as client:
            await client.embed(["warm up"])
            calls = [client.embed(["a flood"]) for _ in range(FLOOD)]
            return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(main())
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors and all(isinstance(error, OverloadedError) for error in errors), errors
    assert len(errors) < FLOOD  # the one in the queue was served


def test_a_queue_timeout_is_overload(busy: EmbeddedServer) -> None:
    # Triton's other overload text: a request that waited past its queue timeout (REJECT).
    text = np.array([[b"waits past its timeout"]], dtype=np.object_)
    inputs = [grpcclient.InferInput("TEXT", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(text)
    with grpcclient.InferenceServerClient(busy.grpc_url) as raw, pytest.raises(InferenceServerException) as info:
        raw.infer("tiny", inputs, timeout=100_000, client_timeout=5)
    error = translate(info.value, model="tiny", version="", request_id=None, url=busy.grpc_url)
    assert type(error) is OverloadedError and "Request timeout expired" in error.message, error


def test_a_call_given_up_is_dropped_from_the_ensemble_steps_queue_not_computed(busy: EmbeddedServer) -> None:
    timeout_s = 0.2
    with Client(busy.grpc_url, model="tiny", timeouts=Timeouts(5)) as client:
        client.embed(["warm up"])
        successes, failures = encoder_stats(busy.grpc_url)
        start = time.monotonic()
        with pytest.raises((DeadlineExceededError, OverloadedError)):
            client.embed(["given up"], timeout_s=timeout_s)
        assert time.monotonic() - start < timeout_s + SLACK_S
    time.sleep(QUEUE_DELAY_S + SLACK_S)  # past the moment the batcher would have run it
    # Triton got the SDK's deadline as the request's timeout, through the ensemble to the
    # encoder's queue, and dropped the request there: failed, not computed.
    assert encoder_stats(busy.grpc_url) == (successes, failures + 1)

    # Control: the same call with the gRPC deadline alone. Triton 2.51 does not carry the
    # client's cancellation from an ensemble to its steps, so the encoder computes it anyway.
    text = np.array([[b"given up, no timeout sent"]], dtype=np.object_)
    inputs = [grpcclient.InferInput("TEXT", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(text)
    with grpcclient.InferenceServerClient(busy.grpc_url) as raw, pytest.raises(InferenceServerException) as info:
        raw.infer("tiny", inputs, client_timeout=timeout_s)
    assert info.value.status() == str(grpc.StatusCode.DEADLINE_EXCEEDED)
    wait_for(lambda: encoder_stats(busy.grpc_url)[0] == successes + 1, 5, "the encoder to compute the abandoned call")


def test_every_outcome_of_a_flood_is_typed(busy: EmbeddedServer) -> None:
    # Deadlines shorter than the queue's delay, a full queue and retries at once: nothing untyped, nothing hung.
    with Client(busy.grpc_url, model="tiny", timeouts=Timeouts(5)) as client:
        client.embed(["warm up"])
        start = time.monotonic()
        outcomes = flood(lambda: client.embed(["short deadline"], timeout_s=0.3), FLOOD)
        assert time.monotonic() - start < 0.3 + SLACK_S + 1.0
    assert all(outcome == "ok" or isinstance(outcome, ClientError) for outcome in outcomes), outcomes
    assert {type(outcome) for outcome in outcomes if outcome != "ok"} <= {OverloadedError, DeadlineExceededError}
