"""``tritonstack export`` end to end: HF model -> gated ONNX -> Triton model repository.

Everything is built in a temporary directory; only a candidate that passed
the accuracy gate reaches the repository writer, which moves the three models
into place atomically. Any failure leaves the repository as it was. The
options and their checks live in ``options.py``, the texts in ``texts.py``,
the report in ``report.py``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tritonstack.export.candidates import Candidate, select
from tritonstack.export.errors import AccuracyGateError
from tritonstack.export.gates import Gate
from tritonstack.export.options import ExportOptions, Precision, resolve_cpu_instances, resolve_layout, validate
from tritonstack.export.parity import BATCH_SIZE, compute_reference, tokenize_batches
from tritonstack.export.report import ExportReport, build_report
from tritonstack.export.search import SplitFeeds, run_search
from tritonstack.export.texts import TextSplit, load_splits
from tritonstack.in_triton import contract
from tritonstack.repository.layouts import existing_layout

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport


@dataclass(frozen=True)
class ExportResult:
    report: ExportReport
    version_dir: Path


def _gate_hint(precision: Precision, candidates: list[Candidate], gate: Gate) -> str:
    values = [c.parity.value for c in candidates if c.selectable and c.parity and c.error is None]
    higher_is_better = gate.metric is None or gate.metric.higher_is_better
    best = (max if higher_is_better else min)(values, default=None)
    best_text = f"best candidate reached {best:.4f}; " if best is not None else ""
    if precision == Precision.INT8:
        return f"{best_text}try --precision fp32, or a different --gate (now {gate})"
    if precision == Precision.AUTO:
        return f"{best_text}not even fp32 passes: check the model files, --max-sequence-length and --gate (now {gate})"
    return f"{best_text}the {precision} export itself misses the gate: check the model files and --max-sequence-length"


def _split_feeds(export: OnnxExport, split: TextSplit, rows_per_call: int) -> SplitFeeds:
    reference = compute_reference(export, split.texts, split.text_pairs)
    feeds = tokenize_batches(
        export.tokenizer_dir, split.texts, export.max_sequence_length, export.input_names,
        rows_per_call=rows_per_call, text_pairs=split.text_pairs,
    )  # fmt: skip
    return SplitFeeds(reference, feeds, rows_per_call)


def export_model(options: ExportOptions) -> ExportResult:
    """Export, gate, and write ``options.model`` into ``options.repository``."""
    import onnxruntime as ort

    from tritonstack._gpu import visible_gpus
    from tritonstack.export import device
    from tritonstack.export.onnx_export import export_onnx

    started = time.perf_counter()
    precision, name = validate(options)
    layout = resolve_layout(options.target, options.layout, existing_layout(options.repository, name))
    cpu_instances = resolve_cpu_instances(options.target, options.cpu_instances)
    visible = visible_gpus() if options.target == "gpu" else ()
    gpus = device.resolve_gpus(options.target, options.gpus, visible)
    splits = load_splits(options.parity_texts)
    timing: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="tritonstack-export-") as tmp:
        workdir = Path(tmp)
        export = export_onnx(
            options.model,
            options.task,
            workdir / "export",
            max_sequence_length=options.max_sequence_length,
            revision=options.revision,
        )
        timing["export_s"] = export.export_s
        gate = options.gate.for_task(export.task)
        if contract.task(export.task).pair:  # judged on (query, document) pairs of the same texts
            splits = splits.paired()

        mark = time.perf_counter()
        chosen_device = device.choose(options.target, gpus, visible, ort.get_available_providers())
        parity_device = device.confirm(chosen_device, export.onnx_path)
        on_gpu = parity_device.gpu is not None
        # one text per call on a CPU: what a dynamic-int8 model needs, and no slower for fp32 (search.py)
        rows_per_call = 1 if options.target == "cpu" else BATCH_SIZE
        gate_split = _split_feeds(export, splits.gate, rows_per_call)
        calibration = _split_feeds(export, splits.calibration, rows_per_call)
        timing["reference_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        result = run_search(
            export,
            precision,
            gate_split,
            workdir,
            gate=gate,
            calibration=calibration,
            recipes=options.recipes,
            mixes=options.mixes,
            providers=parity_device.providers(),
            use_gpu=on_gpu,
            measure=options.target == "cpu" or on_gpu,  # CPU timings say nothing of a GPU target
            threads=options.threads,
            reps=options.reps,
            progress=options.progress,
            cache_root=options.cache_dir,
        )
        timing["search_s"] = time.perf_counter() - mark
        chosen = select(result.candidates)
        report = build_report(
            options, export, precision, name, result, chosen, splits, gate, rows_per_call, timing,
            parity_device.describe(), gpus, layout, cpu_instances,
        )  # fmt: skip
        if chosen is None or chosen.path is None:
            judged = [c.parity.to_dict() | {"name": c.name} for c in result.candidates if c.selectable and c.parity]
            raise AccuracyGateError(
                f"no {precision} candidate passed the accuracy gate ({gate}, on {len(splits.gate)} gate texts); "
                "nothing written",
                hint=_gate_hint(precision, result.candidates, gate),
                measured={"gate": gate.threshold, "metric": str(gate.metric), "candidates": judged},
                report=report,
            )

        from tritonstack.repository.writer import ExportedModel, write_text_model

        mark = time.perf_counter()
        exported = ExportedModel(
            **export.spec(onnx_path=chosen.path),
            name=name,
            precision=chosen.precision.value,
            recipe=chosen.name,
            max_rows_per_call=chosen.max_rows_per_call,
            max_batch_size=options.max_batch_size,
            max_queue_size=options.max_queue_size,
            queue_timeout_ms=options.queue_timeout_ms,
            target=options.target,
            gpus=gpus,
            report=report.to_dict(),
            response_cache=options.response_cache,
            layout=layout,
            cpu_instances=cpu_instances or 1,
        )
        version_dir = write_text_model(options.repository, exported)
        timing["write_s"] = time.perf_counter() - mark
    timing["total_s"] = time.perf_counter() - started
    return ExportResult(report.written(version_dir, timing), version_dir)
