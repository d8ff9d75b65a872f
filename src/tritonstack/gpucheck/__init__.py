"""What ``tritonstack gpu-check`` runs (``make gpu-check``): every check this machine allows, one summary.

The command (``commands/gpu_check.py``) says what the checks are and what the exit status means.

    cpu_side   the checks any machine can run
    gpu_side   the checks that need the GPU
    result     Check, verdict
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tritonstack._gpu import no_gpu_reason, visible_gpus
from tritonstack.gpucheck.cpu_side import cpu_side_checks, installed_version
from tritonstack.gpucheck.gpu_side import gpu_side_checks
from tritonstack.gpucheck.result import Check, verdict

__all__ = ["Check", "run", "verdict"]


def _versions() -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version()}
    for distribution in ("tritonstack", "onnxruntime", "onnxruntime-gpu", "nvidia-pytriton", "torch", "tensorrt"):
        versions[distribution] = installed_version(distribution)
    versions["triton"] = "2.51.0 (nvidia-pytriton)" if versions["nvidia-pytriton"] else None
    try:
        import torch  # optional: a host without it is reported, not failed

        versions["torch_cuda"] = torch.version.cuda  # None for a CPU build
    except ImportError:
        versions["torch_cuda"] = None
    return versions


def run(report_dir: Path, *, bench: bool = True) -> dict[str, Any]:
    """Every check this machine allows; the summary as a dict (also written to ``report_dir``)."""
    started = time.perf_counter()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    gpus = visible_gpus()
    log(f"==> GPUs: {', '.join(g.describe() for g in gpus) or no_gpu_reason()}")
    log("==> CPU-side checks: ONNX Runtime build, GPU configs, the gpu extra resolves")
    checks = cpu_side_checks(gpus)
    figures: dict[str, Any] = {}
    if gpus:
        report_dir.mkdir(parents=True, exist_ok=True)
        gpu_checks, figures = gpu_side_checks(gpus, report_dir, bench=bench, log=log)
        checks += gpu_checks
    ok, line = verdict(checks, bool(gpus))
    summary = {
        "gpu_check": line,
        "ok": ok,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gpus": [gpu.to_dict() for gpu in gpus] or None,
        "no_gpu_reason": None if gpus else no_gpu_reason(),
        "driver": gpus[0].driver_version if gpus else None,
        "versions": _versions(),
        "checks": [check.to_dict() for check in checks],
        "figures": figures,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
