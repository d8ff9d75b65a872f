"""Candidate search: build the precision's candidates, gate each, time them, keep the fastest that passes.

For int8 on CPU the candidates are the ``Recipe`` presets, the smoothed mixes
of the sensitivity search (``sensitivity.py``: every MatMul int8, then one
more kept fp32 per step until a mix passes the gate), each also with
per-token activation scales (``row_quantize.py``: batch-invariant, no one-row
rule) until one such passes, plus the plain fp32
export as a non-selectable baseline (so the report carries the int8 / fp32
throughput ratio). For fp32 they are the plain and the optimized graph; for
fp16 the optimized graph converted to fp16. ``auto`` (the CPU default) puts
the fp32 and int8 candidates in one race: int8 wins where the CPU has
VNNI/AMX and a recipe passes the gate, fp32 wins elsewhere.

Every candidate is gated on the gate split and also measured on the
calibration split (both figures are reported); only the gate split decides.
On a CPU every candidate is gated and timed one text per ONNX Runtime call:
a dynamic-int8 model must be (its activation scale spans the call), and on a
CPU these encoders are no faster batched (MiniLM fp32, this repository's
2-core VNNI machine: 78 texts/s one per call, 56 in batches of 32), so fp32
is not handicapped by it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonstack.export._errors import ExportError, ParityShapeError
from tritonstack.export.benchmark import make_session, measure_throughput
from tritonstack.export.cache import SearchCache, file_sha256, search_key
from tritonstack.export.candidates import BASELINE, OPTIMIZED_FP32, Candidate
from tritonstack.export.gates import Gate
from tritonstack.export.optimize import convert_fp16, optimize_graph
from tritonstack.export.options import Precision
from tritonstack.export.parity import Reference, check_parity
from tritonstack.export.quantize import Recipe, quantize
from tritonstack.export.row_quantize import rewrite_per_token

if TYPE_CHECKING:
    from tritonstack.export.onnx_export import OnnxExport
    from tritonstack.export.sensitivity import Sensitivity
    from tritonstack.export.smoothing import SmoothableGraph

CACHE_VERSION = 1  # bump when what the cache holds, or how it is measured, changes


@dataclass(frozen=True)
class SplitFeeds:
    """One split's PyTorch reference and its texts as ONNX Runtime feeds (``rows_per_call`` texts per call)."""

    reference: Reference
    feeds: list[dict[str, Any]]
    rows_per_call: int


@dataclass(frozen=True)
class SearchResult:
    """Every candidate (built, gated, timed, or failed) and, for int8, what the sensitivity search measured."""

    candidates: list[Candidate]
    sensitivity: Sensitivity | None = None


def _int8(recipes: Sequence[Recipe] | None) -> list[Candidate]:
    chosen = recipes if recipes is not None else Recipe.presets()
    return [Candidate(r.name, Precision.INT8, r.description, recipe=r) for r in chosen]


def plan(precision: Precision, recipes: Sequence[Recipe] | None = None) -> list[Candidate]:
    """The candidates for ``precision`` (not built yet); the smoothed mixes join as the search finds them."""
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

    def grow(self, steps: int) -> None:
        """``steps`` more steps than announced: the sensitivity search learns its length as it goes."""
        self.bar.total = (self.bar.total or 0) + steps
        self.bar.refresh()

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


class _Gating:
    """Opens each candidate's session once and measures it on both splits; keeps the sessions for timing."""

    def __init__(
        self, gate_split: SplitFeeds, calibration: SplitFeeds | None, gate: Gate, providers: list[Any], threads: int
    ) -> None:
        self.gate_split, self.calibration, self.gate = gate_split, calibration, gate
        self.providers, self.threads = providers, threads
        self.sessions: dict[str, Any] = {}

    def __call__(self, candidate: Candidate) -> None:
        if candidate.path is None or candidate.error is not None:
            return
        try:
            session = make_session(candidate.path, threads=self.threads, providers=self.providers)
            split = self.gate_split
            candidate.parity = check_parity(session, split.reference, split.feeds, self.gate)
            if self.calibration is not None:
                split = self.calibration
                candidate.calibration = check_parity(session, split.reference, split.feeds, self.gate)
            self.sessions[candidate.name] = session
        except ParityShapeError:
            raise  # a broken export, not a candidate that is merely inaccurate
        except Exception as error:  # ORT rejects some fused/quantized graphs on some CPUs
            candidate.error = f"{type(error).__name__}: {error}".splitlines()[0][:200]


def search_mixes(
    export: OnnxExport,
    calibration: SplitFeeds,
    gate: Gate,
    workdir: Path,
    judge: Callable[[Candidate], None],
    *,
    threads: int = 2,
    cache_root: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    grow: Callable[[int], None] = lambda _: None,
) -> tuple[list[Candidate], Sensitivity]:
    """The smoothed int8 mixes of the greedy walk, each built and ``judge``-d (gate split), up to the first that
    passes. ``progress``/``grow``: as for ``sensitivity.MixSearch``."""
    import onnxruntime as ort

    from tritonstack.export.sensitivity import MixSearch
    from tritonstack.export.smoothing import SmoothableGraph

    grow(2)  # reading the graph, the activation ranges; MixSearch announces the rest
    progress("smoothing: reading the fp32 graph")
    graph = SmoothableGraph(export.onnx_path)
    key = search_key(
        {
            "version": CACHE_VERSION,
            "onnxruntime": ort.__version__,
            "texts": list(calibration.reference.texts),
            # a pair task's documents (absent otherwise, so the keys of single-text exports stay as they were)
            **({"text_pairs": list(calibration.reference.text_pairs)} if calibration.reference.text_pairs else {}),
            "rows_per_call": calibration.rows_per_call,
            "metric": str(gate.for_task(export.task).metric),
        }
    )
    mixes = MixSearch(
        graph,
        calibration.reference,
        calibration.feeds,
        gate,
        lambda model: make_session(model, threads=threads),
        SearchCache(file_sha256(export.onnx_path), key, cache_root),
        progress=progress,
        grow=grow,
    )
    alpha = mixes.choose_alpha()
    candidates: list[Candidate] = []
    per_token_passed = False
    for step in mixes.walk():
        scales = mixes.scales(alpha)
        candidate = _build_mix(graph, scales, Recipe.smoothed(alpha, step.fp32_nodes), workdir)
        candidates.append(candidate)
        # The same mix with per-token scales: batchable, and finer, so it may pass with fewer fp32 MatMuls.
        # Once one passes, a per-token mix with more fp32 MatMuls would only be slower.
        per_token = None
        if not per_token_passed:
            recipe = Recipe.smoothed(alpha, step.fp32_nodes, per_token=True)
            per_token = _build_mix(graph, scales, recipe, workdir)
            candidates.append(per_token)
        for built in (candidate, per_token):
            if built is not None:
                grow(1)
                progress(f"gating {built.name}")
                judge(built)
        per_token_passed = per_token_passed or (per_token is not None and per_token.passed)
        if candidate.passed:
            break
    return candidates, mixes.result()


def _build_mix(graph: SmoothableGraph, scales: Any, recipe: Recipe, workdir: Path) -> Candidate:
    """``recipe``'s smoothed mix of ``graph`` built and saved as a candidate (not gated yet), rewritten per
    token where the recipe says so; a mix with nothing int8 to rewrite is a failed candidate."""
    candidate = Candidate(recipe.name, Precision.INT8, recipe.description, recipe=recipe)
    started = time.perf_counter()
    model = graph.build(scales, recipe.fp32_nodes)
    try:
        if recipe.per_token:
            model = rewrite_per_token(model)
    except ValueError as error:
        candidate.error = str(error)
        return candidate
    candidate.path = workdir / f"int8_{candidate.name}.onnx"
    _save(model, candidate.path)
    candidate.size_bytes = candidate.path.stat().st_size
    candidate.build_s = time.perf_counter() - started
    return candidate


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def run_search(
    export: OnnxExport,
    precision: Precision,
    gate_split: SplitFeeds,
    workdir: Path,
    *,
    gate: Gate,
    calibration: SplitFeeds | None = None,
    recipes: Sequence[Recipe] | None = None,
    mixes: bool = True,
    providers: list[Any] | None = None,
    use_gpu: bool = False,
    measure: bool = True,
    threads: int = 2,
    reps: int = 3,
    progress: bool = True,
    cache_root: Path | None = None,
) -> SearchResult:
    """Build, gate and time the candidates for ``precision``; return them all (see ``candidates.select``).

    ``mixes``: for int8 and auto on a CPU, also search the smoothed mixes (needs ``calibration``).
    """
    candidates = plan(precision, recipes)
    with_mixes = mixes and calibration is not None and not use_gpu and precision in (Precision.INT8, Precision.AUTO)
    bar = _Progress(2 * len(candidates) + (reps + 1 if measure else 0), progress)
    judge = _Gating(gate_split, calibration, gate, providers or ["CPUExecutionProvider"], threads)
    sensitivity = None
    try:
        build(candidates, export, workdir, use_gpu=use_gpu, step=bar.step)
        for candidate in candidates:
            bar.step(f"parity {candidate.name}")
            judge(candidate)
        if with_mixes:
            assert calibration is not None
            found, sensitivity = search_mixes(
                export,
                calibration,
                gate,
                workdir,
                judge,
                threads=threads,
                cache_root=cache_root,
                progress=bar.step,
                grow=bar.grow,
            )
            candidates += found
        if measure and judge.sessions:
            bar.step("throughput warm-up")
            rounds = iter(range(1, reps + 1))
            speeds = measure_throughput(
                judge.sessions,
                gate_split.feeds,
                reps=reps,
                before_round=lambda: bar.step(f"throughput round {next(rounds, reps)}/{reps}"),
            )
            for candidate in candidates:
                candidate.seq_per_s = speeds.get(candidate.name)
    finally:
        bar.close()
    return SearchResult(candidates, sensitivity)
