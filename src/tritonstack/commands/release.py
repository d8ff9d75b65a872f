"""List, promote or roll back the releases of a text-in model in a model repository.

``list`` says which release is stable, which is the candidate and which are
retired; ``promote`` makes the candidate stable and retires the old stable one;
``rollback`` retires the candidate. Both rewrite configs only (weights stay on
disk), then validate the repository; a running Triton serves the change once
the models are loaded again (a restart, or its model-control API).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tritonstack.in_triton import contract
from tritonstack.repository.paths import DEFAULT_REPOSITORY

ACTIONS = ("list", "promote", "rollback")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="list the releases, promote the candidate, or roll it back")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--model", required=True, help="the text-in model (the --name it was exported as)")


def run(args: argparse.Namespace) -> int:
    from tritonstack.repository import releases  # tritonclient's protobufs: not on --help
    from tritonstack.repository.validate import check_repository

    if args.action == "list":
        state = releases.read_releases(args.repository, args.model)
    else:
        change = releases.promote if args.action == "promote" else releases.rollback
        state = change(args.repository, args.model)
        check_repository(args.repository)
    print(f"{'release':>8}  {'state':<9}  served as")
    for version in state.versions:
        if version == state.stable:
            role, served_as = "stable", f"{state.name}, {contract.release_name(state.name, version)}"
        elif version == state.candidate:
            role, served_as = "candidate", contract.release_name(state.name, version)
        else:
            role, served_as = "retired", "-"
        print(f"{version:>8}  {role:<9}  {served_as}")
    if args.action != "list":
        print(f"{args.action}: {args.repository} validates; restart Triton or reload the models to serve it")
    return 0
