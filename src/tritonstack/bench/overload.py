"""``tritonstack bench --overload MULTIPLE``: how the served stack degrades past its capacity.

Three phases against one embedded Triton (server cores and load generator
pinned apart, as in the sweep), through the SDK as users call it:

1. **Capacity**: ``concurrency`` closed-loop callers for ``capacity_s``; the
   completions per second are the capacity, and single calls before it give the
   normal latency (p50, p99).
2. **Burst**: requests arrive at ``multiple`` x capacity, evenly spaced, for
   ``burst_s``, each an SDK call with a ``deadline_s`` deadline. Latency runs
   from the *scheduled* send (no coordinated omission). Every call must end as a
   success or a typed error by its deadline + 0.5 s. Goodput is the successes
   per second of the burst; the shed ratio the share refused as overload.
3. **Recovery**: from the moment the burst stops sending, one probe call every
   ``probe_every_s``; recovery is the time from which on (at least 9 in 10)
   probes answer in normal time (within 2 x the normal p99, at least 50 ms more
   than it).

Targets (printed, never asserted): goodput >= 80 % of capacity, the admitted
calls' p99 within the SLO's (``--slo``, default 1 s), recovery within 1 s.
Before bounded queues, a 4x burst left 6 % of calls served and 5 s answers after it.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tritonstack.bench.errors import BenchError
from tritonstack.bench.workload import BenchWorkload
from tritonstack.client._exceptions import ClientError
from tritonstack.client._metrics import ClientMetrics, NoMetrics
from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.load import closed_loop
from tritonstack.measure.progress import Progress
from tritonstack.measure.samples import percentile_ms
from tritonstack.measure.triton_stats import TritonStatsProbe, model_view

Log = Callable[[str], None]

LATE_GRACE_S = 0.5  # a call may end this long after its deadline (the SDK's own bookkeeping, the event loop)
GOODPUT_TARGET = 0.8
RECOVERY_TARGET_S = 1.0
RECOVERED_SHARE = 0.9
SHED = ("OverloadedError", "ResourceExhaustedError")  # the SDK's errors of a call refused as overload
CAPACITY_WARMUP_S = 1.0  # the capacity phase's closed loop warms up this long before its window
SINGLE_CALLS = 30  # sequential calls before the capacity phase; the first 5 warm up, the rest give normal latency


@dataclass(frozen=True)
class Call:
    sent_s: float  # scheduled send, from the start of the burst
    latency_s: float  # from the scheduled send to the answer
    outcome: str  # "ok" or the SDK error's class name
    lag_s: float = 0.0  # from the scheduled send to when the call started: the load generator falling behind
    attempts: int = 1  # the SDK's attempts (1 + its retries)


_RETRIES: contextvars.ContextVar[list[int]] = contextvars.ContextVar("overload_retries")


class _RetryCount(NoMetrics):
    """The SDK's metrics hook that counts each call's retries (its task's context holds the count)."""

    def retry(self, model: str, error: ClientError) -> None:
        count = _RETRIES.get(None)
        if count is not None:
            count[0] += 1


@dataclass
class OverloadResult:
    multiple: float
    deadline_s: float
    burst_s: float
    slo_p99_ms: float
    capacity_rps: float = 0.0
    normal_p50_ms: float = 0.0
    normal_p99_ms: float = 0.0
    calls: list[Call] = field(default_factory=list)
    probes: list[tuple[float, float]] = field(default_factory=list)  # (sent after the burst, latency), seconds
    server: dict[str, Any] = field(default_factory=dict)  # the served step: its name and triton_stats.model_view

    @property
    def rate_rps(self) -> float:
        return self.multiple * self.capacity_rps

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(c.outcome for c in self.calls)

    @property
    def goodput_rps(self) -> float:
        return self.outcomes["ok"] / self.burst_s

    @property
    def shed_ratio(self) -> float:
        shed = sum(self.outcomes[name] for name in SHED)
        return shed / max(1, len(self.calls))

    @property
    def admitted_p99_ms(self) -> float:
        return _percentile_ms([c.latency_s for c in self.calls if c.outcome == "ok"], 99)

    @property
    def admitted_p50_ms(self) -> float:
        return _percentile_ms([c.latency_s for c in self.calls if c.outcome == "ok"], 50)

    @property
    def late(self) -> list[Call]:
        """Calls that ended after their deadline + the grace: what a hang looks like."""
        return [c for c in self.calls if c.latency_s > self.deadline_s + LATE_GRACE_S]

    @property
    def normal_s(self) -> float:
        p99 = self.normal_p99_ms / 1000
        return max(2 * p99, p99 + 0.05)

    @property
    def recovery_s(self) -> float | None:
        """When latency was normal again after the burst stopped: the first normal probe from which on at least
        ``RECOVERED_SHARE`` of the probes answer in normal time (one slow probe on a busy machine does not
        undo a recovery; a backlog does); ``None`` if that never happened."""
        for k, (sent, latency) in enumerate(self.probes):
            rest = self.probes[k:]
            if latency <= self.normal_s and sum(t <= self.normal_s for _, t in rest) >= RECOVERED_SHARE * len(rest):
                return sent
        return None


def planned_s(capacity_s: float, burst_s: float, recovery_window_s: float) -> float:
    """The seconds the phases take by their settings (capacity's warm-up and window, the burst, the probes),
    for the progress line's estimate; the single calls before them and the wait for the burst's last answers
    come on top."""
    return CAPACITY_WARMUP_S + capacity_s + burst_s + recovery_window_s


def answered(calls: Sequence[Call]) -> str:
    """The burst's answers so far, for the progress line: ``812 answered: 640 ok, 172 shed``."""
    outcomes = Counter(c.outcome for c in list(calls))  # a copy: the event loop appends while a refresh reads
    shed = sum(outcomes[name] for name in SHED)
    return f"{sum(outcomes.values())} answered: {outcomes['ok']} ok, {shed} shed"


def _percentile_ms(latencies_s: Sequence[float], percentile: float) -> float:
    """``samples.percentile_ms`` of latencies in seconds; NaN without any (the report prints it as such)."""
    value = percentile_ms([x * 1e6 for x in latencies_s], percentile)
    return float("nan") if value is None else value


async def _one(
    send: Callable[[int], Awaitable[None]], index: int, sent: float, origin: float, calls: list[Call]
) -> None:
    started = time.perf_counter()
    retries = [0]
    _RETRIES.set(retries)  # this task's own context: the SDK's retry hook counts into it
    try:
        await send(index)
        outcome = "ok"
    except Exception as error:  # every failure is recorded by its type: the test asserts they are typed
        outcome = type(error).__name__
    calls.append(Call(sent - origin, time.perf_counter() - sent, outcome, started - sent, 1 + retries[0]))


async def _measure(
    url: str, model: str, workload: BenchWorkload, result: OverloadResult, concurrency: int, capacity_s: float,
    probe_every_s: float, recovery_window_s: float, log: Log, progress: Progress,
) -> None:  # fmt: skip
    from tritonstack.client import AsyncClient

    retry_count = cast("ClientMetrics", _RetryCount())  # any NoMetrics is a hook the client takes (_metrics.resolve)
    async with AsyncClient(url, model=model, timeouts=result.deadline_s, metrics=retry_count) as client:
        call = workload.sender(client)  # the task's SDK call: embed, classify, rerank(query, documents)

        async def send(index: int) -> None:
            await call(index % len(workload))

        # a plan in seconds, from here: Triton is up; the single calls take a moment and no planned time
        progress.plan(planned_s(capacity_s, result.burst_s, recovery_window_s), pace=1.0)
        progress.start("overload: single calls (normal latency)")
        singles = []
        for index in range(SINGLE_CALLS):
            started = time.perf_counter()
            await send(index)
            singles.append(time.perf_counter() - started)
        result.normal_p50_ms = _percentile_ms(singles[5:], 50)
        result.normal_p99_ms = _percentile_ms(singles[5:], 99)
        progress.start(f"overload: capacity at {concurrency} callers", CAPACITY_WARMUP_S + capacity_s)
        round_, _ = await closed_loop(
            send, [1] * len(workload), concurrency, warmup_s=CAPACITY_WARMUP_S, duration_s=capacity_s
        )
        result.capacity_rps = round_.completed / round_.elapsed_s
        if result.capacity_rps <= 0:
            raise BenchError(f"no call succeeded while measuring capacity: {round_.first_error}")
        log(
            f"    capacity {result.capacity_rps:.1f} calls/s at {concurrency} callers; single calls p50 "
            f"{result.normal_p50_ms:.1f} ms, p99 {result.normal_p99_ms:.1f} ms"
        )
        progress.measured(f"capacity {result.capacity_rps:.1f} calls/s")
        log(f"    burst: {result.rate_rps:.0f} calls/s ({result.multiple:g}x) for {result.burst_s:g} s")
        stats = TritonStatsProbe(url, [contract.fused_name(model), model])
        before = await stats.snapshot()
        tasks = []
        progress.start(f"overload: burst at {result.rate_rps:.0f} calls/s ({result.multiple:g}x)", result.burst_s)
        progress.probe = lambda: answered(result.calls)  # the burst's answers as they come, at each refresh
        origin = time.perf_counter()
        interval = 1 / result.rate_rps
        for index in itertools.count():
            sent = origin + index * interval
            if sent >= origin + result.burst_s:
                break
            await asyncio.sleep(max(0.0, sent - time.perf_counter()))
            tasks.append(asyncio.ensure_future(_one(send, index, sent, origin, result.calls)))
        burst_end = origin + result.burst_s
        probes: list[Call] = []
        probe_tasks = []
        progress.start("overload: recovery probes", recovery_window_s)
        for index in itertools.count():
            sent = burst_end + index * probe_every_s
            if sent > burst_end + recovery_window_s:
                break
            await asyncio.sleep(max(0.0, sent - time.perf_counter()))
            probe_tasks.append(asyncio.ensure_future(_one(send, index, sent, burst_end, probes)))
        progress.start("overload: waiting for the burst's last answers")
        await asyncio.gather(*tasks, *probe_tasks)
        progress.probe = None
        # what the served step did over the burst: its requests' queue and compute (the CPU turn's wait counts as
        # compute), the batch size, how busy; the fused step where the export has one, else NAME
        after = await stats.snapshot()
        await stats.close()
        step = next(m for m in stats.models if (after[m] - before[m]).requests or m == model)
        result.server = {"model": step, **model_view(after[step] - before[step], time.perf_counter() - origin)}
        result.probes = sorted((p.sent_s, p.latency_s if p.outcome == "ok" else float("inf")) for p in probes)
        recovery = "not recovered" if result.recovery_s is None else f"recovered in {1000 * result.recovery_s:.0f} ms"
        progress.measured(f"goodput {result.goodput_rps:.1f} calls/s, {result.shed_ratio:.0%} shed, {recovery}")


def run_overload(
    repository: Path,
    model: str,
    workload: BenchWorkload,
    *,
    multiple: float = 4.0,
    burst_s: float = 30.0,
    deadline_s: float = 5.0,
    slo_p99_ms: float = 1000.0,
    concurrency: int = 8,
    capacity_s: float = 5.0,
    probe_every_s: float = 0.1,
    recovery_window_s: float = 3.0,
    cpu_split: str = "pinned",
    log_path: Path | None = None,
    log: Log = print,
    progress: Progress | None = None,
) -> OverloadResult:
    """Start Triton over ``repository`` and run the three phases against ``model`` (see the module docstring),
    each call one request of ``workload``; ``progress`` shows the phase (``measure.progress``), ``log`` should
    step aside for it (``Progress.write``)."""
    from tritonstack.bench.served import serving

    progress = progress or Progress.off()
    if multiple <= 0 or burst_s <= 0 or deadline_s <= 0:
        raise BenchError("the overload multiple, burst and deadline must be positive")
    result = OverloadResult(multiple=multiple, deadline_s=deadline_s, burst_s=burst_s, slo_p99_ms=slo_p99_ms)
    split = cpus.plan(cpu_split)
    log(f"==> overload: {split.describe()}")
    progress.start("starting Triton")
    with serving(repository, split, log_path=log_path, log=log) as server, cpus.pinned(split.client):
        asyncio.run(
            _measure(
                server.grpc_url, model, workload, result, concurrency, capacity_s, probe_every_s, recovery_window_s,
                log, progress,
            )
        )  # fmt: skip
        progress.start("stopping Triton")  # on leaving the block
    return result


def table(result: OverloadResult) -> str:
    outcomes = ", ".join(f"{name} {count}" for name, count in result.outcomes.most_common())
    recovery = result.recovery_s
    goodput_share = result.goodput_rps / result.capacity_rps
    lines = [
        f"capacity            {result.capacity_rps:8.1f} calls/s   (single calls p50 {result.normal_p50_ms:.1f} ms, "
        f"p99 {result.normal_p99_ms:.1f} ms)",
        f"burst               {result.rate_rps:8.1f} calls/s   ({result.multiple:g}x for {result.burst_s:g} s, "
        f"deadline {result.deadline_s:g} s): {len(result.calls)} calls",
        f"outcomes            {outcomes}",
        f"goodput             {result.goodput_rps:8.1f} calls/s   = {100 * goodput_share:.0f} % of capacity "
        f"(target >= {100 * GOODPUT_TARGET:.0f} %: {'met' if goodput_share >= GOODPUT_TARGET else 'MISSED'})",
        f"shed as overload    {100 * result.shed_ratio:7.1f} %",
        f"admitted p99        {result.admitted_p99_ms:8.1f} ms        (SLO {result.slo_p99_ms:g} ms: "
        f"{'met' if result.admitted_p99_ms <= result.slo_p99_ms else 'MISSED'})",
        f"admitted p50        {result.admitted_p50_ms:8.1f} ms",
        "  where they waited  " + breakdown(result),
        *([f"  server             {server_line(result.server)}"] if result.server else []),
        f"past deadline+{LATE_GRACE_S:g}s  {len(result.late):8d}           (target 0)",
        "recovery            "
        + (
            f"{1000 * recovery:8.0f} ms        after the burst stopped, probes within "
            f"{1000 * result.normal_s:.0f} ms (target <= {1000 * RECOVERY_TARGET_S:.0f} ms: "
            f"{'met' if recovery <= RECOVERY_TARGET_S else 'MISSED'})"
            if recovery is not None
            else f"not within {result.probes[-1][0] if result.probes else 0:.1f} s (target <= 1 s: MISSED)"
        ),
    ]
    return "\n".join(lines)


def breakdown(result: OverloadResult) -> str:
    """Where the burst's calls waited outside the server: the load generator's lag behind the schedule, and the
    SDK's retries (how many calls were retried, how many were admitted only on a retry)."""
    lags = [c.lag_s for c in result.calls]
    retried = [c for c in result.calls if c.attempts > 1]
    admitted_late = [c.latency_s for c in retried if c.outcome == "ok"]
    return (
        f"generator lag p50 {_percentile_ms(lags, 50):.1f} / p99 {_percentile_ms(lags, 99):.1f} ms; "
        f"{len(retried)} calls retried, {len(admitted_late)} admitted on a retry"
        + (f" (their p50 {_percentile_ms(admitted_late, 50):.0f} ms)" if admitted_late else "")
    )


def server_line(view: dict[str, Any]) -> str:
    """Triton's view of the served step over the burst, one line. Triton counts a request the step answered with
    an error (a shed) as a success too: the means are over every request the step was handed."""

    def ms(key: str) -> str:
        value = view.get(key)
        return "-" if value is None else f"{value:.1f}"

    batch, busy = view.get("batch_size"), view.get("busy")
    return (
        f"{view.get('model')}: {view.get('requests')} requests (shed included), each queue {ms('queue_ms')} ms, "
        f"compute {ms('compute_ms')} ms (with the CPU turn's wait); batch {batch or 0:.1f} rows, "
        f"busy {100 * (busy or 0):.0f} %"
    )
