"""Benchmark the served stack against the in-process limit and a plain PyTorch service.

For one model (default: the bundled all-MiniLM-L6-v2), on the same texts:
1. in-process tokenizer + ONNX Runtime (the served encoder file) over batch sizes;
2. text -> SDK -> gRPC -> embedded Triton over a concurrency sweep (+ half load, open loop);
3. a FastAPI/uvicorn service running the PyTorch model one request per call (needs the bench extra).
A request is the served model's task's SDK call: one text (embed, classify), or for a cross-encoder
(text-ranking) one query and --documents-per-query documents, counted as that many rows (pairs).
Prints a table, GFLOP/s against this CPU's peak and the targets; writes summary.json and a PNG.
On a GPU host (``--device gpu``, the default there) every variant runs its model on the GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tritonstack.commands._args import add_cpu_split, duration_s, positive_int, positive_ints, word_range
from tritonstack.in_triton.contract import SDK_TASKS
from tritonstack.measure.slo import DEFAULT_DOCUMENTS_PER_QUERY, DEFAULT_HOT_SET

if TYPE_CHECKING:
    from tritonstack.bench.runner import BenchSettings
    from tritonstack.bench.workload import BenchWorkload
    from tritonstack.in_triton.contract import Task
    from tritonstack.measure.progress import Progress

DEFAULT_REPOSITORY = Path(".tritonstack/bench/model_repository")
# a gpu export differs (fp16, KIND_GPU): its own default folder, so neither device's run re-exports the other's
DEFAULT_GPU_REPOSITORY = Path(".tritonstack/bench-gpu/model_repository")
DEVICES = ("auto", "cpu", "gpu")


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a price in USD per hour, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a price must be positive, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a ratio must be between 0 and 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer points, shorter rounds: about a minute")
    parser.add_argument("--model-dir", type=Path, help="Hugging Face model (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help=f"model repository to serve (default: {DEFAULT_REPOSITORY}, on gpu {DEFAULT_GPU_REPOSITORY})",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where every variant runs its model; auto: gpu where a GPU is visible (export --target gpu, the "
        "CUDA provider in-process, PyTorch on cuda), else cpu",
    )
    parser.add_argument("--name", default="minilm", help="text-in model name in the repository")
    parser.add_argument(
        "--task",
        choices=SDK_TASKS,
        help="the export's --task where the model folder does not say it (a reranker without sentence-transformers' "
        "CrossEncoder mark, e.g. bge-reranker: text-ranking); default: inferred from the model's config",
    )
    parser.add_argument(
        "--documents-per-query",
        type=positive_int,
        metavar="K",
        help="a text-ranking model's requests: one query and K documents, K rows each (default: the --slo file's "
        f"payload.documents_per_query, else {DEFAULT_DOCUMENTS_PER_QUERY})",
    )
    parser.add_argument("--reexport", action="store_true", help="export again even if the model is there")
    parser.add_argument("--report-dir", type=Path, help="where to write (default: reports/bench-<timestamp>)")
    parser.add_argument("--texts", type=int, help="corpus size (default 1024, quick 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the texts and open-loop arrivals")
    parser.add_argument(
        "--words",
        type=word_range,
        default=(5, 120),
        metavar="MIN-MAX",
        help="words per text of the sweep's corpus, e.g. 2-10 for short search queries (default: 5-120)",
    )
    parser.add_argument("--batch-sizes", type=positive_ints, help="in-process batch sizes (default 1,8,16,32,64)")
    parser.add_argument("--concurrency", type=positive_ints, help="served concurrency sweep (default 1,4,16,32,64)")
    parser.add_argument("--baseline-concurrency", type=positive_ints, help="PyTorch service sweep (default 1,4,16)")
    parser.add_argument("--rounds", type=int, help="measured rounds per point (default 3, quick 2)")
    parser.add_argument("--warmup-s", type=float, help="warm-up per round, seconds (default 2, quick 0.5)")
    parser.add_argument("--duration-s", type=float, help="measured window per round, seconds (default 5, quick 1.5)")
    add_cpu_split(parser, pinned="models on their own core(s)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the FastAPI/PyTorch service")
    parser.add_argument("--no-half-load", action="store_true", help="skip the open-loop point at half load")
    parser.add_argument(
        "--no-progress", action="store_true", help="no status line (it is drawn only on a terminal, outside CI)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server side in an extra round at c=1 and c=16 (py-spy --native on each Python-backend stub, "
        "perf on tritonserver): flame graphs (SVG), collapsed stacks and profile.json in the report folder, and a "
        "table of where the samples went; needs py-spy (the bench extra) and ptrace: root, or CAP_SYS_PTRACE in "
        "a container",
    )
    parser.add_argument(
        "--sdk",
        action="store_true",
        help="instead of the sweep: the SDK's sync and async clients against plain tritonclient on the served model "
        "(latency and client CPU per call; throughput at --concurrency's largest value in flight, default 64)",
    )
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="instead of the sweep: the same texts through `tritonstack gateway` (HTTP /v1/embeddings) and through "
        "the SDK's gRPC path on the same server, side by side over --concurrency (default 1,4,16), with the "
        "gateway's own CPU per request",
    )
    overload = parser.add_argument_group(
        "overload",
        "--overload MULTIPLE measures capacity, then sends MULTIPLE x capacity for --overload-s and prints goodput, "
        "the shed ratio, the admitted calls' p99 and how soon latency is normal again after the burst",
    )
    overload.add_argument("--overload", metavar="MULTIPLE", type=float, help="burst at MULTIPLE x capacity (e.g. 4)")
    overload.add_argument("--overload-s", type=float, default=30.0, help="how long the burst lasts, seconds")
    overload.add_argument("--deadline-s", type=float, default=5.0, help="each call's deadline during the burst")
    overload.add_argument(
        "--slo",
        type=Path,
        default=Path("loadtest/slo.yaml"),
        help="the SLO whose p99 the admitted calls should hold (and whose payload.documents_per_query a "
        "text-ranking model's requests carry, unless --documents-per-query says)",
    )
    parser.add_argument(
        "--price-per-hour",
        type=_price,
        metavar="USD",
        help="what the machine under test costs per hour: prints cost per million texts at each variant's best point",
    )
    cache = parser.add_argument_group(
        "response cache",
        "--repeat-ratio R serves the model without and then with Triton's response cache, instead of the sweep, "
        "on the same requests: a share R repeats one of --hot-set requests, the rest were never sent before. "
        "Prints the throughput ratio (target at R=0.5: >= 1.7x; 2x is the limit) and whether each hit equals a "
        "recomputation bit for bit",
    )
    cache.add_argument("--repeat-ratio", type=_ratio, metavar="R", help="share of repeated requests, 0..1")
    cache.add_argument(
        "--hot-set", type=int, default=DEFAULT_HOT_SET, metavar="N", help="distinct requests the repeats come from"
    )
    soak = parser.add_argument_group(
        "soak",
        "--soak DURATION runs steady load instead of the sweep and prints the RSS and open file descriptors of "
        "Triton and each model process, and errors, over time, with the growth rate after the warm-up "
        "(target: under 2 % per 10 minutes, 0 errors; exit 1 when missed)",
    )
    soak.add_argument("--soak", metavar="DURATION", type=duration_s, help="soak for DURATION (600, 90s, 12m, 1h30m)")
    soak.add_argument("--soak-concurrency", type=int, default=4, help="callers in flight during the soak")
    soak.add_argument("--sample-every-s", type=float, default=10.0, help="seconds between samples of the soak")
    soak.add_argument(
        "--soak-warmup", metavar="DURATION", type=duration_s, help="not judged for growth (default: 20%% of the soak)"
    )


def resolve_device(requested: str) -> str:
    """``cpu`` or ``gpu``: ``auto`` is gpu exactly where a GPU is visible."""
    if requested != "auto":
        return requested
    from tritonstack._gpu import visible_gpus

    return "gpu" if visible_gpus() else "cpu"


def repository_for(args: argparse.Namespace, device: str) -> Path:
    if args.repository is not None:
        return Path(args.repository)
    return DEFAULT_GPU_REPOSITORY if device == "gpu" else DEFAULT_REPOSITORY


def settings_from(args: argparse.Namespace, model_dir: Path, report_dir: Path, device: str = "cpu") -> BenchSettings:
    from dataclasses import replace

    from tritonstack.bench.runner import QUICK, BenchSettings
    from tritonstack.measure.timing import Timing

    settings = BenchSettings(
        model_dir=model_dir, repository=repository_for(args, device), name=args.name, report_dir=report_dir
    )
    if args.quick:
        settings = replace(settings, quick=True, **QUICK)  # type: ignore[arg-type]
    timing = settings.timing
    timing = Timing(
        rounds=args.rounds or timing.rounds,
        warmup_s=timing.warmup_s if args.warmup_s is None else args.warmup_s,
        duration_s=args.duration_s or timing.duration_s,
    )
    return replace(
        settings,
        texts=args.texts or settings.texts,
        seed=args.seed,
        min_words=args.words[0],
        max_words=args.words[1],
        batch_sizes=args.batch_sizes or settings.batch_sizes,
        concurrencies=args.concurrency or settings.concurrencies,
        baseline_concurrencies=args.baseline_concurrency or settings.baseline_concurrencies,
        timing=timing,
        cpu_split=args.cpu_split,
        device=device,
        baseline=not args.no_baseline,
        half_load=not args.no_half_load,
        price_per_hour_usd=args.price_per_hour,
        profile=args.profile,
    )


def _ensure_model(
    args: argparse.Namespace, model_dir: Path, repository: Path, *, target: str = "cpu", cpu_split: str | None = None
) -> str:
    """Make ``repository`` hold ``args.name`` (reused when valid unless ``--reexport``, else exported for
    ``target``, as ``--task`` where given, a CPU export with one instance per core the bench's server gets
    under ``cpu_split``, by default ``--cpu-split``); say how."""
    from tritonstack.export.ensure import ensure_exported
    from tritonstack.measure import cpus
    from tritonstack.repository.writer import cpu_instances_for

    name = args.name
    print(f"==> the served model: {name} in {repository}")
    server_cores = len(cpus.plan(cpu_split or args.cpu_split).server)
    exported = ensure_exported(
        model_dir, repository, name, reexport=args.reexport, target=target, task=args.task,
        cpu_instances=cpu_instances_for(server_cores) if target == "cpu" else None,
        log=lambda line: print(f"    {line}"),
    )  # fmt: skip
    return f"reused {repository / name}" if exported is None else "exported with tritonstack export"


def _model_task(model_dir: Path) -> str | None:
    """The task export infers from ``model_dir``'s config; ``None`` where it cannot tell (a hub id, no config,
    an architecture it does not know)."""
    import json

    from tritonstack.export.errors import ExportError

    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    from tritonstack.export.registry import infer_task

    try:
        return infer_task(Path(model_dir), json.loads(config.read_text()))
    except (ExportError, ValueError):
        return None


def _served_task(args: argparse.Namespace, model_dir: Path, repository: Path) -> Task:
    """The task the repository's ``--name`` serves, checked against the model folder's: the baseline runs that
    folder, and a reused model of another task would be measured in its place."""
    from tritonstack.bench.errors import BenchError
    from tritonstack.bench.workload import served_task

    served = served_task(repository, args.name)
    expected = args.task or _model_task(model_dir)
    if expected is not None and expected != served.name:
        raise BenchError(
            f"{repository / args.name} serves a {served.name} model, but {model_dir} is {expected}",
            hint="pass --reexport to export the model there again, or another --name or --repository",
        )
    return served


def _documents_per_query(args: argparse.Namespace, task: Task) -> int:
    """A pair task's documents per request: --documents-per-query, else the --slo file's, else the default."""
    if not task.pair or args.documents_per_query:
        return int(args.documents_per_query or DEFAULT_DOCUMENTS_PER_QUERY)
    if args.slo.is_file():
        from tritonstack.measure.slo import load_slo

        return load_slo(args.slo).payload.documents_per_query
    return DEFAULT_DOCUMENTS_PER_QUERY


def _workload(args: argparse.Namespace, model_dir: Path, repository: Path, texts: list[str]) -> BenchWorkload:
    """The requests a mode sends, by the served model's task (``bench/workload.py``)."""
    from tritonstack.bench.workload import BenchWorkload

    task = _served_task(args, model_dir, repository)
    workload = BenchWorkload.for_task(task, texts, documents_per_query=_documents_per_query(args, task), seed=args.seed)
    if task.pair:
        print(f"==> {task.name}: each request is one query and {workload.rows_per_request} documents")
    return workload


def _progress(args: argparse.Namespace) -> Progress:
    """The status line of a run (``measure.progress``): on a terminal unless --no-progress. Open it after the
    export (which draws its own bar) and leave it before the report prints."""
    from tritonstack.measure.progress import Progress

    return Progress(enabled=False if args.no_progress else None)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tritonstack.bench import report
    from tritonstack.bench.runner import run_bench
    from tritonstack.bench.summary import summarize_run
    from tritonstack.export.bundled import bundled_minilm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = args.model_dir or bundled_minilm()
    if args.soak is not None:
        return _soak(args, model_dir)
    if args.overload is not None:
        return _overload(args, model_dir)
    if args.repeat_ratio is not None:
        return _cache(args, model_dir)
    if args.sdk:
        return _sdk(args, model_dir)
    if args.gateway:
        return _gateway(args, model_dir)
    report_dir = args.report_dir or Path("reports") / time.strftime("bench-%Y%m%d-%H%M%S")
    device = resolve_device(args.device)
    settings = settings_from(args, model_dir, report_dir, device)
    note = _ensure_model(args, model_dir, settings.repository, target=device)
    task = _served_task(args, model_dir, settings.repository)
    settings = replace(settings, documents_per_query=_documents_per_query(args, task))
    # after the export (its own progress bar), closed before the report prints
    with _progress(args) as progress:
        result = run_bench(settings, log=progress.write, progress=progress)
    result = replace(result, repository_note=note)
    summary = summarize_run(result)
    paths = report.write(result, summary, report_dir)
    print()
    print(report.table(result, summary))
    print(f"\nwrote {paths['summary']}, {paths['plot']}, {paths['table']}")
    unmeasured = [variant for variant, point in summary["best"].items() if point is None]
    if not settings.baseline and "baseline" in unmeasured:
        unmeasured.remove("baseline")
    if unmeasured:
        errors = {p["variant"]: p["details"].get("first_error") for p in summary["points"] if p["errors"]}
        details = "; ".join(f"{v}: {errors.get(v) or 'no call completed'}" for v in unmeasured)
        print(f"error: no successful measurement of {details}", file=sys.stderr)
        return 1
    return 0


def _soak(args: argparse.Namespace, model_dir: Path) -> int:
    from tritonstack.bench import soak
    from tritonstack.bench.texts import make_texts

    report_dir = args.report_dir or Path("reports") / time.strftime("soak-%Y%m%d-%H%M%S")
    repository = repository_for(args, "cpu")  # the soak judges memory and descriptors: the CPU stack's
    # sized as the sweep's default sizes it (one instance per core of a pinned server): the two share the
    # repository, and the soak's own server is not pinned
    _ensure_model(args, model_dir, repository, cpu_split="pinned")
    workload = _workload(args, model_dir, repository, make_texts(args.texts or 256, seed=args.seed))
    warmup_s = args.soak_warmup if args.soak_warmup is not None else 0.2 * args.soak
    print(
        f"==> soak: {args.soak:g} s at {args.soak_concurrency} callers, a sample every {args.sample_every_s:g} s "
        f"(growth judged after {warmup_s:g} s)"
    )
    with _progress(args) as progress:
        result = soak.run_soak(
            repository, args.name, workload, duration_s=args.soak, warmup_s=warmup_s,
            concurrency=args.soak_concurrency, sample_every_s=args.sample_every_s, log_path=report_dir / "triton.log",
            log=progress.write, progress=progress,
        )  # fmt: skip
    paths = soak.write(result, report_dir)
    print()
    print(soak.table(result))
    print(f"\nwrote {paths['summary']}, {paths['samples']}")
    held = result.ok > 0 and result.errors == 0 and all(row.holds for row in result.growth())
    return 0 if held else 1


def _overload(args: argparse.Namespace, model_dir: Path) -> int:
    from tritonstack.bench import overload
    from tritonstack.bench.texts import make_texts
    from tritonstack.measure.slo import load_slo

    slo_p99_ms = 1000.0
    if args.slo.is_file():
        slo_p99_ms = load_slo(args.slo).objectives.latency_ms.get(99.0, slo_p99_ms)
    report_dir = args.report_dir or Path("reports") / time.strftime("overload-%Y%m%d-%H%M%S")
    repository = repository_for(args, "cpu")  # the burst runs the CPU stack, as the soak does
    _ensure_model(args, model_dir, repository)
    workload = _workload(args, model_dir, repository, make_texts(args.texts or 256, seed=args.seed))
    with _progress(args) as progress:
        result = overload.run_overload(
            repository, args.name, workload,
            multiple=args.overload, burst_s=args.overload_s, deadline_s=args.deadline_s, slo_p99_ms=slo_p99_ms,
            cpu_split=args.cpu_split, log_path=report_dir / "triton.log", log=progress.write, progress=progress,
        )  # fmt: skip
    print()
    print(overload.table(result))
    return 0 if not result.late and result.outcomes["ok"] > 0 else 1


def _cache(args: argparse.Namespace, model_dir: Path) -> int:
    from tritonstack.bench import cache
    from tritonstack.bench.texts import make_texts
    from tritonstack.bench.workload import sdk_call

    report_dir = args.report_dir or Path("reports") / time.strftime("bench-cache-%Y%m%d-%H%M%S")
    settings = settings_from(args, model_dir, report_dir)
    _ensure_model(args, model_dir, settings.repository)
    task = _served_task(args, model_dir, settings.repository)
    sdk_call(task)  # refuses a task the SDK has no call for, before Triton starts
    texts = make_texts(settings.texts, seed=settings.seed, min_words=settings.min_words, max_words=settings.max_words)
    cache_settings = cache.CacheBenchSettings(
        repository=settings.repository, name=settings.name, report_dir=report_dir, texts=texts,
        repeat_ratio=args.repeat_ratio, hot_set=args.hot_set, concurrency=max(settings.concurrencies),
        seed=settings.seed, timing=settings.timing, cpu_split=settings.cpu_split,
        price_per_hour_usd=settings.price_per_hour_usd, task=task,
        documents_per_query=_documents_per_query(args, task),
    )  # fmt: skip
    with _progress(args) as progress:
        result = cache.run_cache_bench(cache_settings, log=progress.write, progress=progress)
    path = cache.write(result, report_dir)
    print()
    print(cache.table(result))
    print(f"\nwrote {path}")
    measured = result.uncached.point.samples and result.cached.point.samples
    return 0 if measured else 1


def _sdk(args: argparse.Namespace, model_dir: Path) -> int:
    from dataclasses import replace

    from tritonstack.bench import sdk_overhead
    from tritonstack.bench.errors import BenchError

    report_dir = args.report_dir or Path("reports") / time.strftime("bench-sdk-%Y%m%d-%H%M%S")
    device = resolve_device(args.device)
    repository = repository_for(args, device)
    _ensure_model(args, model_dir, repository, target=device)
    task = _served_task(args, model_dir, repository)
    if not task.embedding:
        raise BenchError(
            f"bench --sdk measures what the SDK adds to plain tritonclient on an embedding model's call "
            f"(Client.embed); {repository / args.name} serves a {task.name} model",
            hint="the SDK's cost per call does not depend on the model: run bench --sdk without --model-dir "
            "(the bundled MiniLM) or on an embedding model",
        )
    settings = sdk_overhead.QUICK if args.quick else sdk_overhead.SdkSettings()
    if args.concurrency:
        settings = replace(settings, in_flight=max(args.concurrency))
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    with _progress(args) as progress:
        result = sdk_overhead.run_sdk_overhead(
            repository, args.name, settings, cpu_split=args.cpu_split, log_path=report_dir / "triton.log",
            log=progress.write, progress=progress,
        )  # fmt: skip
    path = sdk_overhead.write(result, report_dir)
    print()
    print(sdk_overhead.table(result))
    print(f"\nwrote {path}")
    return 0


def _gateway(args: argparse.Namespace, model_dir: Path) -> int:
    from tritonstack.bench import gateway
    from tritonstack.bench.texts import make_texts

    report_dir = args.report_dir or Path("reports") / time.strftime("bench-gateway-%Y%m%d-%H%M%S")
    repository = repository_for(args, "cpu")
    _ensure_model(args, model_dir, repository)
    with _progress(args) as progress:
        result = gateway.run_gateway_bench(
            repository, args.name, make_texts(args.texts or 256, seed=args.seed),
            concurrencies=args.concurrency or (1, 4, 16), rounds=args.rounds or (2 if args.quick else 3),
            duration_s=args.duration_s or (2.0 if args.quick else 5.0), report_dir=report_dir,
            cpu_split=args.cpu_split, log=progress.write, progress=progress,
        )  # fmt: skip
    path = gateway.write(result, report_dir)
    print()
    print(gateway.table(result))
    print(f"\nwrote {path}")
    return 0 if result.best(gateway.GATEWAY) and result.best(gateway.SDK) else 1
