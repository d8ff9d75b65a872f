"""Collects µs samples wherever the users run and brings them to where the verdict is made.

* Local runner: ``request`` events become :class:`Sample` s directly.
* Worker: samples wait in an outbox, ride on every ``report_to_master``
  (Locust sends one every few seconds) and, when the worker stops, go in one
  last ``tritonstack_samples`` message -- sent before the worker tells the
  master it stopped, so the master has them all when its ``test_stop`` fires.
* Master: ``worker_report`` and that message add them to :attr:`SampleCollector.samples`.

Works the same under ``tritonstack loadtest`` (library API) and under the
``locust`` command with ``loadtest/locustfile.py`` (``--processes``,
``--master``/``--worker``).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from tritonstack.measure.samples import SUCCESS, Sample

MESSAGE = "tritonstack_samples"
DRAIN = "tritonstack_drain"  # master -> workers: stop sending, finish what is in flight
DRAINED = "tritonstack_drained"  # worker -> master: nothing in flight any more
# start_s, latency_us, outcome, kind[, release]: compact on the wire; the release only when users split traffic
Row = tuple[float, int, str, str] | tuple[float, int, str, str, int]


class Drain:
    """Ends a step cleanly: users stop starting requests and the step waits for those in flight.

    Stopping Locust stalls this process's event loop for a moment; a request in
    flight then would report that stall as latency. So a step drains first and
    stops only once nothing is in flight.
    """

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline:
            gevent.sleep(0.005)
        return self.in_flight == 0


_DRAINS: weakref.WeakKeyDictionary[Environment, Drain] = weakref.WeakKeyDictionary()


def drain_for(environment: Environment) -> Drain:
    return _DRAINS.setdefault(environment, Drain())


class SampleCollector:
    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.samples: list[Sample] = []
        self._outbox: list[Row] = []
        self._worker_names: dict[str, str] = {}
        self._listeners: list[Callable[[list[Sample]], None]] = []
        self._drained: set[str] = set()
        events = environment.events
        events.request.add_listener(self._on_request)
        events.report_to_master.add_listener(self._on_report_to_master)
        events.worker_report.add_listener(self._on_worker_report)
        events.test_stop.add_listener(self._on_test_stop)

    def attach(self, runner: Any) -> None:
        """Call once the runner exists (Locust's ``init`` event, or after ``create_*_runner``)."""
        if isinstance(runner, MasterRunner):
            runner.register_message(MESSAGE, self._on_message)
            runner.register_message(DRAINED, self._on_drained)
        elif isinstance(runner, WorkerRunner):
            runner.register_message(DRAIN, self._on_drain, concurrent=True)
        self.environment.events.test_start.add_listener(self._on_test_start)

    def drain(self, timeout_s: float) -> bool:
        """Stop new requests everywhere and wait (up to ``timeout_s``) for those in flight."""
        runner = self.environment.runner
        drain_for(self.environment).draining = True
        if not isinstance(runner, MasterRunner):
            return drain_for(self.environment).wait_idle(timeout_s)
        self._drained = set()
        workers = {client.id for client in runner.clients.all}
        runner.send_message(DRAIN, {"timeout_s": timeout_s})
        deadline = time.monotonic() + timeout_s + 1.0
        while not workers <= self._drained and time.monotonic() < deadline:
            gevent.sleep(0.01)
        return workers <= self._drained

    def add_listener(self, listener: Callable[[list[Sample]], None]) -> None:
        """``listener(samples)`` is called with each batch as it arrives (e.g. the Prometheus exporter)."""
        self._listeners.append(listener)

    def between(self, start_s: float, end_s: float) -> list[Sample]:
        return [s for s in self.samples if start_s <= s.start_s < end_s]

    # -- Locust events ---------------------------------------------------------
    def _on_request(
        self,
        response_time: float,
        exception: BaseException | None = None,
        context: dict[str, Any] | None = None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        context = context or {}
        latency_us = context.get("latency_us")
        if latency_us is None:  # a request from some other user class: ms, as Locust gives it
            latency_us = round(response_time * 1000)
        start_s = start_time if start_time is not None else time.time() - response_time / 1000
        outcome = SUCCESS if exception is None else type(exception).__name__
        release = context.get("release")
        row: Row = (float(start_s), int(latency_us), outcome, str(context.get("kind") or ""))
        if release is not None:
            row = (*row, int(release))
        if isinstance(self.environment.runner, WorkerRunner):
            self._outbox.append(row)
        else:
            self._ingest([row], "local")

    def _on_report_to_master(self, client_id: str, data: dict[str, Any]) -> None:
        data[MESSAGE] = self._drain()

    def _on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        self._ingest(data.get(MESSAGE) or [], client_id)

    def _on_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        self._ingest((msg.data or {}).get("rows") or [], msg.node_id)

    def _on_test_start(self, environment: Environment, **_: Any) -> None:
        drain_for(environment).draining = False

    def _on_drain(self, environment: Environment, msg: Any, **_: Any) -> None:
        drain = drain_for(environment)
        drain.draining = True
        drain.wait_idle(float((msg.data or {}).get("timeout_s", 10.0)))
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            # The samples first: the master reads DRAINED as "all of this worker's samples are here".
            runner.send_message(MESSAGE, {"rows": self._drain()})
            runner.send_message(DRAINED, {})

    def _on_drained(self, environment: Environment, msg: Any, **_: Any) -> None:
        self._drained.add(msg.node_id)

    def _on_test_stop(self, environment: Environment, **_: Any) -> None:
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            runner.send_message(MESSAGE, {"rows": self._drain()})

    # -- internals ---------------------------------------------------------------
    def _drain(self) -> list[Row]:
        rows, self._outbox = self._outbox, []
        return rows

    def _ingest(self, rows: list[Any], node_id: str) -> None:
        if not rows:
            return
        worker = node_id
        if node_id != "local":  # Locust's worker ids are long (host_uuid): w1, w2, ... in the CSV
            worker = self._worker_names.setdefault(node_id, f"w{len(self._worker_names) + 1}")
        batch = [
            Sample(float(r[0]), int(r[1]), str(r[2]), worker, str(r[3]), int(r[4]) if len(r) > 4 else None)
            for r in rows
        ]
        self.samples.extend(batch)
        for listener in self._listeners:
            listener(batch)
