"""Run Prometheus locally against the embedded Triton server, without Docker.

``monitoring/prometheus/prometheus.yml`` is written for docker-compose (targets
``triton:8002``, ``gateway:8080`` and ``loadtest:9646``). :func:`render_config` turns it into a
config for loopback targets, with the rule files as absolute paths, and
:class:`LocalPrometheus` starts the ``prometheus`` binary (Debian package
``prometheus``) on a loopback port with its own storage directory.
``tritonstack monitor`` runs the two; the tests use them to run a real
Prometheus against a real server.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tritonstack._process import LOOPBACK, ChildProcess, ChildService, free_port, http_ok
from tritonstack.monitoring.errors import MonitoringError

TRITON_JOB = "triton"
LOADTEST_JOB = "tritonstack-loadtest"
GATEWAY_JOB = "tritonstack-gateway"
DEFAULT_PROMETHEUS_PORT = 9090

_PROMETHEUS_CONFIG = Path("prometheus") / "prometheus.yml"
# src/tritonstack/monitoring/local.py -> the checkout's top level
_CHECKOUT = Path(__file__).resolve().parents[3]


def find_monitoring_dir(explicit: Path | None = None) -> Path:
    """The ``monitoring/`` directory: ``explicit`` if given, else the one of this
    source checkout (the directory is not part of the installed package)."""
    candidates = [explicit] if explicit is not None else [_CHECKOUT / "monitoring"]
    for candidate in candidates:
        if (candidate / _PROMETHEUS_CONFIG).is_file():
            return candidate
    raise MonitoringError(
        f"no {_PROMETHEUS_CONFIG} under {candidates[0]}",
        hint="pass --monitoring-dir pointing at the repository's monitoring/ directory",
    )


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as exc:  # PyYAML comes with the loadtest/dev extras
        raise MonitoringError(
            "reading the Prometheus config needs PyYAML", hint="pip install 'tritonstack[metrics]' or pyyaml"
        ) from exc
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise MonitoringError(f"{path} is not a YAML mapping")
    return loaded


def _duration(seconds: float) -> str:
    # Prometheus durations take integer units: express fractions in milliseconds.
    return f"{round(seconds * 1000)}ms" if seconds != int(seconds) else f"{int(seconds)}s"


def render_config(
    monitoring_dir: Path,
    *,
    triton_targets: Sequence[str],
    loadtest_targets: Sequence[str] = (),
    gateway_targets: Sequence[str] = (),
    scrape_interval_s: float | None = None,
    evaluation_interval_s: float | None = None,
) -> dict[str, Any]:
    """``prometheus.yml`` with the given ``host:port`` targets and absolute rule paths.

    The job names, metrics paths and rule files stay those of the committed file,
    so alert rules that select ``job="triton"`` hold locally too. A job without
    targets is dropped. ``scrape_interval_s`` also caps the scrape timeout, which
    Prometheus requires to be no longer than the interval.
    """
    config_path = monitoring_dir / _PROMETHEUS_CONFIG
    config = _load_yaml(config_path)
    config["rule_files"] = [str((config_path.parent / pattern).resolve()) for pattern in config.get("rule_files", [])]
    targets = {
        TRITON_JOB: list(triton_targets),
        LOADTEST_JOB: list(loadtest_targets),
        GATEWAY_JOB: list(gateway_targets),
    }
    jobs = []
    for job in config.get("scrape_configs", []):
        name = job["job_name"]
        if name not in targets:
            raise MonitoringError(f"{config_path} has a job {name!r} this runner does not know how to target")
        if not targets[name]:
            continue
        job["static_configs"] = [{"targets": targets[name]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    glob = config.setdefault("global", {})
    if scrape_interval_s is not None:
        glob["scrape_interval"] = _duration(scrape_interval_s)
        glob["scrape_timeout"] = _duration(scrape_interval_s)
        for job in jobs:
            job.pop("scrape_interval", None)
            job.pop("scrape_timeout", None)
    if evaluation_interval_s is not None:
        glob["evaluation_interval"] = _duration(evaluation_interval_s)
    return config


class LocalPrometheus(ChildService):
    """A ``prometheus`` process on ``127.0.0.1:port`` for a rendered config.

    Use as a context manager; ``port=0`` picks a free port. Storage goes to
    ``storage_dir`` (a temporary directory, removed on exit, when not given).
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        port: int = 0,
        storage_dir: Path | None = None,
        binary: str = "prometheus",
        startup_timeout_s: float = 30.0,
    ) -> None:
        self._config = config
        self._port = port
        self._storage_dir = storage_dir
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._child: ChildProcess | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.url = ""
        self.log_path: Path | None = None

    def start(self) -> LocalPrometheus:
        executable = shutil.which(self._binary)
        if executable is None:
            raise MonitoringError(
                f"{self._binary!r} not found on PATH", hint="apt-get install --no-install-recommends prometheus"
            )
        self._workdir = tempfile.TemporaryDirectory(prefix="tritonstack-prometheus-")
        workdir = Path(self._workdir.name)
        config_file = workdir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed for the rendered copy.
        config_file.write_text(json.dumps(self._config, indent=2))
        storage = self._storage_dir or workdir / "data"
        port = self._port or free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        self.log_path = workdir / "prometheus.log"
        command = [
            executable,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ]
        child = self._child = ChildProcess("prometheus", command, self.log_path)
        try:
            child.start(
                lambda: http_ok(f"{self.url}/-/ready"),
                self._startup_timeout_s,
                lambda headline: MonitoringError(headline, hint=child.log_tail(20)),
            )
        except BaseException:
            self.stop()  # the work folder
            raise
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now through ``/api/v1/query``; the result vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise MonitoringError(f"query failed: {body.get('error', body)}", hint=expr)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def get(self, path: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=10) as response:
            return json.load(response)["data"]

    def wait_for_targets(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Block until every target has been scraped successfully; return them.

        Prometheus hands new targets to its scrapers up to 5 s after it is ready,
        so data a caller produces right after :meth:`start` may go unseen.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            targets: list[dict[str, Any]] = self.get("targets")["activeTargets"]
            down = [t["scrapeUrl"] for t in targets if t["health"] != "up"]
            if targets and not down:
                return targets
            if time.monotonic() >= deadline:
                raise MonitoringError(
                    f"targets not scraped within {timeout_s} s: {', '.join(down) or 'none configured'}",
                    hint="is the server running and its metrics port the one given?",
                )
            time.sleep(0.5)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
