"""``tritonstack export`` end to end: HF model -> gated ONNX -> Triton model repository.

Everything is built in a temporary directory; only a candidate that passed
the accuracy gate reaches the repository writer, which moves the three models
into place atomically. Any failure leaves the repository as it was. The
options and their checks live in ``options.py``, the report in ``report.py``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tritonstack.export.errors import AccuracyGateError
from tritonstack.export.options import ExportOptions, Precision, validate
from tritonstack.export.parity import compute_reference, load_texts, reference_metric, tokenize_batches
from tritonstack.export.report import ExportReport, build_report
from tritonstack.export.search import Candidate, run_search, select


@dataclass(frozen=True)
class ExportResult:
    report: ExportReport
    version_dir: Path


def _gate_hint(precision: Precision, candidates: list[Candidate], gate: float) -> str:
    best = max((c.parity.value for c in candidates if c.selectable and c.parity), default=None)
    best_text = f"best candidate reached {best:.4f}; " if best is not None else ""
    if precision == Precision.INT8:
        return f"{best_text}try --precision fp32, or a different --gate (now {gate})"
    if precision == Precision.AUTO:
        return f"{best_text}not even fp32 passes: check the model files, --max-sequence-length and --gate (now {gate})"
    return f"{best_text}the {precision} export itself misses the gate: check the model files and --max-sequence-length"


def export_model(options: ExportOptions) -> ExportResult:
    """Export, gate, and write ``options.model`` into ``options.repository``."""
    import onnxruntime as ort

    from tritonstack._gpu import visible_gpus
    from tritonstack.export import device
    from tritonstack.export.onnx_export import export_onnx

    started = time.perf_counter()
    precision, name = validate(options)
    visible = visible_gpus() if options.target == "gpu" else ()
    gpus = device.resolve_gpus(options.target, options.gpus, visible)
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
        chosen_device = device.choose(options.target, gpus, visible, ort.get_available_providers())
        parity_device = device.confirm(chosen_device, export.onnx_path)
        on_gpu = parity_device.gpu is not None
        candidates = run_search(
            export,
            precision,
            reference,
            batches,
            workdir,
            gate=options.gate,
            recipes=options.recipes,
            providers=parity_device.providers(),
            use_gpu=on_gpu,
            measure=options.target == "cpu" or on_gpu,  # CPU timings say nothing of a GPU target
            threads=options.threads,
            reps=options.reps,
            progress=options.progress,
        )
        timing["search_s"] = time.perf_counter() - mark
        chosen = select(candidates)
        report = build_report(
            options, export, precision, name, candidates, chosen, len(texts), timing, parity_device.describe(), gpus
        )
        if chosen is None or chosen.path is None:
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
        exported = ExportedModel.from_export(
            export,
            name=name,
            onnx_path=chosen.path,
            precision=chosen.precision.value,
            recipe=chosen.name,
            max_batch_size=options.max_batch_size,
            max_queue_size=options.max_queue_size,
            queue_timeout_ms=options.queue_timeout_ms,
            target=options.target,
            gpus=gpus,
            report=report.to_dict(),
            response_cache=options.response_cache,
        )
        version_dir = write_text_model(options.repository, exported)
        timing["write_s"] = time.perf_counter() - mark
    timing["total_s"] = time.perf_counter() - started
    return ExportResult(report.written(version_dir, timing), version_dir)
