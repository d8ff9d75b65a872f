"""One tune run: read the model's configs, start Triton, climb within the budget, confirm, rank.

Triton serves a scratch copy of the repository under the report folder: a
symbolic link to each model folder, and ``NAME_fused`` made there when the
repository has none, so the fused layout can be measured while the repository
itself is only read (``--dry-run`` writes nothing into it; ``apply`` writes the
winner).

The budget covers everything from Triton's start to the last measurement.
Before each config the runner checks that the budget still pays for the most
the next one may cost (a sweep over every level and the half-load point after
the slowest reload yet, or the dearest config so far, with 20 % slack) --
during the search, for one plus the confirmation round below; a budget too
small for a single config's measurement is an error before anything starts.

Noise on a shared CPU can make a config look a few per cent better than it is,
and the best of many noisy measurements is biased upward. So after the search
the best few configs and the starting one are measured once more, side by
side. The best of those on the mean of its measurements wins only if it also
beat the starting config in every measurement (its slowest above the start's
fastest): a gain inside the spread of the measurements is not one. A config
that broke the SLO in any of its measurements cannot win.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.progress import Progress
from tritonstack.measure.slo import SLO
from tritonstack.measure.timing import Timing
from tritonstack.repository.config import parameter
from tritonstack.tune.errors import TuneError
from tritonstack.tune.knobs import Knobs, StepConfigs, apply_knobs, load_steps, read_knobs
from tritonstack.tune.score import HalfLoadCheck, Score, SweepPoint, check_half_load, combine, score
from tritonstack.tune.search import MIN_GAIN, SearchOutcome, climb, concurrency_levels
from tritonstack.tune.session import TuneServer, Workload, describe_workload, workload_from
from tritonstack.tune.space import dimensions, per_call_activation_scales

Log = Callable[[str], None]
DEFAULT_TIMING = Timing(rounds=1, warmup_s=1.0, duration_s=2.0)
COST_SLACK = 1.2  # on what the next config may cost: reloads and windows run long on a busy machine
SCRATCH_DIR = "repository"  # under the report folder: what Triton serves while tune measures


@dataclass(frozen=True)
class TuneSettings:
    repository: Path
    name: str
    slo: SLO
    budget_s: float
    report_dir: Path
    timing: Timing = DEFAULT_TIMING  # per sweep point: one window after a warm-up
    cpu_split: str = "pinned"
    min_gain: float = MIN_GAIN  # a config must beat another by this fraction to count as better
    confirm: int = 3  # the search's best configs measured again beside the start


@dataclass(frozen=True)
class Trial:
    """One measurement of one config."""

    number: int
    knobs: Knobs
    phase: str  # "search" or "confirm"
    points: tuple[SweepPoint, ...]  # the closed-loop sweep
    score: Score
    reloaded: tuple[str, ...]  # the steps switched to this config
    at_s: float  # when it started, since the budget's start
    reload_s: float  # switching Triton to this config
    cost_s: float  # reload + sweep + half-load point
    half_load: SweepPoint | None = None  # the open-loop point at half the sweep's best throughput


@dataclass(frozen=True)
class Ranked:
    knobs: Knobs
    score: Score  # ``combine`` over its trials
    measured: tuple[float, ...]  # each trial's throughput at the SLO (0.0 where it missed), in order
    confirmed: bool  # measured again in the confirmation round
    half_load_p99_ms: tuple[float, ...] = ()  # each trial's half-load p99 (NaN where none was measured), in order

    @property
    def trials(self) -> int:
        return len(self.measured)

    def clearly_beats(self, other: Ranked, min_gain: float) -> bool:
        """Better on the mean by ``min_gain``, and in every measurement than ``other`` in any of its own:
        on a noisy machine a gain inside the spread of the measurements is no gain."""
        return self.score.beats(other.score, min_gain) and min(self.measured) > max(other.measured)


@dataclass
class TuneResult:
    settings: TuneSettings
    split: cpus.CpuSplit
    steps: StepConfigs  # as read from the repository
    start: Knobs
    levels: tuple[int, ...]
    workload: dict[str, Any]
    precision: str
    rows_fixed: bool  # one row per ONNX Runtime call is required (per-call activation scales)
    trials: list[Trial] = field(default_factory=list)
    ranking: list[Ranked] = field(default_factory=list)
    exhausted: bool = False
    elapsed_s: float = 0.0
    started: str = ""

    @property
    def start_ranked(self) -> Ranked | None:
        return next((r for r in self.ranking if r.knobs == self.start), None)

    @property
    def best(self) -> Ranked | None:
        """The best-ranked config that held the SLO; ``None`` when none did."""
        return next((r for r in self.ranking if r.score.held), None)

    @property
    def half_load_check(self) -> HalfLoadCheck | None:
        """Where ``best`` clearly beats the export's config on throughput: its half-load p99 against the
        export's, both measured in this run; ``None`` where there is nothing to compare."""
        best, start = self.best, self.start_ranked
        if best is None or start is None or best.knobs == start.knobs:
            return None
        if not best.clearly_beats(start, self.settings.min_gain):
            return None
        return check_half_load(best.half_load_p99_ms, start.half_load_p99_ms)

    @property
    def kept_for_half_load(self) -> bool:
        """``best`` beat the export's config on throughput but was worse at half load: the export's stays."""
        check = self.half_load_check
        return check is not None and check.worse

    @property
    def winner(self) -> Ranked | None:
        """``best`` if it clearly beats the start (``Ranked.clearly_beats``) and is not worse than the start at
        half load (``HalfLoadCheck.worse``), else the start; ``None`` when no config held."""
        best, start = self.best, self.start_ranked
        if best is None or start is None:
            return best  # no config held; the start is always measured (``run_tune`` makes sure)
        if best.clearly_beats(start, self.settings.min_gain) and not self.kept_for_half_load:
            return best
        return start

    def changed_steps(self) -> StepConfigs | None:
        """The step configs of the winner, or ``None`` when there is nothing to write."""
        winner = self.winner
        if winner is None or winner.knobs == self.start:
            return None
        return apply_knobs(self.steps, winner.knobs)


class Budget:
    """Seconds since construction against ``total_s``."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s = total_s
        self.clock = clock
        self.started = clock()

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def affords(self, cost_s: float) -> bool:
        return self.elapsed_s + cost_s <= self.total_s


def sweep_s(levels: tuple[int, ...], timing: Timing) -> float:
    """The longest one config's measurement can take: every level and the half-load point, each a warm-up
    and a window."""
    return (len(levels) + 1) * (timing.warmup_s + timing.duration_s)


def _describe(knobs: Knobs, start: Knobs) -> str:
    changes = knobs.changes_from(start)
    return ", ".join(f"{k} {old}->{new}" for k, (old, new) in changes.items()) or "the export's config"


def _trial_line(trial: Trial, start: Knobs) -> str:
    point = trial.score.point
    latency = f", p99 {point.latency_ms[99.0]:.0f} ms" if point is not None else ""
    batches = ""
    if point is not None:
        batches = "".join(f", {role} batch {size:.1f}" for role, size in point.batch.items() if size is not None)
    half = trial.half_load
    half_load = f", half load p99 {half.latency_ms[99.0]:.0f} ms" if half is not None else ""
    return (
        f"[{trial.at_s:4.0f} s] #{trial.number} {trial.phase:<7} {_describe(trial.knobs, start)}: "
        f"{trial.score.describe()}{latency}{batches}{half_load}"
    )


def _half_load_p99_ms(trial: Trial) -> float:
    return trial.half_load.latency_ms.get(99.0, math.nan) if trial.half_load is not None else math.nan


def rank(trials: list[Trial]) -> list[Ranked]:
    """Every config tried, best first; configs of the confirmation round first of all (the winner is one of them)."""
    by_knobs: dict[Knobs, list[Trial]] = {}
    for trial in trials:
        by_knobs.setdefault(trial.knobs, []).append(trial)
    ranked = [
        Ranked(
            knobs,
            combine([t.score for t in group]),
            tuple(t.score.throughput_per_s for t in group),
            any(t.phase == "confirm" for t in group),
            tuple(_half_load_p99_ms(t) for t in group),
        )
        for knobs, group in by_knobs.items()
    ]
    return sorted(ranked, key=lambda r: (r.confirmed, *r.score.key()), reverse=True)


def _check_budget(budget_s: float, levels: tuple[int, ...], timing: Timing) -> None:
    needed = sweep_s(levels, timing)
    if budget_s < needed:
        raise TuneError(
            f"a budget of {budget_s:g} s cannot pay for one config: its measurement takes up to {needed:g} s "
            f"({len(levels)} concurrency levels and the half-load point, each "
            f"{timing.warmup_s + timing.duration_s:g} s)",
            hint=f"give --budget at least {math.ceil(needed + 60)}s (Triton's start counts too), "
            "or fewer levels (the SLO's capacity section) or shorter points (--point-s, --warmup-s)",
        )


def _workload(settings: TuneSettings) -> Workload:
    from tritonstack.measure.payload import load_texts
    from tritonstack.measure.served_files import locate

    files = locate(settings.repository, settings.name)
    slo = settings.slo
    return workload_from(
        load_texts(slo.payload.texts_file),
        slo.payload.texts_drawn(slo.task),  # text-ranking: the query and its documents
        slo.task,
        files.tokenizer_dir,
        files.max_sequence_length,
    )


def run_tune(settings: TuneSettings, *, log: Log = print, progress: Progress | None = None) -> TuneResult:
    """Search, confirm and rank; nothing is written (``apply`` and ``report`` do that). ``progress`` shows the
    config being measured against the budget (``measure.progress``); ``log`` should step aside for it
    (``Progress.write``)."""
    from tritonstack.measure.served_files import locate

    progress = progress or Progress.off()
    slo = settings.slo
    levels = concurrency_levels(slo.capacity)
    _check_budget(settings.budget_s, levels, settings.timing)
    steps = load_steps(settings.repository, settings.name)
    files = locate(settings.repository, settings.name)
    rows_fixed = per_call_activation_scales(files.encoder_onnx)
    start = read_knobs(steps)
    if rows_fixed:
        start = replace(start, rows_per_call=1)
    split = cpus.plan(settings.cpu_split)
    # from the fused layout there is no way back to the ensemble's steps: only its knobs are searched
    layouts = contract.LAYOUTS if start.layout == contract.ENSEMBLE_LAYOUT else (start.layout,)
    space = dimensions(
        cores=len(split.server), max_batch_size=steps.encoder.max_batch_size, rows_fixed=rows_fixed, layouts=layouts
    )
    workload = _workload(settings)
    result = TuneResult(
        settings=settings,
        split=split,
        steps=steps,
        start=start,
        levels=levels,
        workload=describe_workload(workload),
        precision=parameter(steps.encoder, contract.PRECISION_PARAMETER) or "unknown",
        rows_fixed=rows_fixed,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    log(f"==> cores: {split.describe()}")
    log(
        f"==> {settings.name} ({result.precision}): {len(space)} knobs to search "
        f"({', '.join(d.name for d in space)}), concurrency levels {list(levels)}, budget {settings.budget_s:g} s"
    )
    if rows_fixed:
        log("    its graph quantizes activations per call (dynamic int8): one row per ONNX Runtime call, not searched")
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    served = scratch_repository(settings.repository, settings.name, steps, settings.report_dir / SCRATCH_DIR)
    budget = Budget(settings.budget_s)
    progress.plan(settings.budget_s, bound=True)  # the search stops within the budget, or sooner
    progress.start("starting Triton")
    with TuneServer(served, settings.name, steps, split, settings.report_dir / "triton.log") as server:
        one_config_s = sweep_s(levels, settings.timing)
        if not budget.affords(one_config_s):
            raise TuneError(
                f"Triton took {budget.elapsed_s:.0f} s of the {settings.budget_s:g} s budget to start; "
                f"what is left cannot pay for one config ({one_config_s:g} s)",
                hint=f"give --budget at least {math.ceil(budget.elapsed_s + one_config_s + 30)}s",
            )
        log(f"    Triton started in {budget.elapsed_s:.0f} s")
        trials = _Trials(server, result, workload, budget, progress, log)
        outcome = climb(start, space, lambda k: trials.measure(k, "search"), min_gain=settings.min_gain)
        if start not in outcome.scores:  # measured first: nothing is written unless beside it
            raise TuneError("the budget ran out before the export's config was measured")
        _confirm(outcome, start, settings.confirm, lambda k: trials.measure(k, "confirm"))
        result.exhausted = outcome.exhausted
        progress.start("stopping Triton")
    result.ranking = rank(result.trials)
    result.elapsed_s = budget.elapsed_s
    return result


def scratch_repository(repository: Path, name: str, steps: StepConfigs, scratch: Path) -> Path:
    """``scratch``: a link to each model folder of ``repository``; in the ensemble layout ``NAME_fused`` is made
    there instead (its served releases, ``steps.fused`` as its config: a fused step on disk may be stale).
    Returns ``scratch``."""
    from tritonstack.repository.config import write_config
    from tritonstack.repository.python_models import add_versions
    from tritonstack.repository.releases import read_releases

    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    make_fused = steps.layout == contract.ENSEMBLE_LAYOUT
    for model_dir in sorted(Path(repository).iterdir()):
        if make_fused and model_dir.name == steps.fused.name:
            continue
        if model_dir.is_dir() and not model_dir.name.startswith(".") and (model_dir / "config.pbtxt").is_file():
            (scratch / model_dir.name).symlink_to(model_dir.resolve(), target_is_directory=True)
    if make_fused:
        add_versions(scratch, name, steps.fused.name, read_releases(repository, name).served)
        write_config(scratch / steps.fused.name, steps.fused)
    return scratch


class _Trials:
    """Measures configs on ``server`` while ``budget`` pays for them, recording each in ``result.trials``."""

    def __init__(
        self,
        server: TuneServer,
        result: TuneResult,
        workload: Workload,
        budget: Budget,
        progress: Progress,
        log: Log,
    ) -> None:
        self.server = server
        self.result = result
        self.workload = workload
        self.budget = budget
        self.progress = progress
        self.log = log

    def _affords(self, phase: str) -> bool:
        trials, confirm = self.result.trials, self.result.settings.confirm
        if not trials:
            return True  # the first config's sweep was checked against the budget before Triton started
        # At most: a reload as slow as the slowest yet, a sweep over every level (sweeps that started near
        # the peak took fewer) and the half-load point, with some slack for a busy machine.
        full_sweep_s = max(t.reload_s for t in trials) + sweep_s(self.result.levels, self.result.settings.timing)
        next_s = COST_SLACK * max(full_sweep_s, *(t.cost_s for t in trials))
        # the search leaves room for the confirmation round: the start and the best configs once more
        reserve = min(confirm + 1, len(trials)) if phase == "search" and confirm else 0
        return self.budget.affords(next_s * (1 + reserve))

    def _start_level(self) -> int:
        """Where the sweep starts: the level at which the best config so far peaked."""
        held = [t.score.point for t in self.result.trials if t.score.held and t.score.point is not None]
        return max(held, key=lambda p: p.throughput_per_s).concurrency if held else self.result.levels[0]

    def measure(self, knobs: Knobs, phase: str) -> Score | None:
        """Switch to ``knobs`` and sweep; ``None`` when the budget cannot pay for it."""
        if not self._affords(phase):
            return None
        result, slo, start = self.result, self.result.settings.slo, self.result.start
        at_s = self.budget.elapsed_s
        self.progress.start(f"config #{len(result.trials) + 1} {phase}: {_describe(knobs, start)}")
        reloaded = self.server.apply(apply_knobs(result.steps, knobs))
        reload_s = self.budget.elapsed_s - at_s
        sweep = self.server.sweep(
            self.workload, slo.objectives, result.levels, self._start_level(), result.settings.timing,
            slo.load.timeout_s,
        )  # fmt: skip
        trial = Trial(
            len(result.trials) + 1, knobs, phase, sweep.points, score(sweep.points, slo.objectives, sweep.half_load),
            tuple(reloaded), at_s, reload_s, self.budget.elapsed_s - at_s, sweep.half_load,
        )  # fmt: skip
        result.trials.append(trial)
        self.progress.measured(trial.score.describe())
        self.log(_trial_line(trial, start))
        return trial.score


def _confirm(outcome: SearchOutcome, start: Knobs, count: int, measure: Callable[[Knobs], Score | None]) -> None:
    """Measure the ``count`` best configs of the search and ``start`` once more, while the budget allows."""
    if count <= 0 or len(outcome.scores) < 2:
        return
    best = sorted(outcome.scores, key=lambda k: outcome.scores[k].key(), reverse=True)[:count]
    for knobs in [start, *(k for k in best if k != start)]:
        if measure(knobs) is None:
            return
