"""tune's writer: whatever stops it puts the previous configs back, a kill leaves a repository that validates,
and the undo command it prints works on any path. No server: the writing alone."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tritonstack.repository.validate import check_repository
from tritonstack.tune import apply
from tritonstack.tune.errors import TuneError
from tritonstack.tune.knobs import StepConfigs, apply_knobs, load_steps, read_knobs

TESTS = Path(__file__).parent.parent


@pytest.fixture
def repository(exported: Path, tmp_path: Path) -> Path:
    """A fresh copy of the export, under a path a shell would split (a space, a ``$``)."""
    return Path(shutil.copytree(exported, tmp_path / "my $repos" / "model_repository"))


def _files(repository: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repository)): p.read_bytes() for p in sorted(repository.rglob("*")) if p.is_file()}


def _fused_winner(repository: Path) -> tuple[StepConfigs, StepConfigs]:
    """A winner that rewrites every step and makes ``tiny_fused``: the most a tune writes."""
    before = load_steps(repository, "tiny")
    return before, apply_knobs(before, replace(read_knobs(before), layout="fused", encoder_delay_us=7))


def test_ctrl_c_while_writing_puts_the_previous_configs_back(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _files(repository)
    before, after = _fused_winner(repository)

    def interrupted(_: Path) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(apply, "check_repository", interrupted)
    with pytest.raises(KeyboardInterrupt):
        apply.write_winner(repository, before, after, tmp_path / "report")
    assert _files(repository) == original
    assert not (repository / "tiny_fused").exists()


def test_an_os_error_while_writing_is_a_tune_error_and_the_previous_configs_are_back(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _files(repository)
    before, after = _fused_winner(repository)
    calls = []

    def disk_full(repo: Path, config: Any) -> Path:  # after tiny_fused was made: it must go again
        calls.append(config.name)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(apply, "replace_config", disk_full)
    with pytest.raises(TuneError, match=r"previous ones are back: .*No space left"):
        apply.write_winner(repository, before, after, tmp_path / "report")
    assert calls == ["tiny"]
    assert _files(repository) == original


TUNE_POINTS = [
    "tune-kept",
    "tune-created-fused",
    "tune-wrote-tiny",
]


@pytest.mark.parametrize("fault", TUNE_POINTS)
def test_tune_killed_at_any_step_leaves_a_repository_that_validates(
    repository: Path, tmp_path: Path, fault: str
) -> None:
    code = f"""
        from dataclasses import replace
        from pathlib import Path
        from tritonstack.tune.apply import write_winner
        from tritonstack.tune.knobs import apply_knobs, load_steps, read_knobs
        repository = Path({str(repository)!r})
        before = load_steps(repository, "tiny")
        after = apply_knobs(before, replace(read_knobs(before), layout="fused", encoder_delay_us=7))
        write_winner(repository, before, after, Path({str(tmp_path / "report")!r}))
        """
    env = {**os.environ, "TRITONSTACK_FAULT": fault}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    check_repository(repository)


def test_the_printed_undo_command_works_on_a_path_with_spaces_and_dollars(repository: Path, tmp_path: Path) -> None:
    original = _files(repository)
    before, after = _fused_winner(repository)
    written = apply.write_winner(repository, before, after, tmp_path / "a report")
    assert written.created == (repository / "tiny_fused",)
    assert _files(repository) != original
    assert shlex.split(written.undo_command)[:3] == ["rm", "-r", str(repository / "tiny_fused")]
    subprocess.run(["bash", "-c", written.undo_command], check=True)
    assert _files(repository) == original
