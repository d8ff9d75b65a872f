"""ensure_exported, where the demo and the benchmark start: reuse a valid export, else export through the API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tritonstack.export import ensure_exported
from tritonstack.repository.errors import ConfigValidationError
from tritonstack.repository.validate import check_repository


def test_a_valid_model_already_there_is_reused_untouched(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path
) -> None:
    config = tiny_repository / "tiny" / "config.pbtxt"
    before = config.stat().st_mtime_ns
    lines: list[str] = []
    assert ensure_exported(tiny_model_dirs["tiny"], tiny_repository, "tiny", log=lines.append) is None
    assert lines == [f"tiny is already in {tiny_repository}: reusing it (--reexport to export again)"]
    assert config.stat().st_mtime_ns == before


def test_a_reused_model_sized_for_another_server_says_so(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path
) -> None:
    from tritonstack.export.ensure import served_cpu_instances

    served = served_cpu_instances(tiny_repository, "tiny")
    assert served is not None and served >= 1
    lines: list[str] = []
    assert (
        ensure_exported(tiny_model_dirs["tiny"], tiny_repository, "tiny", cpu_instances=served, log=lines.append)
        is None
    )
    assert len(lines) == 1  # as exported for this server: nothing to say
    assert (
        ensure_exported(tiny_model_dirs["tiny"], tiny_repository, "tiny", cpu_instances=served + 1, log=lines.append)
        is None
    )
    assert lines[-1] == (
        f"  it runs {served} CPU instances, where an export now would write {served + 1} (one per core of the "
        "server): --reexport to export it for this server"
    )
    assert served_cpu_instances(tiny_repository, "no_such_model") is None


def test_an_invalid_repository_is_refused_with_the_way_out(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(tiny_repository, repository)
    config = repository / "tiny_encoder" / "config.pbtxt"
    config.write_text(config.read_text().replace("TYPE_INT64", "TYPE_INT32", 1))
    with pytest.raises(ConfigValidationError) as raised:
        ensure_exported(tiny_model_dirs["tiny"], repository, "tiny", log=lambda line: None)
    assert raised.value.problems and any("tiny_encoder" in problem for problem in raised.value.problems)
    assert raised.value.hint is not None and "--reexport" in raised.value.hint


def test_a_missing_model_is_exported_through_the_api(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    lines: list[str] = []
    result = ensure_exported(tiny_model_dirs["tiny"], repository, "tiny", log=lines.append)
    assert result is not None and result.version_dir == repository / "tiny" / "1"
    assert result.report.status == "written"
    check_repository(repository)
    assert lines[0] == f"$ tritonstack export {tiny_model_dirs['tiny']} --name tiny --repository {repository}"
    # what `tritonstack export` prints: the candidate table, then the summary, one line per log call
    assert any(line.startswith("written    ") for line in lines)
    assert all("\n" not in line for line in lines)
    # asked again, it reuses what it wrote
    assert ensure_exported(tiny_model_dirs["tiny"], repository, "tiny", log=lines.append) is None


def test_a_reexport_is_promoted_so_the_name_serves_it(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    from tritonstack.repository.releases import read_releases

    repository = tmp_path / "repo"
    ensure_exported(tiny_model_dirs["tiny"], repository, "tiny", log=lambda line: None)
    lines: list[str] = []
    result = ensure_exported(tiny_model_dirs["tiny"], repository, "tiny", reexport=True, log=lines.append)
    assert result is not None and result.version_dir == repository / "tiny" / "2"
    state = read_releases(repository, "tiny")
    assert (state.stable, state.candidate, state.retired) == (2, None, (1,))
    assert lines[-1] == f"$ tritonstack release promote --model tiny --repository {repository}  (release 2)"
    check_repository(repository)
