"""docs/cli.md, the per-command reference, rendered from the commands' own argparse parsers.

``make docs-cli`` writes it (``python -m tritonstack._cli_reference docs/cli.md``);
``tests/test_cli_reference.py`` fails when the file differs from what this renders.
A developer's tool, not a ``tritonstack`` command. The output depends on the code
only: usage is wrapped at a fixed width, and defaults render as written in the code.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from tritonstack.cli import COMMANDS, HelpFormatter, command_parser, module_name

WIDTH = 100  # columns of the usage block, whatever the terminal of whoever regenerates it
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
    parser.formatter_class = _fixed_width
    module = sys.modules[module_name(name)]
    lines = [f"## tritonstack {name}", "", _description(module.__doc__ or COMMANDS[name]), ""]
    lines += ["```text", parser.format_usage().rstrip(), "```"]
    # argparse has no public API for one action's text; a plain formatter leaves the default to its own column
    formatter = argparse.HelpFormatter(parser.prog, width=WIDTH)
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
            invocation = formatter._format_action_invocation(action)
            help_text = formatter._expand_help(action) if action.help else ""
            lines.append(f"| `{_cell(invocation)}` | {_default(action)} | {_cell(help_text)} |")
    return lines


def _fixed_width(prog: str) -> HelpFormatter:
    return HelpFormatter(prog, width=WIDTH)


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
