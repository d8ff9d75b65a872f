"""What serve and EmbeddedServer check before Triton starts, and Ctrl-C while it starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tritonstack.server import EmbeddedServer
from tritonstack.server.embedded import _ensure_port_free, checked_extra_args
from tritonstack.server.errors import ServerError, ServerStartError
from tritonstack.server.flags import GrpcTLS


@pytest.mark.parametrize(
    "extra",
    [
        ["--http-address=0.0.0.0"],
        ["--grpc-address", "0.0.0.0"],
        ["--grpc-addr=0.0.0.0"],  # getopt_long takes an unambiguous prefix
        ["-metrics-address=0.0.0.0"],
        ["--http-port=80"],
        ["--grpc-restricted-protocol=model-repository,k=v"],
        ["--http-restricted-api=health,k=v"],
    ],
)
def test_extra_args_may_not_override_the_checked_address_ports_or_admin_key(tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(ServerError, match="extra_args may not set"):
        EmbeddedServer(tmp_path, extra_args=extra)


def test_other_extra_args_pass(tmp_path: Path) -> None:
    tls = GrpcTLS(server_cert="/c.crt", server_key="/c.key", client_ca="/ca.crt").args()
    assert checked_extra_args([*tls, "--log-verbose=1", "--grpc-use-ssl", "true"])[-2:] == ("--grpc-use-ssl", "true")
    assert EmbeddedServer(tmp_path, extra_args=tls).extra_args == tuple(tls)


def test_a_port_whose_last_connection_is_in_time_wait_is_free() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server's side closes first: its end (port) goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    time.sleep(0.1)
    _ensure_port_free("127.0.0.1", port, "HTTP")  # Triton, which binds with SO_REUSEADDR, can bind it
    with socket.create_server(("127.0.0.1", port)), pytest.raises(ServerStartError, match="already in use"):
        _ensure_port_free("127.0.0.1", port, "HTTP")  # a socket that listens there: busy


SLEEPY_CONFIG = """
name: "sleepy"
backend: "python"
max_batch_size: 0
input [{ name: "X", data_type: TYPE_FP32, dims: [1] }]
output [{ name: "Y", data_type: TYPE_FP32, dims: [1] }]
"""
SLEEPY_MODEL = """
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(600)  # a model that takes long to load

    def execute(self, requests):
        return []
"""


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.integration
def test_ctrl_c_while_the_models_load_stops_serve_at_once(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    (repository / "sleepy" / "1").mkdir(parents=True)
    (repository / "sleepy" / "config.pbtxt").write_text(SLEEPY_CONFIG)
    (repository / "sleepy" / "1" / "model.py").write_text(SLEEPY_MODEL)
    command = [sys.executable, "-m", "tritonstack", "serve", "--repository", str(repository), "--no-validate"]
    command += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--log-file", str(tmp_path / "t.log")]
    command += ["--ready-timeout-s", "300"]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None and serve.stdout.readline().startswith("starting Triton")
        log = tmp_path / "t.log"
        deadline = time.monotonic() + 60
        while not log.is_file() or "sleepy" not in log.read_text(errors="replace"):  # Triton is loading it
            assert time.monotonic() < deadline and serve.poll() is None, log.is_file() and log.read_text()
            time.sleep(0.2)
        time.sleep(1)
        interrupted = time.monotonic()
        serve.send_signal(signal.SIGINT)
        _, stderr = serve.communicate(timeout=90)
        assert serve.returncode == 128 + signal.SIGINT, stderr
        assert "interrupted during start-up" in stderr
        assert time.monotonic() - interrupted < 60  # not the ready timeout (300 s)
        assert _processes_naming(str(repository)) == [], "Triton or a stub outlived serve"
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        for pid in _processes_naming(str(repository)):
            os.kill(pid, signal.SIGKILL)
