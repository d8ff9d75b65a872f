"""One Triton for the whole search; each config is switched in by reloading the steps it changes.

Triton runs in explicit model-control mode, so a step is reloaded with its new
config passed in the load request: the files in the repository stay as they
are (``--dry-run`` writes nothing, and nothing is half-tuned if the search is
interrupted), only the changed step restarts (new instances start, the old
ones retire), and Triton reloads the ensemble that uses it. docs/tune.md gives
the measurement that a reloaded config serves like a freshly started one.

The cores are split as in ``bench`` (``measure.cpus``): Triton and its model
processes on the server cores, this process -- the load generator -- on the
others. A reload starts new stub processes, whose ONNX Runtime threads pin
themselves where they like, so every thread of Triton's process group is
moved back after each one.

Each config is measured by a closed-loop sweep, then one open-loop window at
half the sweep's best throughput (``score.half_load_rate``): Poisson arrivals,
seeded alike for every config, latency from each scheduled arrival.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.load import closed_loop, open_loop
from tritonstack.measure.payload import query_and_documents, request_call
from tritonstack.measure.samples import Round, percentile_ms
from tritonstack.measure.slo import Objectives
from tritonstack.measure.timing import Timing
from tritonstack.measure.triton_stats import TritonStatsProbe, model_view
from tritonstack.repository.config import copy_config
from tritonstack.server.embedded import RELOAD_PARAMETER
from tritonstack.tune.errors import TuneError
from tritonstack.tune.knobs import StepConfigs
from tritonstack.tune.score import DISPLAYED_PERCENTILES, SweepPoint, half_load_rate
from tritonstack.tune.search import next_concurrency

HALF_LOAD_SEED = 0  # the same arrival times (scaled by the rate) for every config
FIRST_REQUEST_ATTEMPTS = 3  # before a config's sweep: a shed first request is tried again, then measured anyway


@dataclass(frozen=True)
class Sweep:
    """One config's measurement."""

    points: tuple[SweepPoint, ...]  # closed loop, in measurement order
    half_load: SweepPoint | None  # open loop at ``half_load_rate``; None when the sweep served nothing


@dataclass(frozen=True)
class Workload:
    """What the load generator sends: the texts of each request, cycled in order."""

    requests: tuple[tuple[str, ...], ...]
    # real tokens of each request, special tokens included; a pair task's: those of its (query, document) pairs
    token_counts: tuple[int, ...]
    task: str  # one of contract.SDK_TASKS: which SDK call sends it

    @property
    def texts_per_request(self) -> int:
        return len(self.requests[0])


def _config_json(config: Any) -> str:
    """A ``ModelConfig`` protobuf as the JSON Triton's load API takes in place of ``config.pbtxt``."""
    return str(json_format.MessageToJson(config))


class TuneServer:
    """Triton over ``repository`` on the server cores of ``split``; a context manager.

    ``steps`` are the configs in the repository's files: what Triton loads at start.
    """

    def __init__(self, repository: Path, name: str, steps: StepConfigs, split: cpus.CpuSplit, log_path: Path) -> None:
        from tritonstack.server import EmbeddedServer

        # No stub supervisor: tune reloads the models itself, and a reload of the supervisor's in the middle of
        # a measurement would disturb it (a stub that dies shows up as the errors of that measurement instead).
        self.server = EmbeddedServer(repository, log_path=log_path, restart_dead_stubs=False)
        self.name = name
        self.split = split
        self.loaded = steps
        self.reloads = 0  # configs loaded so far, each marked with its count (``apply``)

    def __enter__(self) -> TuneServer:
        from tritonstack.server import ServerStartError

        try:
            with cpus.pinned(self.split.server):  # Triton and its model processes inherit the server cores
                self.server.start()
        except ServerStartError as error:
            raise TuneError(f"Triton did not start: {error.message}", hint=error.hint) from error
        self._pin()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def _pin(self) -> None:
        if self.split.mode == "pinned":
            cpus.pin_group(self.server.pid, self.split.server)

    def apply(self, steps: StepConfigs) -> list[str]:
        """Serve ``steps``: reload each step whose config differs from what runs now; the names reloaded."""
        from tritonstack.server import ServerError

        changed = [new for new, old in zip(steps.all(), self.loaded.all(), strict=True) if new != old]
        for config in changed:
            # Marked with a new count, so that Triton loads the step whole: an instance it kept in place (it
            # compares configs without instance_group) would keep the thread count it started with.
            self.reloads += 1
            marked = copy_config(config)
            marked.parameters[RELOAD_PARAMETER].string_value = str(self.reloads)
            try:
                self.server.load_model(config.name, _config_json(marked))
            except ServerError as error:
                raise TuneError(error.message, hint=f"Triton's log: {self.server.log_path}") from error
        self.loaded = steps
        if changed:
            self._pin()
        return [c.name for c in changed]

    def sweep(
        self,
        workload: Workload,
        objectives: Objectives,
        levels: Sequence[int],
        start_level: int,
        timing: Timing,
        timeout_s: float,
    ) -> Sweep:
        """Closed-loop points from ``start_level`` on, as ``search.next_concurrency`` directs, then the
        half-load point; the load generator runs on the client cores."""
        from tritonstack.client import AsyncClient, RetryPolicy

        url, name = self.server.grpc_url, self.name
        steps = {
            "tokenizer": contract.tokenizer_name(name),
            "encoder": contract.encoder_name(name),
            "fused": contract.fused_name(name),
        }
        percentiles = sorted({*DISPLAYED_PERCENTILES, *objectives.latency_ms})

        async def measure() -> Sweep:
            probe = TritonStatsProbe(url, list(steps.values()))
            points: list[SweepPoint] = []
            # one attempt per call: a refused request is an error the SLO counts, not something to retry away
            async with AsyncClient(url, model=name, timeouts=timeout_s, retry=RetryPolicy(max_attempts=1)) as client:
                method = contract.task(workload.task).sdk_method  # the SDK call of the task: embed, classify
                assert method is not None, workload.task  # the SLO's task, one of contract.SDK_TASKS
                call = request_call(getattr(client, method), workload.task)  # rerank: (query, documents)

                async def send(index: int) -> None:
                    await call(workload.requests[index])

                await _first_request(send, name)
                concurrency: int | None = start_level
                half_load: SweepPoint | None = None
                try:
                    while concurrency is not None:
                        measured, extra = await closed_loop(
                            send, workload.token_counts, concurrency, warmup_s=timing.warmup_s,
                            duration_s=timing.duration_s, probe=probe,
                        )  # fmt: skip
                        points.append(_point(measured, extra, steps, percentiles, concurrency=concurrency))
                        concurrency = next_concurrency(levels, points, objectives)
                    rate = half_load_rate(points, objectives)
                    if rate is not None:
                        measured, extra = await open_loop(
                            send, workload.token_counts, rate, warmup_s=timing.warmup_s,
                            duration_s=timing.duration_s, seed=HALF_LOAD_SEED, probe=probe,
                        )  # fmt: skip
                        half_load = _point(measured, extra, steps, percentiles, concurrency=0, rate_per_s=rate)
                finally:
                    await probe.close()
            return Sweep(tuple(points), half_load)

        with cpus.pinned(self.split.client):
            return asyncio.run(measure())


async def _first_request(send: Callable[[int], Awaitable[None]], name: str) -> None:
    """Connect and fetch the model's metadata outside the measurement.

    A config whose first request is shed (queue timeout, full queue) still serves: it stalls, and its sweep
    counts the errors against the SLO. A shed request is tried again at once, up to
    ``FIRST_REQUEST_ATTEMPTS`` times; one that ran out of time is not (each try would cost the SLO file's
    ``load.timeout_s``) and the sweep measures the config as it is. Any other failure means the config does
    not serve.
    """
    from tritonstack.client import DeadlineExceededError, OverloadedError

    for _ in range(FIRST_REQUEST_ATTEMPTS):
        try:
            await send(0)
            return
        except OverloadedError:
            continue
        except DeadlineExceededError:
            return
        except Exception as error:  # the SDK's other errors, gRPC's
            raise TuneError(f"the served model {name!r} failed its first request: {error}") from error


def _point(
    measured: Round,
    extra: dict[str, Any] | None,
    steps: dict[str, str],
    percentiles: Sequence[float],
    *,
    concurrency: int,
    rate_per_s: float | None = None,
) -> SweepPoint:
    """A measured window as a ``SweepPoint``, with the batch each step (role -> model) achieved in it."""
    window = extra["window"] if extra else None
    batch: dict[str, float | None] = {
        role: model_view(window.models[model], window.elapsed_s)["batch_size"] if window else None
        for role, model in steps.items()
    }
    return SweepPoint(
        concurrency=concurrency,
        throughput_per_s=measured.throughput_per_s,
        # no successful request: NaN, which ``score.misses`` counts as a miss of every latency objective
        latency_ms={q: _nan_if_none(percentile_ms(measured.latencies_us, q)) for q in percentiles},
        completed=measured.completed,
        errors=measured.errors,
        batch=batch,
        rate_per_s=rate_per_s,
    )


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def workload_from(
    texts: Sequence[str],
    texts_per_request: int,
    task: str,
    tokenizer_dir: Path,
    max_length: int,
    *,
    requests: int = 256,
    seed: int = 0,
) -> Workload:
    """``requests`` requests of ``texts_per_request`` texts drawn uniformly from ``texts`` (seeded, as the
    load test draws them). A pair task's request is counted as the server tokenizes it: its query beside each
    of its documents (``payload.query_and_documents``), the document truncated."""
    from tritonstack.in_triton.models.tokenization import TextTokenizer

    rng = random.Random(seed)
    drawn = tuple(tuple(rng.choices(texts, k=texts_per_request)) for _ in range(requests))
    pair = contract.task(task).pair
    tokenizer = TextTokenizer(tokenizer_dir, max_length, pair=pair)

    def rows(request: tuple[str, ...]) -> list[str] | list[tuple[str, str]]:
        if not pair:
            return list(request)
        query, documents = query_and_documents(request)
        return [(query, document) for document in documents]

    counts = tuple(sum(len(e.ids) for e in tokenizer.encode(rows(request))) for request in drawn)
    return Workload(requests=drawn, token_counts=counts, task=task)


def describe_workload(workload: Workload) -> dict[str, Any]:
    tokens = workload.token_counts
    return {
        "requests": len(workload.requests),
        "texts_per_request": workload.texts_per_request,
        "tokens_per_request_mean": sum(tokens) / len(tokens),
        "tokens_per_request_max": max(tokens),
        "task": workload.task,
    }
