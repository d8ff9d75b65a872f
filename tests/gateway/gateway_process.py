"""The gateway as a user starts it (``tritonstack gateway`` in a child process) and plain HTTP calls to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDER, CLASSIFIER, RERANKER, RELEASED = "emb", "cls", "rank", "rel"
MAX_BATCH = 8  # small: a long input list is split across several Triton calls
CONFIG = f"""
models:
  {EMBEDDER}:
    prefixes: {{query: "query: ", document: "passage: "}}
releases:
  {RELEASED}: {{baseline: 1, candidate: 2, weight: 0.5, key: user}}
"""


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    url: str
    output: list[str]

    def stop(self, timeout_s: float = 40.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def start_gateway(
    triton_url: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None, config: str = CONFIG
) -> GatewayProcess:
    """``tritonstack gateway`` on a free port, as a child process; returns once it printed its ``ready`` line."""
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(config)
    command = [sys.executable, "-m", "tritonstack", "gateway", "--triton", triton_url, "--port", "0"]
    command += ["--config", str(config_path), *extra]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("ready "):
            url = line.split()[1]
            return GatewayProcess(process, url, lines)
    process.wait()
    raise AssertionError("the gateway did not start:\n" + "".join(lines))


def post(url: str, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), dict(error.headers)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
