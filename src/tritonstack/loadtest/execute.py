"""One load test, or a capacity search, from an SLO to a :class:`RunResult`.

Runs in the process that makes the verdict (gevent already patched in): the
pre-flight request, the Triton metrics scraper, the Prometheus exporter and the
Locust session around the load steps.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonstack._exceptions import TritonStackError
from tritonstack.in_triton import contract
from tritonstack.loadtest.exporter import DEFAULT_ADDR, ClientMetricsExporter, LoadTestMetrics
from tritonstack.loadtest.live import LiveRate, next_users, planned_users
from tritonstack.loadtest.result import CapacityResult, CapacityStep, RunResult
from tritonstack.loadtest.runner import LoadSession, StepWindow
from tritonstack.loadtest.users import UserSettings, client_call, make_client
from tritonstack.loadtest.verdict import evaluate, violated
from tritonstack.measure.errors import LoadTestError, ServerUnreachableError
from tritonstack.measure.progress import Progress
from tritonstack.measure.samples import Sample, summarize
from tritonstack.measure.slo import SLO
from tritonstack.measure.triton_metrics import MetricsScraper, Snapshot
from tritonstack.server import flags

log = logging.getLogger(__name__)
Say = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    host: str
    processes: int = 1
    metrics_url: str | None = None  # Triton's Prometheus endpoint; None: do not scrape
    exporter_port: int = 0  # 0: no exporter
    exporter_addr: str = DEFAULT_ADDR
    scrape_interval_s: float = 1.0


def default_metrics_url(host: str) -> str | None:
    """Triton's metrics endpoint next to a gRPC ``host``: same machine, the standard metrics port."""
    match = re.fullmatch(r"(?:[a-z]+://)?(\[[^\]]+\]|[^:/]+)(?::\d+)?/?", host.strip())
    return f"http://{match.group(1)}:{flags.METRICS_PORT}/metrics" if match else None


def preflight(host: str, settings: UserSettings) -> None:
    """One request before any load: a server that is down fails here, with a clear message (exit 2)."""
    failure: tuple[str, str, str | None] | None = None
    client = make_client(host, settings)
    try:
        # a text-ranking request is a query and a document at least (payload.request_call)
        texts = ["tritonstack load-test pre-flight request"] * (2 if contract.task(settings.task).pair else 1)
        client_call(client, settings.task)(texts)
    except TritonStackError as error:
        failure = (type(error).__name__, error.message, error.hint)
    finally:
        client.close()
    del client
    if failure is None:
        return
    # The SDK's error and its traceback hold the gRPC connection in a reference cycle; collect it now,
    # while gevent's hub runs: left to interpreter shutdown, tritonclient's __del__ closes the channel
    # again and that close never returns.
    gc.collect()
    name, message, hint = failure
    raise ServerUnreachableError(
        f"the load test could not start: model {settings.model!r} at {host} did not answer ({name}: {message})",
        hint=hint or "is Triton running? `tritonstack serve REPOSITORY` starts one; --host takes its gRPC endpoint",
    )


class _Instruments:
    """The exporter and the scraper around a session; both optional."""

    def __init__(self, slo: SLO, options: RunOptions, session: LoadSession, say: Say) -> None:
        self.exporter: ClientMetricsExporter | None = None
        self.scraper: MetricsScraper | None = None
        if options.exporter_port:
            metrics = LoadTestMetrics()
            try:
                self.exporter = ClientMetricsExporter(metrics, options.exporter_port, options.exporter_addr)
            except OSError as error:
                raise LoadTestError(
                    f"cannot serve client metrics on {options.exporter_addr}:{options.exporter_port}: {error.strerror}",
                    hint="pick another --exporter-port, or 0 to disable the exporter",
                ) from error
            session.collector.add_listener(lambda batch: metrics.observe_samples(slo.model, batch))
            say(f"client metrics: {self.exporter.url}")
        if options.metrics_url:
            self.scraper = MetricsScraper(options.metrics_url, options.scrape_interval_s).start()

    def close(self) -> None:
        if self.scraper is not None:
            self.scraper.stop()
        if self.exporter is not None:
            self.exporter.close()


def server_view(scraper: MetricsScraper | None) -> tuple[str | None, list[Snapshot], str | None]:
    """(metrics URL, snapshots, a note on what went wrong) for the report."""
    if scraper is None:
        return None, [], None
    snapshots = scraper.snapshots
    error = None
    if len(snapshots) < 2:
        error = f"could not scrape Triton's metrics at {scraper.url}: {scraper.last_error or 'no data'}"
    elif scraper.failures:
        error = f"{scraper.failures} scrapes of {scraper.url} failed: {scraper.last_error}"
    return scraper.url, list(snapshots), error


def judge(
    slo: SLO,
    host: str,
    samples: Sequence[Sample],
    start_s: float,
    end_s: float,
    processes: int,
    scraper: MetricsScraper | None,
) -> RunResult:
    """The verdict over the samples that started in ``[start_s, end_s)``."""
    samples = [s for s in samples if start_s <= s.start_s < end_s]
    summary = summarize(samples, start_s, end_s, slo.objectives.latency_ms)
    metrics_url, snapshots, metrics_error = server_view(scraper)
    return RunResult(
        slo=slo,
        host=host,
        samples=samples,
        summary=summary,
        checks=evaluate(slo.objectives, summary),
        processes=processes,
        metrics_url=metrics_url,
        metrics_error=metrics_error,
        snapshots=snapshots,
    )


def run_test(
    slo: SLO,
    options: RunOptions,
    say: Say = print,
    settings: UserSettings | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Apply the SLO's load once and judge every objective; ``settings`` replace what the SLO asks of each
    user (``tritonstack canary`` adds its traffic split); ``progress`` shows the run's time and rate."""
    progress = progress or Progress.off()
    settings = settings or UserSettings.from_slo(slo)
    preflight(options.host, settings)
    load = slo.load
    rate = f", paced to {load.arrival_rate_rps:g} req/s" if load.arrival_rate_rps else ""
    say(
        f"load test: {load.users} users (spawn {load.spawn_rate:g}/s{rate}) for {load.duration_s:g} s "
        f"against {slo.model!r} at {options.host}, {options.processes} process(es)"
    )
    with LoadSession(options.host, settings, options.processes) as session:
        instruments = _Instruments(slo, options, session, say)
        progress.plan(load.duration_s, pace=1.0)  # a plan in seconds: the step's duration
        progress.start(f"load test users={load.users}", load.duration_s)
        live = progress.probe = LiveRate(session)
        live.begin(load.users)
        try:
            window = session.step(load.users, load.spawn_rate, load.duration_s)
        finally:
            progress.probe = None
            instruments.close()
        samples = session.collector.samples
    result = judge(slo, options.host, samples, window.start_s, window.end_s, options.processes, instruments.scraper)
    if result.summary.requests == 0:
        raise LoadTestError(f"no request was made in {load.duration_s:g} s", hint="check the worker output above")
    return result


def find_capacity(slo: SLO, options: RunOptions, say: Say = print, progress: Progress | None = None) -> RunResult:
    """Step concurrent users up (closed model) until an objective breaks; the capacity is the highest
    throughput among the steps that held every latency and error objective."""
    progress = progress or Progress.off()
    settings = UserSettings.from_slo(slo, closed_model=True)
    preflight(options.host, settings)
    spec = slo.capacity
    say(
        f"capacity search: {spec.start_users} users, ×{spec.factor:g} per step up to {spec.max_users}, "
        f"{spec.step_duration_s:g} s per step, against {slo.model!r} at {options.host}"
    )
    steps: list[CapacityStep] = []
    windows: list[StepWindow] = []
    with LoadSession(options.host, settings, options.processes) as session:
        instruments = _Instruments(slo, options, session, say)
        plan = planned_users(spec)
        # the most it can take: the search stops at the first step that breaks an objective
        progress.plan(len(plan) * spec.step_duration_s, bound=True)
        live = LiveRate(session)
        try:
            users = spec.start_users
            while True:
                progress.start(f"step {len(steps) + 1}/{len(plan)} users={users}", spec.step_duration_s)
                live.begin(users)
                progress.probe = live
                # All users at once: the step measures a load level, not a ramp.
                window = session.step(users, float(users), spec.step_duration_s)
                progress.probe = None
                windows.append(window)
                summary = summarize(session.collector.samples, window.start_s, window.end_s, slo.objectives.latency_ms)
                step = CapacityStep(users, summary, evaluate(slo.objectives, summary, include_throughput=False))
                steps.append(step)
                broken = ", ".join(c.key for c in violated(step.checks)) or ("no requests" if not step.held else "")
                outcome = "held" if step.held else f"BROKE: {broken}"
                progress.measured(f"{summary.throughput_rps:.1f} req/s, {outcome.split(':')[0]}")
                say(f"  {users:>5} users: {summary.throughput_rps:8.1f} req/s  {outcome}")
                if not step.held or users >= spec.max_users:
                    break
                users = next_users(users, spec.factor, spec.max_users)
        finally:
            progress.probe = None
            instruments.close()
        samples = session.collector.between(windows[0].start_s, windows[-1].end_s)
    capacity = CapacityResult(steps)
    overall = summarize(samples, windows[0].start_s, windows[-1].end_s, slo.objectives.latency_ms)
    judged = capacity.best or steps[0]
    metrics_url, snapshots, metrics_error = server_view(instruments.scraper)
    return RunResult(
        slo=slo,
        host=options.host,
        samples=samples,
        summary=overall,
        checks=evaluate(slo.objectives, judged.summary),
        processes=options.processes,
        metrics_url=metrics_url,
        metrics_error=metrics_error,
        snapshots=snapshots,
        capacity=capacity,
    )


def report_dir_or_default(path: str | None) -> Path:
    from tritonstack.loadtest.report import default_report_dir

    return Path(path) if path else default_report_dir()
