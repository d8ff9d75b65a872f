"""Run the FastAPI/uvicorn PyTorch service on the server cores and load it like the served stack.

The same load generator (``load.py``) drives it, over HTTP with aiohttp: the
served variant's requests (``workload.py``), ``concurrency`` in flight -- one
text per request and its JSON embedding back, or for a pair task (a reranker)
one query and its documents and their scores back.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tritonstack._process import LOOPBACK
from tritonstack.bench.errors import BenchError
from tritonstack.bench.results import BASELINE, Point, summarize_rounds
from tritonstack.bench.service import LoopbackHTTPService
from tritonstack.bench.workload import BenchWorkload
from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.progress import Progress
from tritonstack.measure.timing import Timing

Log = Callable[[str], None]
REQUIRED = ("fastapi", "uvicorn", "aiohttp", "sentence_transformers")
# read by baseline_app in the child process
MODEL_DIR_ENV = "TRITONSTACK_BENCH_MODEL_DIR"
THREADS_ENV = "TRITONSTACK_BENCH_TORCH_THREADS"
DEVICE_ENV = "TRITONSTACK_BENCH_TORCH_DEVICE"  # a torch device: "cpu" or "cuda"
TASK_ENV = "TRITONSTACK_BENCH_TASK"  # the served model's task (contract.TASKS): what the service computes
MAX_LENGTH_ENV = "TRITONSTACK_BENCH_MAX_LENGTH"  # a pair task's tokens per pair, as the served tokenizer keeps


def missing_packages() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def torch_device(device: str) -> tuple[str, str | None]:
    """The torch device the baseline runs on for a ``device`` (``cpu``/``gpu``) bench, and why it is not the
    GPU when one was asked for (a CPU build of torch: the baseline is then no GPU figure, and says so)."""
    if device != "gpu":
        return "cpu", None
    import torch

    if torch.cuda.is_available():
        return "cuda", None
    return "cpu", f"torch {torch.__version__} has no CUDA here (a CPU build?): the PyTorch baseline runs on the CPU"


class BaselineService(LoopbackHTTPService):
    """``uvicorn`` serving ``baseline_app`` in a child process on loopback; a context manager."""

    name = "the PyTorch baseline"

    def __init__(
        self,
        model_dir: Path,
        threads: int,
        log_path: Path,
        ready_timeout_s: float = 300.0,
        torch_device: str = "cpu",
        *,
        task: contract.Task = contract.FEATURE_EXTRACTION,
        max_length: int = 512,
    ) -> None:
        super().__init__(log_path, ready_timeout_s)
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.torch_device = torch_device
        self.task = task
        self.max_length = max_length

    def start(self) -> BaselineService:
        missing = missing_packages()
        if missing:
            raise BenchError(
                f"the PyTorch baseline needs {', '.join(missing)}", hint="pip install 'tritonstack[bench]'"
            )
        port = self._pick_port()
        threads = str(self.threads)
        # OpenMP sizes each thread's team from these, not from torch.set_num_threads in the main thread:
        # without them every FastAPI worker thread would spin up a team per machine core on our pinned cores.
        env = {
            **os.environ, MODEL_DIR_ENV: str(self.model_dir), THREADS_ENV: threads, DEVICE_ENV: self.torch_device,
            TASK_ENV: self.task.name, MAX_LENGTH_ENV: str(self.max_length),
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
        }  # fmt: skip
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "tritonstack.bench.baseline_app:app_from_env",
            "--host", LOOPBACK, "--port", str(port), "--workers", "1",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self._launch(command, env)
        return self


async def _sweep(
    url: str,
    pgid: int,
    workload: BenchWorkload,
    token_counts: Sequence[int],
    split: cpus.CpuSplit,
    timing: Timing,
    concurrencies: Sequence[int],
    log: Log,
    progress: Progress,
) -> list[Point]:
    import aiohttp

    from tritonstack.measure.load import closed_loop

    points = []
    connector = aiohttp.TCPConnector(limit=0)  # no client-side cap: concurrency alone sets the load
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def send(index: int) -> None:
            texts = workload.requests[index]
            if workload.task.pair:  # the task's request: a query and its documents, or one text
                path, body, answer = "/rerank", {"query": texts[0], "documents": list(texts[1:])}, "scores"
            else:
                path, body, answer = "/embed", {"text": texts[0]}, "embedding"
            async with session.post(f"{url}{path}", json=body) as response:
                if response.status != 200:
                    raise BenchError(f"HTTP {response.status}: {(await response.text())[:200]}")
                if not (await response.json())[answer]:
                    raise BenchError(f"empty {answer}")

        await send(0)
        for concurrency in concurrencies:
            progress.start(f"baseline c={concurrency}", timing.point_s)
            rounds = []
            for _ in range(timing.rounds):
                result, _ = await closed_loop(
                    send, token_counts, concurrency, warmup_s=timing.warmup_s, duration_s=timing.duration_s,
                    server_cpu_s=lambda: cpus.group_cpu_s(pgid),
                )  # fmt: skip
                rounds.append(workload.per_row(result))
            errors = [r.first_error for r in rounds if r.first_error]
            point = summarize_rounds(
                BASELINE, "concurrency", concurrency, rounds,
                client_cores=len(split.client), server_cores=len(split.server),
                details={"first_error": errors[0]} if errors else {},
            )  # fmt: skip
            points.append(point)
            progress.measured(f"{point.throughput_per_s:.1f} texts/s (PyTorch)")
            log(f"    baseline c={concurrency:<3d} {point.throughput_per_s:8.1f} texts/s")
    return points


def run_baseline(
    model_dir: Path,
    workload: BenchWorkload,
    token_counts: Sequence[int],
    split: cpus.CpuSplit,
    timing: Timing,
    concurrencies: Sequence[int],
    *,
    log_path: Path,
    torch_device: str = "cpu",
    max_length: int = 512,
    log: Log = print,
    progress: Progress | None = None,
) -> list[Point]:
    """Start the PyTorch service on the server cores (its model on ``torch_device``), sweep ``concurrencies``
    from the client cores, stop it. ``token_counts``: the tokens of each request of ``workload``;
    ``max_length``: the served model's tokens per row, which a pair task's service keeps too."""
    service = BaselineService(
        model_dir, threads=len(split.server), log_path=log_path, torch_device=torch_device, task=workload.task,
        max_length=max_length,
    )  # fmt: skip
    with cpus.pinned(split.server):
        service.start()
    try:
        if split.mode == "pinned":
            cpus.pin_group(service.pid, split.server)
        with cpus.pinned(split.client):
            return asyncio.run(
                _sweep(
                    service.url, service.pid, workload, token_counts, split, timing, concurrencies, log,
                    progress or Progress.off(),
                )
            )  # fmt: skip
    finally:
        service.stop()
