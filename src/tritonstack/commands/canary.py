"""Judge a candidate release against the SLO and the baseline release, under a split of real load.

Exit status: 0 promote (every check held), 1 roll back (the table and the last
line name the checks that failed), 2 the canary could not run (bad SLO file, a
release that does not answer, server down).
"""

from __future__ import annotations

import argparse
import logging

from tritonstack.loadtest.canary_plan import CanaryPlan, Tolerances
from tritonstack.measure.errors import LoadTestError
from tritonstack.measure.slo import load_slo, parse_duration_s
from tritonstack.server import flags


def _share(value: str) -> float:
    weight = float(value)
    if not 0.0 < weight < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (the candidate's share), got {value}")
    return weight


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slo", required=True, metavar="FILE", help="the SLO file (see loadtest/slo.yaml)")
    parser.add_argument("--host", default=flags.LOCAL_GRPC_URL, metavar="HOST:PORT", help="Triton's gRPC endpoint")
    parser.add_argument("--model", required=True, help="the text-in model whose releases are compared")
    parser.add_argument("--baseline", type=int, required=True, metavar="V", help="the stable release (version)")
    parser.add_argument("--candidate", type=int, required=True, metavar="V", help="the release being judged")
    parser.add_argument(
        "--weight", type=_share, required=True, metavar="W", help="the candidate's share of the requests (0 to 1)"
    )
    parser.add_argument("--run-time", metavar="DURATION", help="override load.duration (30s, 2m)")
    parser.add_argument("--p99-ms", type=float, metavar="MS", help="override objectives.p99_ms")
    defaults = Tolerances()
    parser.add_argument(
        "--p99-tolerance", type=float, default=defaults.p99_ratio, metavar="RATIO",
        help="the candidate's p99 may exceed the baseline's by this ratio ...",
    )  # fmt: skip
    parser.add_argument("--p99-slack-ms", type=float, default=defaults.p99_slack_ms, metavar="MS", help="... plus this")
    parser.add_argument(
        "--error-tolerance", type=float, default=defaults.error_ratio, metavar="RATIO",
        help="the candidate's error ratio may exceed the baseline's by this",
    )  # fmt: skip
    parser.add_argument("--report-dir", metavar="DIR", help="where the report goes; reports/<timestamp>/ when omitted")


def run(args: argparse.Namespace) -> int:
    # Like `tritonstack loadtest`: Locust (gevent) before anything that makes a gRPC object.
    import locust  # noqa: F401

    from tritonstack.loadtest import execute
    from tritonstack.loadtest.canary import run_canary, verdict_line, write_canary_report
    from tritonstack.loadtest.users import close_clients
    from tritonstack.loadtest.verdict import render_table

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.baseline == args.candidate:
        raise LoadTestError(
            f"--baseline and --candidate are both release {args.baseline}", hint="tritonstack release list"
        )
    run_time_s = parse_duration_s(args.run_time, where="--run-time", source="command line") if args.run_time else None
    slo = load_slo(args.slo).with_overrides(
        model=args.model, run_time_s=run_time_s, latency_ms={99.0: args.p99_ms} if args.p99_ms else None
    )
    tolerances = Tolerances(args.p99_tolerance, args.p99_slack_ms, args.error_tolerance)
    plan = CanaryPlan(args.model, args.baseline, args.candidate, args.weight, tolerances)
    # no exporter (a loadtest may be exporting on its port) and no server scrape: the verdict is client-side
    options = execute.RunOptions(host=args.host)
    report_dir = execute.report_dir_or_default(args.report_dir)
    try:
        result = run_canary(slo, plan, options)
    finally:
        close_clients()
    summary = write_canary_report(result, report_dir)
    print()
    roles = plan.roles()
    for release, stats in result.releases.items():
        p99 = stats.latency_ms.get(99.0)
        print(
            f"release {release} ({roles[release]}): {stats.requests} requests, {stats.failures} errors, "
            f"p99 {'n/a' if p99 is None else f'{p99:.1f} ms'}"
        )
    agreement = result.agreement
    print(
        f"agreement on {agreement.texts} texts: {agreement.metric} mean {agreement.mean:.4f}, min {agreement.min:.4f}"
    )
    print()
    print(render_table(result.checks))
    print()
    print(verdict_line(result.checks))
    print(f"report: {summary}")
    return 0 if result.promote else 1
