"""The embedded Triton server and the served text models, against the real binary."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import tinymodels
from tritonstack.server import EmbeddedServer, ServerStartError
from tritonstack.server.embedded import model_errors_from_log

pytestmark = pytest.mark.integration

WEIRD_TEXTS = [
    "",
    " ",
    "😀🚀 emoji 👍🏽",
    "中文字符和日本語のテキスト",
    "مرحبا بالعالم שלום עולם",
    "e\u0301 combining a\u0308 marks",
    "control\x00chars\x07and\x1b[31m escapes\u200b",
    "word " * 5000,
]


def text_input(texts: list[str] | np.ndarray) -> grpcclient.InferInput:
    array = np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=np.object_)
    tensor = grpcclient.InferInput("TEXT", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def embed(client: grpcclient.InferenceServerClient, texts: list[str], model: str = "tiny") -> np.ndarray:
    return np.asarray(client.infer(model, [text_input(texts)]).as_numpy("EMBEDDING"))


def metric(metrics_url: str, name: str, model: str) -> float:
    return sum(metric_samples(scrape(metrics_url), name, model))


def scrape(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        return str(response.read().decode())


def metric_samples(text: str, name: str, model: str) -> list[float]:
    """The values of ``name``'s series for ``model``: none before it loads or after Triton unloads it."""
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{model}"' in line
    ]


@pytest.fixture()
def client(triton: Any) -> Any:
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        yield c


def test_server_is_ready_on_loopback_and_lists_models(triton: Any) -> None:
    assert triton.is_ready()
    assert triton.grpc_url.startswith("127.0.0.1:")
    states = {m["name"]: m["state"] for m in triton.models()}
    steps = ("", "_v1", "_encoder", "_tokenizer", "_postprocess")  # _v1: release 1's own text-in model
    expected = [f"{name}{step}" for name in ("tiny", "tiny_cls", "tiny_ner") for step in steps]
    expected.remove("tiny_postprocess")  # feature-extraction needs no postprocessing
    assert states == dict.fromkeys(expected, "READY")


# The admin APIs and their key, over HTTP and gRPC: tests/server/test_server_admin.py.


def test_served_embeddings_match_in_process_onnxruntime(
    client: Any, tiny_repository: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    texts = ["hello world", "the quick brown fox jumps over the lazy dog", "", "data"]
    served = embed(client, texts)
    version = tiny_repository / "tiny_encoder" / "1"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["tiny"])
    features = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="np")
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    expected = session.run(None, {n: features[n].astype(np.int64) for n in names})[0]
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)


def test_a_direct_encoder_call_longer_than_the_models_maximum_is_refused(client: Any, tiny_repository: Path) -> None:
    """A direct call to the encoder is not truncated by a tokenizer: the backend bounds it by the config's
    max_sequence_length (64 for the tiny models), before ONNX Runtime sees it -- memory grows with it."""
    from tritonstack.repository.config import parameter, parse

    config = parse((tiny_repository / "tiny_encoder" / "config.pbtxt").read_text())
    longest = int(parameter(config, "max_sequence_length") or 0)
    assert longest == 64

    def call(length: int) -> Any:
        ids = np.full((1, length), 5, dtype=np.int64)
        inputs = []
        for name, array in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", 0 * ids)):
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer("tiny_encoder", inputs)

    assert call(longest).as_numpy("sentence_embedding").shape == (1, 32)
    refused = pytest.raises(InferenceServerException, match="65 positions, more than this model's max_sequence_le")
    with refused as info:
        call(longest + 1)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_tokenizer_model_pads_to_the_longest_text_of_the_batch(client: Any) -> None:
    result = client.infer("tiny_tokenizer", [text_input(["hello", "the quick brown fox"])])
    ids, mask = result.as_numpy("input_ids"), result.as_numpy("attention_mask")
    assert ids.dtype == np.int64 and ids.shape == mask.shape
    assert ids.shape[1] == int(mask.sum(axis=1).max())  # no padding beyond the longest
    assert mask[0].sum() < mask[1].sum()


def test_classification_returns_a_label_and_a_probability(client: Any) -> None:
    result = client.infer("tiny_cls", [text_input(["good", "bad", "hello world"])])
    labels = [x[0].decode() for x in result.as_numpy("LABEL")]
    scores = result.as_numpy("SCORE").reshape(-1)
    assert set(labels) <= {"NEGATIVE", "POSITIVE"}
    assert np.all((scores >= 0.5) & (scores <= 1.0))


def test_token_classification_labels_every_token_with_offsets(client: Any) -> None:
    short, long = "hello world", "the quick brown fox jumps over the lazy dog " * 3
    alone = client.infer("tiny_ner", [text_input([short])]).as_numpy("ENTITIES")
    batched = client.infer("tiny_ner", [text_input([long, short])]).as_numpy("ENTITIES")
    entities = json.loads(alone[0][0])
    assert [e["token"] for e in entities] == ["hello", "world"]
    assert [(e["start"], e["end"]) for e in entities] == [(0, 5), (6, 11)]
    assert all(e["label"] in ("NEGATIVE", "POSITIVE") and 0.5 <= e["score"] <= 1 for e in entities)
    # padding to the longer text of the batch (and its trimming in the backend) changes nothing
    assert json.loads(batched[1][0]) == entities
    assert len(json.loads(batched[0][0])) == 27


def test_trimming_padding_keeps_embeddings_identical(client: Any) -> None:
    texts = ["hello", "the quick brown fox jumps over the lazy dog " * 4, "data test", "model"]
    together = embed(client, texts)
    alone = np.concatenate([embed(client, [t]) for t in texts])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("text", WEIRD_TEXTS, ids=lambda t: repr(t[:12]))
def test_any_unicode_empty_and_huge_texts_are_served(client: Any, text: str) -> None:
    vector = embed(client, [text])
    assert vector.shape == (1, 32) and np.all(np.isfinite(vector))


def test_long_texts_are_truncated_not_refused(client: Any) -> None:
    long_a, long_b = "word " * 3000, "word " * 3000 + "different tail"
    a, b = embed(client, [long_a, long_b])
    np.testing.assert_allclose(a, b, rtol=1e-5)  # only the first max_sequence_length tokens count


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("invalid utf-8", lambda: [text_input(np.array([b"\xff\xfe broken"], dtype=np.object_))]),
        ("numbers instead of text", lambda: [_int_input("TEXT", [[1], [2]])]),
        ("unknown input name", lambda: [_bytes_input("TEXTS", [[b"hi"]])]),
        ("wrong rank", lambda: [_bytes_input("TEXT", [b"hi", b"ho"])]),
        ("batch over max_batch_size", lambda: [text_input(["x"] * 65)]),
    ],
)
def test_bad_input_gets_an_error_and_the_server_stays_up(client: Any, name: str, build: Any) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", build())
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", (name, info.value)
    assert embed(client, ["still serving"]).shape == (1, 32)


def test_an_empty_request_gets_invalid_argument(client: Any) -> None:
    """No rows: Triton 2.51 itself refuses. Rows without tokens reach the encoder's backend, which refuses
    them too (ONNX Runtime answered them with an all-zero embedding)."""
    no_texts = grpcclient.InferInput("TEXT", [0, 1], "BYTES")
    no_texts.set_data_from_numpy(np.empty((0, 1), dtype=np.object_))
    with pytest.raises(InferenceServerException) as no_rows:
        client.infer("tiny", [no_texts])
    assert no_rows.value.status() == "StatusCode.INVALID_ARGUMENT", no_rows.value
    names = ("input_ids", "attention_mask", "token_type_ids")
    with pytest.raises(InferenceServerException) as no_tokens:
        client.infer("tiny_encoder", [_int_input(name, [[]]) for name in names])
    assert no_tokens.value.status() == "StatusCode.INVALID_ARGUMENT", no_tokens.value
    assert "holds no values (shape [1, 0])" in no_tokens.value.message()
    assert embed(client, ["still serving"]).shape == (1, 32)


def test_triton_loaded_the_exported_steps_without_a_queue_policy_and_with_a_queue_budget(client: Any) -> None:
    """Any Triton queue policy stalls Triton 2.51's batcher (repository/queue_policy.py): the steps have none,
    and the Python steps shed by the request's queueing age instead."""
    from tritonstack.in_triton import contract

    for step in ("tiny_tokenizer", "tiny_encoder", "tiny_cls_postprocess"):
        config = client.get_model_config(step).config
        assert config.HasField("dynamic_batching") and not config.dynamic_batching.HasField("default_queue_policy")
        if config.backend == "python":
            budget = config.parameters[contract.QUEUE_BUDGET_MS_PARAMETER].string_value
            assert budget == str(tinymodels.QUEUE_TIMEOUT_MS), step
    assert client.get_model_config("tiny").config.WhichOneof("scheduling_choice") == "ensemble_scheduling"


def _bytes_input(name: str, rows: list[Any]) -> grpcclient.InferInput:
    array = np.array(rows, dtype=np.object_)
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def _int_input(name: str, rows: list[list[int]]) -> grpcclient.InferInput:
    array = np.array(rows, dtype=np.int64)
    tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
    tensor.set_data_from_numpy(array)
    return tensor


def test_a_bad_request_in_a_batch_fails_alone(triton: Any) -> None:
    """One invalid-UTF-8 request batched with good ones: only it fails."""
    texts: list[Any] = ["good text", b"\xff\xfe", "another good one"] * 4

    def send(text: Any) -> str:
        with grpcclient.InferenceServerClient(triton.grpc_url) as c:
            try:
                c.infer("tiny", [text_input(np.array([text], dtype=np.object_))])
                return "ok"
            except InferenceServerException:
                return "error"

    with ThreadPoolExecutor(len(texts)) as pool:
        outcomes = list(pool.map(send, texts))
    assert outcomes == ["ok", "error", "ok"] * 4


@pytest.fixture(scope="module")
def one_encoder_instance(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``tiny`` with a single encoder instance, whatever the repository was written with: several CPU
    instances (one per server core, repository/writer.py) take batches in turn, so their rows per execution
    depend on how the load generator and the server share the machine's cores; one instance shows what the
    tokenizer's padding lets the batcher merge."""
    from tritonstack.repository.config import parse, render_proto

    repository = tmp_path_factory.mktemp("one-encoder-instance")
    for name in ("tiny", "tiny_tokenizer", "tiny_encoder"):
        shutil.copytree(tiny_repository / name, repository / name)
    config_path = repository / "tiny_encoder" / "config.pbtxt"
    config = parse(config_path.read_text())
    config.instance_group[0].count = 1
    config_path.write_text(render_proto(config))
    with EmbeddedServer(repository, log_path=repository / "triton.log") as server:
        yield server


def test_mixed_length_concurrent_requests_are_batched(one_encoder_instance: Any) -> None:
    triton = one_encoder_instance
    rng = np.random.default_rng(0)
    words = "the quick brown fox jumps over the lazy dog model server".split()
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 50, size=256)]
    before_count = metric(triton.metrics_url, "nv_inference_count", "tiny_encoder")
    before_exec = metric(triton.metrics_url, "nv_inference_exec_count", "tiny_encoder")

    def send(chunk: list[str]) -> list[np.ndarray]:
        # one client (connection) per simulated user, one text per request
        with grpcclient.InferenceServerClient(triton.grpc_url) as c:
            return [embed(c, [text]) for text in chunk]

    with ThreadPoolExecutor(32) as pool:
        results = [r for chunk in pool.map(send, [texts[i::32] for i in range(32)]) for r in chunk]
    assert all(r.shape == (1, 32) for r in results)
    count = metric(triton.metrics_url, "nv_inference_count", "tiny_encoder") - before_count
    executions = metric(triton.metrics_url, "nv_inference_exec_count", "tiny_encoder") - before_exec
    assert count == len(texts)
    assert executions <= count / 4, f"{executions} encoder executions for {count} texts: not batched"


# -- lifecycle: each test below runs its own server -------------------------------------------


def test_port_conflict_is_reported_clearly(tiny_repository: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerStartError, match=rf"gRPC port {port} on 127.0.0.1 is already in use") as info:
            EmbeddedServer(tiny_repository, grpc_port=port).start()
    assert "port 0" in (info.value.hint or "")


def test_missing_repository_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="does not exist"):
        EmbeddedServer(tmp_path / "nowhere").start()


def test_a_model_that_fails_to_load_is_named_with_tritons_reason(tiny_repository: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(tiny_repository, repository)
    shutil.rmtree(repository / "tiny_cls")
    shutil.rmtree(repository / "tiny_cls_encoder")
    shutil.rmtree(repository / "tiny_cls_tokenizer")
    shutil.rmtree(repository / "tiny_cls_postprocess")
    (repository / "tiny_tokenizer" / "1" / "tokenizer.json").unlink()
    (repository / "tiny_ner_postprocess" / "1" / "tokenization.py").unlink()
    started = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        EmbeddedServer(repository, log_path=tmp_path / "triton.log").start()
    assert time.monotonic() - started < 120  # Triton's own failure, not our ready timeout
    assert "tiny_tokenizer" in info.value.model_errors
    assert "tokenizer.json" in info.value.model_errors["tiny_tokenizer"]
    assert "tokenization.py" in info.value.model_errors["tiny_ner_postprocess"]
    assert "tiny_tokenizer" in str(info.value)


def test_model_errors_are_parsed_from_tritons_log_lines() -> None:
    log = (
        "E1128 13:18:00.1 1 model_lifecycle.cc:654] \"failed to load 'enc' version 3: Invalid argument: "
        "unexpected inference input 'x'\"\nI1128 other line\n"
    )
    assert model_errors_from_log(log) == {"enc": "Invalid argument: unexpected inference input 'x'"}


def test_graceful_shutdown_under_load_loses_no_accepted_request(tiny_repository: Path, tmp_path: Path) -> None:
    server = EmbeddedServer(tiny_repository, log_path=tmp_path / "triton.log").start()
    metrics_url = server.metrics_url
    success = "nv_inference_request_success"
    # Every successful request of the text-in model ends with one successful encoder request (the encoder's
    # warm-up requests came before).
    encoder_before = metric(metrics_url, success, "tiny_encoder")
    encoder_final: list[float] = []
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            while not stop.is_set():
                try:
                    embed(c, ["a sentence long enough to take a moment " * 4] * 8)
                    outcome = "ok"
                except InferenceServerException as error:
                    outcome = f"{error.status()} {error.message()}"
                with lock:
                    outcomes.append(outcome)
                if outcome != "ok":
                    return

    def watch_tritons_count() -> None:
        # Triton unloads the text-in model at the first of its once-a-second checks that finds no request in
        # flight, and its steps about a second later. So once the text-in model's series are gone, the
        # encoder's count is final: read it then, before the encoder unloads too.
        while True:
            try:
                text = scrape(metrics_url)
            except (OSError, http.client.HTTPException):
                return
            encoder = metric_samples(text, success, "tiny_encoder")
            if encoder and not metric_samples(text, success, "tiny"):
                encoder_final.append(sum(encoder))
                return
            time.sleep(0.02)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    watcher = threading.Thread(target=watch_tritons_count)
    watcher.start()
    code = server.stop()
    stop.set()
    for t in [*threads, watcher]:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in [*threads, watcher])
    assert code == 0
    refused = [o for o in outcomes if o != "ok"]
    assert outcomes.count("ok") > 8
    # Requests sent after shutdown began are refused: UNAVAILABLE while Triton waits for the requests in
    # flight, NOT_FOUND once it has unloaded the model (a client slow to send its next request).
    refusals = ("StatusCode.UNAVAILABLE", "Server is stopping"), ("StatusCode.NOT_FOUND", "no available versions")
    assert all(any(o.startswith(status) and reason in o for status, reason in refusals) for o in refused), refused
    # And none of them was a request Triton accepted: every request Triton completed reached its client.
    assert encoder_final, "Triton's metrics went away before the text-in model was unloaded: no final count"
    tritons_successes = encoder_final[0] - encoder_before
    assert outcomes.count("ok") == tritons_successes, (outcomes.count("ok"), tritons_successes, refused)
    assert "Waiting for in-flight requests to complete" in (tmp_path / "triton.log").read_text()


def test_serve_command_prints_endpoints_and_stops_on_sigint(tiny_repository: Path, tmp_path: Path) -> None:
    import signal

    from serve_process import start_serve

    process, output = start_serve(tiny_repository, tmp_path / "t.log")
    assert "gRPC     127.0.0.1:" in output and "model    tiny_encoder v1 READY" in output, output
    assert "cache    none (no model enables response_cache)" in output, output
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output + rest
    assert "stopped" in rest
    assert (tmp_path / "t.log").read_text().count("Waiting for in-flight requests") == 1


def test_serve_command_refuses_an_invalid_repository(tiny_repository: Path, tmp_path: Path) -> None:
    from tritonstack.cli import main

    repository = tmp_path / "repo"
    shutil.copytree(tiny_repository, repository)
    (repository / "tiny_encoder" / "config.pbtxt").write_text(
        (repository / "tiny_encoder" / "config.pbtxt").read_text().replace("TYPE_INT64", "TYPE_INT32", 1)
    )
    assert main(["serve", "--repository", str(repository), "--grpc-port", "0"]) == 1


def test_triton_stops_when_the_process_that_started_it_is_killed(tiny_repository: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from tritonstack.server import EmbeddedServer\n"
        f"server = EmbeddedServer({str(tiny_repository)!r}, log_path={str(tmp_path / 't.log')!r}).start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    triton_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
    parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(triton_pid, 0)
        except ProcessLookupError:
            break
        # a zombie (exited, not yet reaped by init) counts as gone
        try:
            with open(f"/proc/{triton_pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.2)
    else:
        os.killpg(triton_pid, signal.SIGKILL)
        pytest.fail("Triton outlived the process that started it")
