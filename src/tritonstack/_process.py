"""Child processes the stack runs (Triton, Prometheus, the benchmark's baseline service):
free ports, readiness over HTTP, and a stop that never leaves one behind."""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from tritonstack._ports import LOOPBACK as LOOPBACK

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_Service = TypeVar("_Service", bound="ChildService")


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


def _terminate_when_parent_dies() -> Callable[[], None] | None:
    """What the child runs before exec so that it gets SIGTERM (a graceful stop) when the thread that
    started it dies: a killed test run, demo or benchmark then leaves nothing behind. Linux only.

    libc is looked up here, in the parent: between fork and exec the child must not import or load
    anything (another thread of the parent may have held the import lock at the fork)."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildProcess:
    """``command`` in a child process whose output (stdout and stderr) goes to ``log_path``.

    The child leads its own session: a Ctrl-C in our terminal reaches only us, and we stop the child
    gracefully. It is sent SIGTERM when the thread that started it dies, so start it from a thread that
    outlives it (Linux; PR_SET_PDEATHSIG). :meth:`stop` is SIGTERM, up to ``stop_timeout_s`` for a
    graceful exit, SIGKILL, then SIGKILL for whatever else is left in its process group (helpers the
    child started, such as Triton's Python-backend stubs or uvicorn's workers).

    ``name`` says what the child is in messages ("Triton", "prometheus").
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self,
        ready: Callable[[], bool],
        timeout_s: float,
        failure: Callable[[str], Exception],
        *,
        poll_s: float = 0.2,
    ) -> None:
        """Start the child and poll ``ready`` until it holds.

        If the child exits first, or is not ready within ``timeout_s``, it is stopped and
        ``failure(headline)`` raised; the headline says which ("Triton exited with code 1 during
        start-up"), and the caller adds what its log shows (:meth:`log_text`, :meth:`log_tail`).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            try:
                self.process = subprocess.Popen(
                    self.command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    start_new_session=True,
                    # runs between fork and exec: it only calls prctl, looked up beforehand (see above)
                    preexec_fn=_terminate_when_parent_dies(),
                )
            except OSError as error:  # a missing or non-executable binary, out of memory
                raise failure(f"{self.name} could not be started ({self.command[0]}): {error.strerror}") from error
        try:
            self._wait_ready(self.process, ready, timeout_s, failure, poll_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(
        self,
        process: subprocess.Popen[bytes],
        ready: Callable[[], bool],
        timeout_s: float,
        failure: Callable[[str], Exception],
        poll_s: float,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise failure(f"{self.name} exited with code {code} during start-up")
            if ready():
                return
            time.sleep(poll_s)
        raise failure(f"{self.name} was not ready after {timeout_s:.0f} s")

    def log_text(self) -> str:
        """Everything the child has written so far ("" when there is no log)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop the child (``timeout_s`` overrides ``stop_timeout_s``); its exit code, ``None`` if none ran."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return int(process.returncode)


class ChildService(abc.ABC):
    """A service that runs in a :class:`ChildProcess` (Triton, Prometheus, the benchmark's baseline):
    :meth:`start` returns once it is ready, :meth:`stop` leaves nothing behind, ``with`` does both."""

    @abc.abstractmethod
    def start(self: _Service) -> _Service: ...

    @abc.abstractmethod
    def stop(self) -> object: ...

    def __enter__(self: _Service) -> _Service:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
