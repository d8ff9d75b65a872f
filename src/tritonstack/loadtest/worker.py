"""A load-test worker process: ``python -m tritonstack.loadtest.worker --master-port P --host H --settings JSON``.

Started by :class:`tritonstack.loadtest.runner.LoadSession` for ``--processes N``;
it runs the users and ships their samples to the master until told to quit.
A process entry point of its own, not a ``tritonstack`` command: the master starts
it with ``sys.executable -m``, and Locust's gevent patching must come first in a
fresh process, before anything creates a gRPC object (hence its own ``main``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import gevent
import locust  # noqa: F401  (first: gevent's monkey-patching happens on import)
from locust.env import Environment

from tritonstack._process import LOOPBACK
from tritonstack.loadtest.plugin import SampleCollector
from tritonstack.loadtest.users import UserSettings, close_clients, exit_now, prepare_process, user_class


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonstack.loadtest.worker")
    parser.add_argument("--master-host", default=LOOPBACK)
    parser.add_argument("--master-port", type=int, required=True)
    parser.add_argument("--host", required=True, help="Triton's gRPC endpoint, HOST:PORT")
    parser.add_argument("--settings", required=True, help="UserSettings as JSON")
    args = parser.parse_args(argv)
    settings = UserSettings.from_json(args.settings)
    prepare_process()  # before connecting: the master starts the step once every worker is ready
    environment = Environment(user_classes=[user_class(settings)], host=args.host)
    collector = SampleCollector(environment)
    runner = environment.create_worker_runner(args.master_host, args.master_port)
    collector.attach(runner)
    gevent.spawn(_exit_with_parent, os.getppid())
    runner.greenlet.join()
    close_clients()
    exit_now(0)


def _exit_with_parent(parent_pid: int) -> None:
    # Locust's worker waits a minute for a silent master; a master that died should not leave us behind.
    while os.getppid() == parent_pid:
        gevent.sleep(1.0)
    os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
