"""The embedded Triton server: the ``tritonserver`` binary of the nvidia-pytriton wheel.

Triton itself runs in a child process. Before it starts we prepare a writable
backend folder (the Python backend, the stub for the running Python, and our
Python-based ``onnxruntime`` backend), pick ports, and afterwards wait until
Triton reports ready -- or report each model that failed with Triton's own
reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tritonstack._gpu import Gpu, visible_gpus
from tritonstack._process import ChildProcess, ChildService, free_port, http_ok
from tritonstack.in_triton import manifest
from tritonstack.repository import staging
from tritonstack.repository.lock import RepositoryBusyError
from tritonstack.server import flags, shared_memory
from tritonstack.server.admin_key import AdminKey
from tritonstack.server.errors import ServerError, ServerStartError
from tritonstack.server.exposure import is_loopback, require_explicit_exposure
from tritonstack.server.response_cache import embedded_cache
from tritonstack.server.supervisor import StubSupervisor

BACKENDS_SOURCE = Path(__file__).parent.parent / "in_triton" / "backends"
# A model parameter only the embedded server's reloads set (``reload_model``): how often it was reloaded.
RELOAD_PARAMETER = "tritonstack_reload"


def marked_for_reload(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (``ModelConfig`` JSON) with ``RELOAD_PARAMETER`` counted up: loaded with it, the model is
    loaded whole -- new instances, the old ones retired -- because Triton sees a changed config. A change of
    ``instance_group`` alone only updates instances in place (Triton ignores it when comparing configs),
    and an instance kept that way keeps what it set up at its start: a dead stub, its thread count."""
    marked = json.loads(json.dumps(config))
    parameters = marked.setdefault("parameters", {})
    generation = int(parameters.get(RELOAD_PARAMETER, {}).get("string_value") or 0) + 1
    parameters[RELOAD_PARAMETER] = {"string_value": str(generation)}
    return marked


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
    # the Python-based onnxruntime backend: its model.py and the siblings it loads (export copies the shared ones
    # beside the text-in Python models' model.py from the same manifest)
    (destination / "onnxruntime").mkdir()
    manifest.write(manifest.ONNXRUNTIME_BACKEND_FILES, destination / "onnxruntime")
    return destination


def _ensure_port_free(address: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as Triton binds (SO_REUSEADDR): a port whose last connection is in TIME_WAIT is free to it, and
        # only a socket that listens there makes the bind fail
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            raise ServerStartError(
                f"{what} port {port} on {address} is already in use",
                hint=f"stop whatever listens there, or pass --{what.lower()}-port 0 to pick a free port",
            ) from None


def checked_extra_args(extra_args: Sequence[str]) -> tuple[str, ...]:
    """``extra_args`` unless one sets what the server checked or guards: the addresses and ports it binds
    (the exposure check and the port pre-check ran on ``bind_address`` and the ports), or the restricted
    APIs' key. Triton parses its flags with ``getopt_long``, which takes any unambiguous prefix of a flag
    (``--http-addr``), so a prefix counts too. :class:`ServerError` naming the flag and its parameter."""
    for arg in extra_args:
        if not arg.startswith("-"):
            continue  # a flag's value
        name = arg.lstrip("-").split("=", 1)[0]
        reserved = [flag for flag in flags.RESERVED_FLAGS if name and flag.startswith(name)]
        if reserved:
            raise ServerError(
                f"extra_args may not set {arg.split('=', 1)[0]}: the server sets {', '.join(reserved)} itself",
                hint="pass bind_address= (with expose=), the *_port= arguments or admin_key= instead",
            )
    return tuple(extra_args)


def model_errors_from_log(text: str) -> dict[str, str]:
    """Model name -> Triton's reason, for every 'failed to load' line of a server log."""
    errors: dict[str, str] = {}
    for line in text.splitlines():
        match = _FAILED_LOAD.search(line)
        if match:
            errors.setdefault(match["model"], match["reason"].replace('\\"', '"').replace("\\n", " "))
    return errors


class EmbeddedServer(ChildService):
    """Run Triton over ``repository`` on loopback; a context manager.

    Ports of 0 pick free ones. ``admin_key`` guards the restricted APIs (model
    repository, logging, trace, shared memory); ``None`` takes
    ``$TRITONSTACK_ADMIN_KEY`` or a fresh random key. ``restart_dead_stubs``
    reloads a model whose Python-backend stub died (see ``supervisor``).
    ``cache_size_bytes`` sizes the local response cache; ``None`` starts one of
    the default size when a model enables the cache (see ``response_cache``).
    Shared-memory regions never outlive the server (see ``shared_memory``).
    ``gpu_metrics`` turns Triton's ``nv_gpu_*`` metrics on or off; ``None`` turns
    them on exactly when this process sees a GPU (``gpus``, known once started).
    ``expose`` and ``allow_local_key_exposure`` are ``serve``'s ``--expose`` and ``--allow-local-key-exposure``
    (``exposure.py``).
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
        restart_dead_stubs: bool = True,
        gpu_metrics: bool | None = None,
        cache_size_bytes: int | None = None,
        expose: bool = False,
        allow_local_key_exposure: bool = False,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.bind_address = bind_address
        key = AdminKey.resolve(admin_key)
        if not is_loopback(bind_address):  # the library binds beyond loopback on the same terms as `serve`
            require_explicit_exposure(
                bind_address, expose=expose, key=key, allow_local_key_exposure=allow_local_key_exposure
            )
        self.admin_key = key.value
        self.extra_args = checked_extra_args(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self._requested_ports = {"HTTP": http_port, "gRPC": grpc_port, "metrics": metrics_port}
        self._log_path = Path(log_path) if log_path else None
        self._workdir: Path | None = None
        self._child: ChildProcess | None = None
        self._shm_prefix = shared_memory.new_prefix()
        self.supervisor: StubSupervisor | None = None
        self.restart_dead_stubs = restart_dead_stubs
        self._gpu_metrics = gpu_metrics
        self.gpus: tuple[Gpu, ...] = ()
        self._cache_size_bytes = cache_size_bytes
        self.cache: flags.LocalCache | None = None  # decided at start, from the repository's configs
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
    def gpu_metrics(self) -> bool:
        """Whether Triton exports ``nv_gpu_*`` (as asked, else whether a GPU was seen at start)."""
        return bool(self.gpus) if self._gpu_metrics is None else self._gpu_metrics

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """Triton's process while it runs (``None`` before :meth:`start` and after :meth:`stop`)."""
        return self._child.process if self._child is not None else None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("the server has not been started")
        return self.process.pid

    # -- lifecycle ---------------------------------------------------------
    def _ports(self) -> None:
        try:
            socket.getaddrinfo(self.bind_address, None, socket.AF_INET)
        except socket.gaierror:
            raise ServerStartError(
                f"cannot bind {self.bind_address!r}: the embedded server listens on IPv4 addresses only",
                hint=f"use {flags.LOOPBACK} (the default), or an IPv4 address of this host with --expose",
            ) from None
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
            gpu_metrics=self.gpu_metrics,
            cache=self.cache,
        )
        # Triton looks for caches in /opt/tritonserver/caches; the wheel has its `local` cache next to its binary.
        cache_directory = [f"--cache-directory={pytriton_dir() / 'caches'}"] if self.cache else []
        return [
            str(pytriton_dir() / "bin" / "tritonserver"),
            *triton_flags.args(),
            f"--backend-directory={backend_dir}",
            *cache_directory,
            *shared_memory.backend_args(self._shm_prefix),
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
        try:  # a killed writer's staging folder: Triton would load it
            staging.sweep_before_serving(self.repository)
        except RepositoryBusyError as error:
            raise ServerStartError(error.message, hint=error.hint) from None
        self.gpus = visible_gpus()
        self.cache = embedded_cache(self.repository, self._cache_size_bytes)
        shared_memory.remove_orphans()
        self._workdir = Path(tempfile.mkdtemp(prefix="tritonstack-server-"))
        if self._log_path is None:
            # outside the work folder, so that the log outlives a failed start
            descriptor, name = tempfile.mkstemp(prefix="tritonstack-triton-", suffix=".log")
            os.close(descriptor)
            self._log_path = Path(name)
        backend_dir = prepare_backends(self._workdir / "backends")
        self._child = ChildProcess(
            "Triton",
            self.command(backend_dir),
            self._log_path,
            env=self._environment(),
            # Triton waits up to exit_timeout_s for in-flight requests, then unloads the models.
            stop_timeout_s=self.exit_timeout_s + 15,
        )
        try:
            self._child.start(self.is_ready, self.ready_timeout_s, self._failure)
            if self.restart_dead_stubs:
                self.supervisor = StubSupervisor(self.pid, self.ready_models, self.reload_model).start()
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        return http_ok(f"{self.http_url}/v2/health/ready")

    def _failure(self, headline: str) -> ServerStartError:
        assert self._child is not None
        log = self._child.log_text()
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

    def _admin(self, path: str, body: object, timeout_s: float) -> object:
        request = urllib.request.Request(
            f"{self.http_url}/v2/repository/{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={flags.ADMIN_KEY_HEADER: self.admin_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read()
        return json.loads(text) if text else None

    def models(self) -> list[dict[str, str]]:
        """Triton's repository index (name, version, state, reason) through the admin-keyed API."""
        return list(self._admin("index", {}, timeout_s=5))  # type: ignore[call-overload]

    def ready_models(self) -> set[str]:
        return {m["name"] for m in self.models() if m.get("state") == "READY"}

    def reload_model(self, name: str, timeout_s: float = 120.0) -> None:
        """Load model ``name`` afresh: every instance new, the old ones retired once the new ones serve.

        Triton compares the new config with the running one ignoring ``instance_group``: an unchanged
        config only updates the instances in place, and Triton 2.51 then sometimes keeps an instance whose
        stub died. So the config it runs with is loaded with its ``RELOAD_PARAMETER`` counted up, a change
        that makes Triton load the whole model again; both backends ignore the parameter.
        """
        with urllib.request.urlopen(f"{self.http_url}/v2/models/{name}/config", timeout=5) as response:
            config = json.loads(response.read())
        self.load_model(name, json.dumps(marked_for_reload(config)), timeout_s)

    def load_model(self, name: str, config: str, timeout_s: float = 120.0) -> None:
        """Load model ``name`` with ``config`` (``ModelConfig`` JSON) in place of its ``config.pbtxt``, which
        stays as it is; ensembles that use it are reloaded by Triton. :class:`ServerError` with Triton's
        reason when the load fails (the previous instances then keep serving)."""
        try:
            self._admin(f"models/{name}/load", {"parameters": {"config": config}}, timeout_s)
        except urllib.error.HTTPError as error:
            reason = error.read().decode(errors="replace")
            raise ServerError(f"Triton could not load {name!r} with the new config: {reason}") from error

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop gracefully: in-flight requests finish, new ones are refused. Returns the exit code."""
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        code = self._child.stop(timeout_s) if self._child is not None else None
        shared_memory.remove(self._shm_prefix)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code
