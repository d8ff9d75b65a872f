"""The ``tritonstack`` command line.

``main(argv) -> int`` is the real entry point (tests call it); the console
script is a one-line wrapper. Each command lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; those modules import their
heavy dependencies inside ``run`` so that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tritonstack._exceptions import TritonStackError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("tritonstack.commands.export", "HF model -> optimized, parity-gated ONNX in a Triton model repository"),
    "validate": ("tritonstack.commands.validate", "check a model repository's configs against its models"),
    "serve": ("tritonstack.commands.serve", "run the embedded Triton server over a model repository"),
    "infer": ("tritonstack.commands.infer", "send texts to a served model and print the result"),
    "loadtest": ("tritonstack.commands.loadtest", "load-test a served model against an SLO file"),
    "monitor": ("tritonstack.commands.monitor", "run Prometheus locally against a running Triton and load test"),
    "bench": ("tritonstack.commands.bench", "benchmark served vs. in-process vs. a plain PyTorch service"),
    "tune": ("tritonstack.commands.tune", "search the serving config that holds an SLO at the highest throughput"),
    "demo": ("tritonstack.commands.demo", "the main job end to end on the embedded default"),
    "release": ("tritonstack.commands.release", "list, promote or roll back the releases of a model"),
    "canary": ("tritonstack.commands.canary", "judge a candidate release against the SLO and the baseline"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where there is a default to show and the help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or action.default is False or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from tritonstack import __version__

    parser = argparse.ArgumentParser(
        prog="tritonstack",
        description="Take a Hugging Face model to a measured, monitored NVIDIA Triton deployment.",
    )
    parser.add_argument("--version", action="version", version=f"tritonstack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip().splitlines()[0],
            formatter_class=_HelpFormatter,
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args))
    except TritonStackError as error:
        print(f"error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())
