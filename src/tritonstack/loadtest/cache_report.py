"""The response cache in a load-test report: Triton's hit ratio next to the latency of repeats and unique requests.

Triton counts hits and misses per model (``nv_cache_num_hits_per_model`` ...); a
response carries no mark of having come from the cache, so the client-side split
is by what was *sent*: requests repeated from the hot set (hits once each was
computed, unless evicted) and requests never sent before (always misses).
Comparing Triton's hit ratio with the share of repeats shows whether the repeats
really hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonstack.loadtest.result import RunResult
from tritonstack.measure import triton_metrics
from tritonstack.measure.payload import REPEAT, UNIQUE
from tritonstack.measure.samples import Summary, summarize
from tritonstack.measure.triton_metrics import CacheInterval

SPLIT_PERCENTILES = (50.0, 99.0)


@dataclass(frozen=True)
class CacheReport:
    model: str
    repeat_ratio: float | None  # the SLO's; None: no repeats were planned
    hot_set: int
    by_kind: dict[str, Summary]  # "repeat" / "unique" -> the samples of that kind
    server: CacheInterval | None  # None: Triton reported no cache for the model (or was not scraped)

    def to_dict(self) -> dict[str, object]:
        total = sum(s.requests for s in self.by_kind.values())
        return {
            "model": self.model,
            "repeat_ratio": self.repeat_ratio,
            "hot_set": self.hot_set if self.repeat_ratio is not None else None,
            "server": self.server.to_dict() if self.server else None,
            "requests": {
                kind: {
                    "requests": summary.requests,
                    "share": summary.requests / total if total else None,
                    "successes": summary.successes,
                    "latency_ms": {f"p{p:g}": v for p, v in sorted(summary.latency_ms.items())},
                    "mean_ms": summary.mean_ms,
                }
                for kind, summary in self.by_kind.items()
            },
        }

    def render(self) -> str:
        lines = [self._server_line()]
        if self.by_kind:
            total = sum(s.requests for s in self.by_kind.values())
            header = ["requests", "sent", "share", *(f"p{p:g} ms" for p in SPLIT_PERCENTILES)]
            rows = [header]
            for kind, summary in self.by_kind.items():
                latencies = [summary.latency_ms.get(p) for p in SPLIT_PERCENTILES]
                rows.append(
                    [
                        kind,
                        str(summary.requests),
                        f"{summary.requests / total:.1%}" if total else "n/a",
                        *("n/a" if v is None else f"{v:.2f}" for v in latencies),
                    ]
                )
            widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
            lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        return "\n".join(lines)

    def _server_line(self) -> str:
        server = self.server
        if server is None:
            return f"response cache: Triton reported none for {self.model!r} -- every request was computed"
        ratio = "n/a" if server.hit_ratio is None else f"{server.hit_ratio:.1%}"
        per_hit = "n/a" if server.us_per_hit is None else f"{server.us_per_hit:.0f} µs"
        per_miss = "n/a" if server.us_per_miss is None else f"{server.us_per_miss:.0f} µs"
        return (
            f"response cache of {self.model!r} (Triton): hit ratio {ratio} ({server.hits:.0f} hits, "
            f"{server.misses:.0f} misses); cache time {per_hit} per hit, {per_miss} per miss (lookup + insert)"
        )


def cache_report(result: RunResult) -> CacheReport | None:
    """The cache section of ``result``: ``None`` when the SLO planned no repeats and Triton reported no
    cache for the model -- a run that has nothing to do with a cache."""
    snapshots = result.snapshots
    server = triton_metrics.cache_interval(snapshots[0], snapshots[-1], result.slo.model) if snapshots else None
    payload = result.slo.payload
    if payload.repeat_ratio is None and server is None:
        return None
    by_kind: dict[str, Summary] = {}
    if payload.repeat_ratio is not None:
        window = result.summary
        for kind in (REPEAT, UNIQUE):
            samples = [s for s in result.samples if s.kind == kind]
            by_kind[kind] = summarize(samples, window.start_s, window.end_s, SPLIT_PERCENTILES)
    return CacheReport(result.slo.model, payload.repeat_ratio, payload.hot_set, by_kind, server)
