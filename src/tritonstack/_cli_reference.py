"""docs/cli.md, the per-command reference, rendered from the commands' own argparse parsers.

``make docs-cli`` writes it (``python -m tritonstack._cli_reference docs/cli.md``);
``tests/cli/test_cli_reference.py`` fails when the file differs from what this renders.
A developer's tool, not a ``tritonstack`` command. The output depends on the code
only, not on the terminal or the Python version: usage and option spellings are
rendered here rather than by argparse's formatter, and defaults render as written.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from tritonstack.cli import COMMANDS, command_parser, module_name

HEADER = (
    "<!-- Generated from the argparse parsers by `make docs-cli` (src/tritonstack/_cli_reference.py): "
    "edit the commands, not this file. -->"
)


def render() -> str:
    """The whole reference as Markdown."""
    lines = [
        HEADER,
        "",
        "# Command-line reference",
        "",
        "Every `tritonstack` command, its options and their defaults, as `tritonstack COMMAND --help` prints "
        "them. `tritonstack --help` lists the commands.",
        "",
        "| command | what it does |",
        "|---|---|",
        *(f"| [`{name}`](#tritonstack-{name}) | {_cell(help_text)} |" for name, help_text in COMMANDS.items()),
    ]
    for name in COMMANDS:
        lines += ["", *_command(name)]
    return "\n".join(lines) + "\n"


def _command(name: str) -> list[str]:
    parser = command_parser(name)
    module = sys.modules[module_name(name)]
    lines = [f"## tritonstack {name}", "", _description(module.__doc__ or COMMANDS[name]), ""]
    lines += ["```text", _usage(parser), "```"]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS and a.dest != "help"]
        if not actions:
            continue
        title = {"positional arguments": "Arguments", "options": "Options"}.get(group.title or "", group.title)
        lines += ["", f"**{title}**", ""]
        if group.description:
            lines += [_text(group.description), ""]
        lines += ["| option | default | description |", "|---|---|---|"]
        for action in actions:
            invocation = _invocation(action)
            help_text = _expand_help(action)
            lines.append(f"| `{_cell(invocation)}` | {_default(action)} | {_cell(help_text)} |")
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    # Rendered here, not by argparse's formatter: its wrapping and spelling change between Python versions
    # (3.13 writes "-s, --long X" where 3.11 writes "-s X, --long X"), and the reference must not.
    positionals = [_metavar(a) for a in parser._actions if not a.option_strings and a.help is not argparse.SUPPRESS]
    return " ".join([f"usage: {parser.prog}", "[options]", *positionals])


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        name = action.metavar
    elif action.choices is not None:
        name = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    else:
        name = action.dest if not action.option_strings else action.dest.upper()
    return {"?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}.get(str(action.nargs), name)


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return _metavar(action)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    return f"{', '.join(action.option_strings)} {_metavar(action)}"


def _expand_help(action: argparse.Action) -> str:
    if not action.help:
        return ""
    params = {**vars(action), "prog": "tritonstack"}
    if action.choices is not None:
        params["choices"] = ", ".join(str(choice) for choice in action.choices)
    return action.help % params


def _description(docstring: str) -> str:
    # Docstrings use reStructuredText's ``code``; Markdown's is `code`. Indented examples stay code blocks.
    return _text(inspect.cleandoc(docstring).replace("``", "`"))


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    default = action.default
    if default is None or default is False or default == [] or default is argparse.SUPPRESS:
        return ""
    return f"`{_cell(str(default))}`"


def _text(text: str) -> str:
    # `<timestamp>` in prose would be read as an HTML tag and vanish; in code (spans, indented blocks) it shows
    lines = []
    for line in text.split("\n"):
        if not line.startswith("    "):
            parts = line.split("`")
            line = "`".join(part.replace("<", "\\<") if i % 2 == 0 else part for i, part in enumerate(parts))
        lines.append(line)
    return "\n".join(lines)


def _cell(text: str) -> str:
    return _text(" ".join(text.split())).replace("|", "\\|")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tritonstack._cli_reference PATH   (make docs-cli)", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(render())
    return 0


if __name__ == "__main__":  # make docs-cli
    sys.exit(main(sys.argv[1:]))
