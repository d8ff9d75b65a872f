"""Overload and failure against the real embedded Triton: a bounded queue refuses at once, a request that
outwaited its queue or whose client gave up is not computed, and one bad request fails alone in its batch.

The models here are built for the purpose: ``slow*`` is an ONNX model whose execution lasts about a second
(served by the embedded ONNX Runtime backend, one thread), with a different queue policy each;
``tiny_encoder_b4`` is the tiny BERT encoder, batching exactly four requests into one execution.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.utils import InferenceServerException

import tinymodels
from tritonstack.repository.config import (
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    QueuePolicy,
    Tensor,
    parse,
    render,
)
from tritonstack.repository.writer import cpu_instances_for
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration

QUEUE_TIMEOUT_US = 100_000  # slow_timeout's; far below one slow execution


def _slow_config(name: str, queue_policy: QueuePolicy | None, instances: int = 1) -> ModelConfig:
    return ModelConfig(
        name=name,
        platform="onnxruntime_onnx",
        max_batch_size=4,
        inputs=(Tensor("x", "TYPE_FP32", (-1,)),),
        outputs=(Tensor("y", "TYPE_FP32", (1,)),),
        dynamic_batching=DynamicBatching(max_queue_delay_us=0, queue_policy=queue_policy),
        instance_groups=(InstanceGroup(instances, "KIND_CPU"),),
        parameters={"intra_op_thread_count": "1"},
    )


SLOW_MODELS = (
    # No queue policy: Triton 2.51 then hands even a request cancelled in its queue to the backend.
    _slow_config("slow", None),
    _slow_config("slow_bounded", QueuePolicy(max_queue_size=1, default_timeout_us=0)),
    _slow_config("slow_timeout", QueuePolicy(max_queue_size=0, default_timeout_us=QUEUE_TIMEOUT_US)),
    # a CPU encoder exported with --max-queue-size for a 2-core server: a bounded queue, and two instances
    _slow_config("slow_as_exported", QueuePolicy(max_queue_size=8, default_timeout_us=0), cpu_instances_for(2)),
)


def _batching_encoder(tiny_repository: Path, repository: Path) -> None:
    """``tiny_encoder`` as ``tiny_encoder_b4``: the batcher waits (up to 5 s) for four requests."""
    source = tiny_repository / "tiny_encoder"
    config = parse((source / "config.pbtxt").read_text())
    config.name = "tiny_encoder_b4"
    config.dynamic_batching.Clear()
    config.dynamic_batching.preferred_batch_size.append(4)
    config.dynamic_batching.max_queue_delay_microseconds = 5_000_000
    target = repository / config.name
    shutil.copytree(source / "1", target / "1")
    (target / "config.pbtxt").write_text(text_format.MessageToString(config))


SHEDDING_BUDGET_MS = 200


def _shedding_step(repository: Path) -> None:
    """``shedding``: an exported Python step (text_model.py) as bench's serving floor -- TEXT in, a constant
    EMBEDDING out -- with no queue policy and a queue budget, as export writes the steps now."""
    from tritonstack.in_triton import contract, manifest

    config = ModelConfig(
        name="shedding",
        backend="python",
        max_batch_size=8,
        inputs=(Tensor(contract.TEXT_INPUT, "TYPE_STRING", (1,)),),
        outputs=(Tensor(contract.EMBEDDING_OUTPUT, "TYPE_FP32", (4,)),),
        dynamic_batching=DynamicBatching(max_queue_delay_us=0),
        instance_groups=(InstanceGroup(1, "KIND_CPU"),),
        parameters={
            contract.ROLE_PARAMETER: contract.FLOOR_ROLE,
            contract.TASK_PARAMETER: "feature-extraction",
            contract.QUEUE_BUDGET_MS_PARAMETER: str(SHEDDING_BUDGET_MS),
        },
    )
    (repository / config.name / "1").mkdir(parents=True)
    manifest.write(manifest.PYTHON_MODEL_FILES, repository / config.name / "1")
    (repository / config.name / "config.pbtxt").write_text(render(config))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_repository: Path) -> Iterator[EmbeddedServer]:
    root = tmp_path_factory.mktemp("overload")
    repository = root / "model_repository"
    onnx_path = tinymodels.build_slow_onnx(root / "slow.onnx")
    for config in SLOW_MODELS:
        (repository / config.name / "1").mkdir(parents=True)
        shutil.copy2(onnx_path, repository / config.name / "1" / "model.onnx")
        (repository / config.name / "config.pbtxt").write_text(render(config))
    _batching_encoder(tiny_repository, repository)
    _shedding_step(repository)
    with EmbeddedServer(repository, log_path=root / "triton.log") as running:
        yield running


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok" or the gRPC status, e.g. "StatusCode.UNAVAILABLE"
    message: str
    seconds: float  # as the client saw it


def infer(url: str, model: str, inputs: dict[str, np.ndarray], deadline_s: float | None = None) -> Outcome:
    """One call on its own connection, as an independent client would make it."""
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    started = time.perf_counter()
    with grpcclient.InferenceServerClient(url) as client:
        try:
            client.infer(model, tensors, client_timeout=deadline_s)
            return Outcome("ok", "", time.perf_counter() - started)
        except InferenceServerException as error:
            return Outcome(str(error.status()), str(error.message()), time.perf_counter() - started)


@dataclass(frozen=True)
class Slow:
    width: int  # of the slow model's input
    seconds: float  # one execution at that width, measured

    def rows(self, count: int) -> dict[str, np.ndarray]:
        return {"x": np.zeros((count, self.width), dtype=np.float32)}


@pytest.fixture(scope="module")
def slow(server: EmbeddedServer) -> Slow:
    """The input width that makes one execution of the slow models last about a second on this machine."""
    width, seconds = 800, 0.0
    for _ in range(4):
        seconds = infer(server.grpc_url, "slow", Slow(width, 0).rows(1)).seconds
        if 0.8 <= seconds <= 2.5:
            break
        width = int(np.clip(width * (1.2 / seconds) ** (1 / 3), 200, 4000))  # time grows with width cubed
    assert seconds >= 0.5, f"the slow model takes only {seconds:.2f} s at width {width}"
    return Slow(width, seconds)


def batch_stats(url: str, model: str) -> dict[int, tuple[int, int]]:
    """Triton's per-batch-size statistics of ``model``: batch size -> (executions, compute_infer ns)."""
    with grpcclient.InferenceServerClient(url) as client:
        stats: dict[str, Any] = client.get_inference_statistics(model, as_json=True)
    (model_stats,) = stats["model_stats"]
    return {
        int(entry["batch_size"]): (int(entry["compute_infer"]["count"]), int(entry["compute_infer"].get("ns", 0)))
        for entry in model_stats.get("batch_stats", [])
    }


def test_a_full_queue_refuses_at_once_with_unavailable(server: EmbeddedServer, slow: Slow) -> None:
    """max_queue_size 1: of eight concurrent calls one runs, at most two wait, the rest are refused at once."""
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(
            pool.map(lambda _: infer(server.grpc_url, "slow_bounded", slow.rows(1), 20 * slow.seconds), range(8))
        )
    served = [o for o in outcomes if o.status == "ok"]
    refused = [o for o in outcomes if o.status != "ok"]
    assert 1 <= len(served) <= 3, outcomes
    assert len(served) + len(refused) == 8
    for outcome in refused:
        assert outcome.status == "StatusCode.UNAVAILABLE", outcome
        assert "Exceeds maximum queue size" in outcome.message, outcome
        assert outcome.seconds < slow.seconds / 2, f"refused only after {outcome.seconds:.2f} s: {outcome}"


def test_a_request_that_outwaits_its_queue_timeout_is_refused_not_computed(server: EmbeddedServer, slow: Slow) -> None:
    before = batch_stats(server.grpc_url, "slow_timeout")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(infer, server.grpc_url, "slow_timeout", slow.rows(2))  # batch size 2
        time.sleep(0.1 * slow.seconds)
        late = infer(server.grpc_url, "slow_timeout", slow.rows(1))  # waits behind it: batch size 1
        first = running.result()
    assert first.status == "ok", first
    assert late.status == "StatusCode.UNAVAILABLE", late
    assert late.message == "Request timeout expired", late
    # Triton checks the timeout when it forms the next batch: the refusal comes when the instance is free,
    # long after the 0.1 s timeout, not after an execution of its own.
    assert late.seconds < first.seconds + 0.4 * slow.seconds, (first, late)
    after = batch_stats(server.grpc_url, "slow_timeout")
    assert after.get(1, (0, 0))[0] == before.get(1, (0, 0))[0], "the timed-out request was computed"


def test_a_call_whose_client_gave_up_is_not_computed(server: EmbeddedServer, slow: Slow) -> None:
    """The call's deadline passes while it waits behind a slow execution. Without a queue policy Triton 2.51
    still hands it to the backend when the instance frees; the backend answers CANCELLED without running it."""
    before = batch_stats(server.grpc_url, "slow")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(infer, server.grpc_url, "slow", slow.rows(2))  # batch size 2
        time.sleep(0.1 * slow.seconds)
        gave_up = infer(server.grpc_url, "slow", slow.rows(1), deadline_s=0.3 * slow.seconds)  # batch size 1
        assert running.result().status == "ok"
    assert gave_up.status == "StatusCode.DEADLINE_EXCEEDED", gave_up
    deadline = time.monotonic() + 10 * slow.seconds
    while (after := batch_stats(server.grpc_url, "slow")).get(1, (0, 0))[0] == before.get(1, (0, 0))[0]:
        if time.monotonic() > deadline:
            pytest.fail("the abandoned request never reached the backend: Triton now drops it itself")
        time.sleep(0.05)
    abandoned_ns = after[1][1] - before.get(1, (0, 0))[1]
    served_ns = after[2][1] - before.get(2, (0, 0))[1]
    assert abandoned_ns < 0.1 * served_ns, f"abandoned request: {abandoned_ns / 1e6:.0f} ms of compute"


def test_with_a_second_cpu_instance_calls_are_served_while_a_long_execution_runs(
    server: EmbeddedServer, slow: Slow
) -> None:
    """Under a queue policy Triton 2.51 hands a batch only to an instance that waits for one, and nothing
    wakes its batcher when a busy instance frees up (docs/export.md). A second CPU instance (the export writes
    one per server core) is waiting while the first executes: this checks that it takes the calls that arrive
    meanwhile, one after another. (It does not reproduce the stall itself, which depends on the phase of
    the batcher's 500 ms timer; bench's and tune's half-load points measure that.)"""
    quick = Slow(8, 0).rows(1)  # a few microseconds of work
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(infer, server.grpc_url, "slow_as_exported", slow.rows(1))
        time.sleep(0.1 * slow.seconds)
        calls = [infer(server.grpc_url, "slow_as_exported", quick, 5 * slow.seconds) for _ in range(3)]
        long_call = running.result()
    assert long_call.status == "ok", long_call
    assert all(c.status == "ok" for c in calls), calls
    # none waited for the long execution: all three were answered while it still ran
    assert sum(c.seconds for c in calls) + 0.1 * slow.seconds < long_call.seconds, (calls, long_call)


def test_one_failing_request_fails_alone_in_its_batch(server: EmbeddedServer) -> None:
    """Four requests of one shape in one execution; token id 9999 is beyond the vocabulary (512), so ONNX
    Runtime's Gather fails on the batch holding it. Only that request fails."""
    names = ("input_ids", "attention_mask", "token_type_ids")

    def features(ids: list[int]) -> dict[str, np.ndarray]:
        row = np.array([ids], dtype=np.int64)
        return dict(zip(names, (row, np.ones_like(row), np.zeros_like(row)), strict=True))

    good, bad = features([2, 10, 11, 3]), features([2, 9999, 11, 3])
    before = batch_stats(server.grpc_url, "tiny_encoder_b4")
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda f: infer(server.grpc_url, "tiny_encoder_b4", f), [good, good, bad, good]))
    after = batch_stats(server.grpc_url, "tiny_encoder_b4")
    assert after[4][0] - before.get(4, (0, 0))[0] == 1, "the four requests did not run as one batch"
    assert [o.status for o in outcomes] == ["ok", "ok", "StatusCode.INTERNAL", "ok"], outcomes
    # the client is told which call failed and an id; ONNX Runtime's own text (the bad id) is in the log only
    message = outcomes[2].message
    assert "onnxruntime failed on this request" in message and "9999" not in message, outcomes[2]
    error_id = message.split("(error ")[1].split(";")[0]
    deadline = time.monotonic() + 10
    while not any(error_id in line and "9999" in line for line in server.log_path.read_text().splitlines()):
        assert time.monotonic() < deadline, f"error {error_id} with its details is not in {server.log_path}"
        time.sleep(0.2)


def test_a_python_step_sheds_a_request_its_client_sent_longer_ago_than_the_budget(server: EmbeddedServer) -> None:
    """No queue policy (it stalls Triton 2.51's batcher): the step reads the SDK's send-time stamp and answers a
    request older than its queue budget UNAVAILABLE at once, with the text the SDK maps to OverloadedError. A
    request without a stamp (a raw tritonclient caller) and a fresh one are served."""
    from tritonstack.client import OverloadedError
    from tritonstack.client._exceptions import translate
    from tritonstack.in_triton import contract

    text = grpcclient.InferInput(contract.TEXT_INPUT, [2, 1], "BYTES")
    text.set_data_from_numpy(np.array([[b"a"], [b"b"]], dtype=np.object_))
    now_us = time.time_ns() // 1000
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        fresh = client.infer("shedding", [text], parameters={contract.SENT_AT_PARAMETER: now_us})
        assert fresh.as_numpy(contract.EMBEDDING_OUTPUT).shape == (2, 4)
        assert client.infer("shedding", [text]).as_numpy(contract.EMBEDDING_OUTPUT).shape == (2, 4)
        stale = now_us - 3 * SHEDDING_BUDGET_MS * 1000
        started = time.perf_counter()
        with pytest.raises(InferenceServerException) as refused:
            client.infer("shedding", [text], parameters={contract.SENT_AT_PARAMETER: stale})
        seconds = time.perf_counter() - started
    assert refused.value.status() == "StatusCode.UNAVAILABLE", refused.value
    assert contract.SHED_MESSAGE in str(refused.value.message()), refused.value
    assert seconds < SHEDDING_BUDGET_MS / 1000, f"shed only after {seconds:.2f} s"
    error = translate(refused.value, model="shedding", version=None, request_id=None, url=server.grpc_url)
    assert isinstance(error, OverloadedError)
