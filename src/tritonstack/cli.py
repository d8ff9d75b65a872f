"""The ``tritonstack`` command line.

``main(argv) -> int`` is the real entry point (tests call it); the console
script is a one-line wrapper. Each command is a module of its own,
``tritonstack.commands.NAME`` (``-`` in a name is ``_`` in its module),
exposing ``add_arguments(parser)`` and ``run(args) -> int``. A run imports
only the module of the command it runs; ``tritonstack --help`` imports none
(it lists :data:`COMMANDS`). A command module keeps torch, ONNX Runtime,
Locust and tritonclient out of its own imports, so its ``--help`` is instant
too: they are imported by what ``run`` calls.

``main`` is the one error boundary: a :class:`TritonStackError` becomes its
message, its hint and its exit code; a missing optional dependency becomes
the extra that brings it (:data:`EXTRAS`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from tritonstack import __version__
from tritonstack._exceptions import TritonStackError

# command name -> one-line help: the table `tritonstack --help` lists without importing a command
COMMANDS: dict[str, str] = {
    "export": "HF model -> optimized, parity-gated ONNX in a Triton model repository",
    "validate": "check a model repository's configs against its models",
    "serve": "run the embedded Triton server over a model repository",
    "infer": "send texts to a served model and print the result",
    "loadtest": "load-test a served model against an SLO file",
    "monitor": "run Prometheus locally against a running Triton and load test",
    "bench": "benchmark served vs. in-process vs. a plain PyTorch service",
    "tune": "search the serving config that holds an SLO at the highest throughput",
    "demo": "the main job end to end on the embedded default",
    "release": "list, promote or roll back the releases of a model",
    "canary": "judge a candidate release against the SLO and the baseline",
    "gateway": "OpenAI/Cohere-compatible HTTP gateway (embeddings, rerank, classify) in front of Triton",
    "gpu-check": "does this stack work on this GPU host: export, serve, fidelity and a quick bench; one JSON summary",
}

# top-level module a command may import -> the extra of pyproject.toml's optional-dependencies that brings it
# (tests/cli/test_cli.py checks this table against pyproject.toml). Where two extras bring a module, the one named
# is the one whose commands need it first.
EXTRAS: dict[str, str] = {
    "torch": "export",
    "transformers": "export",
    "optimum": "export",
    "onnx": "export",
    "onnxruntime": "export",
    "tokenizers": "export",
    "tqdm": "export",
    "pytriton": "serve",
    "locust": "loadtest",
    "matplotlib": "loadtest",
    "yaml": "loadtest",
    "prometheus_client": "metrics",
    "fastapi": "gateway",
    "uvicorn": "gateway",
    "redis": "gateway",
    "aiohttp": "bench",
}

EXIT_USAGE = 2  # argparse's own status for a command line it refuses


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where there is a default to show and the help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or action.default is False or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


def module_name(command: str) -> str:
    """The module of ``command``: ``gpu-check`` -> ``tritonstack.commands.gpu_check``."""
    return "tritonstack.commands." + command.replace("-", "_")


def _requested_command(argv: Sequence[str]) -> str | None:
    # The top-level parser has no option that takes a value, so the first word that is not an option is the
    # command (or a misspelling of one, which argparse then refuses listing the commands).
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line with every command listed and only ``command``'s options declared (its module imported).

    ``command=None`` (or an unknown name) imports no command module: enough for ``--help`` and for
    argparse to refuse a misspelt command.
    """
    return _build(command)[0]


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``tritonstack COMMAND`` alone, its module imported: what the CLI reference renders."""
    found = _build(command)[1]
    if found is None:
        raise KeyError(f"no command {command!r}")
    return found


def _build(command: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    parser = argparse.ArgumentParser(
        prog="tritonstack",
        description="Take a Hugging Face model to a measured, monitored NVIDIA Triton deployment.",
    )
    parser.add_argument("--version", action="version", version=f"tritonstack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    declared = None
    for name, help_text in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)  # listed; its options are declared only when it runs
            continue
        module = importlib.import_module(module_name(name))
        declared = sub.add_parser(
            name, help=help_text, description=_first_line(module, help_text), formatter_class=HelpFormatter
        )
        module.add_arguments(declared)
        declared.set_defaults(_run=module.run)
    return parser, declared


def _first_line(module: ModuleType, fallback: str) -> str:
    return (module.__doc__ or fallback).strip().splitlines()[0]


def missing_extra(error: ImportError) -> str | None:
    """The extra to install when ``error`` is an optional dependency that is not there; ``None`` otherwise."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    return EXTRAS.get(error.name.partition(".")[0])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _requested_command(argv)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args._run(args))
    except TritonStackError as error:
        return _report(error.message, error.hint, error.exit_code)
    except ImportError as error:
        extra = missing_extra(error)
        if extra is None:
            raise  # not a missing extra: a bug, whose traceback is the report
        message = str(error) or f"No module named {error.name!r}"
        return _report(message, f"pip install 'tritonstack[{extra}]'", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _report(message: str, hint: str | None, exit_code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return exit_code


def console_main() -> None:
    sys.exit(main())
