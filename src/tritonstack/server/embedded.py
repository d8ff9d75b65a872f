"""The embedded Triton server: the ``tritonserver`` binary of the nvidia-pytriton wheel.

Triton itself runs in a child process. Before it starts we prepare a writable
backend folder (the Python backend, the stub for the running Python, and our
Python-based ``onnxruntime`` backend), pick ports, and afterwards wait until
Triton reports ready -- or report each model that failed with Triton's own
reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tritonstack._process import free_port, http_ok, terminate, wait_ready
from tritonstack.server import flags
from tritonstack.server.errors import ServerError, ServerStartError

BACKENDS_SOURCE = Path(__file__).parent / "backends"
_FAILED_LOAD = re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<reason>.+?)\"?$")
_PORT_IN_USE = re.compile(r"Socket '(?P<address>[^']+)' already in use|failed to start (?P<service>\w+) service")


def pytriton_dir() -> Path:
    """The ``tritonserver`` folder inside the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "the embedded Triton server needs the nvidia-pytriton package",
            hint="pip install 'tritonstack[serve]'",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def _library_dir() -> Path:
    return pytriton_dir().parent.parent / "nvidia_pytriton.libs"


def prepare_backends(destination: Path) -> Path:
    """Lay out a backend folder Triton can load from; return it."""
    source = pytriton_dir()
    stub = source / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_file = stub / "triton_python_backend_stub"
    if not stub_file.is_file():
        available = sorted(p.name for p in (source / "python_backend_stubs").iterdir())
        raise ServerError(
            f"nvidia-pytriton ships no Python backend stub for Python {stub.name}",
            hint=f"use one of Python {', '.join(available)}",
        )
    python_backend = destination / "python"
    shutil.copytree(source / "backends" / "python", python_backend, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub_file, python_backend / "triton_python_backend_stub")
    shutil.copytree(
        BACKENDS_SOURCE / "onnxruntime", destination / "onnxruntime", ignore=shutil.ignore_patterns("__pycache__")
    )
    return destination


def _ensure_port_free(address: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            raise ServerStartError(
                f"{what} port {port} on {address} is already in use",
                hint=f"stop whatever listens there, or pass --{what.lower()}-port 0 to pick a free port",
            ) from None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a graceful stop) when the process that started Triton dies,
    so a killed test run or demo leaves no server behind. Linux only; elsewhere a no-op."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def model_errors_from_log(text: str) -> dict[str, str]:
    """Model name -> Triton's reason, for every 'failed to load' line of a server log."""
    errors: dict[str, str] = {}
    for line in text.splitlines():
        match = _FAILED_LOAD.search(line)
        if match:
            errors.setdefault(match["model"], match["reason"].replace('\\"', '"').replace("\\n", " "))
    return errors


class EmbeddedServer:
    """Run Triton over ``repository`` on loopback; a context manager.

    Ports of 0 pick free ones. ``admin_key`` guards the restricted APIs (model
    repository, logging, trace, shared memory); ``None`` takes
    ``$TRITONSTACK_ADMIN_KEY`` or a fresh random key.
    """

    def __init__(
        self,
        repository: str | os.PathLike[str],
        *,
        bind_address: str = flags.LOOPBACK,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        admin_key: str | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
        ready_timeout_s: float = 300.0,
        exit_timeout_s: int = flags.EXIT_TIMEOUT_S,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.bind_address = bind_address
        self.admin_key = admin_key or os.environ.get(flags.ADMIN_KEY_ENV) or secrets.token_urlsafe(24)
        self.extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self._requested_ports = {"HTTP": http_port, "gRPC": grpc_port, "metrics": metrics_port}
        self._log_path = Path(log_path) if log_path else None
        self._workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    # -- endpoints ---------------------------------------------------------
    @property
    def host(self) -> str:
        return flags.LOOPBACK if self.bind_address in ("0.0.0.0", "") else self.bind_address

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            raise ServerError("the server has not been started")
        return self._log_path

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("the server has not been started")
        return self.process.pid

    # -- lifecycle ---------------------------------------------------------
    def _ports(self) -> None:
        ports = {}
        for what, port in self._requested_ports.items():
            if port:
                _ensure_port_free(self.bind_address, port, what)
                ports[what] = port
            else:
                ports[what] = free_port(self.bind_address)
        self.http_port, self.grpc_port, self.metrics_port = ports["HTTP"], ports["gRPC"], ports["metrics"]

    def command(self, backend_dir: Path) -> list[str]:
        triton_flags = flags.TritonFlags(
            model_repository=str(self.repository),
            admin_key=self.admin_key,
            bind_address=self.bind_address,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            exit_timeout_s=self.exit_timeout_s,
        )
        return [
            str(pytriton_dir() / "bin" / "tritonserver"),
            *triton_flags.args(),
            f"--backend-directory={backend_dir}",
            *self.extra_args,
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(_library_dir())]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        # The Python backend stub embeds libpython and finds its prefix (and so
        # this environment's site-packages) by looking up python3 on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self) -> EmbeddedServer:
        if not self.repository.is_dir():
            raise ServerStartError(
                f"model repository {self.repository} does not exist",
                hint="run `tritonstack export MODEL` first, or pass --repository",
            )
        self._ports()
        self._workdir = Path(tempfile.mkdtemp(prefix="tritonstack-server-"))
        if self._log_path is None:
            # outside the work folder, so that the log outlives a failed start
            descriptor, name = tempfile.mkstemp(prefix="tritonstack-triton-", suffix=".log")
            os.close(descriptor)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        backend_dir = prepare_backends(self._workdir / "backends")
        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(backend_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(),
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop Triton gracefully
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def is_ready(self) -> bool:
        return http_ok(f"{self.http_url}/v2/health/ready")

    def _failure(self, headline: str) -> ServerStartError:
        log = self._log_text()
        errors = model_errors_from_log(log)
        tail = "\n".join(log.splitlines()[-30:])
        if errors:
            details = "; ".join(f"{model}: {reason}" for model, reason in sorted(errors.items()))
            return ServerStartError(
                f"{headline}: model(s) failed to load: {details}",
                hint=f"fix the model's config.pbtxt or re-export it; run `tritonstack validate "
                f"{self.repository}`; full log: {self.log_path}",
                model_errors=errors,
                log_tail=tail,
            )
        in_use = _PORT_IN_USE.search(log)
        if in_use:
            return ServerStartError(
                f"{headline}: a port is already in use ({in_use.group(0)})",
                hint="pass port 0 to pick free ports",
                log_tail=tail,
            )
        return ServerStartError(f"{headline}; see {self.log_path}", hint=tail[-2000:] or None, log_tail=tail)

    def _wait_ready(self) -> None:
        assert self.process is not None
        wait_ready(
            self.process,
            self.is_ready,
            self.ready_timeout_s,
            exited=lambda code: self._failure(f"Triton exited with code {code} during start-up"),
            timed_out=lambda: self._failure(f"Triton was not ready after {self.ready_timeout_s:.0f} s"),
        )

    def models(self) -> list[dict[str, str]]:
        """Triton's repository index (name, version, state, reason) through the admin-keyed API."""
        request = urllib.request.Request(
            f"{self.http_url}/v2/repository/index",
            data=b"{}",
            method="POST",
            headers={flags.ADMIN_KEY_HEADER: self.admin_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return list(json.loads(response.read()))

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop gracefully: in-flight requests finish, new ones are refused. Returns the exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            code = terminate(process, timeout_s if timeout_s is not None else self.exit_timeout_s + 15)
            self._kill_stragglers(process.pid)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    @staticmethod
    def _kill_stragglers(pgid: int) -> None:
        # Python-backend stubs live in Triton's process group; never leave one behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
