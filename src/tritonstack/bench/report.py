"""The benchmark's outputs: the printed table, ``summary.json`` and ``latency_vs_throughput.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tritonstack._plots import pyplot, save
from tritonstack.bench.results import BASELINE, INPROCESS, SERVED, VARIANTS, Point, write_summary
from tritonstack.bench.runner import BenchResult
from tritonstack.bench.summary import gflops

PLOT_FILE = "latency_vs_throughput.png"
COLORS = {INPROCESS: "tab:green", SERVED: "tab:blue", BASELINE: "tab:red"}
TITLES = {
    INPROCESS: "in-process tokenizer + ONNX Runtime (latency per batch)",
    SERVED: "served: SDK -> gRPC -> Triton",
    BASELINE: "FastAPI + PyTorch, one text per call",
}


def _pct(value: float | None) -> str:
    return "  -" if value is None else f"{100 * value:3.0f}"


def _num(value: float, width: int) -> str:
    return f"{value:{width}.1f}" if math.isfinite(value) else f"{'-':>{width}}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _pair_line(corpus: dict[str, Any]) -> str:
    k = corpus["documents_per_query"]
    return (
        f"{corpus['task']}: {corpus['requests']} requests of one query ({corpus['query_words_min']}-"
        f"{corpus['query_words_max']} words) and {k} documents; texts/s counts (query, document) pairs, "
        f"requests/s = texts/s / {k}; tokens are per pair"
    )


def table(result: BenchResult, summary: dict[str, Any]) -> str:
    """The human-readable report."""
    best_labels = {v: (summary["best"][v] or {}).get("label") for v in VARIANTS}
    lines = [
        f"tritonstack bench -- {result.files.name} ({result.files.precision}) from {result.settings.model_dir}",
        f"texts: {result.corpus['texts']} (seed {result.corpus['seed']}, {result.corpus['words_min']}-"
        f"{result.corpus['words_max']} words, {result.corpus['tokens_mean']:.1f} tokens mean)"
        f"; {result.settings.timing.rounds} rounds x {result.settings.timing.duration_s:g} s after "
        f"{result.settings.timing.warmup_s:g} s warm-up per point; throughput = median of rounds",
        *([_pair_line(result.corpus)] if "documents_per_query" in result.corpus else []),
        f"cores: {result.split.describe()}",
        *([_gpu_line(result)] if result.settings.device == "gpu" else []),
        *([f"WARNING: {warning}"] if (warning := result.busy_warning()) else []),
        "",
        f"{'variant':<11} {'point':<12} {'texts/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'GFLOP/s':>8}"
        f" {'srv%':>5} {'gen%':>5} {'oth%':>5} {'err':>4}",
    ]
    for point in result.points:
        mark = "*" if point.label == best_labels.get(point.variant) and point.setting != "rate" else " "
        label = point.label + (" open" if point.setting == "rate" else "")
        flops = gflops(result, point)["gflops"] if point.variant in VARIANTS else math.nan  # the floor runs no model
        lines.append(
            f"{point.variant:<11} {label:<11}{mark} {point.throughput_per_s:9.1f} {_num(point.p50_ms, 8)}"
            f" {_num(point.p99_ms, 8)} {_num(flops, 8)} {_pct(point.server_cpu):>5} {_pct(point.client_cpu):>5}"
            f" {_pct(point.others_cpu):>5} {point.errors:4d}"
        )
    lines += [
        "  * best point of the variant; srv%/gen%: busy share of the server / load-generator cores;",
        "    oth%: share of all CPUs used by processes not under test (should be ~0);",
        "    '-': no request completed inside the window (raise --duration-s);",
        "    in-process latency is per batch; b=N: texts in arrival order, s=N: length-sorted texts (little padding);\n"
        "    'open': open-loop Poisson arrivals at half the best served rate;",
        "    floor: the served layout with a step that does no model work (bench/floor.py)",
        "",
        *_floor_lines(summary.get("serving_floor")),
        f"served / in-process  = {_ratio(summary['served_over_inprocess'])}   (best {best_labels[SERVED]} vs "
        f"{best_labels[INPROCESS]})",
        f"served / baseline    = {_ratio(summary['served_over_baseline'])}   (best {best_labels[SERVED]} vs "
        f"{best_labels[BASELINE]})",
        "",
        _peak_line(result),
    ]
    for variant in VARIANTS:
        figures = summary["gflops"][variant]
        if figures:
            lines.append(
                f"  {variant:<11} {figures['gflops']:7.1f} GFLOP/s = {100 * figures['fp32_peak_fraction']:5.1f}% of "
                f"fp32 peak, {100 * figures['int8_peak_fraction']:5.1f}% of int8 peak"
            )
    if summary.get("cost"):
        lines.append("")
        price = next(c["price_per_hour_usd"] for c in summary["cost"].values() if c)
        lines.append(f"cost per million texts at ${price:,.2f}/h, at each variant's best point:")
        for variant, cost in summary["cost"].items():
            if cost:
                value = cost["usd_per_million"]
                figure = "n/a" if value is None else f"${value:,.4g}"
                lines.append(f"  {variant:<11} {figure:>10}  ({cost['throughput_per_s']:.1f} texts/s)")
    lines += ["", "targets (reported, not asserted):"]
    for target in summary["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        value = "n/a" if target["value"] is None else f"{target['value']:.2f}"
        lines.append(f"  {target['name']:<36} {value:>6} (target {target['op']} {target['target']:g})  {verdict}")
        lines += [f"      {line}" for line in target["explain"]]
    return "\n".join(lines)


def _floor_lines(floor: dict[str, Any] | None) -> list[str]:
    """Model time against serving time: the served model beside its serving floor, at the same points."""
    if not floor:
        return []
    lines = ["serving floor (same layout, no model work) vs the served model, same server, one after the other:"]
    for row in floor["points"]:
        served = row["served"] or {}
        lines.append(
            f"  c={row['concurrency']:<3d} floor {row['floor']['throughput_per_s']:8.1f} texts/s p50 "
            f"{_fmt_ms(row['floor']['p50_ms'])} p99 {_fmt_ms(row['floor']['p99_ms'])} | model "
            f"{served.get('throughput_per_s', math.nan):8.1f} texts/s p50 {_fmt_ms(served.get('p50_ms'))}"
            f" | server CPU-ms per text: floor {_fmt_ms(row['floor_cpu_ms_per_text'])}, model "
            f"{_fmt_ms(row['served_cpu_ms_per_text'])}"
        )
    return [*lines, ""]


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _gpu_line(result: BenchResult) -> str:
    gpus = ", ".join(f"{g['device_id']}: {g['name']}" for g in result.machine.get("gpus", [])) or "none seen"
    return (
        f"device: GPU ({gpus}): in-process on ONNX Runtime's CUDA provider, the served encoder on KIND_GPU "
        f"instances, PyTorch on {result.baseline_device}; the GFLOP/s peak fractions below are the CPU's"
    )


def _peak_line(result: BenchResult) -> str:
    peak = result.peak
    tokens = result.corpus["tokens_mean"]
    return (
        f"GFLOP/s (estimate: {result.cost.flop_per_token(tokens) / 1e6:.1f} MFLOP/token at {tokens:.0f} tokens, "
        f"real tokens only) vs peak of {peak.cores} server core(s) of {peak.model} at {peak.clock_ghz:.2f} GHz "
        f"({peak.clock_source}): fp32 {peak.isa} {peak.fp32_flop_per_cycle} FLOP/cycle = {peak.fp32_gflops:.0f} "
        f"GFLOP/s; int8 {peak.int8_isa} {peak.int8_op_per_cycle} op/cycle = {peak.int8_gops:.0f} GOP/s"
    )


def plot(result: BenchResult, path: Path) -> Path:
    """Latency against throughput, one line per variant: p50 solid, p99 dashed."""
    figure, axes = pyplot().subplots(figsize=(9, 5.5), dpi=110)
    for variant in VARIANTS:
        points: list[Point] = sorted(
            (p for p in result.points if p.variant == variant and p.setting != "rate" and p.samples),
            key=lambda p: p.value,
        )
        if not points:
            continue
        x = [p.throughput_per_s for p in points]
        color = COLORS[variant]
        axes.plot(x, [p.p50_ms for p in points], "o-", color=color, label=f"{TITLES[variant]} p50")
        axes.plot(x, [p.p99_ms for p in points], "x--", color=color, alpha=0.6, label=f"{variant} p99")
        for point in points:
            axes.annotate(point.label, (point.throughput_per_s, point.p50_ms), textcoords="offset points",
                          xytext=(4, 4), fontsize=7, color=color)  # fmt: skip
    for point in (p for p in result.points if p.setting == "rate"):
        axes.plot([point.throughput_per_s], [point.p99_ms], "D", color=COLORS[point.variant],
                  label=f"p99 at half load (open loop, {point.value:.0f}/s)")  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("throughput (texts/s)")
    axes.set_ylabel("latency (ms, log)")
    axes.set_title(f"{result.files.name} ({result.files.precision}) on {result.split.describe()}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return save(figure, path)


def write(result: BenchResult, summary: dict[str, Any], report_dir: Path) -> dict[str, Path]:
    """Write summary.json, the PNG plot and the table into ``report_dir``; return their paths."""
    summary_path = write_summary(summary, report_dir)
    table_path = report_dir / "report.txt"
    table_path.write_text(table(result, summary) + "\n")
    return {"summary": summary_path, "plot": plot(result, report_dir / PLOT_FILE), "table": table_path}
