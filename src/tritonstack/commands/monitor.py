"""Run Prometheus locally against a running Triton and load test, with the project's rules, until interrupted.

    tritonstack monitor --triton 127.0.0.1:8002 --loadtest 127.0.0.1:9646 [--gateway 127.0.0.1:8080]

Renders ``monitoring/prometheus/prometheus.yml`` for these loopback targets and
runs the ``prometheus`` binary on 127.0.0.1 (no Docker).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from tritonstack._ports import LOADTEST_EXPORTER_PORT, LOOPBACK, METRICS_PORT
from tritonstack.monitoring.local import DEFAULT_PROMETHEUS_PORT, LocalPrometheus, find_monitoring_dir, render_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--triton",
        action="append",
        metavar="HOST:PORT",
        help=f"Triton metrics endpoint to scrape (repeatable; default {LOOPBACK}:{METRICS_PORT})",
    )
    parser.add_argument(
        "--loadtest",
        action="append",
        metavar="HOST:PORT",
        help=f"load-test exporter to scrape (repeatable; default {LOOPBACK}:{LOADTEST_EXPORTER_PORT})",
    )
    parser.add_argument(
        "--gateway",
        action="append",
        metavar="HOST:PORT",
        # Opt-in: most local runs have no gateway, and a target that is down fires TritonstackGatewayDown.
        help="`tritonstack gateway` to scrape (/metrics; repeatable; none by default)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PROMETHEUS_PORT, help=f"Prometheus port on {LOOPBACK}")
    parser.add_argument("--storage-dir", type=Path, help="TSDB directory (default: a temporary one)")
    parser.add_argument("--scrape-interval-s", type=float, default=None, help="override the scrape interval")
    parser.add_argument("--monitoring-dir", type=Path, default=None, help="the repository's monitoring/ directory")


def run(args: argparse.Namespace) -> int:
    config = render_config(
        find_monitoring_dir(args.monitoring_dir),
        triton_targets=args.triton or [f"{LOOPBACK}:{METRICS_PORT}"],
        loadtest_targets=args.loadtest or [f"{LOOPBACK}:{LOADTEST_EXPORTER_PORT}"],
        gateway_targets=args.gateway or [],
        scrape_interval_s=args.scrape_interval_s,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalPrometheus(config, port=args.port, storage_dir=args.storage_dir) as prometheus:
        print(f"Prometheus: {prometheus.url}  (alerts: {prometheus.url}/alerts; Ctrl-C stops it)", flush=True)
        stop.wait()
    return 0
