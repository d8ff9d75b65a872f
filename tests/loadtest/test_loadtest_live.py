"""What the load test's progress line shows: the capacity search's plan and the live rate of a step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tritonstack.loadtest.live import LiveRate, next_users, planned_users
from tritonstack.measure.samples import SUCCESS, Sample
from tritonstack.measure.slo import CapacitySpec


def test_a_capacity_search_plans_every_step_up_to_max_users() -> None:
    assert planned_users(CapacitySpec(start_users=1, factor=2, max_users=16)) == [1, 2, 4, 8, 16]
    assert planned_users(CapacitySpec(start_users=3, factor=1.5, max_users=10)) == [3, 5, 8, 10]
    assert planned_users(CapacitySpec(start_users=4, factor=2, max_users=4)) == [4]
    assert next_users(1, 1.1, 50) == 2  # always at least one more


@dataclass
class FakeCollector:
    listeners: list[Callable[[list[Sample]], None]] = field(default_factory=list)

    def add_listener(self, listener: Callable[[list[Sample]], None]) -> None:
        self.listeners.append(listener)

    def arrive(self, batch: list[Sample]) -> None:
        for listener in self.listeners:
            listener(batch)


@dataclass
class FakeRunner:
    user_count: int = 0


@dataclass
class FakeSession:
    collector: FakeCollector = field(default_factory=FakeCollector)
    runner: Any = field(default_factory=FakeRunner)


def test_the_live_rate_counts_the_steps_successes_and_shows_the_ramp() -> None:
    now = [1000.0]
    session = FakeSession()
    live = LiveRate(session, clock=lambda: now[0])  # type: ignore[arg-type]
    live.begin(8)
    assert live() == "ramp 0/8 users"  # under a second in: no rate yet
    session.runner.user_count = 4
    session.collector.arrive(
        [Sample(999.0, 1000, SUCCESS)]  # before the step: not counted
        + [Sample(1000.0 + i / 10, 1000, SUCCESS) for i in range(20)]
        + [Sample(1001.0, 1000, "OverloadedError")]  # failed: not counted
    )
    now[0] += 2.0
    assert live() == "ramp 4/8 users, 10.0 req/s so far"
    session.runner.user_count = 8
    assert live() == "10.0 req/s so far"
    live.begin(16)  # the next step counts from zero
    session.runner.user_count = 16
    now[0] += 1.0
    assert live() == "0.0 req/s so far"
