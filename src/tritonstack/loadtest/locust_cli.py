"""tritonstack inside the ``locust`` command: flags, sample shipping, verdict and report.

``loadtest/locustfile.py`` calls :func:`install`; then ``locust -f loadtest/locustfile.py``
works standalone, with ``--processes N`` and as ``--master`` / ``--worker``. The load
shape comes from Locust's own flags (``-u``, ``-r``, ``-t``, or ``LOCUST_USERS`` ...);
the model, payload and objectives from the SLO file. When the test stops, the
master (or the single process) prints the verdict table, writes the report and
sets the exit status: 0 held, 1 violated, 2 nothing measured.

Flags added (each also read from the environment variable in brackets):
``--slo`` (TRITONSTACK_SLO), ``--model`` (TRITONSTACK_MODEL), ``--texts``
(TRITONSTACK_TEXTS), ``--p50-ms``/``--p95-ms``/``--p99-ms`` (TRITONSTACK_P99_MS ...),
``--report-dir`` (TRITONSTACK_REPORT_DIR),
``--triton-metrics-url`` (TRITONSTACK_TRITON_METRICS_URL), ``--exporter-port``
(TRITONSTACK_EXPORTER_PORT), ``--exporter-addr`` (TRITONSTACK_EXPORTER_ADDR).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from tritonstack._exceptions import TritonStackError
from tritonstack.loadtest.exporter import DEFAULT_ADDR, DEFAULT_PORT, ClientMetricsExporter, LoadTestMetrics
from tritonstack.loadtest.plugin import SampleCollector
from tritonstack.loadtest.users import close_clients, exit_now, prepare_process
from tritonstack.measure.slo import FLAG_PERCENTILES, SLO, latency_overrides, load_slo
from tritonstack.measure.triton_metrics import MetricsScraper

log = logging.getLogger("tritonstack.loadtest")


class _Run:
    """State of the ``locust`` process between its events."""

    def __init__(self) -> None:
        self.collector: SampleCollector | None = None
        self.exporter: ClientMetricsExporter | None = None
        self.scraper: MetricsScraper | None = None
        self.start_s = 0.0
        self.end_s = 0.0
        self.is_worker = False


_RUN = _Run()


def install(default_slo: Path) -> None:
    """Register the listeners on Locust's global events (call from the locustfile, at import)."""

    @events.init_command_line_parser.add_listener
    def _(parser: Any) -> None:
        group = parser.add_argument_group("tritonstack")
        group.add_argument("--slo", default=str(default_slo), env_var="TRITONSTACK_SLO", help="the SLO file")
        group.add_argument("--model", default="", env_var="TRITONSTACK_MODEL", help="override the SLO's model")
        group.add_argument("--texts", default="", env_var="TRITONSTACK_TEXTS", help="override payload.texts")
        for percentile in FLAG_PERCENTILES:
            group.add_argument(
                f"--p{percentile}-ms", type=float, default=None, env_var=f"TRITONSTACK_P{percentile}_MS",
                help=f"override objectives.p{percentile}_ms",
            )  # fmt: skip
        group.add_argument(
            "--report-dir", default="", env_var="TRITONSTACK_REPORT_DIR", help="report folder (reports/<timestamp>)"
        )
        group.add_argument(
            "--triton-metrics-url",
            default="",
            env_var="TRITONSTACK_TRITON_METRICS_URL",
            help="Triton's /metrics to scrape (default: the host's port 8002; 'none' disables)",
        )
        group.add_argument(
            "--exporter-port", type=int, default=DEFAULT_PORT, env_var="TRITONSTACK_EXPORTER_PORT",
            help="client-latency metrics for Prometheus on this port (master or single process); 0 disables",
        )  # fmt: skip
        group.add_argument(
            "--exporter-addr", default=DEFAULT_ADDR, env_var="TRITONSTACK_EXPORTER_ADDR",
            help="the exporter's bind address (0.0.0.0 inside a container that Prometheus scrapes)",
        )  # fmt: skip

    events.init.add_listener(_on_init)
    events.test_start.add_listener(_on_test_start)
    events.test_stopping.add_listener(_on_test_stopping)
    events.test_stop.add_listener(_on_test_stop)
    events.quit.add_listener(_on_quit)


def _slo(environment: Environment) -> SLO:
    options = environment.parsed_options
    assert options is not None
    return load_slo(options.slo).with_overrides(model=options.model or None, latency_ms=latency_overrides(options))


def _on_init(environment: Environment, runner: Any = None, **_: Any) -> None:
    _RUN.collector = SampleCollector(environment)
    _RUN.collector.attach(runner)
    _RUN.is_worker = isinstance(runner, WorkerRunner)
    if not isinstance(runner, MasterRunner):
        prepare_process()  # this process runs users (fires after --processes forks)
    if isinstance(runner, WorkerRunner) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    try:
        slo = _slo(environment)  # fail at start, not after the whole run
    except TritonStackError as error:
        log.error("%s%s", error.message, f" (hint: {error.hint})" if error.hint else "")
        environment.process_exit_code = 2
        runner.quit()
        return
    if options.exporter_port:
        metrics = LoadTestMetrics()
        _RUN.exporter = ClientMetricsExporter(metrics, options.exporter_port, options.exporter_addr)
        _RUN.collector.add_listener(lambda batch: metrics.observe_samples(slo.model, batch))
        log.info("client metrics on %s", _RUN.exporter.url)


def _on_test_start(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    options = environment.parsed_options
    if isinstance(runner, MasterRunner) and options is not None:
        # Custom options travel to the workers with each spawn message; num_users does not.
        options.tritonstack_users = runner.target_user_count or options.num_users
    _RUN.start_s = time.time()
    from tritonstack.loadtest.execute import default_metrics_url

    url = (options.triton_metrics_url if options else "") or default_metrics_url(environment.host or "")
    if url and url != "none":
        _RUN.scraper = MetricsScraper(url).start()


def _on_test_stopping(environment: Environment, **_: Any) -> None:
    """Before Locust stops the users: end the window, stop new requests, wait for those in flight
    and -- on a master -- for every worker's last samples. Locust's own quit does not wait for
    them (it sends the workers "quit" after the master's ``test_stop``)."""
    if isinstance(environment.runner, WorkerRunner) or _RUN.collector is None:
        return
    _RUN.end_s = time.time()
    timeout_s = 10.0
    with contextlib.suppress(TritonStackError):
        timeout_s = _slo(environment).load.timeout_s
    if not _RUN.collector.drain(timeout_s + 1.0):
        log.warning("not every worker reported its last samples; the verdict may miss some")


def _on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or _RUN.collector is None:
        return
    from tritonstack.loadtest.cache_report import cache_report
    from tritonstack.loadtest.execute import judge
    from tritonstack.loadtest.report import default_report_dir, write_report
    from tritonstack.loadtest.verdict import render_table, verdict_line

    end_s = _RUN.end_s or time.time()
    scraper, _RUN.scraper = _RUN.scraper, None
    if scraper is not None:
        scraper.stop()
    slo = _slo(environment)
    processes = max(1, len(environment.runner.clients)) if isinstance(environment.runner, MasterRunner) else 1
    result = judge(slo, environment.host or "", _RUN.collector.samples, _RUN.start_s, end_s, processes, scraper)
    if result.summary.requests == 0:
        print("tritonstack: no request completed; no verdict")
        environment.process_exit_code = 2
        return
    cache = cache_report(result)
    cache_text = "\n" + cache.render() + "\n" if cache else ""
    print("\n" + render_table(result.checks, result.cost) + "\n" + cache_text + verdict_line(result.checks))
    options = environment.parsed_options
    directory = Path(options.report_dir) if options is not None and options.report_dir else default_report_dir()
    try:
        print(f"report: {write_report(result, directory)}")
    except OSError as error:
        print(f"tritonstack: could not write the report to {directory}: {error} (set --report-dir)")
    environment.process_exit_code = 0 if result.passed else 1


def _on_quit(exit_code: int, **_: Any) -> None:
    if _RUN.exporter is not None:
        _RUN.exporter.close()
        _RUN.exporter = None
    close_clients()
    if _RUN.is_worker:
        exit_now(exit_code)  # a worker writes no files; see exit_now for the hang this avoids
