"""What the load test's progress line shows while it runs: the steps a capacity search may take, the live rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tritonstack.measure.samples import Sample
from tritonstack.measure.slo import CapacitySpec

if TYPE_CHECKING:
    from tritonstack.loadtest.runner import LoadSession


def next_users(users: int, factor: float, max_users: int) -> int:
    return min(max_users, max(users + 1, math.ceil(users * factor)))


def planned_users(spec: CapacitySpec) -> list[int]:
    """The users of every step a capacity search makes when none breaks: the most it can take."""
    users = [spec.start_users]
    while users[-1] < spec.max_users:
        users.append(next_users(users[-1], spec.factor, spec.max_users))
    return users


class LiveRate:
    """The progress line's figure during a step: successful requests per second since the step began, and
    the users running while they ramp up. Counts the samples as they arrive (a listener of the collector),
    so a refresh costs nothing however long the run; with worker processes samples arrive every few
    seconds, so the figure lags a little."""

    def __init__(self, session: LoadSession, clock: Callable[[], float] = time.time) -> None:
        self.session = session
        self.clock = clock
        self.users = 0
        self.started_s = clock()
        self.ok = 0
        session.collector.add_listener(self._count)

    def begin(self, users: int) -> None:
        self.users, self.started_s, self.ok = users, self.clock(), 0

    def _count(self, batch: list[Sample]) -> None:
        self.ok += sum(1 for sample in batch if sample.ok and sample.start_s >= self.started_s)

    def __call__(self) -> str | None:
        elapsed_s = self.clock() - self.started_s
        runner = self.session.runner
        running = getattr(runner, "user_count", self.users) if runner is not None else self.users
        ramp = f"ramp {running}/{self.users} users, " if running < self.users else ""
        return f"{ramp}{self.ok / elapsed_s:.1f} req/s so far" if elapsed_s >= 1.0 else ramp.rstrip(", ") or None
