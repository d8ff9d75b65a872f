"""``tritonstack export`` end to end: HF model -> gated ONNX -> Triton model repository.

Everything is built in a temporary directory; only a candidate that passed
the accuracy gate reaches the repository writer, which moves the three models
into place atomically. Any failure leaves the repository as it was.
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack.export.errors import AccuracyGateError, ExportError
from tritonstack.export.parity import DEFAULT_GATE, compute_reference, load_texts, tokenize_batches
from tritonstack.export.quantize import Recipe
from tritonstack.export.search import BASELINE, Candidate, format_table, run_search, select
from tritonstack.repository.layout import DEFAULT_REPOSITORY

TARGETS = ("cpu", "gpu")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
# auto: the fastest of fp32 and int8 that passes the gate. int8 pays off only where the CPU has
# VNNI/AMX; on plain AVX2 the int8 recipes that pass the gate are slower than fp32.
DEFAULT_PRECISION = {"cpu": "auto", "gpu": "fp16"}
_GENERIC_DIR_NAMES = {"model", "models", "snapshot", "snapshots", "onnx", "hf", "checkpoint"}


@dataclass(frozen=True)
class ExportOptions:
    """What ``tritonstack export`` was asked to do (the CLI flags, typed)."""

    model: str
    task: str | None = None
    name: str | None = None
    repository: Path = DEFAULT_REPOSITORY
    target: str = "cpu"
    precision: str | None = None  # None: auto on cpu, fp16 on gpu
    max_batch_size: int = 64
    max_sequence_length: int | None = None  # tokens; None: the model's own limit
    gate: float = DEFAULT_GATE
    parity_texts: Path | None = None
    recipes: tuple[Recipe, ...] | None = None  # int8 candidates; None: every preset
    threads: int = 2  # ORT intra-op threads while timing candidates
    reps: int = 3  # timed rounds per candidate
    progress: bool = True


@dataclass(frozen=True)
class ExportResult:
    report: dict[str, Any]
    version_dir: Path


def sanitize_name(raw: str) -> str:
    """A Triton-friendly model name: lower-case letters, digits and underscores."""
    name = re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_")
    if name and name[0].isdigit():
        name = "m_" + name
    return name


def default_name(model: str) -> str:
    """``--name`` when omitted: the model directory's (or hub id's) name, sanitized.

    Generic folder names (``model``, a hub snapshot hash) fall back to the parent's name.
    """
    parts = [p for p in re.split(r"[\\/]+", model.rstrip("/\\")) if p not in ("", ".", "..")]
    for part in reversed(parts):
        if part.lower() in _GENERIC_DIR_NAMES or re.fullmatch(r"[0-9a-f]{40}", part):
            continue
        name = sanitize_name(part)
        if name:
            return name
    raise ExportError(f"cannot derive a model name from {model!r}", hint="pass --name")


def resolve_precision(target: str, precision: str | None) -> str:
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}", hint=f"use one of: {', '.join(TARGETS)}")
    precision = precision or DEFAULT_PRECISION[target]
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}", hint=f"use one of: {', '.join(PRECISIONS)}")
    if target == "gpu" and precision in ("int8", "auto"):
        raise ExportError(
            "dynamic int8 is a CPU optimization; on GPU it is several times slower than fp16",
            hint="use --precision fp16 (the gpu default) or --target cpu",
        )
    if target == "cpu" and precision == "fp16":
        raise ExportError(
            "fp16 on the CPU execution provider is slower than fp32",
            hint="use --precision int8 (the cpu default) or fp32, or --target gpu",
        )
    return precision


def check_repository_writable(repository: Path) -> None:
    """Fail before minutes of export if the repository cannot be written (creates nothing)."""
    existing = repository.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ExportError(
            f"cannot write model repository {repository}: {existing} is not a directory",
            hint="pass --repository with a folder you can write to",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(
            f"cannot write model repository {repository}: no write permission on {existing}",
            hint="pass --repository with a folder you can write to",
        )


def _providers(target: str) -> tuple[list[str], bool]:
    """Execution providers for gating and timing, and whether a GPU is really there."""
    import onnxruntime as ort

    has_cuda = target == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers()
    return (["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]), has_cuda


def _gate_hint(precision: str, candidates: list[Candidate], gate: float) -> str:
    best = max((c.parity.value for c in candidates if c.selectable and c.parity), default=None)
    best_text = f"best candidate reached {best:.4f}; " if best is not None else ""
    if precision == "int8":
        return f"{best_text}try --precision fp32, or a different --gate (now {gate})"
    if precision == "auto":
        return f"{best_text}not even fp32 passes: check the model files, --max-sequence-length and --gate (now {gate})"
    return f"{best_text}the {precision} export itself misses the gate: check the model files and --max-sequence-length"


def export_model(options: ExportOptions) -> ExportResult:
    """Export, gate, and write ``options.model`` into ``options.repository``."""
    from tritonstack.export.onnx_export import export_onnx

    started = time.perf_counter()
    precision = resolve_precision(options.target, options.precision)
    if options.max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be >= 1, got {options.max_batch_size}")
    if options.max_sequence_length is not None and options.max_sequence_length < 2:
        raise ExportError(f"--max-sequence-length must be >= 2, got {options.max_sequence_length}")
    name = sanitize_name(options.name) if options.name else default_name(str(options.model))
    if not name:
        raise ExportError(f"--name {options.name!r} has no usable characters", hint="use letters, digits, _")
    check_repository_writable(options.repository)
    texts = load_texts(options.parity_texts)
    timing: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="tritonstack-export-") as tmp:
        workdir = Path(tmp)
        export = export_onnx(
            options.model, options.task, workdir / "export", max_sequence_length=options.max_sequence_length
        )
        timing["export_s"] = export.export_s

        mark = time.perf_counter()
        reference = compute_reference(export, texts)
        batches = tokenize_batches(export.tokenizer_dir, texts, export.max_sequence_length, export.input_names)
        timing["reference_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        providers, has_gpu = _providers(options.target)
        candidates = run_search(
            export,
            precision,
            reference,
            batches,
            workdir,
            gate=options.gate,
            recipes=options.recipes,
            providers=providers,
            use_gpu=has_gpu,
            measure=options.target == "cpu" or has_gpu,
            threads=options.threads,
            reps=options.reps,
            progress=options.progress,
        )
        timing["search_s"] = time.perf_counter() - mark
        chosen = select(candidates)
        report = build_report(options, export, precision, name, candidates, chosen, len(texts), timing)
        if chosen is None or chosen.path is None:
            timing["total_s"] = time.perf_counter() - started
            best = [c.parity.to_dict() for c in candidates if c.selectable and c.parity]
            raise AccuracyGateError(
                f"no {precision} candidate passed the accuracy gate ({reference_metric(export.task)} >= "
                f"{options.gate}); nothing written",
                hint=_gate_hint(precision, candidates, options.gate),
                measured={"gate": options.gate, "candidates": best},
                report=report,
            )

        from tritonstack.repository.writer import ExportedModel, write_text_model

        mark = time.perf_counter()
        exported = ExportedModel(
            name=name,
            task=export.task,
            onnx_path=chosen.path,
            tokenizer_dir=export.tokenizer_dir,
            input_names=export.input_names,
            output_name=export.output_name,
            output_dim=export.output_dim,
            labels=export.labels,
            max_batch_size=options.max_batch_size,
            max_sequence_length=export.max_sequence_length,
            target=options.target,
            precision=chosen.precision,
            report=report,
        )
        version_dir = write_text_model(options.repository, exported)
        timing["write_s"] = time.perf_counter() - mark
    timing["total_s"] = time.perf_counter() - started
    report["timing_s"] = {k: round(v, 2) for k, v in timing.items()}
    report["version_dir"] = str(version_dir)
    return ExportResult(report, version_dir)


def cpu_int8_features() -> list[str]:
    """The CPU's int8 dot-product features: int8 speed-ups depend on them (VNNI/AMX vs plain AVX2)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"})


def reference_metric(task: str) -> str:
    return "min cosine" if task == "feature-extraction" else "label agreement"


def build_report(
    options: ExportOptions,
    export: Any,
    precision: str,
    name: str,
    candidates: list[Candidate],
    chosen: Candidate | None,
    n_texts: int,
    timing: dict[str, float],
) -> dict[str, Any]:
    """The machine-readable export report (``export_report.json`` beside the model)."""
    import onnxruntime as ort

    from tritonstack import __version__

    baseline = next((c for c in candidates if c.name == BASELINE), None)
    ratio = None
    if chosen and chosen.seq_per_s and baseline and baseline.seq_per_s:
        ratio = round(chosen.seq_per_s / baseline.seq_per_s, 3)
    notes = []
    if precision == "auto" and chosen is not None and chosen.precision == "fp32":
        int8 = [c for c in candidates if c.precision == "int8"]
        if int8:
            fastest = max(((c.seq_per_s or 0.0) for c in int8 if c.passed), default=None)
            why = "missed the gate" if fastest is None else f"passed the gate only at {fastest:.1f} seq/s"
            notes.append(
                f"int8 {why} on this CPU (int8 features: {', '.join(cpu_int8_features()) or 'none'}); fp32 chosen"
            )
    if ratio is not None and ratio < 1.0 and chosen is not None and chosen.precision != "fp32":
        # int8 without VNNI/AMX, or only a conservative recipe passing the gate, can lose to fp32
        notes.append(
            f"the chosen {chosen.precision} model is slower than ONNX fp32 on this machine "
            f"({ratio:.2f}x); consider --precision fp32"
        )
    return {
        "status": "written" if chosen else "refused",
        "model": str(options.model),
        "model_dir": str(export.model_dir),
        "name": name,
        "task": export.task,
        "model_type": export.model_type,
        "target": options.target,
        "precision": chosen.precision if chosen else precision,
        "requested_precision": precision,
        "recipe": chosen.name if chosen else None,
        "gate": {"metric": reference_metric(export.task), "threshold": options.gate},
        "parity": chosen.parity.to_dict() if chosen and chosen.parity else None,
        "parity_texts": {"count": n_texts, "user_file": str(options.parity_texts) if options.parity_texts else None},
        "size_bytes": chosen.size_bytes if chosen else None,
        "fp32_size_bytes": baseline.size_bytes if baseline else None,
        "seq_per_s": round(chosen.seq_per_s, 1) if chosen and chosen.seq_per_s else None,
        "fp32_seq_per_s": round(baseline.seq_per_s, 1) if baseline and baseline.seq_per_s else None,
        "throughput_ratio_vs_fp32": ratio,
        "throughput_setup": {
            "batch_size": 32,
            "padding": "longest per batch",
            "intra_op_threads": options.threads,
            "reps": options.reps,
            "statistic": "median",
        },
        "candidates": [c.to_dict() for c in candidates],
        "input_names": list(export.input_names),
        "output_name": export.output_name,
        "output_dim": export.output_dim,
        "labels": list(export.labels),
        "pooling": export.pooling.to_dict() if export.pooling else None,
        "max_sequence_length": export.max_sequence_length,
        "max_batch_size": options.max_batch_size,
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "versions": {"tritonstack": __version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "int8_features": cpu_int8_features(),
        },
        "notes": notes,
    }


def _precision_text(report: dict[str, Any]) -> str:
    requested = report.get("requested_precision")
    return (
        f"{report['precision']} ({requested})"
        if requested and requested != report["precision"]
        else report["precision"]
    )


def summarize(report: dict[str, Any]) -> str:
    """The readable summary ``tritonstack export`` prints."""
    lines = [
        f"model      {report['model']}  ({report['model_type']}, {report['task']})",
        f"target     {report['target']}  precision {_precision_text(report)}  recipe {report['recipe'] or '-'}",
    ]
    parity = report.get("parity")
    if parity:
        extra = {k: v for k, v in parity.items() if k not in ("metric", "value", "gate", "passed")}
        details = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
        lines.append(f"parity     {parity['metric']}={parity['value']:.4f} (gate {parity['gate']})  {details}")
    if report.get("size_bytes"):
        fp32 = report.get("fp32_size_bytes") or 0
        lines.append(f"size       {report['size_bytes'] / 1e6:.1f} MB (fp32 {fp32 / 1e6:.1f} MB)")
    if report.get("seq_per_s"):
        ratio = report.get("throughput_ratio_vs_fp32")
        ratio_text = f"  {report['precision']} / fp32 throughput ratio {ratio:.2f}x" if ratio else ""
        lines.append(f"throughput {report['seq_per_s']} seq/s (fp32 {report['fp32_seq_per_s']} seq/s){ratio_text}")
    timing = report.get("timing_s", {})
    if timing:
        lines.append("timing     " + "  ".join(f"{k[:-2]} {v:.1f}s" for k, v in timing.items()))
    if report.get("version_dir"):
        lines.append(f"written    {report['version_dir']}")
    lines.extend(f"note       {note}" for note in report.get("notes", []))
    return "\n".join(lines)


def candidates_table(report: dict[str, Any]) -> str:
    """The candidate table of a report (rebuilt from its JSON form)."""
    from tritonstack.export.parity import Parity

    rebuilt = []
    chosen = None
    for row in report.get("candidates", []):
        parity = row.get("parity")
        candidate = Candidate(
            row["name"],
            row["precision"],
            row["description"],
            selectable=row["selectable"],
            size_bytes=row["size_bytes"],
            seq_per_s=row["seq_per_s"],
            error=row["error"],
            parity=None if parity is None else Parity(parity["metric"], parity["value"], parity["gate"], {}),
        )
        rebuilt.append(candidate)
        if row["name"] == report.get("recipe"):
            chosen = candidate
    return format_table(rebuilt, chosen)
