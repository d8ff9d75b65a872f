"""docs/cli.md is what the parsers say today: regenerated in memory and compared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tritonstack import _cli_reference
from tritonstack.cli import COMMANDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_up_to_date() -> None:
    assert DOC.read_text() == _cli_reference.render(), "docs/cli.md is out of date: run `make docs-cli`"


def test_every_command_has_a_section() -> None:
    text = DOC.read_text()
    for name in COMMANDS:
        assert f"\n## tritonstack {name}\n" in text and f"(#tritonstack-{name})" in text, name


def test_the_reference_does_not_depend_on_the_terminal() -> None:
    code = "from tritonstack import _cli_reference; print(_cli_reference.render(), end='')"
    for columns in ("40", "250"):
        env = {"COLUMNS": columns, "LINES": "20", "PATH": "", "PYTHONPATH": ":".join(sys.path)}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert done.stdout == _cli_reference.render(), columns


def test_building_every_parser_imports_neither_locust_nor_grpc() -> None:
    # the reference builds every command's parser in one process, this test's: Locust's gevent patching on
    # import would patch it, and gRPC made before that patching breaks the load test's users
    code = (
        "import sys; from tritonstack import _cli_reference; _cli_reference.render(); "
        "print(sorted(m for m in ('locust', 'gevent', 'grpc', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
