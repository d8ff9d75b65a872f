"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tritonstack._plots import pyplot, save
from tritonstack.loadtest.result import CapacityResult, RunResult
from tritonstack.measure.samples import Sample, Window, window_width_s, windows
from tritonstack.measure.triton_metrics import ServerInterval

_COLORS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:green", "tab:brown")


def _save(fig: Any, path: Path) -> Path:
    return save(fig, path, dpi=100)


def run_windows(result: RunResult) -> list[Window]:
    summary = result.summary
    percentiles = sorted({50.0, 95.0, 99.0} | set(result.slo.objectives.latency_ms))
    width = window_width_s(summary.duration_s)
    return windows(result.samples, summary.start_s, summary.end_s, width, percentiles)


LATENCY_MARGIN = 1.3  # the latency axis reaches this factor beyond the lowest and the highest line


def latency_axis(ax: Any, measured_ms: Iterable[float], bounds_ms: Iterable[float]) -> None:
    """A log y axis in ms that holds every measured percentile and every SLO bound, with plain ms ticks.

    Log, not linear: an SLO bound sits where the user put it (1 000 ms) and the percentiles where the
    server is (20 ms); a linear axis that reaches the bound squeezes the measurements into a flat line at
    its foot, and one cut below the bound hides how much room is left. On a log axis both keep their shape
    and the gap between them reads as a ratio -- the headroom -- at any scale. (Clipping the bound to an
    arrow would keep the measurements large but hide that headroom, and change the axis from run to run.)
    The axis starts just below the lowest measurement rather than at some round power of ten, so the data
    fill as much of it as the bounds allow.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lines = [v for v in (*measured_ms, *bounds_ms) if math.isfinite(v) and v > 0]
    if not lines:
        return  # nothing to draw: matplotlib's own linear axis
    low, high = min(lines) / LATENCY_MARGIN, max(lines) * LATENCY_MARGIN
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    # within a decade 1..9 x 10^n are all ticks (else a narrow axis might get a single one); wider, 1-2-5
    subs = tuple(range(1, 10)) if high / low < 10 else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 20, 500, 0.5: not 2x10^1
    ax.yaxis.set_minor_formatter(NullFormatter())


def latency_figure(result: RunResult, series: Sequence[Window]) -> Any:
    """The latency percentiles per window and the SLO's bounds on one log axis (``latency_axis``)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    t0 = result.summary.start_s
    x = [w.start_s - t0 + w.width_s / 2 for w in series]
    percentiles = sorted(series[0].latency_ms) if series else []
    measured: list[float] = []
    bounds: list[float] = []
    for color, p in zip(_COLORS, percentiles, strict=False):
        y = [float("nan") if (ms := w.latency_ms[p]) is None else ms for w in series]
        measured += y
        ax.plot(x, y, marker=".", color=color, label=f"p{p:g}")
        bound = result.slo.objectives.latency_ms.get(p)
        if bound is not None:
            bounds.append(bound)
            ax.axhline(bound, color=color, linestyle="--", linewidth=1, label=f"SLO p{p:g} ≤ {bound:g} ms")
    latency_axis(ax, measured, bounds)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("Client-observed latency percentiles per window vs. the SLO")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def latency_plot(result: RunResult, series: Sequence[Window], path: Path) -> Path:
    return _save(latency_figure(result, series), path)


def throughput_plot(result: RunResult, series: Sequence[Window], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t0 = result.summary.start_s
    ax.plot([w.start_s - t0 + w.width_s / 2 for w in series], [w.throughput_rps for w in series], marker=".")
    minimum = result.slo.objectives.min_throughput_rps
    if minimum is not None:
        ax.axhline(minimum, color="tab:red", linestyle="--", linewidth=1, label=f"SLO ≥ {minimum:g} req/s")
        ax.legend(fontsize=8)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("successful requests / s")
    ax.set_title("Throughput")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def errors_plot(result: RunResult, series: Sequence[Window], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t0 = result.summary.start_s
    width = series[0].width_s if series else 1.0
    by_type = _errors_by_type(result.samples, result.summary.start_s, width, len(series))
    bottom = [0.0] * len(series)
    x = [w.start_s - t0 for w in series]
    for color, (outcome, counts) in zip(_COLORS, sorted(by_type.items()), strict=False):
        rates = [c / width for c in counts]
        ax.bar(x, rates, width=width, bottom=bottom, align="edge", color=color, label=outcome)
        bottom = [b + r for b, r in zip(bottom, rates, strict=True)]
    total = result.summary.failures
    ax.set_title(f"Errors ({total} of {result.summary.requests} requests)")
    if by_type:
        ax.legend(fontsize=8)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("failed requests / s")
    ax.set_xlim(0, max(result.summary.duration_s, 1.0))
    ax.set_ylim(bottom=0, top=max(max(bottom, default=0.0) * 1.2, 1.0))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _errors_by_type(samples: Sequence[Sample], t0: float, width_s: float, count: int) -> dict[str, list[int]]:
    by_type: dict[str, list[int]] = {}
    for sample in samples:
        if not sample.ok:
            index = int((sample.start_s - t0) // width_s)
            if 0 <= index < count:
                by_type.setdefault(sample.outcome, [0] * count)[index] += 1
    return by_type


def server_plot(result: RunResult, per_model: dict[str, list[ServerInterval]], encoder: str, path: Path) -> Path:
    """Queue vs. compute time per request for each model, and the encoder's achieved batch size."""
    plt = pyplot()
    models = [m for m in per_model if per_model[m]]
    fig, axes = plt.subplots(len(models) + 1, 1, figsize=(9, 2.8 * (len(models) + 1)), squeeze=False)
    t0 = result.summary.start_s
    for ax, model in zip(axes[:, 0], models, strict=False):
        series = per_model[model]
        x = [s.end_s - t0 for s in series]
        queue = [(s.queue_us or 0.0) / 1000 for s in series]
        compute = [(s.compute_us or 0.0) / 1000 for s in series]
        other = [
            max(((s.request_us or 0.0) / 1000) - q - c, 0.0) for s, q, c in zip(series, queue, compute, strict=True)
        ]
        ax.stackplot(x, queue, compute, other, labels=["queue", "compute (infer)", "other (input/output, overhead)"],
                     colors=("tab:orange", "tab:blue", "tab:gray"), alpha=0.8)  # fmt: skip
        ax.set_title(f"Triton: time per request in model '{model}'")
        ax.set_ylabel("ms / request")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    ax = axes[-1, 0]
    batch = per_model.get(encoder, [])
    ax.plot([s.end_s - t0 for s in batch], [s.batch_size if s.batch_size else float("nan") for s in batch], marker=".")
    ax.set_title(f"Achieved batch size of '{encoder}' (Δinference_count / Δexec_count)")
    ax.set_ylabel("inferences / execution")
    ax.set_xlabel("time since start (s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def capacity_plot(result: RunResult, capacity: CapacityResult, path: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    users = [step.users for step in capacity.steps]
    colors = ["tab:green" if step.held else "tab:red" for step in capacity.steps]
    left.plot(users, [s.summary.throughput_rps for s in capacity.steps], color="tab:gray")
    left.scatter(users, [s.summary.throughput_rps for s in capacity.steps], c=colors, zorder=3)
    left.set_xlabel("concurrent users")
    left.set_ylabel("successful requests / s")
    left.set_title(f"Throughput per step (capacity {capacity.capacity_rps or 0:.1f} req/s)")
    measured: list[float] = []
    for color, (p, bound) in zip(_COLORS, sorted(result.slo.objectives.latency_ms.items()), strict=False):
        values = [s.summary.latency_ms.get(p) for s in capacity.steps]
        y = [v if v is not None else float("nan") for v in values]
        measured += y
        right.plot(users, y, marker="o", color=color, label=f"p{p:g}")
        right.axhline(bound, color=color, linestyle="--", linewidth=1)
    latency_axis(right, measured, result.slo.objectives.latency_ms.values())
    right.set_xlabel("concurrent users")
    right.set_ylabel("latency (ms, log scale)")
    right.set_title("Latency per step vs. the SLO (dashed)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    if result.slo.objectives.latency_ms:
        right.legend(fontsize=8)
    return _save(fig, path)


def release_latency_plot(
    samples: Sequence[Sample], release: int, role: str, start_s: float, end_s: float, path: Path
) -> Path:
    """p50 and p99 per window of one release's requests in a canary run (the run's own time axis)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    series = windows(samples, start_s, end_s, window_width_s(end_s - start_s), (50.0, 99.0))
    x = [w.start_s - start_s + w.width_s / 2 for w in series]
    for color, p in zip(_COLORS, (50.0, 99.0), strict=False):
        y = [w.latency_ms[p] if w.latency_ms[p] is not None else float("nan") for w in series]
        ax.plot(x, y, marker=".", color=color, label=f"p{p:g}")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Release {release} ({role}): client-observed latency per window")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)
