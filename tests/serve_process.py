"""`tritonstack` commands as child processes, the way a user starts them: the tests that need the command itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def start_serve(
    repository: Path,
    log_file: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    umask: int = -1,
    stderr: int = subprocess.STDOUT,
) -> tuple[subprocess.Popen[str], str]:
    """Start `tritonstack serve` on ``repository`` with free ports and read its output up to the ``ready``
    line. Returns the process (the caller stops it) and what it printed so far."""
    command = [sys.executable, "-m", "tritonstack", "serve", "--repository", str(repository)]
    command += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--log-file", str(log_file), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, umask=umask)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("ready"):
            break
    return process, "".join(lines)


def run_to_completion(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a ``tritonstack`` command line) to completion; on a timeout, kill its whole process group
    (Locust's workers included) and fail the test with what it printed."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{command[2:4]} did not finish in {timeout_s} s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
