"""The report directory of one run.

summary.json        the SLO, the measured summary, the verdict, the server's view, capacity steps,
                    the response cache (hit ratio, latency of repeats and unique requests), cost per million
samples.csv         every request: start_s, latency_us, outcome, worker
server_metrics.csv  Triton's per-interval view per model (when its metrics were scraped)
latency.png, throughput.png, errors.png, server.png, capacity.png
index.html          all of the above on one page
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
from pathlib import Path

from tritonstack.in_triton import contract
from tritonstack.in_triton.contract import encoder_name, fused_name
from tritonstack.loadtest import plots
from tritonstack.loadtest.cache_report import CacheReport, cache_report
from tritonstack.loadtest.result import RunResult
from tritonstack.loadtest.verdict import render_table, verdict_line
from tritonstack.measure import triton_metrics
from tritonstack.measure.samples import write_samples_csv


def default_report_dir(now: dt.datetime | None = None) -> Path:
    return Path("reports") / (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")


def _slo_dict(result: RunResult) -> dict[str, object]:
    slo = result.slo
    objectives = slo.objectives
    return {
        "source": slo.source,
        "model": slo.model,
        "task": slo.task,
        "load": {
            "mode": slo.load.mode,
            "users": slo.load.users,
            "spawn_rate": slo.load.spawn_rate,
            "arrival_rate_rps": slo.load.arrival_rate_rps,
            "duration_s": slo.load.duration_s,
            "timeout_s": slo.load.timeout_s,
        },
        "payload": {
            "texts": str(slo.payload.texts_file) if slo.payload.texts_file else None,
            "texts_per_request": slo.payload.texts_per_request,
            "repeat_ratio": slo.payload.repeat_ratio,
            "hot_set": slo.payload.hot_set if slo.payload.repeat_ratio is not None else None,
            **({"documents_per_query": slo.payload.documents_per_query} if contract.task(slo.task).pair else {}),
        },
        "objectives": {
            **{f"p{p:g}_ms": v for p, v in sorted(objectives.latency_ms.items())},
            "max_error_ratio": objectives.max_error_ratio,
            "min_throughput_rps": objectives.min_throughput_rps,
        },
        "cost": {"price_per_hour_usd": slo.cost.price_per_hour_usd} if slo.cost else None,
    }


def _encoding_step(result: RunResult) -> str:
    """The model that ran the encoder in this run: the fused step where it served requests (the fused layout,
    docs/export.md), else the encoder."""
    fused = fused_name(result.slo.model)
    snapshots = result.snapshots
    seen = len(snapshots) >= 2 and fused in triton_metrics.models_seen(snapshots)
    if seen and triton_metrics.interval(snapshots[0], snapshots[-1], fused).requests > 0:
        return fused
    return encoder_name(result.slo.model)


def write_report(result: RunResult, directory: Path) -> Path:
    """Write every file of the report into ``directory`` (created); returns ``index.html``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_samples_csv(result.samples, directory / "samples.csv")

    encoder = _encoding_step(result)
    models = [m for m in (result.slo.model, encoder) if m in triton_metrics.models_seen(result.snapshots)]
    per_model = {model: triton_metrics.series(result.snapshots, model) for model in models}
    if per_model:
        _write_server_csv(per_model, directory / "server_metrics.csv")

    series = plots.run_windows(result)
    images = [
        plots.latency_plot(result, series, directory / "latency.png"),
        plots.throughput_plot(result, series, directory / "throughput.png"),
        plots.errors_plot(result, series, directory / "errors.png"),
    ]
    if per_model:
        images.append(plots.server_plot(result, per_model, encoder, directory / "server.png"))
    if result.capacity is not None and result.capacity.steps:
        images.append(plots.capacity_plot(result, result.capacity, directory / "capacity.png"))

    cache = cache_report(result)
    cost = result.cost
    summary = {
        "passed": result.passed,
        "verdict": verdict_line(result.checks),
        "host": result.host,
        "processes": result.processes,
        "slo": _slo_dict(result),
        "checks": [check.to_dict() for check in result.checks],
        "summary": result.summary.to_dict(),
        "server": {
            "metrics_url": result.metrics_url,
            "error": result.metrics_error,
            "scrapes": len(result.snapshots),
            "models": triton_metrics.summary(result.snapshots, models),
        },
        "capacity": result.capacity.to_dict() if result.capacity else None,
        "cache": cache.to_dict() if cache else None,
        "cost": cost.to_dict() if cost else None,
        "files": ["samples.csv", *(["server_metrics.csv"] if per_model else []), *(p.name for p in images)],
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    index = directory / "index.html"
    index.write_text(_html(result, summary, [p.name for p in images], cache), encoding="utf-8")
    return index


def _write_server_csv(per_model: dict[str, list[triton_metrics.ServerInterval]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        fields = ["model", "start_s", "end_s", "requests", "queue_us_per_request", "compute_us_per_request",
                  "request_us_per_request", "batch_size"]  # fmt: skip
        writer.writerow(fields)
        for model, series in per_model.items():
            for interval in series:
                row = interval.to_dict()
                writer.writerow([model, *("" if row[f] is None else row[f] for f in fields[1:])])


def _html(result: RunResult, summary: dict[str, object], images: list[str], cache: CacheReport | None) -> str:
    e = html.escape
    status = "PASS" if result.passed else "FAIL"
    color = "#1a7f37" if result.passed else "#cf222e"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>tritonstack load test: {e(result.slo.model)} {status}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{background:#f6f8fa;padding:1em}"
        "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}</style></head><body>",
        f"<h1>Load test of <code>{e(result.slo.model)}</code> at <code>{e(result.host)}</code>: "
        f"<span style='color:{color}'>{status}</span></h1>",
        f"<p>{e(str(summary['verdict']))}. SLO file: <code>{e(result.slo.source)}</code>; "
        f"{result.summary.requests} requests in {result.summary.duration_s:.1f} s, "
        f"{result.processes} load process(es). Latency percentiles from per-request µs samples "
        "(<a href='samples.csv'>samples.csv</a>), successes only.</p>",
        f"<h2>Verdict</h2><pre>{e(render_table(result.checks, result.cost))}</pre>",
    ]
    if cache is not None:
        parts.append(f"<h2>Response cache</h2><pre>{e(cache.render())}</pre>")
    if result.capacity is not None:
        parts.append(f"<h2>Capacity search</h2><pre>{e(capacity_table(result))}</pre>")
    if result.metrics_error:
        parts.append(f"<p><b>Triton metrics:</b> {e(result.metrics_error)}</p>")
    parts.extend(f"<h2>{e(name.removesuffix('.png'))}</h2><img src='{e(name)}' alt='{e(name)}'>" for name in images)
    parts.append("<p><a href='summary.json'>summary.json</a></p></body></html>\n")
    return "\n".join(parts)


def capacity_table(result: RunResult) -> str:
    """The capacity steps as a text table, with the conclusion underneath."""
    capacity = result.capacity
    if capacity is None:
        return ""
    percentiles = sorted(result.slo.objectives.latency_ms) or [99.0]
    header = ["users", "req/s", *(f"p{p:g} ms" for p in percentiles), "errors", "held"]
    rows = [header]
    for step in capacity.steps:
        latencies = [step.summary.latency_ms.get(p) for p in percentiles]
        ratio = step.summary.error_ratio
        rows.append(
            [
                str(step.users),
                f"{step.summary.throughput_rps:.1f}",
                *("n/a" if v is None else f"{v:.2f}" for v in latencies),
                "n/a" if ratio is None else f"{ratio:.2%}",
                "yes" if step.held else "NO: " + ", ".join(c.key for c in step.checks if not c.passed),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    best = capacity.best
    conclusion = (
        f"capacity: {best.summary.throughput_rps:.1f} req/s at {best.users} users ({capacity.stopped_by})"
        if best
        else f"capacity: none, the first step already broke the SLO ({capacity.stopped_by})"
    )
    return "\n".join([*lines, conclusion])
