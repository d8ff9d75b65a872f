"""The export report: what was tried, what was chosen and why, as one typed value.

``build_report`` assembles it from the search; ``to_json``/``from_json`` are
its only serialised form (``export_report.json`` beside the text-in model,
``tritonstack export --json``); ``summarize`` and ``candidates_table`` render
it for people. Figures are rounded once, when the report is built, so a
report read back from JSON equals the one written.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack._cpu import read_cpuinfo
from tritonstack.export.options import Precision
from tritonstack.export.parity import BATCH_SIZE, Parity, reference_metric
from tritonstack.export.pooling import PoolingSpec
from tritonstack.export.search import BASELINE, Candidate, format_table

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport
    from tritonstack.export.options import ExportOptions


@dataclass(frozen=True)
class Machine:
    """Where the candidates were timed: int8 speed depends on the CPU's int8 features."""

    cpus: int | None
    processor: str
    int8_features: tuple[str, ...]

    @classmethod
    def this(cls) -> Machine:
        return cls(os.cpu_count(), platform.processor() or platform.machine(), read_cpuinfo().int8_features)

    def to_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "processor": self.processor, "int8_features": list(self.int8_features)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Machine:
        return cls(data["cpus"], data["processor"], tuple(data["int8_features"]))


@dataclass(frozen=True)
class ExportReport:
    """One export: its candidates and the chosen one (``None``: refused), the model's shape, timings, machine."""

    model: str  # as given: a directory or a hub id
    model_dir: Path  # the resolved local model directory
    name: str
    task: str
    model_type: str
    target: str
    requested_precision: Precision
    gate: float
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None  # one of ``candidates``
    parity_text_count: int
    parity_texts_file: Path | None  # the user's extra texts, if any
    threads: int  # ORT intra-op threads while timing
    reps: int  # timed rounds per candidate
    input_names: tuple[str, ...]
    output_name: str
    output_dim: int
    labels: tuple[str, ...]
    pooling: PoolingSpec | None
    max_sequence_length: int  # tokens
    max_batch_size: int
    timing_s: Mapping[str, float]  # wall-clock seconds per step, to 10 ms
    versions: Mapping[str, str]
    machine: Machine
    parity_device: str = "CPU via CPUExecutionProvider"  # where the candidates were gated (export/device.py)
    gpus: tuple[int, ...] = ()  # gpu target: the encoder's CUDA devices; (): every GPU of the serving host
    version: int | None = None  # set once written
    version_dir: Path | None = None

    @property
    def status(self) -> str:
        return "written" if self.chosen else "refused"

    @property
    def precision(self) -> Precision:
        """The chosen candidate's precision; the requested one if nothing passed."""
        return self.chosen.precision if self.chosen else self.requested_precision

    @property
    def recipe(self) -> str | None:
        """The chosen candidate's name: an int8 recipe, ``fp32``, ``fp32_optimized``, ``fp16_optimized``."""
        return self.chosen.name if self.chosen else None

    @property
    def parity(self) -> Parity | None:
        return self.chosen.parity if self.chosen else None

    @property
    def baseline(self) -> Candidate | None:
        """The plain fp32 export, the measure of every speed-up."""
        return next((c for c in self.candidates if c.name == BASELINE), None)

    @property
    def throughput_ratio_vs_fp32(self) -> float | None:
        baseline = self.baseline
        if self.chosen and self.chosen.seq_per_s and baseline and baseline.seq_per_s:
            return round(self.chosen.seq_per_s / baseline.seq_per_s, 3)
        return None

    @property
    def notes(self) -> list[str]:
        """Why the choice may surprise: int8 lost the race, or the chosen model is slower than fp32."""
        chosen, notes = self.chosen, []
        if self.requested_precision == Precision.AUTO and chosen and chosen.precision == Precision.FP32:
            int8 = [c for c in self.candidates if c.precision == Precision.INT8]
            if int8:
                fastest = max(((c.seq_per_s or 0.0) for c in int8 if c.passed), default=None)
                why = "missed the gate" if fastest is None else f"passed the gate only at {fastest:.1f} seq/s"
                features = ", ".join(self.machine.int8_features) or "none"
                notes.append(f"int8 {why} on this CPU (int8 features: {features}); fp32 chosen")
        ratio = self.throughput_ratio_vs_fp32
        if ratio is not None and ratio < 1.0 and chosen and chosen.precision != Precision.FP32:
            # int8 without VNNI/AMX, or only a conservative recipe passing the gate, can lose to fp32
            notes.append(
                f"the chosen {chosen.precision} model is slower than ONNX fp32 on this machine "
                f"({ratio:.2f}x); consider --precision fp32"
            )
        return notes

    def written(self, version_dir: Path, timing_s: Mapping[str, float]) -> ExportReport:
        """This report once the model is in the repository: where, and the timings of every step."""
        return replace(self, version=int(version_dir.name), version_dir=version_dir, timing_s=_to_10ms(timing_s))

    def to_dict(self) -> dict[str, Any]:
        chosen, baseline = self.chosen, self.baseline
        out: dict[str, Any] = {
            "status": self.status,
            "model": self.model,
            "model_dir": str(self.model_dir),
            "name": self.name,
            "task": self.task,
            "model_type": self.model_type,
            "target": self.target,
            "precision": self.precision.value,
            "requested_precision": self.requested_precision.value,
            "recipe": self.recipe,
            "gate": {"metric": reference_metric(self.task), "threshold": self.gate},
            "parity": self.parity.to_dict() if self.parity else None,
            "parity_device": self.parity_device,
            "gpus": list(self.gpus),
            "parity_texts": {
                "count": self.parity_text_count,
                "user_file": str(self.parity_texts_file) if self.parity_texts_file else None,
            },
            "size_bytes": chosen.size_bytes if chosen else None,
            "fp32_size_bytes": baseline.size_bytes if baseline else None,
            "seq_per_s": chosen.seq_per_s if chosen and chosen.seq_per_s else None,
            "fp32_seq_per_s": baseline.seq_per_s if baseline and baseline.seq_per_s else None,
            "throughput_ratio_vs_fp32": self.throughput_ratio_vs_fp32,
            "throughput_setup": {
                "batch_size": BATCH_SIZE,
                "padding": "longest per batch",
                "intra_op_threads": self.threads,
                "reps": self.reps,
                "statistic": "median",
            },
            "candidates": [c.to_dict() for c in self.candidates],
            "input_names": list(self.input_names),
            "output_name": self.output_name,
            "output_dim": self.output_dim,
            "labels": list(self.labels),
            "pooling": self.pooling.to_dict() if self.pooling else None,
            "max_sequence_length": self.max_sequence_length,
            "max_batch_size": self.max_batch_size,
            "timing_s": dict(self.timing_s),
            "versions": dict(self.versions),
            "machine": self.machine.to_dict(),
            "notes": self.notes,
        }
        if self.version is not None:
            out["version"] = self.version
        if self.version_dir is not None:
            out["version_dir"] = str(self.version_dir)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExportReport:
        """A report from its JSON form (``to_json``, ``export_report.json``); derived fields are recomputed."""
        data = json.loads(text)
        candidates = tuple(Candidate.from_dict(row) for row in data["candidates"])
        pooling, user_file, version_dir = data["pooling"], data["parity_texts"]["user_file"], data.get("version_dir")
        return cls(
            model=data["model"],
            model_dir=Path(data["model_dir"]),
            name=data["name"],
            task=data["task"],
            model_type=data["model_type"],
            target=data["target"],
            requested_precision=Precision(data["requested_precision"]),
            gate=data["gate"]["threshold"],
            candidates=candidates,
            chosen=next((c for c in candidates if c.name == data["recipe"]), None),
            parity_text_count=data["parity_texts"]["count"],
            parity_texts_file=None if user_file is None else Path(user_file),
            threads=data["throughput_setup"]["intra_op_threads"],
            reps=data["throughput_setup"]["reps"],
            input_names=tuple(data["input_names"]),
            output_name=data["output_name"],
            output_dim=data["output_dim"],
            labels=tuple(data["labels"]),
            pooling=None if pooling is None else PoolingSpec.from_dict(pooling),
            max_sequence_length=data["max_sequence_length"],
            max_batch_size=data["max_batch_size"],
            timing_s=data["timing_s"],
            versions=data["versions"],
            machine=Machine.from_dict(data["machine"]),
            # reports written before these fields existed were gated on the CPU
            parity_device=data.get("parity_device", ExportReport.parity_device),
            gpus=tuple(data.get("gpus", ())),
            version=data.get("version"),
            version_dir=None if version_dir is None else Path(version_dir),
        )


def _to_10ms(timing_s: Mapping[str, float]) -> dict[str, float]:
    return {step: round(seconds, 2) for step, seconds in timing_s.items()}


def build_report(
    options: ExportOptions,
    export: OnnxExport,
    precision: Precision,
    name: str,
    candidates: Sequence[Candidate],
    chosen: Candidate | None,
    n_texts: int,
    timing_s: Mapping[str, float],
    parity_device: str,
    gpus: tuple[int, ...] = (),
) -> ExportReport:
    """The report of an export that searched ``precision`` and chose ``chosen`` (``None``: nothing passed)."""
    import onnxruntime as ort

    from tritonstack import __version__

    published = tuple(c.published() for c in candidates)
    published_chosen = None if chosen is None else next(c for c in published if c.name == chosen.name)
    return ExportReport(
        model=str(options.model),
        model_dir=export.model_dir,
        name=name,
        task=export.task,
        model_type=export.model_type,
        target=options.target,
        requested_precision=precision,
        gate=options.gate,
        candidates=published,
        chosen=published_chosen,
        parity_text_count=n_texts,
        parity_texts_file=options.parity_texts,
        threads=options.threads,
        reps=options.reps,
        input_names=export.input_names,
        output_name=export.output_name,
        output_dim=export.output_dim,
        labels=export.labels,
        pooling=export.pooling,
        max_sequence_length=export.max_sequence_length,
        max_batch_size=options.max_batch_size,
        timing_s=_to_10ms(timing_s),
        versions={"tritonstack": __version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        machine=Machine.this(),
        parity_device=parity_device,
        gpus=gpus,
    )


def summarize(report: ExportReport) -> str:
    """The readable summary ``tritonstack export`` prints."""
    precision = report.precision
    if precision != report.requested_precision:
        precision_text = f"{precision} ({report.requested_precision})"
    else:
        precision_text = str(precision)
    lines = [
        f"model      {report.model}  ({report.model_type}, {report.task})",
        f"target     {report.target}  precision {precision_text}  recipe {report.recipe or '-'}",
    ]
    chosen, baseline, parity = report.chosen, report.baseline, report.parity
    if parity:
        details = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in parity.details.items())
        lines.append(f"parity     {parity.metric}={parity.value:.4f} (gate {parity.gate})  {details}")
    if report.target == "gpu":  # a cpu target is always gated on the CPU
        lines.append(f"checked on {report.parity_device}")
        gpus = ", ".join(map(str, report.gpus))
        where = f"each of GPU {gpus}" if gpus else "every GPU of the host that serves it (none listed)"
        lines.append(f"instances  one encoder instance on {where}")
    if chosen and chosen.size_bytes:
        fp32 = baseline.size_bytes if baseline else 0
        lines.append(f"size       {chosen.size_bytes / 1e6:.1f} MB (fp32 {fp32 / 1e6:.1f} MB)")
    if chosen and chosen.seq_per_s:
        ratio = report.throughput_ratio_vs_fp32
        ratio_text = f"  {precision} / fp32 throughput ratio {ratio:.2f}x" if ratio else ""
        fp32_speed = baseline.seq_per_s if baseline and baseline.seq_per_s else None
        lines.append(f"throughput {chosen.seq_per_s} seq/s (fp32 {fp32_speed} seq/s){ratio_text}")
    if report.timing_s:
        lines.append("timing     " + "  ".join(f"{k[:-2]} {v:.1f}s" for k, v in report.timing_s.items()))
    if report.version_dir:
        lines.append(f"written    {report.version_dir}")
    lines.extend(f"note       {note}" for note in report.notes)
    return "\n".join(lines)


def candidates_table(report: ExportReport) -> str:
    """The report's candidate table, the chosen one marked."""
    return format_table(report.candidates, report.chosen)
