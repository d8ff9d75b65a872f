"""The stack: text -> SDK (``AsyncClient``) -> gRPC -> embedded Triton (tokenizer -> encoder).

One request at a time per caller -- one text, or a reranker's query and its
documents (``workload.py``) -- and ``concurrency`` requests in flight, as users
call it; batching happens in Triton. Triton and its model processes run on the server
cores, this process (the load generator) on the client cores. Each point
carries Triton's own account of where the time went (``triton_stats``).
On the same server, after the model: its serving floor (``floor.py``) at c=1
and at the highest concurrency, the cost of the serving path without the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

from tritonstack.bench.errors import BenchError
from tritonstack.bench.floor import floor_name, overlay
from tritonstack.bench.profile import Profiler
from tritonstack.bench.results import FLOOR, SERVED, Point, best, summarize_rounds
from tritonstack.bench.workload import BenchWorkload
from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.load import closed_loop, open_loop
from tritonstack.measure.progress import Progress
from tritonstack.measure.samples import Round, completed_mean_ms
from tritonstack.measure.served_files import ServedFiles
from tritonstack.measure.timing import Timing
from tritonstack.measure.triton_stats import CounterDeltas, TritonStatsProbe, breakdown

Log = Callable[[str], None]


def _point(
    setting: str,
    value: float,
    measured: list[tuple[Round, CounterDeltas | None]],
    split: cpus.CpuSplit,
    files: ServedFiles,
    variant: str = SERVED,
) -> Point:
    rounds = [r for r, _ in measured]
    windows = [w for _, w in measured if w is not None]
    point = summarize_rounds(
        variant, setting, value, rounds, client_cores=len(split.client), server_cores=len(split.server)
    )
    if windows and point.samples and variant == SERVED:
        # in the fused layout the encoder knobs are the fused step's (served_files.locate)
        runs_encoder = contract.fused_name(files.name) if files.knobs.get("layout") == contract.FUSED_LAYOUT else None
        instances = {
            runs_encoder or contract.encoder_name(files.name): files.knobs["encoder_instances"],
            contract.tokenizer_name(files.name): files.knobs["tokenizer_instances"],
        }
        window = reduce(lambda a, b: a + b, windows)
        # Triton's counters cover the calls that finished in the windows: compare like with like.
        point.details.update(breakdown(window, files.name, completed_mean_ms(rounds), instances))
    errors = [r.first_error for r in rounds if r.first_error]
    if errors:
        point.details["first_error"] = errors[0]
    return point


async def _sweep(
    url: str,
    pgid: int,
    workload: BenchWorkload,
    token_counts: Sequence[int],
    files: ServedFiles,
    split: cpus.CpuSplit,
    timing: Timing,
    concurrencies: Sequence[int],
    half_load: bool,
    log: Log,
    floor: bool = True,
    progress: Progress | None = None,
    profiler: Profiler | None = None,
) -> list[Point]:
    from tritonstack.client import AsyncClient

    progress = progress or Progress.off()
    name = files.name
    probe = TritonStatsProbe(
        url, [name, contract.tokenizer_name(name), contract.encoder_name(name), contract.fused_name(name)]
    )
    points: list[Point] = []
    async with AsyncClient(url, model=name, timeouts=60.0) as client:
        send = workload.sender(client)  # the task's SDK call: embed, classify, rerank
        await send(0)  # connect and cache the model's metadata outside the measurement

        def server_cpu_s() -> float:
            return cpus.group_cpu_s(pgid)

        try:
            for concurrency in concurrencies:
                progress.start(f"served c={concurrency}", timing.point_s)
                measured = []
                for _ in range(timing.rounds):
                    result, extra = await closed_loop(
                        send, token_counts, concurrency, warmup_s=timing.warmup_s, duration_s=timing.duration_s,
                        server_cpu_s=server_cpu_s, probe=probe,
                    )  # fmt: skip
                    measured.append((workload.per_row(result), extra["window"] if extra else None))
                points.append(_point("concurrency", concurrency, measured, split, files))
                progress.measured(f"{points[-1].throughput_per_s:.1f} texts/s")
                log(f"    served   c={concurrency:<3d} {points[-1].throughput_per_s:8.1f} texts/s")
                if profiler is not None and concurrency in profiler.concurrencies:
                    # an extra round, not measured: the samplers pause the processes they watch
                    with profiler.recording(f"c{concurrency}", pgid):
                        await closed_loop(send, token_counts, concurrency, warmup_s=0.0, duration_s=profiler.duration_s)
                    log(f"    profiled c={concurrency:<3d} (py-spy --native on the stubs, perf on tritonserver)")
            top = best(points, SERVED)
            if half_load and top is not None and top.throughput_per_s > 0:
                rate = top.throughput_per_s / 2  # rows per second: requests arrive at rate / rows per request
                progress.start(f"served half load, {rate:.0f} texts/s arriving", timing.point_s)
                measured = []
                for round_index in range(timing.rounds):
                    result, extra = await open_loop(
                        send, token_counts, rate / workload.rows_per_request, warmup_s=timing.warmup_s,
                        duration_s=timing.duration_s, seed=round_index, server_cpu_s=server_cpu_s, probe=probe,
                    )  # fmt: skip
                    measured.append((workload.per_row(result), extra["window"] if extra else None))
                points.append(_point("rate", rate, measured, split, files))
                progress.measured(f"p99 {points[-1].p99_ms:.1f} ms at half load")
                log(f"    served   {points[-1].label:<5} p99 {points[-1].p99_ms:.1f} ms (open loop, half load)")
        finally:
            await probe.close()
    if floor:
        points += await _floor_sweep(
            url, pgid, workload, token_counts, split, timing, concurrencies, files, log, progress
        )  # fmt: skip
    return points


async def _floor_sweep(
    url: str,
    pgid: int,
    workload: BenchWorkload,
    token_counts: Sequence[int],
    split: cpus.CpuSplit,
    timing: Timing,
    concurrencies: Sequence[int],
    files: ServedFiles,
    log: Log,
    progress: Progress,
) -> list[Point]:
    """The serving floor (``floor.py``) at c=1 and at the highest concurrency, closed loop."""
    from tritonstack.client import AsyncClient

    points = []
    async with AsyncClient(url, model=floor_name(files.name), timeouts=60.0) as client:
        send = workload.sender(client)  # the task's SDK call, as against the model
        await send(0)

        for concurrency in sorted({min(concurrencies), max(concurrencies)}):
            progress.start(f"floor c={concurrency}", timing.point_s)
            measured: list[tuple[Round, CounterDeltas | None]] = []
            for _ in range(timing.rounds):
                result, _extra = await closed_loop(
                    send, token_counts, concurrency, warmup_s=timing.warmup_s, duration_s=timing.duration_s,
                    server_cpu_s=lambda: cpus.group_cpu_s(pgid),
                )  # fmt: skip
                measured.append((workload.per_row(result), None))
            points.append(_point("concurrency", concurrency, measured, split, files, FLOOR))
            progress.measured(f"{points[-1].throughput_per_s:.1f} texts/s (floor)")
            log(f"    floor    c={concurrency:<3d} {points[-1].throughput_per_s:8.1f} texts/s (no model work)")
    return points


def run_served(
    repository: Path,
    files: ServedFiles,
    workload: BenchWorkload,
    token_counts: Sequence[int],
    split: cpus.CpuSplit,
    timing: Timing,
    concurrencies: Sequence[int],
    *,
    half_load: bool = True,
    floor: bool = True,
    log_path: Path | None = None,
    log: Log = print,
    progress: Progress | None = None,
    profiler: Profiler | None = None,
) -> list[Point]:
    """Start Triton on the server cores, sweep ``concurrencies`` from the client cores, then the serving floor
    (``floor``, a repository overlay: the user's repository is not written), stop Triton.

    ``token_counts``: the tokens of each request of ``workload``; ``profiler`` samples the server side in an
    extra round at each of its concurrencies (``profile.py``)."""
    with contextlib.ExitStack() as stack:
        served = repository
        if floor:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tritonstack-floor-")))
            served = overlay(repository, files.name, scratch / "model_repository")
        server = stack.enter_context(serving(served, split, log_path=log_path, log=log))
        stack.enter_context(cpus.pinned(split.client))
        points = asyncio.run(
            _sweep(
                server.grpc_url, server.pid, workload, token_counts, files, split, timing, concurrencies,
                half_load, log, floor, progress, profiler,
            )
        )  # fmt: skip
        if progress is not None:
            progress.start("stopping Triton")  # on leaving the block
        return points


@contextlib.contextmanager
def serving(repository: Path, split: cpus.CpuSplit, *, log_path: Path | None, log: Log) -> Iterator[Any]:
    """An ``EmbeddedServer`` over ``repository`` on the server cores (Triton's model processes inherit
    them), stopped on leaving the block."""
    from tritonstack.server import EmbeddedServer, ServerStartError

    server = EmbeddedServer(repository, log_path=log_path)
    try:
        with cpus.pinned(split.server):  # Triton and its model processes inherit the server cores
            server.start()
    except ServerStartError as error:
        raise BenchError(f"Triton did not start over {repository}: {error.message}", hint=error.hint) from error
    try:
        if split.mode == "pinned":
            moved = cpus.pin_group(server.pid, split.server)
            if moved:
                log(
                    f"    moved {moved} Triton thread(s) that had pinned themselves elsewhere to core(s) {split.server}"
                )
        yield server
    finally:
        server.stop()
