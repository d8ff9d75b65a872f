"""Where the served path spends its time, from Triton's per-model statistics API.

Triton counts, per model: requests and their total duration, queue time, and
compute time (``compute_input`` + ``compute_infer`` + ``compute_output``) as
each request saw it -- a batched execution counts once per request in it.
``batch_stats`` counts each *execution* once, which gives how busy a model's
instances were. The text-in ensemble's request duration is the server's whole
share of a call; the client's share is the rest of the latency the SDK saw.

The same counters, as Triton exports them to Prometheus and scraped over a
whole run, are ``triton_metrics.py`` (the load test's server view): this module
reads them through the gRPC API at the two ends of one measured window, in
nanoseconds and with ``compute_input``/``compute_output`` included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from tritonstack.in_triton import contract

_COMPUTE = ("compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one model (summed over its versions); times in nanoseconds."""

    requests: int = 0
    request_ns: int = 0
    queue_ns: int = 0
    compute_ns: int = 0  # as the requests saw it
    inferences: int = 0
    executions: int = 0
    busy_ns: int = 0  # per execution: how long the model's instances computed
    cache_hits: int = 0  # requests answered from the response cache (counted in ``requests`` too)
    cache_misses: int = 0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def _ns(stat: Mapping[str, Any] | None) -> int:
    return int((stat or {}).get("ns", 0))


def parse_statistics(statistics: Mapping[str, Any]) -> dict[str, Counters]:
    """Model name -> counters, from ``get_inference_statistics(as_json=True)``."""
    models: dict[str, Counters] = {}
    for entry in statistics.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        success = stats.get("success", {})
        counters = Counters(
            requests=int(success.get("count", 0)),
            request_ns=_ns(success),
            queue_ns=_ns(stats.get("queue")),
            compute_ns=sum(_ns(stats.get(k)) for k in _COMPUTE),
            inferences=int(entry.get("inference_count", 0)),
            executions=int(entry.get("execution_count", 0)),
            busy_ns=sum(_ns(batch.get(k)) for batch in entry.get("batch_stats", []) for k in _COMPUTE),
            cache_hits=int(stats.get("cache_hit", {}).get("count", 0)),
            cache_misses=int(stats.get("cache_miss", {}).get("count", 0)),
        )
        models[entry["name"]] = models.get(entry["name"], Counters()) + counters
    return models


@dataclass(frozen=True)
class CounterDeltas:
    """Counter deltas over one or more measured windows."""

    elapsed_s: float
    models: dict[str, Counters]

    def __add__(self, other: CounterDeltas) -> CounterDeltas:
        names = set(self.models) | set(other.models)
        return CounterDeltas(
            self.elapsed_s + other.elapsed_s,
            {n: self.models.get(n, Counters()) + other.models.get(n, Counters()) for n in names},
        )


def model_view(counters: Counters, elapsed_s: float, instances: int = 1) -> dict[str, float | None]:
    """Per-request milliseconds, achieved batch size and instance busy fraction of one model."""
    per_request = counters.requests or None
    return {
        "requests": counters.requests,
        "request_ms": counters.request_ns / per_request / 1e6 if per_request else None,
        "queue_ms": counters.queue_ns / per_request / 1e6 if per_request else None,
        "compute_ms": counters.compute_ns / per_request / 1e6 if per_request else None,
        "batch_size": counters.inferences / counters.executions if counters.executions else None,
        # the instances' compute time spread over the texts they computed: the model's cost per text
        "compute_ms_per_text": counters.busy_ns / counters.inferences / 1e6 if counters.inferences else None,
        "busy": counters.busy_ns / 1e9 / (elapsed_s * instances) if elapsed_s > 0 else None,
    }


def breakdown(
    window: CounterDeltas, name: str, client_mean_ms: float, instances: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Mean milliseconds per call, split into client, queue and compute of each model of ``name``.

    ``client`` is the SDK's latency minus Triton's request duration: the SDK,
    gRPC and the load generator's own scheduling. ``ensemble`` is what the text-in
    ensemble adds on top of its steps (hand-off between them). In the fused layout
    (the window saw requests of ``NAME_fused``) its one step replaces tokenizer and
    encoder.
    """
    instances = instances or {}
    models = {
        "text_in": name,
        "tokenizer": contract.tokenizer_name(name),
        "encoder": contract.encoder_name(name),
        "fused": contract.fused_name(name),
    }
    views = {
        role: model_view(window.models.get(model, Counters()), window.elapsed_s, instances.get(model, 1))
        for role, model in models.items()
    }
    # An ensemble executes nothing itself: its "busy" and per-text compute would count its steps again.
    views["text_in"] = {k: views["text_in"][k] for k in ("requests", "request_ms")}
    roles = ("fused",) if views["fused"]["requests"] else ("tokenizer", "encoder")
    for role in set(models) - {"text_in", *roles}:
        del views[role]
    server_ms = views["text_in"]["request_ms"]
    parts: dict[str, float | None] = {"client": client_mean_ms - server_ms if server_ms is not None else None}
    for role in roles:
        parts[f"{role}_queue"] = views[role]["queue_ms"]
        parts[f"{role}_compute"] = views[role]["compute_ms"]
    steps = [parts[f"{role}_{part}"] for role in roles for part in ("queue", "compute")]
    if server_ms is not None and all(s is not None for s in steps):
        parts["ensemble"] = server_ms - sum(s for s in steps if s is not None)
    return {"client_ms": client_mean_ms, "server_ms": server_ms, "parts_ms": parts, "models": views}


class TritonStatsProbe:
    """Reads Triton's statistics at both ends of a measured window (a ``load.Probe``)."""

    def __init__(self, url: str, models: Sequence[str]) -> None:
        self.url = url
        self.models = tuple(models)
        self._connection: Any = None

    async def snapshot(self) -> dict[str, Counters]:
        if self._connection is None:  # opened inside the running event loop
            from tritonclient.grpc.aio import InferenceServerClient

            self._connection = InferenceServerClient(self.url)
        statistics = await self._connection.get_inference_statistics(as_json=True)
        parsed = parse_statistics(statistics)
        return {m: parsed.get(m, Counters()) for m in self.models}

    def diff(self, first: dict[str, Counters], last: dict[str, Counters], elapsed_s: float) -> dict[str, Any]:
        return {"window": CounterDeltas(elapsed_s, {m: last[m] - first[m] for m in self.models})}

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
