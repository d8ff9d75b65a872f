"""Say whether this stack works on this GPU host: one JSON summary on stdout, progress on stderr.

On a GPU host: the CPU-side checks, then the bundled all-MiniLM-L6-v2 exported
for the GPU, served by the embedded Triton, checked against
sentence-transformers, and the quick bench, in under ten minutes. Without a GPU
it says so and exits 0 once the CPU-side checks pass. Exit 1 when a check
fails; a check that cannot run here (no registry) is reported, not failed.
``make gpu-check`` runs it after installing ONNX Runtime's CUDA build
(docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="where to work and write (default: reports/gpu-check-<time>)"
    )
    parser.add_argument("--no-bench", action="store_true", help="skip the quick bench (GPU host only)")


def run(args: argparse.Namespace) -> int:
    from tritonstack import gpucheck  # tritonclient's protobufs, numpy: what a run imports, not --help

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model is on disk; as bench and tune do
    report_dir = args.report_dir or Path("reports") / time.strftime("gpu-check-%Y%m%d-%H%M%S")
    summary = gpucheck.run(report_dir, bench=not args.no_bench)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1
