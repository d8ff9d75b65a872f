"""The checks ``gpu-check`` runs on a GPU host: the bundled MiniLM exported for the GPU, served, measured.

1. ``cuda_provider``: ONNX Runtime's CUDA build is installed (``make GPU=1``).
2. ``export_gpu``: ``export --target gpu`` of the bundled all-MiniLM-L6-v2, parity-gated on the GPU.
3. ``served_on_gpu``: the embedded server loads it; every encoder instance runs on TensorRT or CUDA (the
   backend's own log lines), none fell back to the CPU.
4. ``fidelity``: served embeddings against sentence-transformers (min cosine >= the export gate).
5. ``gpu_metrics``: Triton's ``/metrics`` holds every metric the GPU-only dashboard panels query.
6. ``bench``: the quick bench on the GPU (in-process CUDA limit, served, PyTorch baseline), its targets
   reported with their figures (reported, not failed: they are what the docs record).

A step that fails stops the steps that need it; each step's seconds are in the figures.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tritonstack._gpu import Gpu
from tritonstack.gpucheck.result import Check

Log = Callable[[str], None]
NAME = "minilm"
PROVIDERS_PREFIX = "onnxruntime backend: providers:"  # in_triton/backends/onnxruntime/providers.py
FALLBACK_PREFIX = "onnxruntime backend: GPU fallback:"
FIDELITY_TEXTS = (
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "Triton batches requests of different lengths into one execution. " * 6,
    "ok",
    "😀 emoji, 中文, العربية, e\u0301",
    "word " * 400,  # past max_seq_length: truncated as sentence-transformers truncates
)


class _Stop(Exception):
    """A step failed; the steps after it need what it would have made."""


def _fail(checks: list[Check], name: str, detail: str, **data: Any) -> _Stop:
    checks.append(Check(name, False, detail, data))
    return _Stop(name)


def _error(error: BaseException) -> str:
    hint = getattr(error, "hint", None)
    return f"{type(error).__name__}: {error}" + (f" (hint: {hint})" if hint else "")


def _export(model_dir: Path, repository: Path, checks: list[Check], figures: dict[str, Any], log: Log) -> None:
    from tritonstack.export.options import ExportOptions
    from tritonstack.export.pipeline import export_model

    log(f"==> export {model_dir} --target gpu into {repository}")
    try:
        result = export_model(
            ExportOptions(model=str(model_dir), name=NAME, repository=repository, target="gpu", progress=False)
        )
    except Exception as error:  # an export error or whatever ONNX Runtime raised on the GPU
        raise _fail(checks, "export_gpu", _error(error)) from error
    report = result.report
    parity = report.parity
    figures["export"] = {
        "precision": report.precision.value,
        "recipe": report.recipe,
        "parity": parity.to_dict() if parity else None,
        "parity_device": report.parity_device,
        "gpus": list(report.gpus),
        "seq_per_s_on_gpu": report.chosen.seq_per_s if report.chosen else None,
        "timing_s": dict(report.timing_s),
    }
    on_gpu = not report.parity_device.startswith("CPU")
    detail = f"{report.precision} {report.recipe}, parity {parity.metric}={parity.value:.4f} " if parity else ""
    detail += f"checked on {report.parity_device}"
    checks.append(Check("export_gpu", on_gpu and parity is not None and parity.passed, detail))
    if not on_gpu:
        raise _Stop("export_gpu")


def _served(server: Any, gpus: Sequence[Gpu], checks: list[Check], figures: dict[str, Any]) -> None:
    lines = Path(server.log_path).read_text(errors="replace").splitlines()
    instances = [line.split(PROVIDERS_PREFIX, 1)[1].strip() for line in lines if PROVIDERS_PREFIX in line]
    fallbacks = [line.split(FALLBACK_PREFIX, 1)[1].strip() for line in lines if FALLBACK_PREFIX in line]
    encoder = [line for line in instances if f"'{NAME}_encoder'" in line]
    gpu_providers = ("runs on TensorrtExecutionProvider", "runs on CUDAExecutionProvider")
    on_gpu = [line for line in encoder if any(provider in line for provider in gpu_providers)]
    figures["served"] = {"encoder_instances": encoder, "fallbacks": fallbacks}
    ok = bool(encoder) and len(on_gpu) == len(encoder) and len(encoder) >= len(gpus)
    detail = f"{len(on_gpu)} of {len(encoder)} encoder instance(s) on the GPU"
    if fallbacks:
        detail += f"; fallbacks: {' | '.join(fallbacks)}"
    checks.append(Check("served_on_gpu", ok, detail))


def _fidelity(server: Any, model_dir: Path, checks: list[Check], figures: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer

    from tritonstack.bench.baseline import torch_device
    from tritonstack.client import Client
    from tritonstack.export.options import DEFAULT_GATE

    texts = list(FIDELITY_TEXTS)
    device, _ = torch_device("gpu")
    reference = SentenceTransformer(str(model_dir), device=device).encode(texts, normalize_embeddings=False)
    with Client(server.grpc_url, model=NAME) as client:
        served = np.asarray(client.embed(texts))
    cosine = np.sum(served * reference, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
    figures["fidelity"] = {"min_cosine": float(cosine.min()), "texts": len(texts), "reference_device": device}
    checks.append(
        Check(
            "fidelity",
            bool(cosine.min() >= DEFAULT_GATE),
            f"min cosine {cosine.min():.5f} against sentence-transformers on {device} (gate {DEFAULT_GATE})",
        )
    )


def _gpu_metrics(server: Any, checks: list[Check]) -> None:
    from tritonstack.monitoring import find_monitoring_dir, gpu_panel_metrics, load_dashboards

    needed = gpu_panel_metrics(load_dashboards(find_monitoring_dir()))
    deadline = time.monotonic() + 15  # DCGM samples every couple of seconds
    while True:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            text = response.read().decode()
        exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
        if needed <= exported or time.monotonic() > deadline:
            break
        time.sleep(1)
    missing = sorted(needed - exported)
    detail = f"missing {missing}" if missing else f"all {len(needed)} metrics of the GPU-only panels exported"
    checks.append(Check("gpu_metrics", not missing, detail, {"gpu_metrics": server.gpu_metrics}))


def _bench(model_dir: Path, repository: Path, workdir: Path, checks: list[Check], figures: dict[str, Any]) -> None:
    from tritonstack.bench.runner import QUICK, BenchSettings, run_bench
    from tritonstack.bench.summary import summarize_run

    settings = BenchSettings(model_dir=model_dir, repository=repository, name=NAME, report_dir=workdir / "bench")
    settings = replace(settings, quick=True, device="gpu", **QUICK)  # type: ignore[arg-type]
    try:
        summary = summarize_run(run_bench(settings))
    except Exception as error:
        raise _fail(checks, "bench", _error(error)) from error
    best = {variant: point and {k: point[k] for k in ("label", "throughput_per_s", "p50_ms", "p99_ms")}
            for variant, point in summary["best"].items()}  # fmt: skip
    figures["bench"] = {
        "served_over_inprocess": summary["served_over_inprocess"],
        "served_over_baseline": summary["served_over_baseline"],
        "inprocess_single_request_ms": summary["inprocess_single_request_ms"],
        "baseline_device": summary["baseline_device"],
        "best": best,
        "targets": [{k: t[k] for k in ("name", "value", "op", "target", "met")} for t in summary["targets"]],
        "report_dir": str(settings.report_dir),
    }
    unmeasured = [variant for variant, point in best.items() if point is None]
    detail = f"quick bench in {settings.report_dir}" + (f"; not measured: {unmeasured}" if unmeasured else "")
    checks.append(Check("bench", not unmeasured, detail))


def gpu_side_checks(
    gpus: Sequence[Gpu], workdir: Path, *, bench: bool = True, log: Log = print
) -> tuple[list[Check], dict[str, Any]]:
    """Run the GPU steps in ``workdir``; the checks, and the figures the docs record."""
    import onnxruntime as ort

    from tritonstack.export.bundled import bundled_minilm
    from tritonstack.server import EmbeddedServer

    checks: list[Check] = []
    figures: dict[str, Any] = {"seconds": {}}
    started = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal started
        figures["seconds"][step] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        checks.append(
            Check("cuda_provider", False, "this ONNX Runtime has no CUDAExecutionProvider: make GPU=1 gpu-check")
        )
        return checks, figures
    model_dir, repository = bundled_minilm(), workdir / "model_repository"
    try:
        _export(model_dir, repository, checks, figures, log)
        lap("export")
        log("==> serve it on the embedded Triton (the first TensorRT engine build takes minutes)")
        try:
            server = EmbeddedServer(repository, log_path=workdir / "triton.log", ready_timeout_s=600).start()
        except Exception as error:
            raise _fail(checks, "served_on_gpu", _error(error)) from error
        try:
            _served(server, gpus, checks, figures)
            _fidelity(server, model_dir, checks, figures)
            _gpu_metrics(server, checks)
        finally:
            server.stop()
        lap("serve")
        if bench:
            log("==> quick bench on the GPU")
            _bench(model_dir, repository, workdir, checks, figures)
            lap("bench")
    except _Stop:
        pass
    return checks, figures
