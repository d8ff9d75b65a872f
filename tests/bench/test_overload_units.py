"""The overload bench's own bookkeeping, without a server: each call's lag behind the schedule and its attempts."""

from __future__ import annotations

import asyncio
import time

import grpc

from tritonstack.bench import overload
from tritonstack.client import OverloadedError


def test_a_call_records_its_lag_behind_the_schedule_and_the_sdks_retries() -> None:
    hook = overload._RetryCount()
    error = OverloadedError("Exceeds maximum queue size", code=grpc.StatusCode.UNAVAILABLE)

    async def send(index: int) -> None:
        for _ in range(index):  # the SDK retried ``index`` times, then gave up
            hook.retry("m", error)
        if index:
            raise error

    async def burst() -> list[overload.Call]:
        calls: list[overload.Call] = []
        origin = time.perf_counter()
        late = origin - 0.2  # scheduled 200 ms ago: the generator fell behind
        await asyncio.gather(overload._one(send, 0, origin, origin, calls), overload._one(send, 2, late, origin, calls))
        return sorted(calls, key=lambda c: c.sent_s)

    behind, on_time = asyncio.run(burst())
    assert (on_time.outcome, on_time.attempts) == ("ok", 1) and on_time.lag_s < 0.1
    assert (behind.outcome, behind.attempts) == ("OverloadedError", 3) and behind.lag_s >= 0.2
    hook.retry("m", error)  # outside a call: counted nowhere, no error

    result = overload.OverloadResult(multiple=4, deadline_s=5, burst_s=1, slo_p99_ms=1000, calls=[on_time, behind])
    assert "1 calls retried, 0 admitted on a retry" in overload.breakdown(result)
