"""``scripts/gpu-check`` (``make gpu-check``): one command that says whether this stack works on this GPU host.

On a GPU host: the CPU-side checks, then the bundled all-MiniLM-L6-v2 exported for the GPU, served by the
embedded Triton, checked against sentence-transformers, and the quick bench -- one JSON summary on stdout
(progress on stderr), in under ten minutes. Without a GPU it says so and exits 0 once the CPU-side checks
pass. Exit 1 when a check fails; a check that cannot run here (no registry) is reported, not failed.

    cpu_side   the checks any machine can run
    gpu_side   the checks that need the GPU
    result     Check, verdict
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tritonstack.gpucheck.result import Check, verdict

__all__ = ["Check", "main", "verdict"]


def _versions() -> dict[str, Any]:
    from tritonstack.gpucheck.cpu_side import installed_version

    versions: dict[str, Any] = {"python": platform.python_version()}
    for distribution in ("tritonstack", "onnxruntime", "onnxruntime-gpu", "nvidia-pytriton", "torch", "tensorrt"):
        versions[distribution] = installed_version(distribution)
    versions["triton"] = "2.51.0 (nvidia-pytriton)" if versions["nvidia-pytriton"] else None
    try:
        import torch

        versions["torch_cuda"] = torch.version.cuda  # None for a CPU build
    except ImportError:
        versions["torch_cuda"] = None
    return versions


def run(report_dir: Path, *, bench: bool = True) -> dict[str, Any]:
    """Every check this machine allows; the summary as a dict (also written to ``report_dir``)."""
    from tritonstack._gpu import no_gpu_reason, visible_gpus
    from tritonstack.gpucheck.cpu_side import cpu_side_checks

    started = time.perf_counter()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    gpus = visible_gpus()
    log(f"==> GPUs: {', '.join(g.describe() for g in gpus) or no_gpu_reason()}")
    log("==> CPU-side checks: ONNX Runtime build, GPU configs, the gpu extra resolves")
    checks = cpu_side_checks(gpus)
    figures: dict[str, Any] = {}
    if gpus:
        from tritonstack.gpucheck.gpu_side import gpu_side_checks

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="where to work and write (default: reports/gpu-check-<time>)"
    )
    parser.add_argument("--no-bench", action="store_true", help="skip the quick bench (GPU host only)")
    args = parser.parse_args(argv)
    report_dir = args.report_dir or Path("reports") / time.strftime("gpu-check-%Y%m%d-%H%M%S")
    summary = run(report_dir, bench=not args.no_bench)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1
