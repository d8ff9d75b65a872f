"""A real ``redis-server`` on a free loopback port for the tests, the benchmark and the demo.

:class:`RedisServer` runs the Debian package's binary in a temporary directory with persistence off (no RDB
snapshot, no append-only file), optionally behind a password (``requirepass``, written to a config file in that
directory, mode 0600, so it never appears on a command line), waits until it answers PING and stops it, leaving
nothing behind. It may be stopped and started again: it comes back on the same port, empty (a restarted Redis).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from tritonstack._exceptions import TritonStackError
from tritonstack._process import LOOPBACK, ChildProcess, ChildService, free_port

_INSTALL_HINT = "apt-get install --no-install-recommends redis-server (scripts/install-system-deps.sh installs it)"


class RedisServerError(TritonStackError):
    """``redis-server`` is missing or did not start."""


def _resp(*parts: str) -> bytes:
    """One command in RESP, Redis's wire protocol."""
    encoded = [part.encode() for part in parts]
    return b"".join([f"*{len(encoded)}\r\n".encode(), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)])


def ping(port: int, password: str | None = None, *, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """Whether a Redis at ``host:port`` answers PING with PONG (after AUTH when ``password`` is given).

    Raw RESP over a socket: the helper needs no Redis client library."""
    request = (_resp("AUTH", password) if password is not None else b"") + _resp("PING")
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(request)
            reply = b""
            while b"PONG" not in reply and not reply.startswith(b"-"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return b"+PONG" in reply


class RedisServer(ChildService):
    """``redis-server`` on ``127.0.0.1:port`` (``port=0``: a free one), in a temporary directory.

    ``with RedisServer() as redis: ...`` starts it and stops it; :attr:`url` is ``redis://127.0.0.1:PORT/0``
    (without the password: pass :attr:`password` separately). :meth:`stop` then :meth:`start` again restarts it
    on the same port with no data, as a Redis restarted without persistence would come back. :attr:`pid` is
    the running process (tests pause it with SIGSTOP to stand for a hung Redis: :meth:`stop` resumes it first).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        password: str | None = None,
        binary: str = "redis-server",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.port = port
        self.password = password
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._child: ChildProcess | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (no password in it)."""
        if not self.port:
            raise RedisServerError("the Redis server has no port yet: start it first")
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        """The running ``redis-server`` process id."""
        process = self._child.process if self._child is not None else None
        if process is None:
            raise RedisServerError("the Redis server is not running")
        return process.pid

    def start(self) -> RedisServer:
        if self._child is not None:
            raise RedisServerError("the Redis server is already running")
        executable = shutil.which(self._binary)
        if executable is None:
            raise RedisServerError(f"{self._binary!r} not found on PATH", hint=_INSTALL_HINT)
        self._workdir = tempfile.TemporaryDirectory(prefix="tritonstack-redis-")
        workdir = Path(self._workdir.name)
        self.port = self.port or free_port()
        config = workdir / "redis.conf"
        lines = [
            f"bind {LOOPBACK}",
            f"port {self.port}",
            f'dir "{workdir}"',
            'save ""',  # no RDB snapshots: a restart comes back empty, and nothing is written to disk
            "appendonly no",
            "daemonize no",
            'logfile ""',  # stdout, which ChildProcess sends to log_path
            "loglevel warning",
        ]
        if self.password is not None:
            if any(c in self.password for c in '"\r\n\\'):
                raise RedisServerError("the Redis password may not contain quotes, backslashes or line breaks")
            lines.append(f'requirepass "{self.password}"')
        # 0600 before the password is written: other users never see it
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "redis.log"
        child = self._child = ChildProcess("redis-server", [executable, str(config)], self.log_path, stop_timeout_s=5)
        try:
            child.start(
                lambda: ping(self.port, self.password, timeout_s=0.2),
                self._startup_timeout_s,
                lambda headline: RedisServerError(headline, hint=child.log_tail(20) or None),
                poll_s=0.02,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            if child.process is not None:
                # a paused (SIGSTOP) server would only act on SIGTERM after the stop timeout
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGCONT)
            child.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
