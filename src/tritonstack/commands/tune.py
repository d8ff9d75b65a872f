"""Search the serving config of a text-in model that holds an SLO at the highest throughput here, and write it.

Starts the embedded Triton on the repository, climbs from the export's
config through the knobs that decide batching and threading (docs/tune.md),
measuring each config with a closed-loop concurrency sweep and an open-loop
point at half its best throughput against the SLO file's latency and error
objectives, within ``--budget``. Writes the ranked table, ``tune.json`` and
``pareto.png`` into ``reports/tune-<timestamp>/``, then the winner into the
repository's configs (not with ``--dry-run``), keeping the replaced configs
in the report folder.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tritonstack.commands._args import add_cpu_split, duration_s


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else 'positive'}, got {text!r}")
    return value


def _positive(text: str) -> float:
    return _seconds(text, zero=False)


def _non_negative(text: str) -> float:
    return _seconds(text, zero=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository")
    parser.add_argument("--model", help="the text-in model to tune (default: the SLO file's model)")
    parser.add_argument("--slo", type=Path, required=True, metavar="FILE", help="SLO file (see loadtest/slo.yaml)")
    parser.add_argument(
        "--budget",
        type=duration_s,
        default=600.0,
        metavar="DURATION",
        help="time for the whole search, Triton's start included: 600, 90s, 10m, 1h30m (default: 10m)",
    )
    parser.add_argument("--dry-run", action="store_true", help="search and report, but leave the repository as it is")
    parser.add_argument("--report-dir", type=Path, help="where to write (default: reports/tune-<timestamp>)")
    parser.add_argument("--point-s", type=_positive, default=2.0, help="measured window per concurrency level, s")
    parser.add_argument("--warmup-s", type=_non_negative, default=1.0, help="unmeasured load before each window, s")
    add_cpu_split(parser, pinned="Triton on its own core(s)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no status line (it is drawn only on a terminal, outside CI)"
    )


def run(args: argparse.Namespace) -> int:
    from tritonstack.measure.progress import Progress
    from tritonstack.measure.slo import load_slo
    from tritonstack.measure.timing import Timing
    from tritonstack.repository.validate import check_repository
    from tritonstack.tune import report
    from tritonstack.tune.apply import write_winner
    from tritonstack.tune.runner import TuneSettings, run_tune

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    slo = load_slo(args.slo)
    check_repository(args.repository)  # tune starts from a repository that validates, and leaves one
    settings = TuneSettings(
        repository=args.repository,
        name=args.model or slo.model,
        slo=slo,
        budget_s=args.budget,
        report_dir=args.report_dir or Path("reports") / time.strftime("tune-%Y%m%d-%H%M%S"),
        timing=Timing(rounds=1, warmup_s=args.warmup_s, duration_s=args.point_s),
        cpu_split=args.cpu_split,
    )
    with Progress(enabled=False if args.no_progress else None) as progress:  # closed before the report prints
        result = run_tune(settings, log=progress.write, progress=progress)
    changed = result.changed_steps()
    written = None
    if changed is not None and not args.dry_run:
        written = write_winner(settings.repository, result.steps, changed, settings.report_dir)
    paths = report.write(result, settings.report_dir, written, dry_run=args.dry_run)
    print()
    print(report.table(result, written, dry_run=args.dry_run))
    print(f"\nwrote {paths['table']}, {paths['json']}, {paths['plot']}")
    return 0 if result.winner is not None else 1
