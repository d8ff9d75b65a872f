"""Lifecycle and failure suite against the real embedded Triton, after Triton's own QA
(L0_lifecycle, L0_client_timeout, L0_http_fuzz): what happens when processes die, calls
outlive their deadline, and the HTTP endpoint gets garbage."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_process import start_serve
from tritonstack.repository.config import InstanceGroup, ModelConfig, Tensor, parse, render, render_proto
from tritonstack.server import EmbeddedServer, shared_memory
from tritonstack.server.embedded import RELOAD_PARAMETER, marked_for_reload
from tritonstack.server.processes import process_tree, stubs

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _live(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(http_url + "/v2/health/live", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# -- kill -9 ---------------------------------------------------------------------
def test_kill_9_of_triton_under_serve_leaves_no_stub_and_no_shared_memory(
    tiny_repository: Path, tmp_path: Path
) -> None:
    serve, _ = start_serve(tiny_repository, tmp_path / "t.log", "--no-validate")
    try:
        (triton_pid,) = [p.pid for p in process_tree(serve.pid) if p.name == "tritonserver"]
        regions = {p.pid: str(p.shm_region) for p in stubs(triton_pid)}
        assert len(regions) >= 6  # tokenizer, encoder (and postprocess) of tiny, tiny_cls, tiny_ner
        assert all(Path("/dev/shm", region).exists() for region in regions.values())

        os.kill(triton_pid, signal.SIGKILL)
        rest, _ = serve.communicate(timeout=30)
        assert serve.returncode == 1
        assert "Triton exited unexpectedly" in rest
        # serve reaps Triton at once, so the stubs see their parent gone and exit, removing their regions
        assert _wait_until(lambda: not any(_alive(pid) for pid in regions), 15), [p for p in regions if _alive(p)]
        assert _wait_until(lambda: not any(Path("/dev/shm", r).exists() for r in regions.values()), 15)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()

    # the next start serves from a clean slate
    with EmbeddedServer(tiny_repository, log_path=tmp_path / "next.log") as server:
        assert _live(server.http_url)
        assert not any(Path("/dev/shm", region).exists() for region in regions.values())


def _embeds(client: Any) -> bool:
    try:
        client.embed(["are you back?"])
    except Exception:
        return False
    return True


def test_kill_9_of_one_stub_reloads_its_model_and_the_server_stays_live(tiny_repository: Path, tmp_path: Path) -> None:
    from tritonstack.client import Client

    with (
        EmbeddedServer(tiny_repository, log_path=tmp_path / "t.log") as server,
        Client(server.grpc_url, model="tiny", timeouts=10.0) as client,
    ):
        before = client.embed(["hello world"])
        # the tokenizer runs one instance (the encoder two: the test below)
        (tokenizer,) = [p for p in stubs(server.pid) if p.model == "tiny_tokenizer"]
        os.kill(tokenizer.pid, signal.SIGKILL)
        assert _wait_until(lambda: _embeds(client), 30), "the model did not come back"
        np.testing.assert_array_equal(client.embed(["hello world"]), before)
        assert server.supervisor is not None and server.supervisor.reloaded == ["tiny_tokenizer"]
        assert _live(server.http_url)
        (fresh,) = [p for p in stubs(server.pid) if p.model == "tiny_tokenizer" and p.alive]
        assert fresh.pid != tokenizer.pid

        # a model unloaded on purpose stays unloaded: its stub exits, and it is not READY
        server._admin("models/tiny_cls_postprocess/unload", {}, timeout_s=30)
        assert _wait_until(lambda: not [p for p in stubs(server.pid) if p.model == "tiny_cls_postprocess"], 15)
        time.sleep(3 * server.supervisor.poll_s)
        assert server.supervisor.reloaded == ["tiny_tokenizer"]
        assert "tiny_cls_postprocess" not in server.ready_models()
        prefix = server._shm_prefix
        assert shared_memory.regions(prefix)
    assert not shared_memory.regions(prefix)


def test_a_reload_counts_its_parameter_up_and_leaves_the_config_it_was_given_alone() -> None:
    config: dict[str, Any] = {"name": "m", "instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    first = marked_for_reload(config)
    assert first["parameters"][RELOAD_PARAMETER] == {"string_value": "1"}
    assert "parameters" not in config  # a copy: the config read from Triton is not changed
    second = marked_for_reload(first)
    assert second["parameters"][RELOAD_PARAMETER] == {"string_value": "2"}
    assert second["instance_group"] == config["instance_group"]


def test_a_model_with_two_instances_is_loaded_afresh_when_one_stub_dies(tiny_repository: Path, tmp_path: Path) -> None:
    from tritonstack.client import Client

    repository = tmp_path / "repo"
    repository.mkdir()
    for name in ("tiny", "tiny_tokenizer", "tiny_encoder"):
        shutil.copytree(tiny_repository / name, repository / name)
    config_path = repository / "tiny_encoder" / "config.pbtxt"
    config = parse(config_path.read_text())
    config.instance_group[0].count = 2  # as exported for a 2-core server: an instance per core
    config_path.write_text(render_proto(config))
    with (
        EmbeddedServer(repository, log_path=tmp_path / "t.log") as server,
        Client(server.grpc_url, model="tiny", timeouts=10.0) as client,
    ):

        def encoders() -> set[int]:
            return {p.pid for p in stubs(server.pid) if p.model == "tiny_encoder" and p.alive}

        before = encoders()
        assert len(before) == 2
        os.kill(min(before), signal.SIGKILL)
        # the whole model is loaded again: two new stubs, and the survivor retires once they serve
        assert _wait_until(lambda: len(encoders()) == 2 and not encoders() & before, 60), (before, encoders())
        # no instance with a dead stub is left: every call is answered, whichever instance gets it
        assert all(_embeds(client) for _ in range(20))
        assert server.supervisor is not None
        time.sleep(3 * server.supervisor.poll_s)
        assert server.supervisor.reloaded == ["tiny_encoder"]


def test_a_new_start_removes_the_regions_of_servers_whose_launcher_is_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = shared_memory.SHM_DIR / f"tritonstack_{gone.pid}_00ab_region"
    ours = shared_memory.SHM_DIR / f"tritonstack_{os.getpid()}_00ab_region"
    foreign = shared_memory.SHM_DIR / f"triton_python_backend_shm_region_{gone.pid}"  # not ours: left alone
    for path in (orphan, ours, foreign):
        path.write_bytes(b"x")
    try:
        assert shared_memory.remove_orphans() >= 1
        assert not orphan.exists() and ours.exists() and foreign.exists()
    finally:
        for path in (orphan, ours, foreign):
            path.unlink(missing_ok=True)


# -- deadlines -----------------------------------------------------------------
SLOW_MODEL = """
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            delay = pb_utils.get_input_tensor_by_name(request, "DELAY_S").as_numpy()
            time.sleep(float(delay.max()))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SLEPT_S", delay.astype(np.float32))]))
        return responses
"""


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Triton serving ``slow``: a Python model that sleeps for the seconds it is sent."""
    repository = tmp_path_factory.mktemp("slow") / "model_repository"
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    config = ModelConfig(
        name="slow",
        backend="python",
        max_batch_size=0,
        inputs=(Tensor("DELAY_S", "TYPE_FP32", (1,)),),
        outputs=(Tensor("SLEPT_S", "TYPE_FP32", (1,)),),
        instance_groups=(InstanceGroup(count=1),),
    )
    (repository / "slow" / "config.pbtxt").write_text(render(config))
    with EmbeddedServer(repository, log_path=repository.parent / "triton.log") as server:
        yield server


@pytest.mark.parametrize("client_kind", ["sync", "async"])
def test_a_call_outliving_its_deadline_in_a_slow_execution_fails_typed_at_the_deadline(
    slow_server: Any, client_kind: str
) -> None:
    import asyncio

    from tritonstack.client import AsyncClient, Client, DeadlineExceededError, Timeouts

    slow = {"DELAY_S": np.array([2.0], dtype=np.float32)}
    timeouts = Timeouts(call_s=0.5)
    started = time.perf_counter()
    with pytest.raises(DeadlineExceededError) as error:
        if client_kind == "sync":
            with Client(slow_server.grpc_url, model="slow", timeouts=timeouts) as client:
                client.infer(slow)
        else:

            async def call() -> None:
                async with AsyncClient(slow_server.grpc_url, model="slow", timeouts=timeouts) as client:
                    await client.infer(slow)

            asyncio.run(call())
    elapsed = time.perf_counter() - started
    assert 0.5 <= elapsed < 0.5 + 0.5, elapsed
    assert error.value.model == "slow"
    # the server is healthy and the model answers the next call (once the slow execution is done)
    assert _live(slow_server.http_url)
    with Client(slow_server.grpc_url, model="slow", timeouts=10.0) as client:
        quick = client.infer({"DELAY_S": np.array([0.01], dtype=np.float32)})
    assert quick["SLEPT_S"].tolist() == pytest.approx([0.01])


# -- HTTP fuzz -----------------------------------------------------------------
def _http(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes; b"" when it closed (or reset) without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        answer = b""
        try:
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError, OSError) as error:
            if isinstance(error, TimeoutError):
                raise
        return answer


def _request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n").encode() + body


def _fuzz_cases(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    infer = "/v2/models/tiny/infer"
    header = b'{"inputs":[{"name":"TEXT","shape":[1,1],"datatype":"BYTES","parameters":{"binary_data_size":1000}}]}'
    return {
        "malformed JSON": _request("POST", infer, b'{"inputs": [', Content_Type="application/json"),
        "JSON of the wrong types": _request("POST", infer, b'{"inputs": [{"name": "TEXT", "shape": "x"}]}'),
        "more elements than data": _request(
            "POST", infer, b'{"inputs":[{"name":"TEXT","shape":[2,1],"datatype":"BYTES","data":["a"]}]}'
        ),
        "negative shape": _request(
            "POST", infer, b'{"inputs":[{"name":"TEXT","shape":[-1,1],"datatype":"BYTES","data":["a"]}]}'
        ),
        "batch far over the maximum": _request(
            "POST", infer, b'{"inputs":[{"name":"TEXT","shape":[99999999999,1],"datatype":"BYTES","data":["a"]}]}'
        ),
        "binary header longer than the body": _request(
            "POST", infer, b'{"inputs":[]}', Inference_Header_Content_Length="10000"
        ),
        "binary tensor shorter than declared": _request(
            "POST", infer, header + b"\x05\x00\x00\x00hello", Inference_Header_Content_Length=str(len(header))
        ),
        "XML content type": _request("POST", infer, b"<inputs/>", Content_Type="application/xml"),
        "random bytes as the body": _request("POST", infer, rng.randbytes(4096)),
        "random bytes as the request": rng.randbytes(4096),
        "a 200 kB header": _request("POST", infer, b"{}", X_Big="a" * 200_000),
        "5000 headers": _request("GET", "/v2/health/live", **{f"X_{k}": "v" for k in range(5000)}),
        "negative content length": b"POST " + infer.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        "unknown model": _request("POST", "/v2/models/nope/infer", b'{"inputs":[]}'),
        "path traversal": _request("GET", "/v2/models/%2e%2e/%2e%2e/etc/passwd/config"),
    }


# Triton 2.51 answers a body it cannot parse as JSON with 500, not 400 (its HTTP frontend's choice).
UNPARSABLE = (b"failed to parse the request JSON", b"Unable to parse")


def _outcome(answer: bytes) -> str:
    if not answer:
        return "closed"
    status = int(answer.split(b" ", 2)[1])
    if 400 <= status < 500 or status == 200:
        return str(status)
    if status == 500 and any(text in answer for text in UNPARSABLE):
        return "500 unparsable"
    return f"unexpected {answer[:200]!r}"


def test_http_endpoint_fuzz_gets_4xx_or_a_closed_connection_and_the_server_stays_up(triton: Any) -> None:
    port = int(triton.http_url.rsplit(":", 1)[1])
    rss_mib = []
    for seed in range(4):
        outcomes = {name: _outcome(_http(port, data)) for name, data in _fuzz_cases(seed).items()}
        assert not [o for o in outcomes.values() if o.startswith("unexpected")], outcomes
        assert _live(triton.http_url), f"the server died after round {seed}: {outcomes}"
        rss_mib.append(process_tree(triton.pid)[0].rss_bytes / 2**20)
    assert outcomes["unknown model"] == "404"
    assert outcomes["batch far over the maximum"] == "400"
    assert outcomes["5000 headers"] == "200"
    # memory is flat once the first round has warmed the server's buffers
    assert rss_mib[-1] - rss_mib[1] < 8, rss_mib
    # and it still serves
    body = b'{"inputs":[{"name":"TEXT","shape":[1,1],"datatype":"BYTES","data":["still serving"]}]}'
    answer = _http(port, _request("POST", "/v2/models/tiny/infer", body, Content_Type="application/json"))
    assert answer.startswith(b"HTTP/1.1 200") and b'"EMBEDDING"' in answer
