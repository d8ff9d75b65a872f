"""export of a hub id: --revision reaches the download, only the files the export reads are fetched, and the
report records the commit. Offline: a stand-in for huggingface_hub.snapshot_download serves a local folder."""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tinymodels
from tritonstack.cli import main
from tritonstack.export import hub
from tritonstack.export.errors import ExportError
from tritonstack.export.onnx_export import resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub(source: Path, cache: Path, calls: list[dict[str, Any]]) -> Callable[..., str]:
    """``snapshot_download`` over ``source`` as the hub holds it: a snapshot folder named after the commit,
    holding the files that match ``allow_patterns``."""

    def snapshot_download(repo_id: str, *, revision: str | None = None, allow_patterns: list[str]) -> str:
        calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": list(allow_patterns)})
        snapshot = cache / "snapshots" / COMMIT
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source).as_posix()
            if any(fnmatch.fnmatch(relative, pattern) for pattern in allow_patterns):
                (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, snapshot / relative)
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)

    return snapshot_download


@pytest.fixture
def hub_model(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> Path:
    """The tiny model as a hub repository holds it, with files an export never reads beside it."""
    source = Path(shutil.copytree(tiny_model_dirs["tiny"], tmp_path / "hub-repo"))
    (source / "tf_model.h5").write_bytes(b"tensorflow weights")
    (source / "onnx").mkdir()
    (source / "onnx" / "model.onnx").write_bytes(b"someone else's onnx")
    (source / "README.md").write_text("card")
    return source


def test_a_hub_id_is_fetched_at_its_revision_with_only_the_files_export_reads(
    hub_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(hub_model, tmp_path / "cache", calls))
    snapshot = resolve_model("org/tiny", revision="v1.0")
    assert [(c["repo_id"], c["revision"]) for c in calls] == [("org/tiny", "v1.0")]
    assert calls[0]["allow_patterns"] == [*hub.MODEL_FILES, *hub.SAFETENSORS]
    fetched = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert "config.json" in fetched and "model.safetensors" in fetched and "tokenizer.json" in fetched
    assert not {"tf_model.h5", "onnx/model.onnx", "README.md"} & set(fetched)
    assert hub.commit_of(snapshot) == COMMIT


def test_pytorch_weights_are_fetched_only_where_there_are_no_safetensors(
    hub_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    (hub_model / "model.safetensors").rename(hub_model / "pytorch_model.bin")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(hub_model, tmp_path / "cache", calls))
    snapshot = resolve_model("org/tiny")
    assert [c["allow_patterns"][-2:] for c in calls] == [list(hub.SAFETENSORS), list(hub.PYTORCH_BIN)]
    assert (snapshot / "pytorch_model.bin").is_file() and calls[-1]["revision"] is None


def test_a_revision_for_a_local_directory_is_refused(hub_model: Path) -> None:
    with pytest.raises(ExportError, match="names a version on the hub"):
        resolve_model(hub_model, revision="v1.0")


def test_export_revision_reaches_the_download_and_the_report_records_the_commit(
    hub_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(hub_model, tmp_path / "cache", calls))
    repository = tmp_path / "repo"
    argv = ["export", "org/tiny", "--revision", "v1.0", "--repository", str(repository), "--precision", "fp32"]
    assert main([*argv, "--json", "--queue-timeout-ms", str(tinymodels.QUEUE_TIMEOUT_MS)]) == 0, capsys.readouterr()
    report = json.loads(capsys.readouterr().out)
    assert (report["model"], report["revision"]) == ("org/tiny", COMMIT)
    written = json.loads((Path(report["version_dir"]) / "export_report.json").read_text())
    assert written["revision"] == COMMIT
    assert {c["revision"] for c in calls} == {"v1.0"}
