"""``tritonstack bench --soak DURATION``: steady load for a long time; memory, descriptors and errors over time.

A leak in a server shows up as growth, not as a failure. Under a steady
closed-loop load (``concurrency`` callers, one request at a time each -- one text,
or a reranker's query and documents (``workload.py``) -- cycling through the
benchmark corpus), every ``sample_every_s`` the soak records, for
Triton and for each Python-backend stub (one process per model instance, named
by the instance), its resident memory (``VmRSS``) and open file descriptors,
and the calls that succeeded and failed since the previous sample.

Growth is judged after the warm-up (allocator pools, ONNX Runtime arenas and
gRPC buffers fill first): the least-squares slope of each process's RSS,
expressed in % of its mean post-warm-up RSS per 10 minutes. The target is under
2 % per 10 minutes for every process and 0 errors. A short soak extrapolates
small absolute changes to a large rate: judge leaks on runs of 10 minutes or more.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonstack.bench.errors import BenchError
from tritonstack.bench.workload import BenchWorkload
from tritonstack.measure.progress import Progress
from tritonstack.server.processes import ProcessInfo, process_tree

Log = Callable[[str], None]

GROWTH_TARGET_PCT_PER_10MIN = 2.0
GROWTH_WINDOW_S = 600.0


@dataclass(frozen=True)
class Reading:
    """What the soak saw at one moment: the calls since the previous reading, and Triton's processes."""

    elapsed_s: float
    ok: int  # calls that succeeded since the previous sample
    errors: int  # calls that failed since the previous sample
    processes: tuple[ProcessInfo, ...]  # Triton and its stubs, live ones


@dataclass(frozen=True)
class ProcessGrowth:
    name: str
    rss_start_mib: float  # first sample after the warm-up
    rss_end_mib: float
    rss_growth_pct_per_10min: float
    fds_start: int
    fds_end: int

    @property
    def holds(self) -> bool:
        return self.rss_growth_pct_per_10min < GROWTH_TARGET_PCT_PER_10MIN


@dataclass
class SoakResult:
    duration_s: float
    warmup_s: float
    concurrency: int
    samples: list[Reading] = field(default_factory=list)
    first_error: str | None = None

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)

    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.samples)

    def growth(self) -> list[ProcessGrowth]:
        """Per process, over the samples after the warm-up (a process that restarted counts as a new one)."""
        steady = [s for s in self.samples if s.elapsed_s >= self.warmup_s]
        by_process: dict[tuple[str, int], list[tuple[float, ProcessInfo]]] = {}
        for sample in steady:
            for process in sample.processes:
                by_process.setdefault((process.name, process.pid), []).append((sample.elapsed_s, process))
        rows = []
        for (name, _pid), series in sorted(by_process.items()):
            if len(series) < 2:
                continue
            times = [t for t, _ in series]
            rss = [float(p.rss_bytes) for _, p in series]
            rows.append(
                ProcessGrowth(
                    name=name,
                    rss_start_mib=rss[0] / 2**20,
                    rss_end_mib=rss[-1] / 2**20,
                    rss_growth_pct_per_10min=growth_pct(times, rss, GROWTH_WINDOW_S),
                    fds_start=series[0][1].open_fds,
                    fds_end=series[-1][1].open_fds,
                )
            )
        return rows


def growth_pct(times_s: Sequence[float], values: Sequence[float], per_s: float) -> float:
    """The least-squares slope of ``values`` over ``times_s``, in % of their mean per ``per_s`` seconds."""
    n = len(times_s)
    if n < 2 or len(values) != n:
        raise ValueError("need at least two (time, value) pairs")
    mean_t, mean_v = sum(times_s) / n, sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in times_s)
    if spread == 0 or mean_v == 0:
        return 0.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values, strict=True)) / spread
    return 100.0 * slope * per_s / mean_v


def sample_count(duration_s: float, sample_every_s: float) -> int:
    """The samples a soak of ``duration_s`` takes, one every ``sample_every_s``: the last at or before the end."""
    return int(duration_s / sample_every_s + 1e-9)


# -- the run -----------------------------------------------------------------
async def _soak(
    url: str,
    model: str,
    root_pid: int,
    workload: BenchWorkload,
    result: SoakResult,
    sample_every_s: float,
    log: Log,
    progress: Progress,
) -> None:
    from tritonstack.client import AsyncClient

    counts = {"ok": 0, "errors": 0}
    stop = asyncio.Event()
    async with AsyncClient(url, model=model, timeouts=30.0) as client:
        send = workload.sender(client)  # the task's SDK call: embed, classify, rerank(query, documents)
        await send(0)  # connect and cache the model's metadata first

        async def caller(offset: int) -> None:
            index = offset
            while not stop.is_set():
                try:
                    await send(index % len(workload))
                    counts["ok"] += 1
                except Exception as error:  # a failed call is a measured error of the system under test
                    counts["errors"] += 1
                    result.first_error = result.first_error or f"{type(error).__name__}: {error}"
                    await asyncio.sleep(0.01)
                index += result.concurrency

        callers = [asyncio.create_task(caller(k)) for k in range(result.concurrency)]
        samples = sample_count(result.duration_s, sample_every_s)
        # a plan in seconds, from here: Triton is up, and each sample takes its interval
        progress.plan(samples * sample_every_s, pace=1.0)
        started = time.perf_counter()
        try:
            for number in range(1, samples + 1):
                due_s = number * sample_every_s
                phase = "warm-up" if due_s < result.warmup_s else "growth judged"  # as growth() tells them apart
                progress.start(f"soak sample {number}/{samples} ({phase})", sample_every_s)
                await asyncio.sleep(max(0.0, started + due_s - time.perf_counter()))
                processes = tuple(p for p in process_tree(root_pid) if p.alive)
                sample = Reading(time.perf_counter() - started, counts["ok"], counts["errors"], processes)
                counts.update(ok=0, errors=0)
                result.samples.append(sample)
                rss = sum(p.rss_bytes for p in processes) / 2**20
                errors = f", {sample.errors} errors" if sample.errors else ""
                progress.measured(f"{sample.ok / sample_every_s:.1f} calls/s{errors}, RSS {rss:.0f} MiB")
                log(
                    f"    {sample.elapsed_s:7.0f} s  {sample.ok / sample_every_s:7.1f} calls/s  "
                    f"{sample.errors:4d} errors  RSS {rss:8.1f} MiB in {len(processes)} processes"
                )
        finally:
            stop.set()
            await asyncio.gather(*callers, return_exceptions=True)


def run_soak(
    repository: Path,
    model: str,
    workload: BenchWorkload,
    *,
    duration_s: float,
    warmup_s: float,
    concurrency: int = 4,
    sample_every_s: float = 10.0,
    log_path: Path | None = None,
    log: Log = print,
    progress: Progress | None = None,
) -> SoakResult:
    """Start Triton over ``repository``, load ``model`` steadily for ``duration_s`` with the requests of
    ``workload``, sample, stop Triton; ``progress`` shows the sample being taken (``measure.progress``), ``log``
    should step aside for it (``Progress.write``)."""
    from tritonstack.server import EmbeddedServer, ServerStartError

    progress = progress or Progress.off()

    if sample_every_s <= 0 or duration_s < 2 * sample_every_s:
        raise BenchError(
            f"a soak of {duration_s:g} s with samples every {sample_every_s:g} s has fewer than two samples",
            hint="lengthen --soak or shorten --sample-every-s",
        )
    if warmup_s >= duration_s - sample_every_s:
        raise BenchError(
            f"the warm-up ({warmup_s:g} s) leaves fewer than two samples of a {duration_s:g} s soak",
            hint="lengthen --soak or shorten --soak-warmup",
        )
    result = SoakResult(duration_s=duration_s, warmup_s=warmup_s, concurrency=concurrency)
    server = EmbeddedServer(repository, log_path=log_path)
    progress.start("starting Triton")
    try:
        server.start()
    except ServerStartError as error:
        raise BenchError(f"Triton did not start over {repository}: {error.message}", hint=error.hint) from error
    try:
        asyncio.run(_soak(server.grpc_url, model, server.pid, workload, result, sample_every_s, log, progress))
    finally:
        progress.start("stopping Triton")
        server.stop()
    return result


# -- report ------------------------------------------------------------------
def table(result: SoakResult) -> str:
    rows = result.growth()
    width = max([len("process"), *(len(r.name) for r in rows)])
    lines = [
        f"{'process':<{width}}  {'RSS start':>10}  {'RSS end':>9}  {'growth %/10min':>14}  {'fds start':>9}  "
        f"{'fds end':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r.name:<{width}}  {r.rss_start_mib:8.1f}Mi  {r.rss_end_mib:7.1f}Mi  "
            f"{r.rss_growth_pct_per_10min:+14.2f}  {r.fds_start:9d}  {r.fds_end:7d}"
        )
    total = result.ok + result.errors
    steady_s = result.duration_s - result.warmup_s
    lines.append("")
    lines.append(
        f"calls: {result.ok} ok, {result.errors} failed of {total} over {result.duration_s:g} s "
        f"({result.concurrency} callers; growth judged on the last {steady_s:g} s, after {result.warmup_s:g} s "
        "of warm-up)"
    )
    if result.first_error:
        lines.append(f"first error: {result.first_error}")
    worst = max(rows, key=lambda r: r.rss_growth_pct_per_10min, default=None)
    if worst is not None:
        verdict = "met" if worst.holds else "MISSED"
        lines.append(
            f"target RSS growth < {GROWTH_TARGET_PCT_PER_10MIN:g} %/10 min: {verdict} "
            f"(worst: {worst.name} {worst.rss_growth_pct_per_10min:+.2f} %/10 min)"
        )
    lines.append(f"target 0 errors: {'met' if result.errors == 0 else 'MISSED'}")
    if steady_s < GROWTH_WINDOW_S:
        lines.append(
            f"note: {steady_s:g} s after the warm-up is shorter than 10 minutes: the rates extrapolate a short "
            "window (run --soak 12m or longer to judge a leak)"
        )
    return "\n".join(lines)


def write(result: SoakResult, report_dir: Path) -> dict[str, Path]:
    """``soak.json`` (settings, every sample, the growth rows) and ``soak.csv`` (one row per sample and process)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": report_dir / "soak.json", "samples": report_dir / "soak.csv"}
    summary = {
        "duration_s": result.duration_s,
        "warmup_s": result.warmup_s,
        "concurrency": result.concurrency,
        "ok": result.ok,
        "errors": result.errors,
        "first_error": result.first_error,
        "growth_target_pct_per_10min": GROWTH_TARGET_PCT_PER_10MIN,
        "growth": [{**asdict(r), "holds": r.holds} for r in result.growth()],
        "samples": [asdict(s) for s in result.samples],
    }
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    with paths["samples"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["elapsed_s", "ok", "errors", "process", "pid", "rss_bytes", "open_fds"])
        for s in result.samples:
            for p in s.processes:
                writer.writerow([f"{s.elapsed_s:.3f}", s.ok, s.errors, p.name, p.pid, p.rss_bytes, p.open_fds])
    return paths
