"""The repository writer and `tritonstack validate`, on real exported tiny models."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import tritonstack.in_triton.models
from tritonstack.cli import main
from tritonstack.repository.errors import ConfigValidationError, RepositoryError
from tritonstack.repository.paths import versions
from tritonstack.repository.validate import check_repository, validate_repository
from tritonstack.repository.writer import ExportedModel, write_text_model


@pytest.fixture()
def repository(tiny_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(tiny_repository, copy)
    return copy


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def problems(repository: Path) -> list[str]:
    return validate_repository(repository).problems


def test_exported_repository_is_valid(tiny_repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = check_repository(tiny_repository)
    assert set(report.models) >= {"tiny", "tiny_encoder", "tiny_tokenizer", "tiny_cls_postprocess"}
    assert main(["validate", str(tiny_repository)]) == 0
    assert "models OK" in capsys.readouterr().out


def test_int32_token_tensor_against_an_int64_model_is_named(repository: Path) -> None:
    edit(repository / "tiny_encoder" / "config.pbtxt", "TYPE_INT64", "TYPE_INT32")
    found = problems(repository)
    assert any(
        p.startswith("tiny_encoder: input 'input_ids': config data_type TYPE_INT32, model file TYPE_INT64")
        for p in found
    ), found


def test_wrong_rank_against_the_onnx_dynamic_axes_is_named(repository: Path) -> None:
    config = repository / "tiny_encoder" / "config.pbtxt"
    config.write_text(re.sub(r"dims: -1\n", "dims: -1\n  dims: 4\n", config.read_text(), count=1))
    found = problems(repository)
    assert any("tiny_encoder: input 'input_ids': config rank 3" in p for p in found), found


def test_a_config_naming_a_tensor_the_model_lacks_is_named(repository: Path) -> None:
    edit(repository / "tiny_encoder" / "config.pbtxt", '"sentence_embedding"', '"pooled"')
    found = problems(repository)
    assert any("tiny_encoder: config output 'pooled' is not in the model file" in p for p in found), found
    assert any(p.startswith("tiny: ensemble step 2 (tiny_encoder)") for p in found), found


def test_token_counts_are_the_one_output_past_the_contracts(repository: Path) -> None:
    # TOKENS after the encoder's inputs (tokenizer) and the task's outputs (ensemble) is valid; another name is not
    edit(repository / "tiny_tokenizer" / "config.pbtxt", '"TOKENS"', '"COUNTS"')
    edit(repository / "tiny" / "config.pbtxt", '"TOKENS"', '"COUNTS"', count=3)
    found = problems(repository)
    assert any(p.startswith("tiny_tokenizer: outputs must be tiny_encoder's inputs") for p in found), found
    assert any(p.startswith("tiny: outputs must be ['EMBEDDING'] [and TOKENS]") for p in found), found


def test_missing_tokenizer_file_is_named(repository: Path) -> None:
    (repository / "tiny_tokenizer" / "1" / "tokenizer.json").unlink()
    assert "tiny_tokenizer: version 1 has no tokenizer.json" in problems(repository)


def test_python_models_carry_their_code_in_each_version_folder(tiny_repository: Path) -> None:
    # model.py loads tokenization.py from its own folder: the Triton stub has no tritonstack to import it from
    package = Path(tritonstack.in_triton.models.__file__).parent
    for name in ("tiny_tokenizer", "tiny_cls_postprocess", "tiny_ner_postprocess"):
        version = tiny_repository / name / "1"
        assert (version / "model.py").read_text() == (package / "text_model.py").read_text(), name
        assert (version / "tokenization.py").read_text() == (package / "tokenization.py").read_text(), name
        assert (version / "error_responses.py").read_text() == (package / "error_responses.py").read_text(), name


def test_missing_tokenization_module_is_named(repository: Path) -> None:
    (repository / "tiny_cls_postprocess" / "1" / "tokenization.py").unlink()
    assert problems(repository) == ["tiny_cls_postprocess: version 1 has no tokenization.py"]


def test_ensemble_step_naming_a_missing_model_is_named(repository: Path) -> None:
    shutil.rmtree(repository / "tiny_cls_postprocess")
    found = problems(repository)
    assert any("tiny_cls: ensemble step 3 (tiny_cls_postprocess): no model" in p for p in found), found


def test_unparsable_config_is_named(repository: Path) -> None:
    (repository / "tiny_encoder" / "config.pbtxt").write_text("max_batch_size: lots")
    found = problems(repository)
    assert any(p.startswith("tiny_encoder: config.pbtxt does not parse") for p in found), found


def test_validate_command_exits_non_zero_with_every_problem(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(repository / "tiny_encoder" / "config.pbtxt", "TYPE_INT64", "TYPE_INT32", count=3)
    assert main(["validate", str(repository)]) == 1
    err = capsys.readouterr().err
    # 3 in the encoder, 3 in the wiring of each text-in ensemble: tiny and its release's own, tiny_v1
    assert "error: 9 problems" in err and "hint:" in err


def test_empty_or_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigValidationError, match="holds no models"):
        check_repository(tmp_path)
    with pytest.raises(RepositoryError, match="does not exist"):
        check_repository(tmp_path / "nope")


def _model_from(repository: Path, name: str, tiny_model_dirs: dict[str, Path]) -> ExportedModel:
    return ExportedModel(
        name=name,
        task="feature-extraction",
        onnx_path=repository / "tiny_encoder" / "1" / "model.onnx",
        tokenizer_dir=repository / "tiny_tokenizer" / "1",
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        output_name="sentence_embedding",
        output_dim=32,
        labels=(),
        max_batch_size=64,
        max_sequence_length=64,
        precision="fp32",
    )


def test_exporting_an_existing_name_adds_a_version(repository: Path, tiny_model_dirs: dict[str, Path]) -> None:
    model = _model_from(repository, "tiny", tiny_model_dirs)
    version_dir = write_text_model(repository, model)
    assert version_dir == repository / "tiny" / "2"
    for name in ("tiny", "tiny_encoder", "tiny_tokenizer"):
        assert sorted(p.name for p in (repository / name).iterdir() if p.is_dir()) == ["1", "2"]
    assert (version_dir / "export_report.json").is_file()
    check_repository(repository)


def test_a_failed_write_leaves_nothing_behind(
    repository: Path, tmp_path: Path, tiny_model_dirs: dict[str, Path]
) -> None:
    before = sorted(str(p.relative_to(repository)) for p in repository.rglob("*"))
    no_tokenizer = tmp_path / "empty"
    no_tokenizer.mkdir()
    model = replace(_model_from(repository, "other", tiny_model_dirs), tokenizer_dir=no_tokenizer)
    with pytest.raises(RepositoryError, match=r"no tokenizer\.json"):
        write_text_model(repository, model)
    assert sorted(str(p.relative_to(repository)) for p in repository.rglob("*")) == before


def test_unwritable_repository_is_a_clear_error(tmp_path: Path, repository: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot create a folder below a file
    with pytest.raises(RepositoryError, match=r"cannot write to model repository"):
        write_text_model(blocker / "repo", _model_from(repository, "x", {}))


def test_version_folders_are_whole_numbers_in_numeric_order(tmp_path: Path) -> None:
    for name in ("10", "2", "9", "latest", "1.5", ".staging"):
        (tmp_path / "model" / name).mkdir(parents=True)
    (tmp_path / "model" / "3").write_text("a file, not a version")
    assert [p.name for p in versions(tmp_path / "model")] == ["2", "9", "10"]
    assert versions(tmp_path / "absent") == []
