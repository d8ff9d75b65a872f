"""The command line itself: a run imports only the command it runs, and the one error boundary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tritonstack import cli
from tritonstack.cli import COMMANDS, EXTRAS, main

REPO = Path(__file__).resolve().parents[2]
# what no `--help` may import: seconds of torch, Locust's gevent patching, gRPC and protobuf
HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "tritonclient", "grpc", "locust", "gevent", "google.protobuf")


def _imported_by(argv: list[str]) -> list[str]:
    """The modules a fresh process holds after ``cli.main(argv)`` (which may exit, as --help does)."""
    code = (
        "import json, sys\n"
        "from tritonstack import cli\n"
        "try:\n"
        f"    cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stderr.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _loaded(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


def test_top_level_help_imports_no_command_and_nothing_heavy() -> None:
    modules = _imported_by(["--help"])
    assert _loaded(modules, "tritonstack.commands") == []
    for heavy in (*HEAVY, "numpy"):
        assert _loaded(modules, heavy) == [], heavy


def test_a_command_imports_its_own_module_only() -> None:
    modules = _imported_by(["bench", "--help"])
    commands = [m for m in _loaded(modules, "tritonstack.commands") if m != "tritonstack.commands._args"]
    assert commands == ["tritonstack.commands", "tritonstack.commands.bench"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_is_light(command: str) -> None:
    modules = _imported_by([command, "--help"])
    assert cli.module_name(command) in modules
    others = {cli.module_name(name) for name in COMMANDS if name != command}
    assert others.isdisjoint(modules)
    for heavy in HEAVY:
        assert _loaded(modules, heavy) == [], heavy


def test_top_level_help_lists_the_command_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name, help_text in COMMANDS.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(help_text.split()[0])}", out, re.MULTILINE), name


def test_no_command_prints_the_table_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == cli.EXIT_USAGE
    assert "gpu-check" in capsys.readouterr().out


def test_an_unknown_command_is_refused_listing_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["exprot", "model"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'exprot'" in err and all(name in err for name in COMMANDS)


def test_a_command_help_shows_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["gpu-check", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tritonstack gpu-check") and "--no-bench" in out


def test_a_hyphenated_command_is_an_underscored_module() -> None:
    assert cli.module_name("gpu-check") == "tritonstack.commands.gpu_check"
    for name in COMMANDS:
        assert (REPO / "src" / (cli.module_name(name).replace(".", "/") + ".py")).is_file(), name


def test_a_missing_extra_is_one_line_and_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonstack.commands import loadtest

    def run(args: object) -> int:
        raise ModuleNotFoundError("No module named 'locust'", name="locust")

    monkeypatch.setattr(loadtest, "run", run)
    assert main(["loadtest", "--slo", "slo.yaml"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: No module named 'locust'",
        "hint: pip install 'tritonstack[loadtest]'",
    ]


def test_a_missing_submodule_names_the_extra_of_its_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonstack.commands import export

    def run(args: object) -> int:
        raise ModuleNotFoundError(name="optimum.exporters")

    monkeypatch.setattr(export, "run", run)
    assert main(["export", "some/model"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: No module named 'optimum.exporters'",
        "hint: pip install 'tritonstack[export]'",
    ]


def test_an_import_error_that_no_extra_explains_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonstack.commands import validate

    def run(args: object) -> int:
        raise ModuleNotFoundError("No module named 'tritonstack.nowhere'", name="tritonstack.nowhere")

    monkeypatch.setattr(validate, "run", run)
    with pytest.raises(ModuleNotFoundError, match=r"tritonstack\.nowhere"):
        main(["validate"])


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalized(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])


def test_the_extras_table_matches_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    distributions = packages_distributions()
    for module, extra in EXTRAS.items():
        assert extra in extras, (module, extra)
        # the extra named for a module is one that installs it
        provided_by = {_normalized(d) for d in distributions.get(module, ())}
        assert provided_by & {_requirement_name(r) for r in extras[extra]}, (module, extra, provided_by)
    # and every dependency an extra brings can be named by the boundary (dev tools and the GPU build of
    # onnxruntime, whose module is onnxruntime's, aside; py-spy installs a program, no module: bench --profile
    # checks for it itself, with the same hint)
    covered = {_normalized(d) for module in EXTRAS for d in distributions.get(module, ())} | {"py-spy"}
    for extra, requirements in extras.items():
        if extra in ("dev", "gpu"):
            continue
        missing = {_requirement_name(r) for r in requirements} - covered
        assert not missing, (extra, missing)
