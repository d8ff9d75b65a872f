"""Candidate search: build the precision's candidates, gate each, time them, keep the fastest that passes.

For int8 on CPU the candidates are the ``Recipe`` presets, plus the plain
fp32 export as a non-selectable baseline (so the report carries the int8 /
fp32 throughput ratio). For fp32 they are the plain and the optimized graph;
for fp16 the optimized graph converted to fp16. ``auto`` (the CPU default)
puts the fp32 and int8 candidates in one race: int8 wins where the CPU has
VNNI/AMX and a recipe passes the gate, fp32 wins elsewhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack.export.benchmark import make_session, measure_throughput
from tritonstack.export.errors import ExportError, ParityShapeError
from tritonstack.export.optimize import convert_fp16, optimize_graph
from tritonstack.export.options import Precision
from tritonstack.export.parity import Parity, Reference, check_parity
from tritonstack.export.quantize import Recipe, quantize

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport

BASELINE = "fp32"
OPTIMIZED_FP32 = "fp32_optimized"


@dataclass
class Candidate:
    """One ONNX file under consideration and what we measured about it."""

    name: str
    precision: Precision  # FP32, FP16 or INT8: what this file is (never AUTO)
    description: str
    selectable: bool = True  # False: measured for comparison only (the fp32 baseline of an int8 search)
    path: Path | None = None
    size_bytes: int = 0
    build_s: float = 0.0
    parity: Parity | None = None
    seq_per_s: float | None = None
    error: str | None = None
    recipe: Recipe | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.parity is not None and self.parity.passed

    def published(self) -> Candidate:
        """This candidate as a report states it: timings to the digits they hold, no temporary file."""
        return replace(
            self,
            path=None,
            build_s=round(self.build_s, 2),
            seq_per_s=None if self.seq_per_s is None else round(self.seq_per_s, 1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision.value,
            "description": self.description,
            "selectable": self.selectable,
            "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 2),
            "build_s": self.build_s,
            "seq_per_s": self.seq_per_s,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "passed": self.passed,
            "error": self.error,
            "recipe": None if self.recipe is None else self.recipe.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """The inverse of ``to_dict`` (``size_mb`` and ``passed`` are derived; the file path is not kept)."""
        return cls(
            data["name"],
            Precision(data["precision"]),
            data["description"],
            selectable=data["selectable"],
            size_bytes=data["size_bytes"],
            build_s=data["build_s"],
            parity=None if data["parity"] is None else Parity.from_dict(data["parity"]),
            seq_per_s=data["seq_per_s"],
            error=data["error"],
            recipe=None if data["recipe"] is None else Recipe.from_dict(data["recipe"]),
        )


def select(candidates: Sequence[Candidate]) -> Candidate | None:
    """The fastest selectable candidate that passes the gate (unmeasured speed counts as 0)."""
    passing = [c for c in candidates if c.selectable and c.passed]
    if not passing:
        return None
    return max(passing, key=lambda c: c.seq_per_s or 0.0)


def _int8(recipes: Sequence[Recipe] | None) -> list[Candidate]:
    chosen = recipes if recipes is not None else Recipe.presets()
    return [Candidate(r.name, Precision.INT8, r.description, recipe=r) for r in chosen]


def plan(precision: Precision, recipes: Sequence[Recipe] | None = None) -> list[Candidate]:
    """The candidates for ``precision`` (not built yet)."""
    if precision == Precision.INT8:
        baseline = Candidate(BASELINE, Precision.FP32, "ONNX fp32 baseline (not selectable)", selectable=False)
        return [baseline, *_int8(recipes)]
    fp32 = [
        Candidate(BASELINE, Precision.FP32, "ONNX fp32 as exported"),
        Candidate(OPTIMIZED_FP32, Precision.FP32, "ONNX fp32, transformer-optimized graph"),
    ]
    if precision == Precision.FP32:
        return fp32
    if precision == Precision.AUTO:
        return fp32 + _int8(recipes)
    if precision == Precision.FP16:
        return [Candidate("fp16_optimized", Precision.FP16, "transformer-optimized graph, fp16 compute, fp32 io")]
    raise ExportError(f"unknown precision {precision!r}", hint=f"use one of: {', '.join(p.value for p in Precision)}")


class _Progress:
    """tqdm on stderr; ``step(what)`` names the step starting now and counts the one before as done."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, file=sys.stderr, disable=not enabled, unit="step", leave=False)
        self.started = False

    def step(self, description: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_description(description)

    def close(self) -> None:
        if self.started:
            self.bar.update(1)
        self.bar.close()


def build(
    candidates: Sequence[Candidate], export: OnnxExport, workdir: Path, *, use_gpu: bool, step: Callable[[str], None]
) -> None:
    """Write each candidate's ONNX file into ``workdir``; failures are recorded, not raised."""
    optimized: Path | None = None
    optimize_error: str | None = None

    def optimized_graph() -> Path:
        nonlocal optimized, optimize_error
        if optimized is None and optimize_error is None:
            try:
                result = optimize_graph(
                    export.onnx_path,
                    workdir / "optimized.onnx",
                    ort_model_type=export.ort_model_type,
                    num_heads=export.num_attention_heads,
                    hidden_size=export.hidden_size,
                    use_gpu=use_gpu,
                )
                optimized = result.path
            except ExportError as error:
                optimize_error = error.message
        if optimized is None:
            raise ExportError(optimize_error or "optimization failed")
        return optimized

    for candidate in candidates:
        step(f"building {candidate.name}")
        started = time.perf_counter()
        try:
            if candidate.name == BASELINE:
                candidate.path = export.onnx_path
            elif candidate.name == OPTIMIZED_FP32:
                candidate.path = optimized_graph()
            elif candidate.precision == Precision.FP16:
                candidate.path = convert_fp16(optimized_graph(), workdir / "fp16.onnx")
            else:
                assert candidate.recipe is not None
                source = optimized_graph() if candidate.recipe.fused_graph else export.onnx_path
                candidate.path = quantize(candidate.recipe, source, workdir / f"int8_{candidate.name}.onnx")
            candidate.size_bytes = candidate.path.stat().st_size
        except ExportError as error:
            candidate.error = error.message
        candidate.build_s = time.perf_counter() - started


def evaluate(
    candidates: Sequence[Candidate],
    reference: Reference,
    batches: list[dict[str, Any]],
    *,
    gate: float,
    providers: list[Any] | None = None,
    threads: int = 2,
    reps: int = 3,
    measure: bool = True,
    step: Callable[[str], None] = lambda _: None,
) -> None:
    """Gate every built candidate, then time them all in interleaved rounds."""
    sessions: dict[str, Any] = {}
    for candidate in candidates:
        step(f"parity {candidate.name}")
        if candidate.path is None or candidate.error is not None:
            continue
        try:
            session = make_session(candidate.path, threads=threads, providers=providers)
            candidate.parity = check_parity(session, reference, batches, gate)
            sessions[candidate.name] = session
        except ParityShapeError:
            raise  # a broken export, not a candidate that is merely inaccurate
        except Exception as error:  # ORT rejects some fused/quantized graphs on some CPUs
            candidate.error = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    if measure and sessions:
        step("throughput warm-up")
        rounds = iter(range(1, reps + 1))
        speeds = measure_throughput(
            sessions, batches, reps=reps, before_round=lambda: step(f"throughput round {next(rounds, reps)}/{reps}")
        )
        for candidate in candidates:
            candidate.seq_per_s = speeds.get(candidate.name)


def run_search(
    export: OnnxExport,
    precision: Precision,
    reference: Reference,
    batches: list[dict[str, Any]],
    workdir: Path,
    *,
    gate: float,
    recipes: Sequence[Recipe] | None = None,
    providers: list[Any] | None = None,
    use_gpu: bool = False,
    measure: bool = True,
    threads: int = 2,
    reps: int = 3,
    progress: bool = True,
) -> list[Candidate]:
    """Build, gate and time the candidates for ``precision``; return them all (see ``select``)."""
    candidates = plan(precision, recipes)
    bar = _Progress(2 * len(candidates) + (reps + 1 if measure else 0), progress)
    try:
        build(candidates, export, workdir, use_gpu=use_gpu, step=bar.step)
        evaluate(
            candidates,
            reference,
            batches,
            gate=gate,
            providers=providers,
            threads=threads,
            reps=reps,
            measure=measure,
            step=bar.step,
        )
    finally:
        bar.close()
    return candidates


def format_table(candidates: Sequence[Candidate], chosen: Candidate | None) -> str:
    """The candidate table as aligned text."""
    baseline = next((c for c in candidates if c.name == BASELINE and c.seq_per_s), None)
    header = ("", "candidate", "precision", "size MB", "seq/s", "vs fp32", "parity", "gate")
    rows = [header]
    for c in candidates:
        if c.error:
            parity, verdict = c.error[:60], "error"
        elif c.parity is None:
            parity, verdict = "-", "-"
        else:
            parity = f"{c.parity.metric}={c.parity.value:.4f}"
            verdict = "pass" if c.parity.passed else "FAIL"
        speed = f"{c.seq_per_s:.1f}" if c.seq_per_s else "-"
        ratio = f"{c.seq_per_s / baseline.seq_per_s:.2f}x" if c.seq_per_s and baseline and baseline.seq_per_s else "-"
        mark = "*" if c is chosen else ("" if c.selectable else "(b)")
        size = f"{c.size_bytes / 1e6:.1f}" if c.size_bytes else "-"
        rows.append((mark, c.name, c.precision, size, speed, ratio, parity, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    legend = "* chosen" + ("   (b) baseline, not selectable" if any(not c.selectable for c in candidates) else "")
    lines.append(legend)
    return "\n".join(lines)
