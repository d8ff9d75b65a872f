"""`tritonstack export` end to end on tiny local models: written when the gate passes, nothing otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tinymodels
from tritonstack.cli import main
from tritonstack.export.errors import AccuracyGateError, ExportError
from tritonstack.export.gates import Gate
from tritonstack.export.options import ExportOptions, Precision
from tritonstack.export.pipeline import export_model
from tritonstack.export.quantize import Recipe
from tritonstack.export.report import ExportReport, summarize
from tritonstack.export.texts import GATE, builtin_split
from tritonstack.in_triton import contract
from tritonstack.repository.config import parameter, parse
from tritonstack.repository.validate import check_repository

# no smoothed-mix search unless a test asks for it (test_export_int8.py), no cache outside the test's folders
FAST = {"progress": False, "reps": 1, "mixes": False, "cache_dir": None}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-tiny")
    return {
        "bert": tinymodels.build(root / "bert", "bert", "feature-extraction"),
        "distilbert": tinymodels.build(root / "distilbert", "distilbert", "text-classification", seed=2),
        "roberta": tinymodels.build(root / "roberta", "roberta", "token-classification", seed=5),
    }


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _encoder_parameters(repository: Path, name: str) -> tuple[str | None, str | None]:
    encoder = parse((repository / contract.encoder_name(name) / "config.pbtxt").read_text())
    return parameter(encoder, contract.PRECISION_PARAMETER), parameter(encoder, contract.RECIPE_PARAMETER)


def test_bert_int8_search_writes_the_fastest_passing_candidate(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    result = export_model(
        ExportOptions(
            str(tiny_models["bert"]),
            name="tiny",
            repository=repository,
            precision=Precision.INT8,
            recipes=(Recipe.default(), Recipe.per_channel_optimized(), Recipe.blockwise_optimized()),
            **FAST,
        )
    )
    report = result.report
    assert report.status == "written" and report.precision == "int8" and report.task == "feature-extraction"
    rows = {c.name: c for c in report.candidates}
    assert set(rows) == {"fp32", "default", "per_channel_optimized", "blockwise32_optimized"}
    assert all(c.seq_per_s and c.size_bytes for c in rows.values())
    passing = [c for c in rows.values() if c.selectable and c.passed]
    assert report.chosen is not None and report.recipe == max(passing, key=lambda c: c.seq_per_s or 0.0).name
    assert report.parity is not None and report.parity.value >= 0.99
    assert report.throughput_ratio_vs_fp32 == pytest.approx(
        (rows[report.recipe].seq_per_s or 0.0) / (rows["fp32"].seq_per_s or 1.0), rel=0.01
    )
    assert result.version_dir == repository / "tiny" / "1"
    stored = ExportReport.from_json((result.version_dir / "export_report.json").read_text())
    assert stored.recipe == report.recipe and stored.version == 1
    assert stored.candidates == report.candidates and stored.parity == report.parity
    # the served encoder says what it is, for readers that never see the report (the benchmark)
    assert _encoder_parameters(repository, "tiny") == ("int8", report.recipe)
    check_repository(repository)


def test_the_report_reads_back_from_its_json_unchanged(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    result = export_model(
        ExportOptions(
            str(tiny_models["bert"]),
            repository=tmp_path / "repo",
            precision=Precision.FP32,
            parity_texts=_texts_file(tmp_path),
            **FAST,
        )
    )
    report = result.report
    assert report.version_dir == result.version_dir and report.pooling is not None
    assert report.parity_texts_file is not None and report.parity_text_count == len(builtin_split(GATE)) + 2
    loaded = ExportReport.from_json(report.to_json())
    assert loaded == report
    assert loaded.chosen is loaded.candidates[[c.name for c in loaded.candidates].index(report.recipe or "")]
    assert loaded.to_dict() == json.loads(report.to_json())  # nothing but JSON types on either side


def _texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("a user's own text\nand one more, to gate on\n")
    return path


def test_distilbert_classification_fp32(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    result = export_model(
        ExportOptions(str(tiny_models["distilbert"]), repository=repository, precision=Precision.FP32, **FAST)
    )
    report = result.report
    assert report.name == "distilbert" and report.task == "text-classification"
    assert report.parity is not None
    assert report.parity.metric == "label_agreement" and report.parity.value == 1.0
    assert report.parity.details["max_abs_prob_diff"] < 1e-4
    assert {c.name for c in report.candidates} == {"fp32", "fp32_optimized"}
    assert report.labels == tinymodels.LABELS
    assert (repository / "distilbert_encoder" / "1" / "model.onnx").is_file()
    assert _encoder_parameters(repository, "distilbert") == ("fp32", report.recipe)
    check_repository(repository)


def test_roberta_token_classification_and_a_second_version(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    options = ExportOptions(
        str(tiny_models["roberta"]), name="ner", repository=repository, precision=Precision.FP32, **FAST
    )
    first = export_model(options)
    assert first.report.task == "token-classification"
    assert first.report.parity is not None and first.report.parity.value == 1.0
    second = export_model(options)
    assert (first.version_dir.name, second.version_dir.name) == ("1", "2")
    check_repository(repository)


def test_gate_miss_refuses_and_writes_nothing(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    with pytest.raises(AccuracyGateError) as caught:
        export_model(
            ExportOptions(
                str(tiny_models["bert"]),
                repository=repository,
                gate=Gate(1.01),  # no cosine reaches it
                precision=Precision.INT8,
                recipes=(Recipe.default(),),
                **FAST,
            )
        )
    error = caught.value
    assert "nothing written" in error.message
    assert error.hint and "--precision fp32" in error.hint
    assert error.report is not None and error.report.status == "refused"
    assert {c.name for c in error.report.candidates} == {"fp32", "default"}
    refused = ExportReport.from_json(error.report.to_json())
    assert refused == error.report and refused.chosen is None and refused.precision == "int8"
    assert error.measured["gate"] == 1.01
    assert _listing(tmp_path) == []


def test_unwritable_repository_fails_before_exporting(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write model repository"):
        export_model(ExportOptions(str(tiny_models["bert"]), repository=blocker / "repo", **FAST))


def test_cli_json_report(tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository = tmp_path / "repo"
    code = main(
        ["export", str(tiny_models["distilbert"]), "--repository", str(repository), "--precision", "fp32", "--json"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)  # stdout is the JSON and nothing else
    assert report["status"] == "written" and report["name"] == "distilbert"
    assert Path(report["version_dir"]).is_dir()


def test_cli_queue_flags_reach_every_queued_step(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonstack.repository.config import parse

    repository = tmp_path / "repo"
    command = ["export", str(tiny_models["distilbert"]), "--repository", str(repository), "--precision", "fp32"]
    assert main([*command, "--max-queue-size", "12", "--queue-timeout-ms", "0"]) == 0, capsys.readouterr().err
    for step in ("distilbert_tokenizer", "distilbert_encoder", "distilbert_postprocess"):
        policy = parse((repository / step / "config.pbtxt").read_text()).dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds) == (12, 0), step
    for step in ("distilbert_tokenizer", "distilbert_postprocess"):  # --queue-timeout-ms 0: no shedding by age
        assert parse((repository / step / "config.pbtxt").read_text()).parameters["queue_budget_ms"].string_value == "0"
    check_repository(repository)
    with pytest.raises(SystemExit) as usage:
        main([*command, "--queue-timeout-ms", "-5"])
    assert usage.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_cli_cache_flag_enables_the_response_cache_on_the_text_in_model_only(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonstack.repository.config import response_cache_enabled

    repository = tmp_path / "repo"
    command = ["export", str(tiny_models["distilbert"]), "--repository", str(repository), "--precision", "fp32"]
    assert main([*command, "--cache"]) == 0, capsys.readouterr().err
    enabled = {
        model.name: response_cache_enabled(parse((model / "config.pbtxt").read_text()))
        for model in repository.iterdir()
        if (model / "config.pbtxt").is_file()
    }
    # the text-in ensembles cache: the stable entry point and release 1's own (docs/releases.md); no step does
    # (the cpu default layout is fused: its step beside the ensemble layout's steps)
    assert enabled == {
        "distilbert": True, "distilbert_v1": True, "distilbert_fused": False,
        "distilbert_tokenizer": False, "distilbert_encoder": False, "distilbert_postprocess": False,
    }  # fmt: skip
    check_repository(repository)


def test_auto_precision_races_fp32_against_int8_and_keeps_the_fastest_passing(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    options = ExportOptions(
        str(tiny_models["bert"]), name="auto", repository=repository, recipes=(Recipe.per_channel_optimized(),), **FAST
    )
    report = export_model(options).report
    rows = {c.name: c for c in report.candidates}
    assert set(rows) == {"fp32", "fp32_optimized", "per_channel_optimized"}
    assert all(c.selectable for c in rows.values())
    passing = [c for c in rows.values() if c.passed]
    winner = max(passing, key=lambda c: c.seq_per_s or 0.0)
    assert report.requested_precision is Precision.AUTO
    assert (report.recipe, report.precision) == (winner.name, winner.precision)
    assert "precision " + winner.precision.value in summarize(report)
    assert _encoder_parameters(repository, "auto") == (winner.precision.value, winner.name)


def test_cli_bad_inputs_one_line_error_with_hint(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    cases = [
        [str(tmp_path / "missing" / "model")],
        [str(tiny_models["bert"]), "--gate", "1.01", "--precision", "fp32"],
        [str(tiny_models["bert"]), "--target", "gpu", "--precision", "int8"],
    ]
    for extra in cases:
        assert main(["export", *extra, "--repository", str(repository)]) == 1
        err = capsys.readouterr().err
        error_lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
        assert [line.split(":")[0] for line in error_lines] == ["error", "hint"], err
    assert not repository.exists()


def test_gpu_target_exports_fp16_gated_on_cpu(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from tritonstack._gpu import visible_gpus

    if visible_gpus():
        pytest.skip("a GPU is visible: test_gpu_target_is_gated_on_the_gpu covers this host")
    repository = tmp_path / "repo"
    options = ExportOptions(str(tiny_models["bert"]), repository=repository, target="gpu", gpus=(0, 1), **FAST)
    result = export_model(options)
    report = result.report
    assert (report.precision, report.recipe) == ("fp16", "fp16_optimized")
    assert report.parity is not None and report.parity.value >= 0.99
    assert report.parity_device == "CPU via CPUExecutionProvider (no GPU visible here)"
    assert "checked on CPU via CPUExecutionProvider (no GPU visible here)" in summarize(report)
    [candidate] = report.candidates
    assert candidate.seq_per_s is None  # CPU timings say nothing about a GPU target
    config = parse((repository / "bert_encoder" / "config.pbtxt").read_text())
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert [(g.kind, list(g.gpus)) for g in config.instance_group] == [(config.instance_group[0].KIND_GPU, [0, 1])]
    assert report.gpus == (0, 1) and "one encoder instance on each of GPU 0, 1" in summarize(report)
    assert ExportReport.from_json(report.to_json()) == report
    check_repository(repository)


@pytest.mark.gpu
def test_gpu_target_is_gated_on_the_gpu(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from tritonstack._gpu import visible_gpus

    gpus = visible_gpus()
    repository = tmp_path / "repo"
    result = export_model(ExportOptions(str(tiny_models["bert"]), repository=repository, target="gpu", **FAST))
    report = result.report
    assert report.parity_device == f"{gpus[0].describe()} via CUDAExecutionProvider", report.parity_device
    assert report.parity is not None and report.parity.value >= 0.99
    [candidate] = report.candidates
    assert candidate.seq_per_s  # timed on the GPU
    assert report.gpus == tuple(g.device_id for g in gpus)
    config = parse((repository / "bert_encoder" / "config.pbtxt").read_text())
    assert [list(g.gpus) for g in config.instance_group] == [list(report.gpus)]
    check_repository(repository)


def test_gpus_needs_the_gpu_target(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    assert main(["export", str(tiny_models["bert"]), "--gpus", "0", "--repository", str(repository)]) == 1
    assert "error: --gpus places GPU instances" in capsys.readouterr().err
    assert not repository.exists()


def _cpu_instances(repository: Path, step: str) -> list[tuple[int, int]]:
    return [(g.count, g.kind) for g in parse((repository / step / "config.pbtxt").read_text()).instance_group]


def test_cpu_export_writes_one_instance_per_core_it_may_run_on_unless_told(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Default: one encoder (fused step) instance per CPU this process may run on; ``--cpu-instances`` sets
    it for a server with other cores. Runs the default export pinned to one core, then asks for three."""
    import os

    from tritonstack.measure import cpus

    command = ["export", str(tiny_models["bert"]), "--precision", "fp32", "--layout", "fused"]
    one_core = (min(os.sched_getaffinity(0)),)
    with cpus.pinned(one_core):
        assert main([*command, "--repository", str(tmp_path / "one")]) == 0, capsys.readouterr().err
    assert "instances  1 on the CPU, one per core of the server" in capsys.readouterr().out
    kind_cpu = parse((tmp_path / "one" / "bert_fused" / "config.pbtxt").read_text()).instance_group[0].KIND_CPU
    for step in ("bert_fused", "bert_encoder"):
        assert _cpu_instances(tmp_path / "one", step) == [(1, kind_cpu)], step

    assert main([*command, "--repository", str(tmp_path / "three"), "--cpu-instances", "3"]) == 0
    assert _cpu_instances(tmp_path / "three", "bert_fused") == [(3, kind_cpu)]
    report = json.loads((tmp_path / "three" / "bert" / "1" / "export_report.json").read_text())
    assert report["cpu_instances"] == 3
    check_repository(tmp_path / "three")


def test_cpu_instances_is_refused_for_a_gpu_target_and_below_one(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    command = ["export", str(tiny_models["bert"]), "--repository", str(repository)]
    assert main([*command, "--target", "gpu", "--cpu-instances", "2"]) == 1
    assert "error: --cpu-instances sets a CPU target's instances" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main([*command, "--cpu-instances", "0"])
    assert usage.value.code == 2
    assert not repository.exists()
