"""``tritonstack bench`` on a GPU host: every variant on the GPU, the GPU targets, and the refusals on a CPU host."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from test_bench_report import result as result  # the fixture: the measured points of a CPU run

from tritonstack._gpu import visible_gpus
from tritonstack.bench import report
from tritonstack.bench.baseline import torch_device
from tritonstack.bench.errors import BenchError
from tritonstack.bench.inprocess import InProcessModel
from tritonstack.bench.runner import BenchResult
from tritonstack.bench.summary import summarize_run
from tritonstack.cli import main
from tritonstack.commands.bench import DEFAULT_GPU_REPOSITORY, DEFAULT_REPOSITORY, resolve_device
from tritonstack.measure.served_files import locate

ON_GPU = bool(visible_gpus())


def test_auto_is_the_gpu_exactly_where_one_is_visible() -> None:
    assert resolve_device("auto") == ("gpu" if ON_GPU else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("gpu") == "gpu"
    assert DEFAULT_GPU_REPOSITORY != DEFAULT_REPOSITORY  # a gpu export never replaces the cpu one


def test_an_overload_run_without_repository_serves_the_default_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `bench --overload 4` passed --repository's None on: TypeError (None / str) in export/ensure.py
    from tritonstack.commands import bench as command

    class Stop(Exception):
        pass

    asked: list[Path] = []

    def ensure_model(args: Any, model_dir: Path, repository: Path, **kwargs: Any) -> str:
        asked.append(repository)
        raise Stop

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the command sets it; restored after the test
    monkeypatch.setattr(command, "_ensure_model", ensure_model)
    with pytest.raises(Stop):
        main(["bench", "--overload", "4", "--model-dir", str(tmp_path), "--report-dir", str(tmp_path / "report")])
    assert asked == [DEFAULT_REPOSITORY]  # the burst runs the CPU stack, as the soak does


def test_the_pytorch_baseline_says_when_it_cannot_be_on_the_gpu() -> None:
    import torch

    assert torch_device("cpu") == ("cpu", None)
    device, why = torch_device("gpu")
    if torch.cuda.is_available():
        assert (device, why) == ("cuda", None)
    else:
        assert device == "cpu" and why is not None and "has no CUDA here" in why


def test_a_gpu_limit_is_never_measured_on_the_cpu(tiny_repository: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and ON_GPU:
        pytest.skip("this host has a working CUDA provider: the gpu-marked bench test covers it")
    files = locate(tiny_repository, "tiny")
    with warnings.catch_warnings():  # ORT warns that the CPU wheel has no CUDA provider, as it does in `bench`
        warnings.simplefilter("ignore")
        with pytest.raises(BenchError, match="CUDAExecutionProvider") as refused:
            InProcessModel(files, threads=1, device="gpu")
    assert refused.value.hint is not None and "tritonstack[gpu]" in refused.value.hint
    assert InProcessModel(files, threads=1).session.get_providers() == ["CPUExecutionProvider"]


def test_the_served_files_say_where_the_encoder_runs(tiny_repository: Path) -> None:
    assert locate(tiny_repository, "tiny").knobs["encoder_kind"] == "KIND_CPU"


@pytest.mark.integration
def test_a_gpu_bench_without_a_gpu_or_on_a_cpu_export_is_refused(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--model-dir", str(tiny_model_dirs["tiny"]), "--repository", str(tiny_repository)]
    assert main([*argv, "--name", "tiny", "--device", "gpu", "--report-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    if ON_GPU:
        assert "serves its encoder as KIND_CPU, not KIND_GPU" in err and "--reexport" in err
    else:
        assert "error: --device gpu, but no GPU is visible here" in err


def test_on_a_gpu_the_targets_are_the_gpu_ones(result: BenchResult) -> None:
    on_gpu = dataclasses.replace(result, settings=dataclasses.replace(result.settings, device="gpu"))
    on_gpu.baseline_device = "cuda"
    summary = summarize_run(on_gpu)
    targets = {t["name"]: t for t in summary["targets"]}
    assert (summary["device"], summary["baseline_device"]) == ("gpu", "cuda")
    # served c=16 300/s against the baseline's best 35/s: 8.6x, short of the GPU's 10x
    assert targets["served_over_baseline"]["target"] == 10.0 and targets["served_over_baseline"]["met"] is False
    single = targets["served_single_request_p50_ms"]
    assert single["value"] == pytest.approx(next(p.p50_ms for p in result.points if p.label == "c=1"))
    assert (single["op"], single["target"], single["met"]) == ("<=", 3.0, False)
    assert "mean call" in " ".join(single["explain"])  # where the time of one request went
    on_gpu.baseline_device = "cpu"
    explain = {t["name"]: t for t in summarize_run(on_gpu)["targets"]}["served_over_baseline"]["explain"]
    assert "the baseline ran on cpu, not the GPU: no GPU comparison" in explain
    on_gpu.machine["gpus"] = [{"device_id": 0, "name": "NVIDIA H200"}]
    assert "device: GPU (0: NVIDIA H200): in-process on ONNX Runtime's CUDA provider" in report.table(on_gpu, summary)
    assert "device:" not in report.table(result, summarize_run(result))
    cpu_targets = {t["name"]: t for t in summarize_run(result)["targets"]}
    assert "served_single_request_p50_ms" not in cpu_targets and cpu_targets["served_over_baseline"]["target"] == 5.0


@pytest.mark.gpu
@pytest.mark.integration
def test_bench_on_the_gpu_runs_every_variant_there(tiny_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    repository, report_dir = tmp_path / "repo", tmp_path / "report"
    argv = ["bench", "--model-dir", str(tiny_model_dirs["tiny"]), "--repository", str(repository), "--name", "tiny"]
    settings = ["--texts", "32", "--batch-sizes", "1,8", "--concurrency", "1,8", "--baseline-concurrency", "1,4"]
    timing = ["--rounds", "1", "--warmup-s", "0.5", "--duration-s", "1"]
    assert main([*argv, "--device", "gpu", "--report-dir", str(report_dir), *settings, *timing]) == 0
    summary: dict[str, Any] = json.loads((report_dir / "summary.json").read_text())
    assert summary["device"] == "gpu" and summary["model"]["knobs"]["encoder_kind"] == "KIND_GPU"
    assert summary["model"]["precision"].startswith("fp16")  # exported with --target gpu
    assert all(p["errors"] == 0 and p["samples"] > 0 for p in summary["points"])
    assert {t["name"] for t in summary["targets"]} >= {"served_single_request_p50_ms", "served_over_baseline"}
    print(json.dumps({k: summary[k] for k in ("served_over_inprocess", "served_over_baseline", "baseline_device")}))
