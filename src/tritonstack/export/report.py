"""The export report: what was tried, what was chosen and why, as one typed value.

``build_report`` assembles it from the search; ``to_json``/``from_json`` are
its only serialised form (``export_report.json`` beside the text-in model,
``tritonstack export --json``); ``candidates_table`` (the frontier),
``sensitivity_table`` and ``summarize`` render it for people. Figures are
rounded once, when the report is built, so a report read back from JSON equals
the one written.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack._cpu import read_cpuinfo
from tritonstack.export.candidates import BASELINE, Candidate, format_table, frontier
from tritonstack.export.gates import Gate
from tritonstack.export.options import Precision
from tritonstack.export.parity import Parity
from tritonstack.export.pooling import PoolingSpec
from tritonstack.export.quantize import short_name
from tritonstack.export.sensitivity import Sensitivity
from tritonstack.export.texts import CALIBRATION, GATE
from tritonstack.in_triton.contract import ENSEMBLE_LAYOUT, FUSED_LAYOUT

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport
    from tritonstack.export.options import ExportOptions
    from tritonstack.export.search import SearchResult
    from tritonstack.export.texts import TextSplits


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
class SplitSummary:
    """How many texts of each kind a split holds (the texts themselves ship with the package); for a pair
    task, how many (query, document) rows, of how many queries, and the documents' kinds."""

    count: int
    kinds: Mapping[str, int]
    queries: int = 0  # a pair split's distinct queries; 0: a split of single texts

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "kinds": dict(self.kinds), **({"queries": self.queries} if self.queries else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitSummary:
        return cls(data["count"], data["kinds"], data.get("queries", 0))


LAYOUT_TEXT = {
    FUSED_LAYOUT: (
        "one Python model tokenizes, runs ONNX Runtime and post-processes (--layout ensemble: separate steps)"
    ),
    ENSEMBLE_LAYOUT: "tokenizer -> encoder [-> postprocess] models",
}


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
    gate: Gate  # its metric resolved for the task
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None  # one of ``candidates``
    splits: Mapping[str, SplitSummary]  # CALIBRATION and GATE
    parity_texts_file: Path | None  # the user's extra texts, if any (in the gate split)
    sensitivity: Sensitivity | None  # what the int8 search measured on the calibration split
    rows_per_call: int  # texts per ONNX Runtime call while gating and timing
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
    layout: str = ENSEMBLE_LAYOUT  # how the text-in model runs a text (repository/layouts.py)
    cpu_instances: int = 0  # cpu target: the encoder's (or fused step's) instances; 0: a gpu target, or not recorded
    version: int | None = None  # set once written
    version_dir: Path | None = None
    revision: str | None = None  # the hub commit exported (a hub id's); None: a local directory

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
        """The chosen candidate's figures on the gate split."""
        return self.chosen.parity if self.chosen else None

    @property
    def parity_text_count(self) -> int:
        """Texts in the gate split (the built-in ones and ``--parity-texts``)."""
        return self.splits[GATE].count

    @property
    def fp32_nodes(self) -> tuple[str, ...]:
        """The MatMuls the chosen int8 mix keeps fp32."""
        return self.chosen.fp32_nodes if self.chosen else ()

    @property
    def frontier(self) -> tuple[Candidate, ...]:
        """The candidates no other beats on both speed and the gate's figure."""
        return tuple(frontier(self.candidates))

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
            "revision": self.revision,
            "model_dir": str(self.model_dir),
            "name": self.name,
            "task": self.task,
            "model_type": self.model_type,
            "target": self.target,
            "precision": self.precision.value,
            "requested_precision": self.requested_precision.value,
            "recipe": self.recipe,
            "gate": self.gate.to_dict(),
            "parity": self.parity.to_dict() if self.parity else None,
            "parity_device": self.parity_device,
            "gpus": list(self.gpus),
            "layout": self.layout,
            "cpu_instances": self.cpu_instances,
            "calibration_parity": chosen.calibration.to_dict() if chosen and chosen.calibration else None,
            "parity_texts": {
                "count": self.parity_text_count,
                "user_file": str(self.parity_texts_file) if self.parity_texts_file else None,
            },
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
            "fp32_nodes": list(self.fp32_nodes),
            "max_rows_per_call": chosen.max_rows_per_call if chosen else None,
            "size_bytes": chosen.size_bytes if chosen else None,
            "fp32_size_bytes": baseline.size_bytes if baseline else None,
            "seq_per_s": chosen.seq_per_s if chosen and chosen.seq_per_s else None,
            "fp32_seq_per_s": baseline.seq_per_s if baseline and baseline.seq_per_s else None,
            "throughput_ratio_vs_fp32": self.throughput_ratio_vs_fp32,
            "throughput_setup": {
                "rows_per_call": self.rows_per_call,
                "padding": "none (one text per call)" if self.rows_per_call == 1 else "longest per call",
                "intra_op_threads": self.threads,
                "reps": self.reps,
                "statistic": "median",
            },
            "candidates": [c.to_dict() for c in self.candidates],
            "frontier": [c.name for c in self.frontier],
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
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
        sensitivity = data["sensitivity"]
        return cls(
            model=data["model"],
            model_dir=Path(data["model_dir"]),
            name=data["name"],
            task=data["task"],
            model_type=data["model_type"],
            target=data["target"],
            requested_precision=Precision(data["requested_precision"]),
            gate=Gate.from_dict(data["gate"]),
            candidates=candidates,
            chosen=next((c for c in candidates if c.name == data["recipe"]), None),
            splits={name: SplitSummary.from_dict(split) for name, split in data["splits"].items()},
            parity_texts_file=None if user_file is None else Path(user_file),
            sensitivity=None if sensitivity is None else Sensitivity.from_dict(sensitivity),
            rows_per_call=data["throughput_setup"]["rows_per_call"],
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
            layout=data.get("layout", ENSEMBLE_LAYOUT),
            cpu_instances=data.get("cpu_instances", 0),
            version=data.get("version"),
            version_dir=None if version_dir is None else Path(version_dir),
            revision=data.get("revision"),
        )


def _to_10ms(timing_s: Mapping[str, float]) -> dict[str, float]:
    return {step: round(seconds, 2) for step, seconds in timing_s.items()}


def build_report(
    options: ExportOptions,
    export: OnnxExport,
    precision: Precision,
    name: str,
    result: SearchResult,
    chosen: Candidate | None,
    splits: TextSplits,
    gate: Gate,
    rows_per_call: int,
    timing_s: Mapping[str, float],
    parity_device: str,
    gpus: tuple[int, ...] = (),
    layout: str = ENSEMBLE_LAYOUT,
    cpu_instances: int = 0,
) -> ExportReport:
    """The report of an export that searched ``precision`` and chose ``chosen`` (``None``: nothing passed)."""
    import onnxruntime as ort

    from tritonstack import __version__

    published = tuple(c.published() for c in result.candidates)
    published_chosen = None if chosen is None else next(c for c in published if c.name == chosen.name)
    return ExportReport(
        model=str(options.model),
        revision=export.revision,
        model_dir=export.model_dir,
        name=name,
        task=export.task,
        model_type=export.model_type,
        target=options.target,
        requested_precision=precision,
        gate=gate,
        candidates=published,
        chosen=published_chosen,
        splits={
            CALIBRATION: SplitSummary(len(splits.calibration), splits.calibration.counts(), splits.calibration.queries),
            GATE: SplitSummary(len(splits.gate), splits.gate.counts(), splits.gate.queries),
        },
        parity_texts_file=options.parity_texts,
        sensitivity=result.sensitivity,
        rows_per_call=rows_per_call,
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
        layout=layout,
        cpu_instances=cpu_instances,
    )


def _figures(parity: Parity) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in parity.details.items())


def _split_text(split: SplitSummary) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in split.kinds.items())
    if split.queries:
        return f"{split.count} (query, document) pairs of {split.queries} queries (documents: {kinds})"
    return f"{split.count} texts ({kinds})"


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
        f"gate       {report.gate} on the gate split: {_split_text(report.splits[GATE])}",
        f"search     on the calibration split: {_split_text(report.splits[CALIBRATION])}",
    ]
    chosen, baseline, parity = report.chosen, report.baseline, report.parity
    if parity:
        lines.append(f"parity     gate split: {_figures(parity)}")
    if chosen and chosen.calibration:
        lines.append(f"           calibration split: {_figures(chosen.calibration)}")
    if report.target == "gpu":  # a cpu target is always gated on the CPU
        lines.append(f"checked on {report.parity_device}")
        gpus = ", ".join(map(str, report.gpus))
        where = f"each of GPU {gpus}" if gpus else "every GPU of the host that serves it (none listed)"
        lines.append(f"instances  one encoder instance on {where}")
    elif report.cpu_instances:
        lines.append(
            f"instances  {report.cpu_instances} on the CPU, one per core of the server "
            "(--cpu-instances for a server with another number of cores)"
        )
    lines.append(f"layout     {report.layout}: {LAYOUT_TEXT.get(report.layout, report.layout)}")
    if report.fp32_nodes:
        lines.append(f"fp32 nodes {', '.join(short_name(n) for n in report.fp32_nodes)}")
    if chosen and chosen.max_rows_per_call:
        lines.append(
            f"serving    max_rows_per_call {chosen.max_rows_per_call}: one text per ONNX Runtime call, "
            "so each text gets its own activation scale"
        )
    if chosen and chosen.size_bytes:
        fp32 = baseline.size_bytes if baseline else 0
        lines.append(f"size       {chosen.size_bytes / 1e6:.1f} MB (fp32 {fp32 / 1e6:.1f} MB)")
    if chosen and chosen.seq_per_s:
        ratio = report.throughput_ratio_vs_fp32
        ratio_text = f"  {precision} / fp32 throughput ratio {ratio:.2f}x" if ratio else ""
        fp32_speed = baseline.seq_per_s if baseline and baseline.seq_per_s else None
        per_call = f", {report.rows_per_call} text{'s' if report.rows_per_call != 1 else ''} per call"
        lines.append(f"throughput {chosen.seq_per_s} seq/s (fp32 {fp32_speed} seq/s{per_call}){ratio_text}")
    features = ", ".join(report.machine.int8_features) or "none"
    lines.append(f"machine    {report.machine.processor}, {report.machine.cpus} CPUs, int8 features: {features}")
    if report.timing_s:
        lines.append("timing     " + "  ".join(f"{k[:-2]} {v:.1f}s" for k, v in report.timing_s.items()))
    if report.version_dir:
        lines.append(f"written    {report.version_dir}")
    lines.extend(f"note       {note}" for note in report.notes)
    return "\n".join(lines)


def candidates_table(report: ExportReport) -> str:
    """The report's frontier table: every candidate, the chosen one marked."""
    return format_table(report.candidates, report.chosen)


RANKED = 5  # runners-up shown per sensitivity step


def sensitivity_table(report: ExportReport) -> str:
    """What the int8 search measured on the calibration split; empty when it did not run."""
    sensitivity = report.sensitivity
    if sensitivity is None:
        return ""
    metric = sensitivity.metric
    cached = "  (replayed from the cache)" if sensitivity.cached else ""
    trials = "  ".join(f"{t.alpha:g}: {t.value:.4f}" for t in sensitivity.alpha_trials)
    lines = [
        f"smoothing  alpha {sensitivity.alpha:g} chosen by calibration {metric}, every MatMul int8: {trials}{cached}",
        f"sensitivity  greedy, on the calibration split: each step keeps fp32 the MatMul whose fp32 gives the best "
        f"{metric} given the ones kept before",
    ]
    for index, step in enumerate(sensitivity.steps):
        if not step.fp32_nodes:
            lines.append(f"  step {index}  every MatMul int8  {metric}={step.value:.4f}")
            continue
        runners = ", ".join(f"{short_name(t.node)} {t.value:.4f}" for t in step.trials[1 : 1 + RANKED])
        lines.append(
            f"  step {index}  + {short_name(step.fp32_nodes[-1])} fp32  {metric}={step.value:.4f}"
            + (f"   (next: {runners})" if runners else "")
        )
    return "\n".join(lines)
