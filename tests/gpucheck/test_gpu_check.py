"""``scripts/gpu-check``: on this (CPU) machine it runs the CPU-side checks, says no GPU was found, exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tritonstack._gpu import visible_gpus
from tritonstack.gpucheck import Check, verdict
from tritonstack.gpucheck.cpu_side import classify_resolution, gpu_extra_resolves, gpu_requirement

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check"
CPU_SIDE = ["onnxruntime_build", "gpu_configs", "gpu_extra_resolves"]


def run_script(*args: str, timeout_s: float) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout_s)
    return done.returncode, json.loads(done.stdout), done.stderr


def test_on_a_machine_without_a_gpu_it_says_so_and_exits_0(tmp_path: Path) -> None:
    if visible_gpus():
        pytest.skip("a GPU is visible here: test_on_a_gpu_host_it_exports_serves_and_checks_fidelity runs instead")
    code, summary, progress = run_script("--report-dir", str(tmp_path), timeout_s=300)
    assert code == 0, progress
    assert summary["gpu_check"].startswith("no GPU found: the CPU-side checks passed")
    assert summary["ok"] is True and summary["gpus"] is None and summary["no_gpu_reason"].startswith("no GPU visible")
    assert [check["name"] for check in summary["checks"]] == CPU_SIDE
    checks = {check["name"]: check for check in summary["checks"]}
    assert checks["onnxruntime_build"]["ok"] is True and checks["gpu_configs"]["ok"] is True
    assert checks["gpu_configs"]["tiers"] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    # resolved where the registry answers; "not checked" (never a failure) where it does not
    assert checks["gpu_extra_resolves"]["ok"] in (True, None), checks["gpu_extra_resolves"]
    if checks["gpu_extra_resolves"]["ok"]:
        assert "onnxruntime-gpu" in checks["gpu_extra_resolves"]["resolved"]
    assert summary["versions"]["triton"] == "2.51.0 (nvidia-pytriton)" and summary["figures"] == {}
    assert json.loads((tmp_path / "gpu-check.json").read_text()) == summary
    assert "no GPU visible" in progress


def test_an_unreachable_registry_is_not_a_failure() -> None:
    # a real pip run against an index nothing listens on: what an offline machine sees
    check = gpu_extra_resolves(index_url="http://127.0.0.1:9/simple")
    assert check.ok is None and check.detail.startswith("not checked: the package registry was not reached")
    assert check.data["requirement"] == gpu_requirement()


def test_the_gpu_requirement_is_the_extras_and_brings_the_cuda_libraries() -> None:
    assert gpu_requirement().startswith("onnxruntime-gpu[cuda,cudnn]")


def test_pips_answers_are_told_apart() -> None:
    assert classify_resolution(0, "") == (True, "resolves")
    conflict = "ERROR: Cannot install onnxruntime-gpu==1.31.1 because these package versions have conflicting deps."
    assert classify_resolution(1, conflict) == (False, conflict)
    unreachable = "ERROR: Could not find a version that satisfies the requirement onnxruntime-gpu (from versions: none)"
    ok, detail = classify_resolution(1, unreachable)
    assert ok is None and detail.startswith("not checked")


def test_the_verdict_fails_on_a_failed_check_only() -> None:
    passed, unchecked, failed = Check("a", True, ""), Check("b", None, ""), Check("c", False, "")
    assert verdict([passed, unchecked], gpu_found=False) == (
        True,
        "no GPU found: the CPU-side checks passed (b not checked here); the GPU checks need a GPU host",
    )
    assert verdict([passed], gpu_found=True) == (True, "passed")
    assert verdict([passed, failed, unchecked], gpu_found=True) == (False, "failed: c")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.integration
def test_on_a_gpu_host_it_exports_serves_and_checks_fidelity(tmp_path: Path) -> None:
    code, summary, progress = run_script("--report-dir", str(tmp_path), "--no-bench", timeout_s=900)
    names = [check["name"] for check in summary["checks"]]
    assert names == [*CPU_SIDE, "export_gpu", "served_on_gpu", "fidelity", "gpu_metrics"], progress
    assert code == 0 and summary["ok"], json.dumps(summary["checks"], indent=2)
    assert summary["figures"]["fidelity"]["min_cosine"] >= 0.99
