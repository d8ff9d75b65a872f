"""One benchmark run: the in-process limit, the served stack, the PyTorch service, on the same texts.

The variants run one after the other (never two at once), each on the same
server cores; see ``cpus`` for the split. With ``device="gpu"`` each runs its
model on the GPU: the in-process limit on ONNX Runtime's CUDA provider, the
served encoder as the ``KIND_GPU`` instances of a gpu export, the PyTorch
baseline with ``device="cuda"`` (where torch has CUDA; else it says so).
Requests are the served model's task's (``workload.py``): one text, or for a
reranker one query and ``documents_per_query`` documents, counted as that many rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack.bench.hardware import CpuPeak, EncoderCost, cpu_peak, encoder_cost
from tritonstack.bench.inprocess import InProcessModel, measure_batch
from tritonstack.bench.queueing import ideal_p99_factor
from tritonstack.bench.results import INPROCESS, Point, summarize_rounds
from tritonstack.bench.texts import make_texts
from tritonstack.bench.workload import DEFAULT_DOCUMENTS_PER_QUERY, BenchWorkload, Row, served_task
from tritonstack.measure import cpus
from tritonstack.measure.progress import Progress
from tritonstack.measure.served_files import ServedFiles, locate
from tritonstack.measure.timing import Timing

Log = Callable[[str], None]
OTHERS_BUSY_WARNING = 0.10  # share of all CPUs


@dataclass(frozen=True)
class BenchSettings:
    model_dir: Path  # the Hugging Face model the repository was exported from (the baseline runs it)
    repository: Path
    name: str
    report_dir: Path
    texts: int = 1024
    seed: int = 0
    min_words: int = 5
    max_words: int = 120
    batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)
    concurrencies: tuple[int, ...] = (1, 4, 16, 32, 64)
    baseline_concurrencies: tuple[int, ...] = (1, 4, 16)
    timing: Timing = field(default_factory=Timing)
    cpu_split: str = "pinned"
    device: str = "cpu"  # or "gpu": where every variant runs its model
    baseline: bool = True
    half_load: bool = True
    quick: bool = False
    price_per_hour_usd: float | None = None  # what the server cores cost: adds cost per million texts
    documents_per_query: int = DEFAULT_DOCUMENTS_PER_QUERY  # a pair task's (reranker's) documents per request
    profile: bool = False  # sample the server side at c=1 and c=16 (bench/profile.py)


QUICK = {
    "texts": 256,
    "batch_sizes": (1, 8, 32),
    "concurrencies": (1, 4, 16),
    "baseline_concurrencies": (1, 8),
    "timing": Timing(rounds=2, warmup_s=0.5, duration_s=1.5),
}


@dataclass
class BenchResult:
    settings: BenchSettings
    split: cpus.CpuSplit
    files: ServedFiles
    peak: CpuPeak  # of the server cores: what every variant's model ran on
    cost: EncoderCost
    corpus: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    repository_note: str = ""
    baseline_device: str = "cpu"  # the torch device the baseline ran on
    started: str = ""
    elapsed_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)

    def busy_warning(self, threshold: float = OTHERS_BUSY_WARNING) -> str | None:
        """A warning when processes not under test used a noticeable share of the machine while measuring."""
        busy = [p for p in self.points if p.others_cpu is not None and p.others_cpu > threshold]
        if not busy:
            return None
        worst = max(busy, key=lambda p: p.others_cpu or 0.0)
        return (
            f"other processes used up to {100 * (worst.others_cpu or 0.0):.0f}% of the machine's CPUs during "
            f"{len(busy)} of {len(self.points)} points (worst: {worst.variant} {worst.label}, column oth%): "
            "they competed for the cores, so those figures understate this machine"
        )


def _inprocess(
    files: ServedFiles,
    workload: BenchWorkload,
    split: cpus.CpuSplit,
    settings: BenchSettings,
    log: Log,
    progress: Progress,
) -> tuple[list[Point], list[int]]:
    """The in-process points and the tokens of each of ``workload.rows`` (texts, or a reranker's pairs)."""
    points = []
    texts: list[Row] = workload.rows
    # a batch of one request's rows: the in-process time of what one served request asks for
    per_request = workload.rows_per_request
    batch_sizes = inprocess_batch_sizes(settings, per_request)
    with cpus.pinned(split.server):
        model = InProcessModel(files, threads=len(split.server), device=settings.device, pair=workload.task.pair)
        cpus.pin_all_threads(split.server)  # ONNX Runtime may have pinned its new threads elsewhere
        token_counts = model.token_counts(texts)
        # Batches of texts in arrival order pay for padding to the batch's longest text; batches of
        # length-sorted texts barely pad: the limit is the better of the two (the served encoder
        # regroups its rows by length, so arrival-order batches alone would understate the limit).
        order = sorted(range(len(texts)), key=lambda i: token_counts[i])
        arrangements = (
            ("batch", texts, token_counts),
            ("sorted", [texts[i] for i in order], [token_counts[i] for i in order]),
        )
        for setting, pool, counts in arrangements:
            for batch_size in batch_sizes:
                if setting == "sorted" and batch_size == 1:
                    continue  # the same as b=1
                sorted_note = "sorted " if setting == "sorted" else ""
                progress.start(f"in-process {sorted_note}b={batch_size}", settings.timing.point_s)
                rounds, details = [], []
                for _ in range(settings.timing.rounds):
                    result, detail = measure_batch(
                        model, pool, counts, batch_size,
                        warmup_s=settings.timing.warmup_s, duration_s=settings.timing.duration_s,
                    )  # fmt: skip
                    rounds.append(result)
                    details.append(detail)
                merged = {k: sorted(d[k] for d in details)[len(details) // 2] for k in details[0]}
                point = summarize_rounds(
                    INPROCESS, setting, batch_size, rounds, client_cores=len(split.server),
                    server_cores=len(split.server), details=merged,
                )  # fmt: skip
                if setting == "batch" and batch_size == per_request:  # one request per call: the service times
                    service_us = [x for r in rounds for x in r.latencies_us]
                    point.details["ideal_half_load_p99_factor"] = ideal_p99_factor(service_us)
                points.append(point)
                progress.measured(f"{point.throughput_per_s:.1f} texts/s")
                log(f"    in-proc  {point.label:<6s} {point.throughput_per_s:8.1f} texts/s")
    return points, token_counts


def inprocess_batch_sizes(settings: BenchSettings, rows_per_request: int) -> list[int]:
    """The in-process batch sizes: the settings' and one request's rows (the in-process time of one request)."""
    return sorted({*settings.batch_sizes, rows_per_request})


def planned_s(settings: BenchSettings, rows_per_request: int) -> float:
    """The seconds of measurement a run plans (``Timing.point_s`` per point), for the progress line's estimate;
    starting Triton and the baseline service come on top (the estimate's pace takes them in)."""
    sizes = inprocess_batch_sizes(settings, rows_per_request)
    inprocess = len(sizes) + sum(1 for b in sizes if b != 1)  # arrival order, then length-sorted but for b=1
    served = len(settings.concurrencies) + int(settings.half_load)
    floor = len({min(settings.concurrencies), max(settings.concurrencies)})
    baseline = len(settings.baseline_concurrencies) if settings.baseline else 0
    return (inprocess + served + floor + baseline) * settings.timing.point_s


def run_bench(settings: BenchSettings, *, log: Log = print, progress: Progress | None = None) -> BenchResult:
    """Measure every variant; nothing is printed but progress (``report`` renders the result); ``progress``
    shows the point being measured (``measure.progress``), ``log`` should step aside for it (``Progress.write``)."""
    progress = progress or Progress.off()
    from tritonstack._gpu import visible_gpus
    from tritonstack.bench.baseline import run_baseline, torch_device
    from tritonstack.bench.served import run_served

    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    gpus = visible_gpus() if settings.device == "gpu" else ()
    machine = {
        "logical_cpus": os.cpu_count(),
        "load_average_1m_before": os.getloadavg()[0],
        "gpus": [gpu.to_dict() for gpu in gpus],
    }
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    texts = make_texts(settings.texts, seed=settings.seed, min_words=settings.min_words, max_words=settings.max_words)
    files = locate(settings.repository, settings.name)
    workload = BenchWorkload.for_task(
        served_task(settings.repository, settings.name), texts,
        documents_per_query=settings.documents_per_query, seed=settings.seed,
    )  # fmt: skip
    _check_device(settings, files, bool(gpus))
    progress.plan(planned_s(settings, workload.rows_per_request), pace=1.0)
    split = cpus.plan(settings.cpu_split)
    log(f"==> cores: {split.describe()}; load average {machine['load_average_1m_before']:.1f}")
    for gpu in gpus:
        log(f"==> {gpu.describe()}")
    provider = "CUDA provider" if settings.device == "gpu" else "CPU"
    log(
        f"==> in-process limit: tokenizer + ONNX Runtime ({files.precision}, {provider}),"
        f" batch sizes {settings.batch_sizes}"
    )
    if workload.task.pair:
        log(
            f"==> {workload.task.name}: a request is one query and {workload.rows_per_request} documents;"
            " texts/s counts (query, document) pairs"
        )
    profiler = None
    if settings.profile:
        from tritonstack.bench.profile import Profiler

        wanted = tuple(c for c in (1, 16) if c in settings.concurrencies)
        profiler = Profiler(settings.report_dir, wanted or (min(settings.concurrencies), max(settings.concurrencies)))
    points, token_counts = _inprocess(files, workload, split, settings, log, progress)
    request_tokens = workload.request_token_counts(token_counts)
    log(f"==> served: SDK -> gRPC -> Triton, concurrency {settings.concurrencies} ({_since(started)})")
    progress.start("starting Triton")
    points += run_served(
        settings.repository, files, workload, request_tokens, split, settings.timing, settings.concurrencies,
        half_load=settings.half_load, log_path=settings.report_dir / "triton.log", log=log, progress=progress,
        profiler=profiler,
    )  # fmt: skip
    if profiler is not None:
        log(f"==> where the server's samples went (shares of busy samples), wrote {profiler.write()}")
        log(profiler.table())
    baseline_device, why_not_gpu = torch_device(settings.device) if settings.baseline else ("cpu", None)
    if settings.baseline:
        log(
            f"==> baseline: FastAPI + PyTorch ({baseline_device}), one request per call, concurrency"
            f" {settings.baseline_concurrencies} ({_since(started)})"
        )
        if why_not_gpu:
            log(f"    note: {why_not_gpu}")
        progress.start("starting the PyTorch service")
        points += run_baseline(
            settings.model_dir, workload, request_tokens, split, settings.timing, settings.baseline_concurrencies,
            log_path=settings.report_dir / "baseline.log", torch_device=baseline_device,
            max_length=files.max_sequence_length, log=log, progress=progress,
        )  # fmt: skip
    workload.annotate(points)
    machine["load_average_1m_after"] = os.getloadavg()[0]
    log(f"==> done ({_since(started)})")
    words = [len(t.split()) for t in texts]
    corpus = {
        "texts": len(texts),
        "seed": settings.seed,
        "words_min": min(words),
        "words_max": max(words),
        "tokens_mean": sum(token_counts) / len(token_counts),  # per row: a text, or a (query, document) pair
        "tokens_max": max(token_counts),
        **workload.describe(),
    }
    return BenchResult(
        settings=settings,
        split=split,
        files=files,
        peak=cpu_peak(len(split.server)),
        cost=encoder_cost(settings.model_dir),
        corpus=corpus,
        points=points,
        baseline_device=baseline_device,
        started=started_at,
        elapsed_s=time.perf_counter() - started,
        machine=machine,
    )


def _check_device(settings: BenchSettings, files: ServedFiles, gpu_visible: bool) -> None:
    """The served encoder must run where the other variants do: a GPU bench needs a GPU and a gpu export."""
    from tritonstack.bench.errors import BenchError

    kind = files.knobs["encoder_kind"]
    if settings.device == "gpu" and not gpu_visible:
        raise BenchError("--device gpu, but no GPU is visible here", hint="pass --device cpu (or auto)")
    wanted = "KIND_GPU" if settings.device == "gpu" else "KIND_CPU"
    if kind != wanted:
        raise BenchError(
            f"{settings.repository / settings.name} serves its encoder as {kind}, not {wanted} as a "
            f"{settings.device} bench needs",
            hint=f"pass --reexport (it exports with --target {settings.device}), or another --repository",
        )


def _since(started: float) -> str:
    return f"at {time.perf_counter() - started:.0f} s"
