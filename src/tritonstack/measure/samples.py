"""Latency samples and what is computed from them: percentiles, a load window's round, the run summary, time windows.

Every latency sample is in microseconds (``latency_us``, ``latencies_us``), and
every percentile is computed by :func:`percentile_ms` from them. Locust's own
statistics round response times under 100 ms to whole milliseconds; the
load test's verdict is computed here, from every request's latency in integer
microseconds. Latency percentiles are over *successful* requests (a fast
failure must not make the latency look good); failures count against the error
ratio instead.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUCCESS = "success"
CSV_FIELDS = ("start_s", "latency_us", "outcome", "worker", "kind")


@dataclass(frozen=True)
class Sample:
    """One request: when it started (Unix seconds), how long it took (µs), and how it ended.

    ``outcome`` is ``"success"`` or the error's type name (``DeadlineExceededError``).
    ``kind`` is ``"repeat"`` or ``"unique"`` under a repeat ratio (``payload.py``), else ``""``.
    ``release`` is the model version that answered when the users split traffic between releases
    (``tritonstack canary``); it stays out of ``samples.csv``.
    """

    start_s: float
    latency_us: int
    outcome: str = SUCCESS
    worker: str = "local"
    kind: str = ""
    release: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == SUCCESS

    def as_row(self) -> tuple[float, int, str, str, str]:
        return (self.start_s, self.latency_us, self.outcome, self.worker, self.kind)

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Sample:
        start_s, latency_us, outcome, worker, kind = row
        return cls(float(str(start_s)), int(str(latency_us)), str(outcome), str(worker), str(kind))


def percentile_ms(latencies_us: Sequence[float] | np.ndarray, percentile: float) -> float | None:
    """The ``percentile`` (0-100) of latencies in µs, in ms; linear interpolation between
    closest ranks (numpy's default, and ``statistics.quantiles(method="inclusive")``); ``None`` without samples."""
    if len(latencies_us) == 0:
        return None
    return float(np.percentile(np.asarray(latencies_us, dtype=np.float64), percentile)) / 1000.0


def mean_ms(latencies_us: Sequence[float] | np.ndarray) -> float | None:
    """The mean of latencies in µs, in ms; ``None`` without samples."""
    if len(latencies_us) == 0:
        return None
    return float(np.mean(np.asarray(latencies_us, dtype=np.float64))) / 1000.0


@dataclass(frozen=True)
class Round:
    """One measured window of a load generator (``load.py``): latencies in µs, completions and errors inside it."""

    latencies_us: tuple[float, ...]
    elapsed_s: float
    completed: int  # texts
    tokens: int  # real (unpadded) tokens of the completed texts
    errors: int = 0
    first_error: str | None = None
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    machine_cpu_s: float | None = None  # every process of the machine, ours included
    # Latency summed over the ``completed`` calls: the calls Triton's statistics of the window cover
    # (for an open loop ``latencies_us`` holds the calls *sent* in the window instead).
    completed_latency_us: float = 0.0

    @property
    def throughput_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def completed_mean_ms(rounds: Sequence[Round]) -> float:
    """Mean latency of the calls that finished inside the windows, in milliseconds (NaN without any)."""
    completed = sum(r.completed for r in rounds)
    return sum(r.completed_latency_us for r in rounds) / completed / 1000.0 if completed else float("nan")


@dataclass(frozen=True)
class Summary:
    """What a run measured, over the window ``[start_s, end_s]``."""

    start_s: float
    end_s: float
    requests: int
    successes: int
    failures: int
    latency_ms: dict[float, float | None]
    mean_ms: float | None
    max_ms: float | None
    errors_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return max(self.end_s - self.start_s, 1e-9)

    @property
    def error_ratio(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def throughput_rps(self) -> float:
        """Successful requests per second of wall-clock run time."""
        return self.successes / self.duration_s

    def to_dict(self) -> dict[str, object]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "error_ratio": self.error_ratio,
            "throughput_rps": self.throughput_rps,
            "latency_ms": {f"p{p:g}": v for p, v in sorted(self.latency_ms.items())},
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
            "errors_by_type": dict(self.errors_by_type),
        }


DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def summarize(
    samples: Iterable[Sample], start_s: float, end_s: float, percentiles: Iterable[float] = DEFAULT_PERCENTILES
) -> Summary:
    """Summarize the samples that *started* within ``[start_s, end_s)``."""
    selected = [s for s in samples if start_s <= s.start_s < end_s]
    ok_us = np.fromiter((s.latency_us for s in selected if s.ok), dtype=np.int64)
    errors = Counter(s.outcome for s in selected if not s.ok)
    wanted = sorted(set(DEFAULT_PERCENTILES) | set(percentiles))
    return Summary(
        start_s=start_s,
        end_s=end_s,
        requests=len(selected),
        successes=int(ok_us.size),
        failures=sum(errors.values()),
        latency_ms={p: percentile_ms(ok_us, p) for p in wanted},
        mean_ms=mean_ms(ok_us),
        max_ms=float(ok_us.max()) / 1000.0 if ok_us.size else None,
        errors_by_type=dict(errors),
    )


@dataclass(frozen=True)
class Window:
    """One slice of the run for the time-series plots."""

    start_s: float
    width_s: float
    successes: int
    failures: int
    latency_ms: dict[float, float | None]

    @property
    def throughput_rps(self) -> float:
        return self.successes / self.width_s

    @property
    def errors_per_s(self) -> float:
        return self.failures / self.width_s


def window_width_s(duration_s: float) -> float:
    """About 60 points per plot, never finer than one second."""
    return max(1.0, math.ceil(duration_s / 60.0))


def windows(
    samples: Sequence[Sample], start_s: float, end_s: float, width_s: float, percentiles: Iterable[float]
) -> list[Window]:
    """Split ``[start_s, end_s)`` into windows of ``width_s``; the last one takes the remainder
    (a sliver of a window would plot a handful of requests as if they were a trend)."""
    percentiles = tuple(percentiles)
    count = max(1, round((end_s - start_s) / width_s))
    buckets: list[list[Sample]] = [[] for _ in range(count)]
    for sample in samples:
        if start_s <= sample.start_s < end_s:
            buckets[min(int((sample.start_s - start_s) // width_s), count - 1)].append(sample)
    result = []
    for index, bucket in enumerate(buckets):
        left = start_s + index * width_s
        ok_us = [s.latency_us for s in bucket if s.ok]
        result.append(
            Window(
                start_s=left,
                width_s=end_s - left if index == count - 1 else width_s,
                successes=len(ok_us),
                failures=len(bucket) - len(ok_us),
                latency_ms={p: percentile_ms(ok_us, p) for p in percentiles},
            )
        )
    return result


def write_samples_csv(samples: Iterable[Sample], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for sample in samples:
            start_s, latency_us, outcome, worker, kind = sample.as_row()
            writer.writerow((f"{start_s:.6f}", latency_us, outcome, worker, kind))


def read_samples_csv(path: Path) -> list[Sample]:
    """The samples of ``samples.csv``; a file written before the ``kind`` column reads with ``kind=""``."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader))
        if header not in (CSV_FIELDS, CSV_FIELDS[:-1]):
            raise ValueError(f"{path}: expected columns {CSV_FIELDS}, got {list(header)}")
        return [Sample.from_row([*row, ""][: len(CSV_FIELDS)]) for row in reader]
