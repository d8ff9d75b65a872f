"""``tritonstack bench --sdk``: what the SDK costs on top of plain ``tritonclient``, on the same served model.

1. Sync call overhead: ``Client.embed([text])`` against the same request made
   with plain ``tritonclient.grpc`` (``InferInput`` built per call, ``as_numpy``
   on the result), one text per call, in alternating blocks so that both see
   the same server state: median, mean and p90 latency, this process's CPU per
   call, and the ratios.
2. Concurrency: ``AsyncClient`` with ``in_flight`` calls in flight against one
   sync ``Client`` shared by as many threads, the same number of calls each, and
   plain ``tritonclient.grpc.aio`` as the reference, in alternating runs:
   throughput, this process's CPU per call, and the ratios.

Triton runs on the server cores and this process on the client cores
(``measure.cpus``), as in the other bench modes. A measurement to read, not a
gate: no ratio fails the command.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tritonstack.bench.results import write_summary
from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.json_safe import json_safe
from tritonstack.measure.progress import Progress
from tritonstack.measure.samples import mean_ms, percentile_ms

Log = Callable[[str], None]
TEXT = "the quick brown fox jumps over the lazy dog"
WARMUP_CALLS = 50
RAW, SDK = "raw tritonclient.grpc", "tritonstack Client.embed"
SYNC, ASYNC, RAW_AIO = "sync", "async", "raw-aio"
KINDS = (SYNC, ASYNC, RAW_AIO)  # the throughput runs, in the order they alternate


@dataclass(frozen=True)
class SdkSettings:
    """How much to measure: ``calls`` sequential calls per side in blocks of ``block``; ``rounds`` throughput
    runs per side of ``concurrent_calls`` calls at ``in_flight`` calls in flight."""

    calls: int = 2000
    block: int = 100
    in_flight: int = 64
    concurrent_calls: int = 3200
    rounds: int = 3

    def __post_init__(self) -> None:
        if min(self.calls, self.block, self.in_flight, self.concurrent_calls, self.rounds) < 1:
            raise ValueError("every count of the SDK benchmark must be at least 1")


QUICK = SdkSettings(calls=400, block=50, in_flight=16, concurrent_calls=800, rounds=2)


def blocks(settings: SdkSettings) -> int:
    """The sequential comparison's blocks per side."""
    return max(1, settings.calls // settings.block)


def calls_per_run(settings: SdkSettings) -> int:
    """The calls one throughput run makes: ``concurrent_calls`` shared evenly by the ``in_flight`` callers."""
    return max(1, settings.concurrent_calls // settings.in_flight) * settings.in_flight


def planned_calls(settings: SdkSettings) -> int:
    """The calls after the warm-up: both sides' blocks, then every throughput run of every kind; the plan of
    the progress line, in calls (a sequential call takes longer than one of many in flight: the estimate
    follows the pace of the calls done so far)."""
    return 2 * blocks(settings) * settings.block + settings.rounds * len(KINDS) * calls_per_run(settings)


@dataclass
class Side:
    """One side of the sequential comparison: each call's latency (µs) and this process's CPU over its blocks."""

    name: str
    latencies_us: list[float] = field(default_factory=list)
    cpu_s: float = 0.0

    def figures(self) -> dict[str, float | None]:
        calls = len(self.latencies_us)
        return {
            "calls": calls,
            "median_ms": percentile_ms(self.latencies_us, 50),
            "mean_ms": mean_ms(self.latencies_us),
            "p90_ms": percentile_ms(self.latencies_us, 90),
            "client_cpu_us_per_call": self.cpu_s / calls * 1e6 if calls else None,
        }


@dataclass(frozen=True)
class Run:
    """One throughput run: completed calls per second and this process's CPU seconds per call."""

    calls_per_s: float
    cpu_s_per_call: float


@dataclass
class SdkOverheadResult:
    model: str
    settings: SdkSettings
    split: str  # how the cores were split (``CpuSplit.describe``)
    raw: Side = field(default_factory=lambda: Side(RAW))
    sdk: Side = field(default_factory=lambda: Side(SDK))
    runs: dict[str, list[Run]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def throughput(self, kind: str) -> dict[str, float | None]:
        runs = self.runs[kind]
        if not runs:
            return {"calls_per_s": None, "client_cpu_us_per_call": None}
        return {
            "calls_per_s": statistics.median(r.calls_per_s for r in runs),
            "client_cpu_us_per_call": statistics.median(r.cpu_s_per_call for r in runs) * 1e6,
        }

    def ratios(self) -> dict[str, float | None]:
        """SDK over raw (sequential) and AsyncClient over sync threads (concurrent); ``None`` where unmeasured."""
        raw, sdk = self.raw.figures(), self.sdk.figures()
        sync, async_ = self.throughput(SYNC), self.throughput(ASYNC)
        return {
            "sdk_over_raw_median": _ratio(sdk["median_ms"], raw["median_ms"]),
            "sdk_over_raw_mean": _ratio(sdk["mean_ms"], raw["mean_ms"]),
            "sdk_over_raw_client_cpu": _ratio(sdk["client_cpu_us_per_call"], raw["client_cpu_us_per_call"]),
            "async_over_sync_throughput": _ratio(async_["calls_per_s"], sync["calls_per_s"]),
            "async_over_sync_client_cpu": _ratio(async_["client_cpu_us_per_call"], sync["client_cpu_us_per_call"]),
        }

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "model": self.model,
                "settings": self.settings.__dict__,
                "cpu_split": self.split,
                "sequential": {side.name: side.figures() for side in (self.raw, self.sdk)},
                "concurrent": {
                    kind: {**self.throughput(kind), "runs_calls_per_s": [r.calls_per_s for r in self.runs[kind]]}
                    for kind in self.runs
                },
                "ratios": self.ratios(),
            }
        )


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: SdkOverheadResult) -> str:
    """What the run found, as the other bench modes print it."""
    settings, ratios = result.settings, result.ratios()
    lines = [
        f"SDK overhead on {result.model} ({result.split})",
        "",
        f"1. sync call overhead, one text per call, {len(result.raw.latencies_us)} calls each, "
        f"alternating blocks of {settings.block}",
        f"   {'':28}{'median ms':>11}{'mean ms':>10}{'p90 ms':>9}{'client CPU us/call':>20}",
    ]
    for side in (result.raw, result.sdk):
        f = side.figures()
        lines.append(
            f"   {side.name:28}{_fmt(f['median_ms'], '.3f'):>11}{_fmt(f['mean_ms'], '.3f'):>10}"
            f"{_fmt(f['p90_ms'], '.3f'):>9}{_fmt(f['client_cpu_us_per_call'], '.0f'):>20}"
        )
    overhead = ratios["sdk_over_raw_median"]
    lines.append(
        f"   SDK / raw: median {_fmt(ratios['sdk_over_raw_median'], '.3f')}x, "
        f"mean {_fmt(ratios['sdk_over_raw_mean'], '.3f')}x "
        f"(overhead {_fmt(None if overhead is None else (overhead - 1) * 100, '+.1f')}% median); "
        f"client CPU {_fmt(ratios['sdk_over_raw_client_cpu'], '.3f')}x"
    )
    labels = {
        SYNC: f"sync Client, {settings.in_flight} threads",
        ASYNC: f"AsyncClient, {settings.in_flight} in flight",
        RAW_AIO: f"(raw tritonclient aio, {settings.in_flight})",
    }
    lines += [
        "",
        f"2. throughput at {settings.in_flight} in flight, one text per call, {settings.concurrent_calls} calls per "
        f"run, {settings.rounds} runs each",
        f"   {'':36}{'median req/s':>13}{'client CPU us/call':>20}   req/s of each run",
    ]
    for kind, label in labels.items():
        figures = result.throughput(kind)
        each = ", ".join(f"{r.calls_per_s:.0f}" for r in result.runs[kind])
        lines.append(
            f"   {label:36}{_fmt(figures['calls_per_s'], '.0f'):>13}"
            f"{_fmt(figures['client_cpu_us_per_call'], '.0f'):>20}   {each}"
        )
    lines.append(
        f"   AsyncClient / sync threads: throughput {_fmt(ratios['async_over_sync_throughput'], '.3f')}x, "
        f"client CPU per call {_fmt(ratios['async_over_sync_client_cpu'], '.3f')}x"
    )
    return "\n".join(lines)


def write(result: SdkOverheadResult, report_dir: Path) -> Path:
    return write_summary(result.to_dict(), report_dir)


def _raw_request() -> list[Any]:
    import tritonclient.grpc as grpcclient

    array = np.array([[TEXT.encode()]], dtype=np.object_)
    tensor = grpcclient.InferInput(contract.TEXT_INPUT, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return [tensor]


def _timed_block(call: Callable[[], object], count: int, side: Side | None = None) -> None:
    """``count`` calls back to back; their latencies and this process's CPU go to ``side`` (none: a warm-up)."""
    latencies_us = []
    cpu_start = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        call()
        latencies_us.append((time.perf_counter() - start) * 1e6)
    if side is not None:
        side.cpu_s += time.process_time() - cpu_start
        side.latencies_us += latencies_us


def _sequential(url: str, result: SdkOverheadResult, progress: Progress) -> None:
    import tritonclient.grpc as grpcclient

    from tritonstack.client import Client

    model = result.model
    with grpcclient.InferenceServerClient(url) as raw, Client(url, model=model) as client:

        def raw_call() -> np.ndarray:
            return np.asarray(raw.infer(model, _raw_request()).as_numpy(contract.EMBEDDING_OUTPUT))

        def sdk_call() -> object:
            return client.embed([TEXT])

        np.testing.assert_allclose(raw_call()[0], client.embed([TEXT])[0], atol=1e-5)  # the same work on both sides
        _alternate(raw_call, sdk_call, result, progress)


def _alternate(
    raw_call: Callable[[], object], sdk_call: Callable[[], object], result: SdkOverheadResult, progress: Progress
) -> None:
    """The sequential comparison: a warm-up of each side, then their blocks in turn. The warm-up's pace plans
    the rest on the progress line (its calls are as long as the blocks')."""
    settings = result.settings
    progress.start("sequential calls: warm-up")
    started = time.perf_counter()
    _timed_block(raw_call, WARMUP_CALLS)
    _timed_block(sdk_call, WARMUP_CALLS)
    progress.plan(planned_calls(settings), pace=(time.perf_counter() - started) / (2 * WARMUP_CALLS))
    count = blocks(settings)
    for number in range(1, count + 1):
        progress.start(f"sequential calls: block {number}/{count}, raw and SDK", 2 * settings.block)
        _timed_block(raw_call, settings.block, result.raw)
        _timed_block(sdk_call, settings.block, result.sdk)
    overhead = result.ratios()["sdk_over_raw_median"]
    progress.measured(f"SDK / raw median {_fmt(overhead, '.3f')}x")


def _sync_threads(url: str, model: str, in_flight: int, calls: int) -> Run:
    from tritonstack.client import Client

    with Client(url, model=model) as client:
        client.embed([TEXT])
        per_thread = max(1, calls // in_flight)
        barrier = threading.Barrier(in_flight + 1)

        def worker() -> None:
            barrier.wait()
            for _ in range(per_thread):
                client.embed([TEXT])

        with ThreadPoolExecutor(in_flight) as pool:
            futures = [pool.submit(worker) for _ in range(in_flight)]
            barrier.wait()
            start, cpu_start = time.perf_counter(), time.process_time()
            for future in futures:
                future.result()
            elapsed_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    total = per_thread * in_flight
    return Run(total / elapsed_s, cpu_s / total)


async def _in_flight(call: Callable[[], Any], in_flight: int, calls: int) -> Run:
    await call()
    per_worker = max(1, calls // in_flight)

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    total = per_worker * in_flight
    return Run(total / (time.perf_counter() - start), (time.process_time() - cpu_start) / total)


def _async_client(url: str, model: str, in_flight: int, calls: int) -> Run:
    from tritonstack.client import AsyncClient

    async def main() -> Run:
        async with AsyncClient(url, model=model) as client:
            return await _in_flight(lambda: client.embed([TEXT]), in_flight, calls)

    return asyncio.run(main())


def _raw_aio(url: str, model: str, in_flight: int, calls: int) -> Run:
    """The reference for ``AsyncClient``: plain ``tritonclient.grpc.aio``, the same calls."""
    import tritonclient.grpc.aio as grpcaio

    async def main() -> Run:
        async with grpcaio.InferenceServerClient(url) as raw:

            async def call() -> None:
                (await raw.infer(model, _raw_request())).as_numpy(contract.EMBEDDING_OUTPUT)

            return await _in_flight(call, in_flight, calls)

    return asyncio.run(main())


def measure(
    url: str, model: str, settings: SdkSettings, *, split: str = "not pinned", progress: Progress | None = None
) -> SdkOverheadResult:
    """Both comparisons against a running Triton at ``url`` serving the feature-extraction model ``model``;
    ``progress`` shows the block or run being measured (``measure.progress``). Its line is redrawn once a
    second by a thread of this process, whose CPU counts with the calls': tens of µs a second, far below them."""
    progress = progress or Progress.off()
    result = SdkOverheadResult(model=model, settings=settings, split=split)
    _sequential(url, result, progress)
    measures = {SYNC: _sync_threads, ASYNC: _async_client, RAW_AIO: _raw_aio}
    calls = calls_per_run(settings)
    for number in range(1, settings.rounds + 1):  # alternate, so that no side gets only the cold or the hot server
        for kind, run in measures.items():
            progress.start(f"{kind} run {number}/{settings.rounds}, {settings.in_flight} in flight", calls)
            result.runs[kind].append(run(url, model, settings.in_flight, settings.concurrent_calls))
            progress.measured(f"{result.runs[kind][-1].calls_per_s:.0f} calls/s ({kind})")
    return result


def run_sdk_overhead(
    repository: Path,
    model: str,
    settings: SdkSettings,
    *,
    cpu_split: str = "pinned",
    log_path: Path | None = None,
    log: Log = print,
    progress: Progress | None = None,
) -> SdkOverheadResult:
    """Start Triton over ``repository`` on the server cores and measure from the client cores; ``log`` should
    step aside for ``progress`` (``Progress.write``)."""
    from tritonstack.bench.served import serving

    progress = progress or Progress.off()
    split = cpus.plan(cpu_split)
    log(f"==> SDK overhead: {split.describe()}")
    progress.start("starting Triton")
    with serving(repository, split, log_path=log_path, log=log) as server, cpus.pinned(split.client):
        result = measure(server.grpc_url, model, settings, split=split.describe(), progress=progress)
        progress.start("stopping Triton")  # on leaving the block
        return result
