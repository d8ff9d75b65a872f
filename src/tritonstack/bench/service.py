"""A benchmark's HTTP service in a child process on a free loopback port (the PyTorch baseline, the gateway)."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path

from tritonstack._process import LOOPBACK, ChildProcess, ChildService, free_port, http_ok
from tritonstack.bench.errors import BenchError


class LoopbackHTTPService(ChildService, abc.ABC):
    """What the two share: the port, ``url``, the process's ``pid`` (the leader of its process group, for its CPU
    time), a start that waits for GET ``health_path`` to answer 200 and fails with the log's tail, and ``stop``."""

    name = "the service"  # in messages: "the gateway", "the PyTorch baseline"

    def __init__(self, log_path: Path, startup_timeout_s: float) -> None:
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self._child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        process = self._child.process if self._child is not None else None
        if process is None:
            raise BenchError(f"{self.name} is not running")
        return process.pid

    def _launch(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        health_path: str = "/health",
        probe_timeout_s: float = 2.0,
        stop_timeout_s: float | None = None,
    ) -> None:
        """Run ``command`` (which listens on ``self.port``, picked by ``_pick_port``) until ``health_path`` is ok."""
        extra = {} if stop_timeout_s is None else {"stop_timeout_s": stop_timeout_s}
        child = self._child = ChildProcess(self.name, command, self.log_path, env=env, **extra)
        child.start(
            lambda: http_ok(f"{self.url}{health_path}", timeout_s=probe_timeout_s),
            self.startup_timeout_s,
            lambda headline: BenchError(f"{headline}; see {self.log_path}", hint=child.log_tail(20) or None),
        )

    def _pick_port(self) -> int:
        self.port = free_port()
        return self.port

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.stop()
