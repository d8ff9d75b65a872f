"""Load-test a served model against an SLO file and print the verdict.

Exit status: 0 when every objective held, 1 when one was violated (the table
and the last line name it), 2 when the test itself could not run (bad SLO
file, server down, workers missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from tritonstack._ports import LOADTEST_EXPORTER_PORT, LOCAL_GRPC_URL, LOOPBACK, METRICS_PORT
from tritonstack.measure.slo import FLAG_PERCENTILES, latency_overrides, load_slo, parse_duration_s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slo", required=True, metavar="FILE", help="the SLO file (see loadtest/slo.yaml)")
    parser.add_argument("--host", default=LOCAL_GRPC_URL, metavar="HOST:PORT", help="Triton's gRPC endpoint")
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="drive `tritonstack gateway` at this URL (http://127.0.0.1:8080) over HTTP instead of Triton over "
        "gRPC: /v1/embeddings, /v1/rerank or /v1/classify by the SLO's task; API key from "
        "$TRITONSTACK_GATEWAY_API_KEY. --host still names Triton, for its metrics",
    )
    parser.add_argument("--model", help="override the SLO's model name")
    parser.add_argument("--users", type=int, metavar="N", help="override load.users")
    parser.add_argument("--spawn-rate", type=float, metavar="N", help="override load.spawn_rate (users/s)")
    parser.add_argument("--run-time", metavar="DURATION", help="override load.duration (30s, 2m, 1h30m)")
    for percentile in FLAG_PERCENTILES:
        parser.add_argument(
            f"--p{percentile}-ms", type=float, metavar="MS", help=f"override objectives.p{percentile}_ms"
        )
    parser.add_argument("--report-dir", metavar="DIR", help="where the report goes; reports/<timestamp>/ when omitted")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="load processes: 1 runs Locust in this process (one core); N > 1 runs a master here "
        "and N worker processes",
    )
    parser.add_argument(
        "--metrics-url",
        metavar="URL",
        help="Triton's Prometheus endpoint to scrape during the run; HOST's machine, port "
        f"{METRICS_PORT} when omitted; 'none' disables",
    )
    parser.add_argument(
        "--exporter-port",
        type=int,
        default=LOADTEST_EXPORTER_PORT,
        metavar="PORT",
        help="serve client-observed latency for Prometheus on this port during the run; 0 disables",
    )
    parser.add_argument("--exporter-addr", default=LOOPBACK, metavar="ADDR", help="the exporter's bind address")
    parser.add_argument(
        "--find-capacity",
        action="store_true",
        help="step concurrent users up (capacity: in the SLO file) until an objective breaks; report the "
        "highest throughput that held",
    )
    parser.add_argument("--capacity-max-users", type=int, metavar="N", help="override capacity.max_users")
    parser.add_argument(
        "--price-per-hour",
        type=float,
        metavar="USD",
        help="what the capacity under test costs per hour (override cost.price_per_hour_usd): adds cost per "
        "million successful inferences at the measured throughput -- with --find-capacity at the capacity",
    )
    parser.add_argument("--capacity-step", metavar="DURATION", help="override capacity.step_duration")
    parser.add_argument(
        "--no-progress", action="store_true", help="no status line (it is drawn only on a terminal, outside CI)"
    )


def run(args: argparse.Namespace) -> int:
    # Run it as its own process (`python -m tritonstack loadtest ...`): gevent patches this process
    # and gRPC must be made gevent-aware before the process creates any gRPC object.
    # Locust before the rest: it monkey-patches the process with gevent on import.
    import locust  # noqa: F401

    from tritonstack.loadtest import execute
    from tritonstack.loadtest.cache_report import cache_report
    from tritonstack.loadtest.report import capacity_table, write_report
    from tritonstack.loadtest.users import close_clients
    from tritonstack.loadtest.verdict import render_table, verdict_line
    from tritonstack.measure.progress import Progress

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_time_s = None
    if args.run_time:
        run_time_s = parse_duration_s(args.run_time, where="--run-time", source="command line")
    slo = load_slo(args.slo).with_overrides(
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_time_s=run_time_s,
        latency_ms=latency_overrides(args),
        model=args.model,
        price_per_hour_usd=args.price_per_hour,
    )
    if args.capacity_max_users is not None or args.capacity_step is not None:
        capacity = slo.capacity
        if args.capacity_max_users is not None:
            capacity = dataclasses.replace(capacity, max_users=max(args.capacity_max_users, capacity.start_users))
        if args.capacity_step is not None:
            step_s = parse_duration_s(args.capacity_step, where="--capacity-step", source="command line")
            capacity = dataclasses.replace(capacity, step_duration_s=step_s)
        slo = dataclasses.replace(slo, capacity=capacity)

    metrics_url = args.metrics_url if args.metrics_url is not None else execute.default_metrics_url(args.host)
    options = execute.RunOptions(
        host=_gateway_url(args.gateway) if args.gateway else args.host,
        processes=args.processes,
        metrics_url=None if metrics_url in (None, "", "none") else metrics_url,
        exporter_port=args.exporter_port,
        exporter_addr=args.exporter_addr,
    )
    report_dir = execute.report_dir_or_default(args.report_dir)
    try:
        # closed (its line ended) before the report prints
        with Progress(enabled=False if args.no_progress else None) as progress:
            if args.find_capacity:
                result = execute.find_capacity(slo, options, say=progress.write, progress=progress)
            else:
                result = execute.run_test(slo, options, say=progress.write, progress=progress)
    finally:
        close_clients()

    index = write_report(result, report_dir)
    print()
    if result.capacity is not None:
        print(capacity_table(result))
        print()
    print(render_table(result.checks, result.cost))
    print()
    cache = cache_report(result)
    if cache is not None:
        print(cache.render())
        print()
    if result.metrics_error:
        print(f"note: {result.metrics_error}", file=sys.stderr)
    print(verdict_line(result.checks))
    print(f"report: {index}")
    return 0 if result.passed else 1


def _gateway_url(url: str) -> str:
    from tritonstack.loadtest.gateway_client import is_gateway_url
    from tritonstack.measure.errors import LoadTestError

    if not is_gateway_url(url):
        raise LoadTestError(
            f"--gateway {url}: not an http:// or https:// URL", hint="e.g. --gateway http://127.0.0.1:8080"
        )
    return url
