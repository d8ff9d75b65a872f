"""One asyncio load generator (closed and open loop) for bench and tune, so that their figures compare.

``send(index)`` makes one call with text ``index`` of the corpus (one text per
request, as users call a service). Two shapes of load:

* ``closed_loop``: ``concurrency`` callers, each sending its next request as
  soon as the previous one answered. Throughput counts the completions inside
  the measured window; latency is that of those completions.
* ``open_loop``: requests arrive at ``rate_per_s`` (Poisson, seeded) whether or
  not earlier ones answered. Latency runs from the *scheduled* arrival, so a
  stalled server or a late generator shows up in the latency instead of
  silently lowering the load (no coordinated omission).

Both run a warm-up first and measure the window after it. A ``probe`` (e.g.
Triton's statistics) is read at both ends of the window.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tritonstack.measure.cpus import machine_cpu_s
from tritonstack.measure.samples import Round

Send = Callable[[int], Awaitable[None]]
ERROR_PAUSE_S = 0.001


class Probe(Protocol):
    """Something read at the start and the end of the measured window."""

    async def snapshot(self) -> Any: ...

    def diff(self, first: Any, last: Any, elapsed_s: float) -> dict[str, Any]: ...


@dataclass
class _Call:
    start_s: float
    end_s: float
    index: int
    error: str | None

    @property
    def latency_us(self) -> float:
        return (self.end_s - self.start_s) * 1e6


@dataclass
class _Window:
    start_s: float = float("inf")
    end_s: float = float("inf")
    closed: bool = False
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    machine_cpu_s: float | None = None
    probe: dict[str, Any] | None = None


async def _timed(send: Send, index: int, start_s: float, calls: list[_Call]) -> None:
    try:
        await send(index)
        error = None
    except Exception as exc:  # any failure of the system under test is a measured error, not a crash
        error = f"{type(exc).__name__}: {exc}"
    calls.append(_Call(start_s, time.perf_counter(), index, error))
    if error:
        # A call that fails before it awaits anything would otherwise never yield: the window could not close.
        await asyncio.sleep(ERROR_PAUSE_S)


async def _watch(
    window: _Window,
    warmup_s: float,
    duration_s: float,
    server_cpu_s: Callable[[], float] | None,
    probe: Probe | None,
    enough: Callable[[], bool] | None = None,
    max_duration_s: float = 0.0,
) -> None:
    """Mark the window's ends and read the CPU clocks and the probe there.

    The window lasts ``duration_s``, longer while ``enough()`` says too few
    calls finished in it, up to ``max_duration_s``.
    """
    await asyncio.sleep(warmup_s)
    first = await probe.snapshot() if probe else None
    cpu0, server0, machine0 = time.process_time(), server_cpu_s() if server_cpu_s else None, machine_cpu_s()
    window.start_s = time.perf_counter()
    await asyncio.sleep(duration_s)
    while enough is not None and not enough() and time.perf_counter() - window.start_s < max_duration_s:
        await asyncio.sleep(0.02)
    window.end_s = time.perf_counter()
    window.closed = True
    window.client_cpu_s = time.process_time() - cpu0
    window.machine_cpu_s = machine_cpu_s() - machine0
    if server_cpu_s and server0 is not None:
        window.server_cpu_s = server_cpu_s() - server0
    if probe:
        window.probe = probe.diff(first, await probe.snapshot(), window.end_s - window.start_s)


def _round(
    calls: Sequence[_Call], window: _Window, token_counts: Sequence[int], *, latency_by_start: bool
) -> tuple[Round, dict[str, Any] | None]:
    inside = [c for c in calls if window.start_s <= c.end_s <= window.end_s]
    # Open loop: every request *sent* in the window, however late it answered, so a slow tail is not cut off.
    sampled = [c for c in calls if window.start_s <= c.start_s <= window.end_s] if latency_by_start else inside
    failed = [c for c in sampled if c.error]
    ok = [c for c in inside if not c.error]
    return (
        Round(
            latencies_us=tuple(c.latency_us for c in sampled if not c.error),
            elapsed_s=window.end_s - window.start_s,
            completed=len(ok),
            tokens=sum(token_counts[c.index] for c in ok),
            errors=len(failed),
            first_error=failed[0].error if failed else None,
            client_cpu_s=window.client_cpu_s,
            server_cpu_s=window.server_cpu_s,
            machine_cpu_s=window.machine_cpu_s,
            completed_latency_us=sum(c.latency_us for c in ok),
        ),
        window.probe,
    )


async def closed_loop(
    send: Send,
    token_counts: Sequence[int],
    concurrency: int,
    *,
    warmup_s: float,
    duration_s: float,
    server_cpu_s: Callable[[], float] | None = None,
    probe: Probe | None = None,
    min_calls_per_caller: int = 2,
    max_duration_factor: float = 5.0,
) -> tuple[Round, dict[str, Any] | None]:
    """``concurrency`` callers back to back; returns the window's ``Round`` and the probe's diff.

    When calls are slow against ``duration_s`` (a big batch on a small CPU), the
    window stretches until ``min_calls_per_caller`` x ``concurrency`` calls finished
    in it, up to ``max_duration_factor`` x ``duration_s``: a window that catches
    one or two batches would measure its own edges.
    """
    calls: list[_Call] = []
    window = _Window()
    indices = itertools.count()
    wanted = min_calls_per_caller * concurrency

    def enough() -> bool:
        # calls are appended as they finish: count back to the window's start
        finished = itertools.takewhile(lambda c: c.end_s >= window.start_s, reversed(calls))
        return sum(1 for _ in itertools.islice(finished, wanted)) >= wanted

    async def caller() -> None:
        while not window.closed:
            await _timed(send, next(indices) % len(token_counts), time.perf_counter(), calls)

    watcher = asyncio.ensure_future(
        _watch(window, warmup_s, duration_s, server_cpu_s, probe, enough, duration_s * max_duration_factor)
    )
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await watcher
    return _round(calls, window, token_counts, latency_by_start=False)


async def open_loop(
    send: Send,
    token_counts: Sequence[int],
    rate_per_s: float,
    *,
    warmup_s: float,
    duration_s: float,
    seed: int = 0,
    max_in_flight: int = 2048,
    server_cpu_s: Callable[[], float] | None = None,
    probe: Probe | None = None,
) -> tuple[Round, dict[str, Any] | None]:
    """Poisson arrivals at ``rate_per_s``; returns the window's ``Round`` and the probe's diff.

    Arrivals beyond ``max_in_flight`` outstanding requests are counted as errors
    (the server is saturated), not queued in the generator.
    """
    rng = random.Random(seed)
    calls: list[_Call] = []
    window = _Window()
    tasks: set[asyncio.Task[None]] = set()
    watcher = asyncio.ensure_future(_watch(window, warmup_s, duration_s, server_cpu_s, probe))
    scheduled = time.perf_counter()
    stop_at = scheduled + warmup_s + duration_s
    for index in itertools.count():
        scheduled += rng.expovariate(rate_per_s)
        if scheduled >= stop_at:
            break
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        text = index % len(token_counts)
        if len(tasks) >= max_in_flight:
            calls.append(_Call(scheduled, scheduled, text, f"generator saturated: {max_in_flight} requests in flight"))
            continue
        task = asyncio.ensure_future(_timed(send, text, scheduled, calls))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await watcher
    if tasks:
        await asyncio.gather(*tasks)
    return _round(calls, window, token_counts, latency_by_start=True)
