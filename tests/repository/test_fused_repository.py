"""The fused layout on disk: what a fused export writes, what `validate` says of it, and its releases.

Real exported tiny models, no server (tests/server/test_server_fused.py serves them).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tinymodels
import tritonstack.in_triton.models
from tritonstack.in_triton import contract
from tritonstack.repository import layouts, releases
from tritonstack.repository.config import parse, render_proto
from tritonstack.repository.validate import check_repository, validate_repository

FUSED_FILES = (
    "model.py",
    "beside.py",
    "contract.py",
    "encoder_runner.py",
    "tokenization.py",
    "error_responses.py",
    "tokenizer.json",
)


def config(repository: Path, name: str) -> Any:
    return parse((repository / name / "config.pbtxt").read_text())


def write(repository: Path, name: str, proto: Any) -> None:
    (repository / name / "config.pbtxt").write_text(render_proto(proto))


def served(repository: Path, name: str) -> list[int]:
    return list(config(repository, name).version_policy.specific.versions)


def pinned_steps(repository: Path, name: str) -> list[tuple[str, int]]:
    return [(s.model_name, s.model_version) for s in config(repository, name).ensemble_scheduling.step]


def version_folders(repository: Path, name: str) -> list[str]:
    return sorted(p.name for p in (repository / name).iterdir() if p.is_dir())


def problems(repository: Path) -> list[str]:
    return validate_repository(repository).problems


@pytest.fixture(scope="module")
def fused_repository(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Path:
    """``cls`` (text classification, so a postprocess step too) exported once in the fused layout."""
    repository = tmp_path_factory.mktemp("fused") / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, "cls", layout="fused")
    return repository


@pytest.fixture(scope="module")
def ensemble_then_fused(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Path:
    """``cls`` exported twice: release 1 in the ensemble layout, release 2 in the fused one."""
    repository = tmp_path_factory.mktemp("ensemble-then-fused") / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, "cls")
    tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, "cls", layout="fused")
    return repository


@pytest.fixture()
def repository(fused_repository: Path, tmp_path: Path) -> Path:
    """A copy of ``fused_repository`` to break."""
    return Path(shutil.copytree(fused_repository, tmp_path / "model_repository"))


def test_a_fused_export_validates_clean(fused_repository: Path) -> None:
    report = check_repository(fused_repository)
    names = {"cls", "cls_v1", "cls_fused", "cls_encoder", "cls_tokenizer", "cls_postprocess"}
    assert set(report.models) == names
    assert layouts.layout_of(config(fused_repository, "cls")) == contract.FUSED_LAYOUT
    assert pinned_steps(fused_repository, "cls") == [("cls_fused", 1)]
    assert pinned_steps(fused_repository, "cls_v1") == [("cls_fused", 1)]
    assert served(fused_repository, "cls_fused") == [1]


def test_the_fused_step_carries_its_code_and_the_tokenizer_of_its_release(fused_repository: Path) -> None:
    package = Path(tritonstack.in_triton.models.__file__).parent
    version = fused_repository / "cls_fused" / "1"
    assert all((version / name).is_file() for name in FUSED_FILES), sorted(p.name for p in version.iterdir())
    assert (version / "model.py").read_text() == (package / "text_model.py").read_text()
    assert (version / "encoder_runner.py").read_text() == (package / "encoder_runner.py").read_text()
    # the names the writer wrote into the configs are the ones the served model reads: one file, copied
    assert (version / "contract.py").read_text() == Path(contract.__file__).read_text()
    tokenizer = fused_repository / "cls_tokenizer" / "1" / "tokenizer.json"
    assert (version / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    # it runs the encoder's file of its release, not a copy of its own
    assert not list(version.glob("*.onnx")) and (fused_repository / "cls_encoder" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize("filename", ["contract.py", "beside.py"])
def test_a_missing_contract_file_is_named_where_model_py_loads_it(repository: Path, filename: str) -> None:
    (repository / "cls_postprocess" / "1" / filename).unlink()
    assert problems(repository) == [f"cls_postprocess: version 1 has no {filename}"]


def test_a_version_folder_exported_before_the_contract_was_copied_still_validates(repository: Path) -> None:
    # its own model.py (the one before it) loads its siblings itself and neither file: serving it needs neither
    version = repository / "cls_postprocess" / "1"
    model_py = version / "model.py"
    model_py.write_text(model_py.read_text().replace("beside.py", "_load_beside"))
    (version / "contract.py").unlink()
    (version / "beside.py").unlink()
    assert problems(repository) == []


def test_a_missing_encoder_file_is_named_for_the_fused_version_that_runs_it(repository: Path) -> None:
    (repository / "cls_encoder" / "1" / "model.onnx").unlink()
    found = problems(repository)
    assert "cls_fused: version 1 runs cls_encoder/1/model.onnx, which is missing" in found, found


def test_a_gpu_instance_group_on_the_fused_step_is_named(repository: Path) -> None:
    fused = config(repository, "cls_fused")
    fused.instance_group[0].kind = fused.instance_group[0].KIND_GPU
    write(repository, "cls_fused", fused)
    assert problems(repository) == [
        "cls_fused: a fused step runs ONNX Runtime on the CPU: its instance_group must be KIND_CPU"
    ]


def test_a_fused_step_larger_than_its_encoder_is_named(repository: Path) -> None:
    encoder = config(repository, "cls_encoder")
    encoder.max_batch_size = 32
    write(repository, "cls_encoder", encoder)
    assert "cls_fused: max_batch_size 64 > cls_encoder's 32" in problems(repository)


def test_the_fused_step_needs_encoder_runner(repository: Path) -> None:
    (repository / "cls_fused" / "1" / "encoder_runner.py").unlink()
    assert problems(repository) == ["cls_fused: version 1 has no encoder_runner.py"]


def test_tokenizer_and_postprocess_folders_from_before_the_fused_layout_still_validate(repository: Path) -> None:
    # only the fused step imports encoder_runner.py; older exports did not copy it beside the other models
    for name in ("cls_tokenizer", "cls_postprocess"):
        (repository / name / "1" / "encoder_runner.py").unlink()
    check_repository(repository)


# --- a fused export into a repository whose first release was an ensemble ---------------------------


def test_a_fused_second_export_gives_the_ensemble_release_a_fused_step_too(ensemble_then_fused: Path) -> None:
    repository = ensemble_then_fused
    check_repository(repository)
    state = releases.read_releases(repository, "cls")
    assert (state.stable, state.candidate) == (1, 2)
    assert version_folders(repository, "cls_fused") == ["1", "2"]  # add_fused_versions made 1
    assert all((repository / "cls_fused" / "1" / name).is_file() for name in FUSED_FILES)
    assert served(repository, "cls_fused") == [1, 2]
    assert pinned_steps(repository, "cls") == [("cls_fused", 1)]
    assert pinned_steps(repository, "cls_v1") == [("cls_fused", 1)]
    assert pinned_steps(repository, "cls_v2") == [("cls_fused", 2)]
    for step in ("cls_encoder", "cls_tokenizer", "cls_postprocess"):
        assert served(repository, step) == [1, 2], step


@pytest.mark.parametrize(("change", "kept"), [(releases.promote, 2), (releases.rollback, 1)])
def test_promote_and_rollback_of_a_fused_candidate_keep_the_repository_valid(
    ensemble_then_fused: Path, tmp_path: Path, change: Any, kept: int
) -> None:
    repository = Path(shutil.copytree(ensemble_then_fused, tmp_path / "model_repository"))
    state = change(repository, "cls")
    assert (state.stable, state.candidate, state.retired) == (kept, None, (3 - kept,))
    check_repository(repository)
    assert pinned_steps(repository, "cls") == [("cls_fused", kept)]
    assert not (repository / f"cls_v{3 - kept}").exists()
    # the fused step, and the encoder and tokenizer whose files it reads, serve the kept release alone
    for step in ("cls_fused", "cls_encoder", "cls_tokenizer"):
        assert served(repository, step) == [kept], step


def all_served(repository: Path) -> dict[str, list[int]]:
    """The versions each model of ``repository`` serves, by name."""
    folders = sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    return {p.name: served(repository, p.name) for p in folders}


RELEASE_CHANGES: list[tuple[str, str, Callable[[Path, str], releases.Releases], tuple[pytest.MarkDecorator, ...]]] = [
    # (first export's layout, second export's layout, change, marks)
    ("ensemble", "ensemble", releases.promote, ()),
    ("ensemble", "ensemble", releases.rollback, ()),
    ("ensemble", "fused", releases.promote, ()),
    ("ensemble", "fused", releases.rollback, ()),
    ("fused", "fused", releases.promote, ()),
    ("fused", "fused", releases.rollback, ()),
    ("fused", "ensemble", releases.promote, ()),
    ("fused", "ensemble", releases.rollback, ()),
]


@pytest.mark.parametrize(
    ("first", "second", "change"),
    [pytest.param(first, second, change, marks=marks) for first, second, change, marks in RELEASE_CHANGES],
    ids=[f"{first}-then-{second}-{change.__name__}" for first, second, change, _ in RELEASE_CHANGES],
)
def test_no_config_serves_a_retired_release(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, first: str, second: str, change: Any
) -> None:
    """docs/releases.md: retired releases stay on disk and are not loaded."""
    repository = tmp_path / "model_repository"
    for layout in (first, second):
        tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, "cls", layout=layout)
    state = change(repository, "cls")
    (retired,) = state.retired
    assert {name: versions for name, versions in all_served(repository).items() if retired in versions} == {}


def test_three_exports_across_layouts_leave_no_retired_release_loaded(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """fused 1, fused 2 (a candidate), ensemble 3 (replaces that candidate): the fused step left idle by the
    ensemble export follows the served releases (1 and 3) too, with a folder for release 3 made for it."""
    repository = tmp_path / "model_repository"
    for layout in ("fused", "fused", "ensemble"):
        tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, "cls", layout=layout)
    check_repository(repository)
    state = releases.read_releases(repository, "cls")
    assert (state.stable, state.candidate) == (1, 3)
    assert {name: versions for name, versions in all_served(repository).items() if 2 in versions} == {}
    assert served(repository, "cls_fused") == [1, 3]
    assert (repository / "cls_fused" / "3" / "model.py").is_file()
