"""Triton's side of a load test, from its Prometheus endpoint scraped during the run.

Per interval between two scrapes, for a model:

* queue time per request   = Δnv_inference_queue_duration_us / Δnv_inference_request_success
* compute time per request = Δnv_inference_compute_infer_duration_us / Δnv_inference_request_success
* request time per request = Δnv_inference_request_duration_us / Δnv_inference_request_success
* achieved batch size      = Δnv_inference_count / Δnv_inference_exec_count (inferences per execution)
* response cache           = Δnv_cache_num_hits_per_model / (Δhits + Δnv_cache_num_misses_per_model), and the
  cache's own time per hit (lookup) and per miss (lookup + insertion), for a model that enables the cache.
  A hit counts in nv_inference_request_success but not in nv_inference_count (nothing ran).

Counters are summed over the model's versions. No Locust here: the scraper is
a plain thread (a greenlet once gevent has patched the process). The same
counters read through Triton's statistics API at the ends of one measured
window are ``triton_stats.py`` (bench and tune).
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_cache_num_hits_per_model",
    "nv_cache_num_misses_per_model",
    "nv_cache_hit_duration_per_model",
    "nv_cache_miss_duration_per_model",
)

# metric name -> model name -> value (summed over versions)
Values = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Snapshot:
    t_s: float  # Unix seconds when the scrape returned
    values: Values

    def get(self, metric: str, model: str) -> float | None:
        return self.values.get(metric, {}).get(model)


def parse_metrics(text: str) -> Values:
    """The counters in :data:`METRICS` from Triton's exposition text, per model."""
    values: Values = {}
    for family in text_string_to_metric_families(text):
        if family.name not in METRICS:
            continue
        for sample in family.samples:
            # The parser names a counter's samples NAME_total although Triton exposes plain NAME.
            if sample.name in (family.name, family.name + "_total") and "model" in sample.labels:
                per_model = values.setdefault(family.name, {})
                model = sample.labels["model"]
                per_model[model] = per_model.get(model, 0.0) + float(sample.value)
    return values


def fetch(url: str, timeout_s: float = 2.0) -> Snapshot:
    """One scrape. Raises ``OSError`` (``URLError`` included) when the endpoint does not answer."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode("utf-8")
    return Snapshot(time.time(), parse_metrics(text))


@dataclass(frozen=True)
class ServerInterval:
    """Triton's view of one model between two scrapes. Fields are ``None`` where the
    denominator did not move (no request finished in the interval)."""

    start_s: float
    end_s: float
    requests: float
    queue_us: float | None
    compute_us: float | None
    request_us: float | None
    batch_size: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "requests": self.requests,
            "queue_us_per_request": self.queue_us,
            "compute_us_per_request": self.compute_us,
            "request_us_per_request": self.request_us,
            "batch_size": self.batch_size,
        }


def _delta(first: Snapshot, last: Snapshot, metric: str, model: str) -> float:
    # A counter missing before the first request counts from 0.
    return (last.get(metric, model) or 0.0) - (first.get(metric, model) or 0.0)


def interval(first: Snapshot, last: Snapshot, model: str) -> ServerInterval:
    requests = _delta(first, last, "nv_inference_request_success", model)
    executions = _delta(first, last, "nv_inference_exec_count", model)

    def per_request(metric: str) -> float | None:
        return _delta(first, last, metric, model) / requests if requests > 0 else None

    return ServerInterval(
        start_s=first.t_s,
        end_s=last.t_s,
        requests=requests,
        queue_us=per_request("nv_inference_queue_duration_us"),
        compute_us=per_request("nv_inference_compute_infer_duration_us"),
        request_us=per_request("nv_inference_request_duration_us"),
        batch_size=_delta(first, last, "nv_inference_count", model) / executions if executions > 0 else None,
    )


@dataclass(frozen=True)
class CacheInterval:
    """Triton's response cache for one model between two scrapes; durations are totals in µs."""

    hits: float
    misses: float
    hit_duration_us: float  # looking the hits up
    miss_duration_us: float  # looking the misses up and inserting their responses

    @property
    def hit_ratio(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups > 0 else None

    @property
    def us_per_hit(self) -> float | None:
        return self.hit_duration_us / self.hits if self.hits > 0 else None

    @property
    def us_per_miss(self) -> float | None:
        return self.miss_duration_us / self.misses if self.misses > 0 else None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hit_ratio,
            "us_per_hit": self.us_per_hit,
            "us_per_miss": self.us_per_miss,
        }


def cache_interval(first: Snapshot, last: Snapshot, model: str) -> CacheInterval | None:
    """The cache's view of ``model`` between two scrapes; ``None`` when the model has no response cache
    (Triton exports the cache metrics only for a model that enables one)."""
    if last.get("nv_cache_num_hits_per_model", model) is None:
        return None
    return CacheInterval(
        hits=_delta(first, last, "nv_cache_num_hits_per_model", model),
        misses=_delta(first, last, "nv_cache_num_misses_per_model", model),
        hit_duration_us=_delta(first, last, "nv_cache_hit_duration_per_model", model),
        miss_duration_us=_delta(first, last, "nv_cache_miss_duration_per_model", model),
    )


def series(snapshots: Sequence[Snapshot], model: str) -> list[ServerInterval]:
    return [interval(a, b, model) for a, b in itertools.pairwise(snapshots)]


def models_seen(snapshots: Sequence[Snapshot]) -> list[str]:
    names: set[str] = set()
    for snapshot in snapshots:
        names.update(snapshot.values.get("nv_inference_request_success", {}))
    return sorted(names)


class MetricsScraper:
    """Scrapes ``url`` every ``interval_s`` until :meth:`stop`. Failed scrapes are counted,
    not raised: the server's view is an addition to the report, never a reason to stop."""

    def __init__(self, url: str, interval_s: float = 1.0) -> None:
        self.url = url
        self.interval_s = interval_s
        self.snapshots: list[Snapshot] = []
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape_once(self) -> None:
        try:
            self.snapshots.append(fetch(self.url, timeout_s=min(2.0, self.interval_s * 2)))
        except (OSError, ValueError) as error:
            self.failures += 1
            self.last_error = str(error)

    def start(self) -> MetricsScraper:
        self.scrape_once()
        self._thread = threading.Thread(target=self._loop, name="triton-metrics-scraper", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.scrape_once()

    def stop(self) -> list[Snapshot]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.scrape_once()  # the closing snapshot, so the last interval covers the end of the run
        return self.snapshots

    def snapshots_between(self, start_s: float, end_s: float) -> list[Snapshot]:
        """The snapshots that bracket ``[start_s, end_s]`` (one before, those inside, one after)."""
        before = [s for s in self.snapshots if s.t_s <= start_s]
        inside = [s for s in self.snapshots if start_s < s.t_s < end_s]
        after = [s for s in self.snapshots if s.t_s >= end_s]
        return before[-1:] + inside + after[:1]


def summary(snapshots: Sequence[Snapshot], models: Sequence[str]) -> Mapping[str, dict[str, float | None]]:
    """Whole-run figures per model (first snapshot to last)."""
    if len(snapshots) < 2:
        return {}
    return {model: interval(snapshots[0], snapshots[-1], model).to_dict() for model in models}
