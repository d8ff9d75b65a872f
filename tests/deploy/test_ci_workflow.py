"""The GitHub Actions workflow users can adopt (.github/workflows/ci.yml) and docs/deploy.md's promotion snippet.

actionlint checks both: syntax, unknown keys, expression types, step output references, runner
labels, and the inputs of well-known actions, which it knows by major tag (``@v7``), so each file is
also checked with its full version tags cut to the major. Shellcheck of ``run:`` scripts is off
here, so that the verdict does not depend on whether shellcheck is on PATH. Then what actionlint does not know:
the workflow runs the README's commands (``make lint``, ``make test``), the system packages with
sudo, promtool and the manifest tests; actions pinned by full version tag; a read-only token;
a concurrency group; timeouts; pip's cache. The snippet passes only flags ``tritonstack canary``
and ``tritonstack release`` take, and acts on the canary's documented exit status.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonstack.commands import canary, release

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
PROMOTION_SECTION = "## Promoting a release from CI"
# owner/repo@vMAJOR.MINOR.PATCH: a tag that names one release, not a moving major tag or a branch.
FULL_VERSION_TAG = re.compile(r"[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+")
MAJOR = re.compile(r"(uses: *[\w.-]+/[\w.-]+@v\d+)\.\d+\.\d+")


def _actionlint() -> str:
    # The dev extra installs it beside this interpreter; a venv's bin/ need not be on PATH.
    found = shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.fail("actionlint is not installed: it comes with the dev extra (pip install -e '.[dev]')")
    return found


def actionlint(*workflows: Path) -> subprocess.CompletedProcess[str]:
    command = [_actionlint(), "-no-color", "-shellcheck=", "-pyflakes=", *map(str, workflows)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def lint(text: str, where: Path) -> str:
    """actionlint's complaints about a workflow, as written and with ``@vX.Y.Z`` cut to ``@vX``."""
    where.mkdir(parents=True, exist_ok=True)
    complaints = []
    for name, version in (("as-written.yml", text), ("major-tags.yml", MAJOR.sub(r"\1", text))):
        path = where / name
        path.write_text(version)
        result = actionlint(path)
        assert result.returncode in (0, 1), result.stderr  # 1: problems found; more: actionlint failed
        complaints.append(result.stdout)
    return "".join(complaints)


def load(path: Path) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 (PyYAML) reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load(WORKFLOW)


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _runs(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in _steps(workflow) if "run" in step]


def test_actionlint_accepts_the_workflow(tmp_path: Path) -> None:
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lint(WORKFLOW.read_text(), tmp_path / ".github" / "workflows") == ""


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        # an unknown key: `timeout-minute` for `timeout-minutes`
        (lambda text: text.replace("timeout-minutes: 90", "timeout-minute: 90"), "timeout-minute"),
        # a context property that does not exist
        (lambda text: text.replace("github.ref }}", "github.reff }}"), "reff"),
        # an input the action does not have
        (lambda text: text.replace("cache: pip", "cache: pip\n          cache-pip: true"), "cache-pip"),
    ],
    ids=["unknown key", "unknown property", "unknown action input"],
)
def test_actionlint_rejects_a_broken_copy(tmp_path: Path, change: Any, complaint: str) -> None:
    """The check above can fail: the same workflow with one mistake does."""
    text = WORKFLOW.read_text()
    broken = change(text)
    assert broken != text
    assert complaint in lint(broken, tmp_path / ".github" / "workflows")


def test_the_token_reads_and_nothing_more(workflow) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in workflow["jobs"].values()), "no job widens it"
    for step in _steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, "no step needs the token in .git/config"


def test_every_action_is_pinned_by_full_version_tag(workflow) -> None:
    uses = [step["uses"] for step in _steps(workflow) if "uses" in step]
    assert uses
    for action in uses:
        assert FULL_VERSION_TAG.fullmatch(action), action


def test_runs_are_grouped_and_bounded(workflow) -> None:
    assert "github.ref" in workflow["concurrency"]["group"]
    assert "cancel-in-progress" in workflow["concurrency"]
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 90, name  # .ci/run's budget
        for step in job["steps"]:
            if "run" in step:
                assert 0 < step["timeout-minutes"] <= job["timeout-minutes"], step["name"]


def test_python_is_the_version_mypy_checks_and_pip_is_cached(workflow) -> None:
    (setup,) = (step for step in _steps(workflow) if step.get("uses", "").startswith("actions/setup-python@"))
    # tomllib is 3.11+ and the project supports 3.10: the one line, by pattern.
    mypy = re.search(r'^\[tool\.mypy\]\npython_version = "([\d.]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert mypy and setup["with"]["python-version"] == mypy.group(1)
    assert setup["with"]["cache"] == "pip"
    assert set(setup["with"]["cache-dependency-path"].split()) == {"pyproject.toml", "constraints.txt"}


def test_it_runs_the_readme_commands_and_the_checks_the_issue_names(workflow) -> None:
    runs = _runs(workflow)
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in runs and "make lint" in runs
    assert runs.index("make lint") < runs.index("make test")
    # The system packages the tests need, installed as root before anything runs make.
    (system,) = (run for run in runs if "scripts/install-system-deps.sh" in run)
    assert re.search(r"^sudo .*bash scripts/install-system-deps\.sh$", system, re.M), system
    assert runs.index(system) < runs.index("make lint")
    checks = "\n".join(runs)
    for command in ("promtool check config", "promtool check rules", "promtool test rules"):
        assert command in checks
    cited = (
        "tests/monitoring/test_monitoring_promtool.py",
        "tests/deploy/test_deploy_k8s.py",
        "tests/deploy/test_ci_workflow.py",
    )
    for tests in cited:
        assert tests in checks and (ROOT / tests).is_file()


def test_the_cpu_torch_it_installs_is_the_pinned_one(workflow) -> None:
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    (install,) = (run for run in _runs(workflow) if "torch==" in run)
    assert f"torch=={pins['torch']}" in install and "-c constraints.txt" in install
    assert workflow["env"]["GPU"] == "0", "no GPU on hosted runners: the Makefile's CPU wheel"


# -- docs/deploy.md: promoting a release from CI -------------------------------------


def promotion_snippet() -> str:
    section = DEPLOY_DOC.read_text().split(PROMOTION_SECTION, 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, f"docs/deploy.md {PROMOTION_SECTION!r} has no yaml block"
    return match.group(1)


def _commands(script: str, program: str) -> list[list[str]]:
    """The ``program ...`` command lines of a shell script, continuation lines joined."""
    joined = script.replace("\\\n", " ")
    return [shlex.split(line.split("||")[0]) for line in joined.splitlines() if line.strip().startswith(program)]


def _options(add_arguments: Any) -> tuple[set[str], set[str]]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    known = {option for action in parser._actions for option in action.option_strings}
    required = {action.option_strings[0] for action in parser._actions if action.required and action.option_strings}
    return known, required


def test_actionlint_accepts_the_promotion_snippet(tmp_path: Path) -> None:
    assert lint(promotion_snippet(), tmp_path / ".github" / "workflows") == ""
    uses = re.findall(r"uses: *(\S+)", promotion_snippet())
    assert uses and all(FULL_VERSION_TAG.fullmatch(action) for action in uses), uses


def test_the_snippet_promotes_on_0_rolls_back_on_1_and_stops_otherwise() -> None:
    # The exit statuses the command documents.
    doc = " ".join((canary.__doc__ or "").split())
    assert "0 promote" in doc and "1 roll back" in doc and "2 the canary could not run" in doc
    workflow = yaml.safe_load(promotion_snippet())
    steps = workflow["jobs"]["canary"]["steps"]
    (verdict,) = (step for step in steps if "tritonstack canary" in step.get("run", ""))
    arms = dict(re.findall(r"^\s*(\S+)\) (.*)$", verdict["run"], re.M))
    assert 'verdict=promote"' in arms["0"] and 'verdict=rollback"' in arms["1"]
    assert "exit" in arms["*"] and "verdict=" not in arms["*"]
    (promote,) = (step for step in steps if "release promote" in step.get("run", ""))
    (rollback,) = (step for step in steps if "release rollback" in step.get("run", ""))
    assert promote["if"] == f"steps.{verdict['id']}.outputs.verdict == 'promote'"
    assert rollback["if"] == f"steps.{verdict['id']}.outputs.verdict == 'rollback'"


def test_the_snippet_passes_only_flags_the_commands_take() -> None:
    runs = [step.get("run", "") for step in yaml.safe_load(promotion_snippet())["jobs"]["canary"]["steps"]]
    script = "\n".join(runs)
    (canary_command,) = _commands(script, "tritonstack canary")
    known, required = _options(canary.add_arguments)
    given = {word for word in canary_command if word.startswith("--")}
    assert given <= known and required <= given, (given, known, required)
    assert (ROOT / canary_command[canary_command.index("--slo") + 1]).is_file()
    release_commands = _commands(script, "tritonstack release")
    assert {command[2] for command in release_commands} == {"promote", "rollback"}
    known, required = _options(release.add_arguments)
    for command in release_commands:
        given = {word for word in command if word.startswith("--")}
        assert command[2] in release.ACTIONS and given <= known and required <= given, command
