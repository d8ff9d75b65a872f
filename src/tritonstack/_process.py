"""Child processes the stack runs (Triton, Prometheus, the benchmark's baseline service):
free ports, readiness over HTTP, and a stop that never leaves one behind."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port(address: str = LOOPBACK) -> int:
    """A port nothing listens on at ``address`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether GET ``url`` answers 200 (any failure to connect is a no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    timeout_s: float,
    *,
    exited: Callable[[int], Exception],
    timed_out: Callable[[], Exception],
    poll_s: float = 0.2,
) -> None:
    """Poll ``ready`` until it holds; raise ``exited(code)`` if the process dies first, ``timed_out()`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise exited(code)
        if ready():
            return
        time.sleep(poll_s)
    raise timed_out()


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, wait up to ``timeout_s`` for a graceful exit, then SIGKILL; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
