"""Locust driven through its library API: one session, one or more load steps.

``processes == 1``: a ``LocalRunner`` in this process (gevent: one core).
``processes > 1``: a ``MasterRunner`` here, bound to loopback on a free port,
and ``processes`` worker subprocesses (``python -m tritonstack.loadtest.worker``)
that run the users; their µs samples come back through
:class:`~tritonstack.loadtest.plugin.SampleCollector`.

Each step is ``start(users) -> sleep(duration) -> drain -> stop()``: users stop
sending, the requests in flight finish, and only then does Locust stop the
(idle) users, so a step's samples are complete when :meth:`LoadSession.step`
returns and none of them has Locust's stop inside its latency.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from types import TracebackType

import gevent
from locust.env import Environment
from locust.runners import STATE_STOPPED, MasterRunner, Runner

from tritonstack._process import LOOPBACK
from tritonstack.loadtest.plugin import SampleCollector
from tritonstack.loadtest.users import UserSettings, user_class
from tritonstack.measure.errors import LoadTestError

WORKERS_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class StepWindow:
    start_s: float
    end_s: float


class LoadSession:
    """``with LoadSession(host, settings, processes) as session: session.step(users, rate, seconds)``."""

    def __init__(self, host: str, settings: UserSettings, processes: int = 1) -> None:
        if processes < 1:
            raise LoadTestError(f"--processes must be at least 1, got {processes}")
        self.host = host
        self.settings = settings
        self.processes = processes
        self.environment = Environment(
            user_classes=[user_class(settings)],
            host=host,
            # No stop timeout: a step drains its requests before it stops (plugin.Drain), so only idle
            # users are left to stop -- and a worker with a stop timeout sits that long before it
            # reports ready for the next step.
            stop_timeout=None,
        )
        self.collector = SampleCollector(self.environment)
        self.runner: Runner | None = None
        self._workers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LoadSession:
        try:
            if self.processes == 1:
                self.runner = self.environment.create_local_runner()
            else:
                self.runner = self.environment.create_master_runner(LOOPBACK, 0)
            self.collector.attach(self.runner)
            if isinstance(self.runner, MasterRunner):
                self._start_workers(self.runner)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start_workers(self, runner: MasterRunner) -> None:
        port = runner.server.port
        command = [
            sys.executable, "-m", "tritonstack.loadtest.worker",
            "--master-port", str(port), "--host", self.host, "--settings", self.settings.to_json(),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._workers = [subprocess.Popen(command, env=env) for _ in range(self.processes)]
        self._wait_for_workers(runner)

    def _wait_for_workers(self, runner: MasterRunner) -> None:
        deadline = time.monotonic() + WORKERS_READY_TIMEOUT_S
        while len(runner.clients.ready) < self.processes:
            dead = [w for w in self._workers if w.poll() is not None]
            if dead:
                raise LoadTestError(
                    f"a load-test worker process exited with code {dead[0].returncode} before the test started",
                    hint="its error is printed above",
                )
            if time.monotonic() > deadline:
                raise LoadTestError(
                    f"only {len(runner.clients.ready)} of {self.processes} worker processes connected "
                    f"within {WORKERS_READY_TIMEOUT_S:.0f} s"
                )
            gevent.sleep(0.1)

    def step(self, users: int, spawn_rate: float, duration_s: float) -> StepWindow:
        """Run ``users`` users (started at ``spawn_rate``/s) for ``duration_s``; return the window."""
        runner = self.runner
        if runner is None:
            raise RuntimeError("LoadSession is not started")
        if isinstance(runner, MasterRunner):
            self._wait_for_workers(runner)  # after a stop, workers report ready again
        start_s = time.time()
        # MasterRunner.start blocks for the ramp-up, LocalRunner.start does not: a greenlet for both.
        starter = gevent.spawn(runner.start, users, spawn_rate)
        gevent.sleep(duration_s)
        end_s = time.time()
        starter.kill(block=True)
        if not self.collector.drain(self.settings.timeout_s + 1.0):
            logging.getLogger(__name__).warning("requests still in flight after the call timeout; stopping anyway")
        runner.stop()
        deadline = time.monotonic() + 10.0
        while runner.state != STATE_STOPPED and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return StepWindow(start_s, end_s)

    def close(self) -> None:
        runner, self.runner = self.runner, None
        if isinstance(runner, MasterRunner) and all(w.poll() is None for w in self._workers):
            # Workers re-register after each stop; quit reaches only those registered.
            deadline = time.monotonic() + 5.0
            while len(runner.clients.ready) < self.processes and time.monotonic() < deadline:
                gevent.sleep(0.05)
        if runner is not None:
            runner.quit()
        for worker in self._workers:
            try:
                worker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logging.getLogger(__name__).warning("worker %d did not quit; terminating it", worker.pid)
                worker.terminate()
                worker.wait(timeout=10)
        self._workers = []
