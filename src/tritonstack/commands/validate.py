"""Check every model's config against its model file, tokenizer files and text-in wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from tritonstack.repository.paths import DEFAULT_REPOSITORY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", nargs="?", type=Path, default=DEFAULT_REPOSITORY, help="model repository")


def run(args: argparse.Namespace) -> int:
    from tritonstack.repository.validate import check_repository

    report = check_repository(args.repository)
    print(f"{args.repository}: {len(report.models)} models OK ({', '.join(report.models)})")
    return 0
