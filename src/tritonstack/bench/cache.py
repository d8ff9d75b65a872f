"""``tritonstack bench --repeat-ratio R``: the served stack without and with Triton's response cache.

Both runs serve a copy of the text-in model (its ensemble and steps) that
differs only in ``response_cache`` on the ensemble, on the same cores, under
the same closed-loop load (``load.py``), with the same requests: a
``PayloadMix`` of the benchmark corpus with the same seed, so a share R repeats
one of a hot set of requests and the rest were never sent before (the texts
carry a random reference). The cached run starts with an empty cache; its
warm-up computes the hot set.

At R = 0.5 the cache can at most double throughput (half the requests cost
nothing); the target is 0.85 of that limit, 1.7x. After each run's load every
hot request is sent once more: without the cache Triton computes it afresh,
with the cache it is a hit (checked on Triton's counters); the two answers
must be equal bit for bit, or the cache returns something a recomputation
would not (an encoder whose output depends on its batch neighbours).

A request is the served model's task's SDK call (``contract.Task.sdk_method``):
one text, or for a reranker ``documents_per_query`` drawn documents and one of
the bench's short queries, picked by the first document so that a repeat
repeats its query (``workload.documents_call``), counted as that many rows; a
reranker's answers compare as their scores.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np

from tritonstack.bench.errors import BenchError
from tritonstack.bench.results import SERVED, Point, summarize_rounds, write_summary
from tritonstack.bench.runner import OTHERS_BUSY_WARNING
from tritonstack.bench.served import serving
from tritonstack.bench.workload import (
    DEFAULT_DOCUMENTS_PER_QUERY,
    answer_array,
    documents_call,
    rows_round,
    sdk_call,
)
from tritonstack.cost import Cost
from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.json_safe import json_safe
from tritonstack.measure.load import closed_loop
from tritonstack.measure.payload import PayloadMix
from tritonstack.measure.progress import Progress
from tritonstack.measure.samples import Round
from tritonstack.measure.slo import DEFAULT_HOT_SET
from tritonstack.measure.timing import Timing
from tritonstack.measure.triton_stats import CounterDeltas, Counters, TritonStatsProbe
from tritonstack.repository.config import set_response_cache

Log = Callable[[str], None]
TARGET_SHARE_OF_LIMIT = 0.85  # 1.7x at a 50 % repeat ratio, where the limit is 2x


@dataclass(frozen=True)
class CacheBenchSettings:
    repository: Path
    name: str
    report_dir: Path
    texts: Sequence[str]
    repeat_ratio: float
    hot_set: int = DEFAULT_HOT_SET
    concurrency: int = 16
    seed: int = 0
    timing: Timing = field(default_factory=Timing)
    cpu_split: str = "pinned"
    price_per_hour_usd: float | None = None
    task: contract.Task = contract.FEATURE_EXTRACTION  # the served model's: which SDK call a request is
    documents_per_query: int = DEFAULT_DOCUMENTS_PER_QUERY  # a pair task's documents per request

    @property
    def rows_per_request(self) -> int:
        """Texts drawn per request: one, or a pair task's documents (its query is the bench's own)."""
        return self.documents_per_query if self.task.pair else 1


@dataclass(frozen=True)
class CacheRun:
    """One run: its throughput point, Triton's cache counters over the measured windows, and the answers to
    the hot requests sent once more after the load."""

    cached: bool
    point: Point
    text_in: Counters  # the text-in model over the measured windows
    hot_answers: tuple[bytes, ...]
    hot_hits: int  # of the hot requests sent after the load, how many Triton answered from the cache

    @property
    def label(self) -> str:
        return _label(self.cached)

    @property
    def hit_ratio(self) -> float | None:
        lookups = self.text_in.cache_hits + self.text_in.cache_misses
        return self.text_in.cache_hits / lookups if lookups else None


@dataclass(frozen=True)
class CacheBenchResult:
    settings: CacheBenchSettings
    split: cpus.CpuSplit
    uncached: CacheRun
    cached: CacheRun

    @property
    def speedup(self) -> float | None:
        base = self.uncached.point.throughput_per_s
        return self.cached.point.throughput_per_s / base if base > 0 else None

    @property
    def limit(self) -> float | None:
        """The most a cache can give when every repeat is a free hit: 1 / (1 - R)."""
        ratio = self.settings.repeat_ratio
        return 1 / (1 - ratio) if ratio < 1 else None

    @property
    def target(self) -> float | None:
        return TARGET_SHARE_OF_LIMIT * self.limit if self.limit is not None else None

    @property
    def identical(self) -> int:
        """Hot requests whose cached answer equals the recomputed one, bit for bit."""
        pairs = zip(self.uncached.hot_answers, self.cached.hot_answers, strict=True)
        return sum(recomputed == hit for recomputed, hit in pairs)

    @property
    def max_abs_difference(self) -> float:
        """The largest difference between a cached and a recomputed embedding element."""
        pairs = zip(self.uncached.hot_answers, self.cached.hot_answers, strict=True)
        differences = [
            float(np.max(np.abs(np.frombuffer(a, np.float32) - np.frombuffer(b, np.float32)), initial=0.0))
            for a, b in pairs
        ]
        return max(differences, default=0.0)

    def warnings(self) -> list[str]:
        """What makes the two runs' figures incomparable: other processes' load, a ratio beyond the limit."""
        notes = []
        busy = max((run.point.others_cpu or 0.0) for run in (self.uncached, self.cached))
        if busy > OTHERS_BUSY_WARNING:
            notes.append(
                f"other processes used up to {100 * busy:.0f}% of the machine's CPUs during the runs (oth%): "
                "they competed for the cores, so the figures and their ratio are unreliable"
            )
        if self.speedup is not None and self.limit is not None and self.speedup > 1.05 * self.limit:
            notes.append(
                f"the ratio {self.speedup:.2f}x exceeds the {self.limit:.2f}x a cache can give at "
                f"{self.settings.repeat_ratio:.0%} repeats: the two runs did not get the same machine"
            )
        return notes

    def costs(self) -> list[Cost]:
        price = self.settings.price_per_hour_usd
        if price is None:
            return []
        return [Cost(price, run.point.throughput_per_s, f"served, {run.label}") for run in (self.uncached, self.cached)]

    def to_dict(self) -> dict[str, Any]:
        settings = self.settings
        return json_safe(
            {
                "model": settings.name,
                "task": settings.task.name,
                **({"documents_per_query": settings.documents_per_query} if settings.task.pair else {}),
                "repeat_ratio": settings.repeat_ratio,
                "hot_set": settings.hot_set,
                "concurrency": settings.concurrency,
                "seed": settings.seed,
                "timing": {
                    "rounds": settings.timing.rounds,
                    "warmup_s": settings.timing.warmup_s,
                    "duration_s": settings.timing.duration_s,
                },
                "cpu_split": self.split.to_dict(),
                "runs": {
                    run.label: {
                        "point": run.point.to_dict(),
                        "cache_hits": run.text_in.cache_hits,
                        "cache_misses": run.text_in.cache_misses,
                        "hit_ratio": run.hit_ratio,
                        "hot_requests_answered_from_cache": run.hot_hits,
                    }
                    for run in (self.uncached, self.cached)
                },
                "speedup": self.speedup,
                "limit": self.limit,
                "target": self.target,
                "target_met": None if self.speedup is None or self.target is None else self.speedup >= self.target,
                "hits_bitwise_identical": {
                    "identical": self.identical,
                    "hot_requests": settings.hot_set,
                    "max_abs_difference": self.max_abs_difference,
                },
                "cost": [cost.to_dict() for cost in self.costs()],
                "warnings": self.warnings(),
            }
        )


def _label(cached: bool) -> str:
    return "local cache" if cached else "no cache"


def planned_s(settings: CacheBenchSettings) -> float:
    """The seconds of measurement both runs plan (their rounds' warm-ups and windows), for the progress line's
    estimate; the second Triton start and the hot requests sent after each run's load come on top."""
    return 2 * settings.timing.point_s


def _scratch_repository(source: Path, name: str, destination: Path) -> Path:
    """A copy of the text-in model ``name`` and its steps, to switch the cache on and off without touching
    ``source``."""
    steps = [
        name,
        contract.tokenizer_name(name),
        contract.encoder_name(name),
        contract.postprocess_name(name),
        contract.fused_name(name),
    ]
    for model in steps:
        if (source / model).is_dir():
            shutil.copytree(source / model, destination / model, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def _switch_cache(repository: Path, name: str, *, enable: bool) -> None:
    config = repository / name / "config.pbtxt"
    config.write_text(set_response_cache(config.read_text(), enable=enable))


Measured = list[tuple[Round, CounterDeltas]]


async def _load(
    url: str, pgid: int, settings: CacheBenchSettings, label: str, progress: Progress
) -> tuple[Measured, list[bytes], int]:
    """The rounds of closed-loop load, then every hot request once more: the measured windows, the answers
    to the hot requests (raw float32 bytes) and how many of them Triton answered from the cache. ``label``
    names the run on the progress line."""
    from tritonstack.client import AsyncClient

    name = settings.name
    mix = PayloadMix(
        settings.texts, settings.rows_per_request, settings.seed, repeat_ratio=settings.repeat_ratio,
        hot_set_size=settings.hot_set,
    )  # fmt: skip
    method = sdk_call(settings.task)
    probe = TritonStatsProbe(url, [name])
    measured = []
    try:
        async with AsyncClient(url, model=name, timeouts=60.0) as client:
            call = getattr(client, method)  # embed(texts); rerank: a short query and the texts as its documents
            if settings.task.pair:
                call = documents_call(call, seed=settings.seed)
            await call(["tritonstack bench: connect before measuring"])

            async def send(_index: int) -> None:  # the mix, not the load generator's corpus index, picks the texts
                await call(mix.draw().texts)

            timing = settings.timing
            for number in range(1, timing.rounds + 1):
                progress.start(f"{label}, round {number}/{timing.rounds}", timing.warmup_s + timing.duration_s)
                # One "corpus entry" of no tokens: the mix picks the texts, and GFLOP/s are not this mode's figure.
                result, extra = await closed_loop(
                    send, [0], settings.concurrency, warmup_s=settings.timing.warmup_s,
                    duration_s=settings.timing.duration_s, server_cpu_s=lambda: cpus.group_cpu_s(pgid), probe=probe,
                )  # fmt: skip
                window = extra["window"] if extra else CounterDeltas(result.elapsed_s, {})
                measured.append((rows_round(result, settings.rows_per_request), window))
                progress.measured(f"{measured[-1][0].throughput_per_s:.1f} texts/s ({label})")
            progress.start(f"{label}: the hot requests once more")
            before = await probe.snapshot()
            answers = [answer_array(settings.task, await call(texts)).tobytes() for texts in mix.hot]
            after = await probe.snapshot()
    finally:
        await probe.close()
    return measured, answers, (after[name] - before[name]).cache_hits


def _run(
    settings: CacheBenchSettings,
    split: cpus.CpuSplit,
    repository: Path,
    cached: bool,
    log: Log,
    progress: Progress,
    *,
    plan: bool = False,
) -> CacheRun:
    """One run over a Triton of its own; ``plan``: the first run, which plans both runs' time once Triton is up."""
    _switch_cache(repository, settings.name, enable=cached)
    repeats = f"{settings.repeat_ratio:.0%} repeats of {settings.hot_set}"
    log(f"==> served, {_label(cached)}: c={settings.concurrency}, {repeats}")
    log_path = settings.report_dir / f"triton-{'cache' if cached else 'no-cache'}.log"
    progress.start(f"starting Triton ({_label(cached)})")
    with serving(repository, split, log_path=log_path, log=log) as server, cpus.pinned(split.client):
        if plan:  # a plan in seconds, from here: the first Triton is up
            progress.plan(planned_s(settings), pace=1.0)
        measured, answers, hot_hits = asyncio.run(
            _load(server.grpc_url, server.pid, settings, _label(cached), progress)
        )
        progress.start(f"stopping Triton ({_label(cached)})")  # on leaving the block
    rounds = [r for r, _ in measured]
    point = summarize_rounds(
        SERVED, "concurrency", settings.concurrency, rounds, client_cores=len(split.client),
        server_cores=len(split.server),
    )  # fmt: skip
    errors = [r.first_error for r in rounds if r.first_error]
    if errors:
        point.details["first_error"] = errors[0]
    window = reduce(lambda a, b: a + b, (w for _, w in measured))
    text_in = window.models.get(settings.name, Counters())
    run = CacheRun(cached, point, text_in, tuple(answers), hot_hits)
    ratio = "n/a" if run.hit_ratio is None else f"{run.hit_ratio:.1%}"
    log(f"    {point.throughput_per_s:8.1f} texts/s, p50 {point.p50_ms:.1f} ms, hit ratio {ratio}")
    progress.measured(f"{point.throughput_per_s:.1f} texts/s ({run.label}), hit ratio {ratio}")
    return run


def run_cache_bench(
    settings: CacheBenchSettings, *, log: Log = print, progress: Progress | None = None
) -> CacheBenchResult:
    """Both runs, one after the other, on a scratch copy of the model; nothing printed but progress: ``log``
    the lines, ``progress`` the round being measured (``measure.progress``; ``log`` should step aside for it,
    ``Progress.write``)."""
    progress = progress or Progress.off()
    if not 0 <= settings.repeat_ratio <= 1:
        raise BenchError(f"--repeat-ratio must be in [0, 1], got {settings.repeat_ratio}")
    if not (settings.repository / settings.name / "config.pbtxt").is_file():
        raise BenchError(f"no model {settings.name!r} in {settings.repository}")
    split = cpus.plan(settings.cpu_split)
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    log(f"==> cores: {split.describe()}")
    with tempfile.TemporaryDirectory(prefix="tritonstack-cache-bench-") as scratch:
        repository = _scratch_repository(settings.repository, settings.name, Path(scratch))
        uncached = _run(settings, split, repository, cached=False, log=log, progress=progress, plan=True)
        cached = _run(settings, split, repository, cached=True, log=log, progress=progress)
    return CacheBenchResult(settings, split, uncached, cached)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(result: CacheBenchResult) -> str:
    """The printed report."""
    settings = result.settings
    timing = settings.timing
    lines = [
        f"tritonstack bench --repeat-ratio {settings.repeat_ratio:g} -- {settings.name}, {len(settings.texts)} texts "
        f"(seed {settings.seed}), c={settings.concurrency}; {timing.rounds} rounds x {timing.duration_s:g} s after "
        f"{timing.warmup_s:g} s warm-up; throughput = median of rounds",
        f"requests: {settings.repeat_ratio:.0%} repeat one of {settings.hot_set} hot requests, the rest were never "
        "sent before; the same sequence for both runs",
        f"cores: {result.split.describe()}",
        *(f"WARNING: {warning}" for warning in result.warnings()),
        "",
        f"{'run':<12} {'texts/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'hit ratio':>9} {'srv%':>5} {'gen%':>5}"
        f" {'oth%':>5} {'err':>4}",
    ]
    for run in (result.uncached, result.cached):
        point = run.point
        busy = [_fmt(None if v is None else 100 * v, "3.0f") for v in (point.server_cpu, point.client_cpu)]
        others = _fmt(None if point.others_cpu is None else 100 * point.others_cpu, "3.0f")
        lines.append(
            f"{run.label:<12} {point.throughput_per_s:9.1f} {point.p50_ms:8.1f} {point.p99_ms:8.1f}"
            f" {_fmt(run.hit_ratio, '.1%'):>9} {busy[0]:>5} {busy[1]:>5} {others:>5} {point.errors:4d}"
        )
    speedup, target, limit = result.speedup, result.target, result.limit
    verdict = "not measured" if speedup is None or target is None else ("met" if speedup >= target else "MISSED")
    lines += [
        "  srv%/gen%: busy share of the server / load-generator cores; oth%: of all CPUs, by processes not under test",
        "",
        f"throughput with / without the cache: {_fmt(speedup, '.2f')}x (target >= {_fmt(target, '.2f')}x, "
        f"limit {_fmt(limit, '.2f')}x at {settings.repeat_ratio:.0%} repeats)  {verdict}",
        f"hits bitwise identical to a recomputation: {result.identical}/{settings.hot_set} "
        f"({'yes' if result.identical == settings.hot_set else 'NO'}, largest difference "
        f"{result.max_abs_difference:.3g}); {result.cached.hot_hits}/{settings.hot_set} answered from the cache",
    ]
    for cost in result.costs():
        lines.append(f"cost per million texts: {cost.describe()}")
    return "\n".join(lines)


def write(result: CacheBenchResult, report_dir: Path) -> Path:
    path = write_summary(result.to_dict(), report_dir)
    (report_dir / "report.txt").write_text(table(result) + "\n")
    return path
