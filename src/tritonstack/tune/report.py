"""What ``tune`` leaves behind: the ranked table, ``tune.json`` and ``pareto.png`` in the report folder."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tritonstack._plots import pyplot, save
from tritonstack.in_triton import contract
from tritonstack.measure.json_safe import json_safe
from tritonstack.tune.apply import Written
from tritonstack.tune.knobs import Knobs
from tritonstack.tune.runner import Ranked, TuneResult
from tritonstack.tune.score import HalfLoadCheck, Score, SweepPoint

TABLE_FILE = "ranked.txt"
JSON_FILE = "tune.json"
PLOT_FILE = "pareto.png"


def _ms(point_latency: float | None) -> str:
    return "-" if point_latency is None or not math.isfinite(point_latency) else f"{point_latency:.0f}"


def _batch(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def knob_cells(knobs: Knobs) -> list[str]:
    """The knobs as the table's cells, in the order of ``KNOB_HEADERS``."""
    # 0: the backend's default, every server core for one instance, an equal share of them for several
    threads = knobs.encoder_threads or ("all" if knobs.encoder_instances == 1 else "share")
    fused = knobs.layout == contract.FUSED_LAYOUT
    return [
        knobs.layout[:3],
        str(knobs.rows_per_call or "all"),
        ",".join(str(b) for b in knobs.preferred_batch) or "-",
        str(knobs.encoder_delay_us),
        "-" if fused else str(knobs.tokenizer_delay_us),
        f"{knobs.encoder_instances}x{threads}",
        "-" if fused else str(knobs.tokenizer_instances),
        f"{knobs.max_padding_waste:g}",
    ]


KNOB_HEADERS = ["lay", "rows", "pref", "enc us", "tok us", "enc ixt", "tok", "waste"]


def _p99(point: SweepPoint | None) -> str:
    return _ms(point.latency_ms.get(99.0)) if point else "-"


def _row(index: int, ranked: Ranked, result: TuneResult) -> str:
    score: Score = ranked.score
    point = score.point
    mark = "*" if result.winner is not None and ranked.knobs == result.winner.knobs else " "
    mark += "s" if ranked.knobs == result.start else " "
    verdict = f"{score.throughput_per_s:8.1f}" if score.held else f"{'missed':>8}"
    fused = ranked.knobs.layout == contract.FUSED_LAYOUT
    tokenizer_role, encoder_role = (None, "fused") if fused else ("tokenizer", "encoder")
    cells = [
        f"{index:>3}{mark}",
        verdict,
        f"{point.concurrency:>4}" if point else f"{'-':>4}",
        f"{_ms(point.latency_ms.get(50.0)) if point else '-':>6}",
        f"{_p99(point):>6}",
        f"{_p99(score.half_load):>6}",
        f"{100 * point.error_ratio:5.1f}" if point else f"{'-':>5}",
        f"{_batch(point.batch.get(tokenizer_role)) if point and tokenizer_role else '-':>5}",
        f"{_batch(point.batch.get(encoder_role)) if point else '-':>5}",
        f"{ranked.trials:>2}",
        f"{_spread(ranked.measured):>11}",
    ]
    knobs = knob_cells(ranked.knobs)
    return " ".join(cells) + "  " + " ".join(f"{c:>{len(h)}}" for c, h in zip(knobs, KNOB_HEADERS, strict=True))


def _cores_note(result: TuneResult) -> str:
    """What the written thread counts assume."""
    return (
        f"server on {len(result.split.server)} of this machine's {os.cpu_count()} cores ({result.split.mode});"
        " threads 'all': every core the server gets where it runs, 'share': those cores split equally among the"
        " instances"
    )


def _objectives(result: TuneResult) -> str:
    objectives = result.settings.slo.objectives
    parts = [f"p{q:g} <= {ms:g} ms" for q, ms in sorted(objectives.latency_ms.items())]
    if objectives.max_error_ratio is not None:
        parts.append(f"errors <= {100 * objectives.max_error_ratio:g}%")
    return ", ".join(parts) or "none on latency or errors"


def _changes(knobs: Knobs, start: Knobs) -> str:
    return ", ".join(f"{k} {old} -> {new}" for k, (old, new) in knobs.changes_from(start).items())


def _spread(measured: tuple[float, ...]) -> str:
    return f"{min(measured):.1f}" if len(measured) == 1 else f"{min(measured):.1f}-{max(measured):.1f}"


def _half_load_figures(check: HalfLoadCheck) -> str:
    chosen = "none" if not math.isfinite(check.chosen_p99_ms) else f"{check.chosen_p99_ms:.1f} ms"
    return (
        f"p99 {chosen} (mean of {check.chosen_measurements}) against the export's {check.start_p99_ms:.1f} ms "
        f"(highest of {check.start_measurements})"
    )


def _winner_lines(result: TuneResult, written: Written | None, dry_run: bool) -> list[str]:
    winner, start, best = result.winner, result.start_ranked, result.best
    if winner is None:
        closest = result.ranking[0].score.describe() if result.ranking else "nothing measured"
        return [
            "no config held the SLO's latency and error objectives: nothing written",
            f"closest: {closest}",
        ]
    lines = []
    check = result.half_load_check
    if winner.knobs == result.start and check is not None and check.worse and best is not None:
        lines += [
            f"winner: the export's config ({winner.score.describe()}): nothing to write",
            f"the best other, {_changes(best.knobs, result.start)}, beat it on throughput "
            f"(req/s {_spread(best.measured)} against {_spread(winner.measured)}) but not at half load: "
            f"{_half_load_figures(check)}; tune never writes a config whose half-load point is worse",
        ]
    elif winner.knobs == result.start:
        lines.append(f"winner: the export's config ({winner.score.describe()}): nothing to write")
        if best is not None and best.knobs != result.start:
            lines.append(
                f"the best other, {_changes(best.knobs, result.start)}, did not beat it by "
                f"{100 * result.settings.min_gain:g}% on the mean and in every measurement "
                f"(req/s {_spread(best.measured)} against {_spread(winner.measured)})"
            )
    else:
        changes = _changes(winner.knobs, result.start)
        against = ""
        if start is not None and start.score.held and start.score.throughput_per_s > 0:
            factor = winner.score.throughput_per_s / start.score.throughput_per_s
            against = f" against the export's {start.score.throughput_per_s:.1f} req/s ({factor:.2f}x)"
        lines.append(f"winner: {changes}: {winner.score.describe()}{against}")
        if check is not None:
            lines.append(f"half load: {_half_load_figures(check)}")
    minimum = result.settings.slo.objectives.min_throughput_rps
    if minimum is not None and winner.score.throughput_per_s < minimum:
        lines.append(f"WARNING: below the SLO's min_throughput_rps {minimum:g}: this machine cannot carry that load")
    if written is not None:
        lines.append(f"wrote {', '.join(str(p) for p in written.configs)}")
        lines.append(f"previous configs: {written.previous} (undo: {written.undo_command})")
    elif dry_run and winner.knobs != result.start:
        lines.append("--dry-run: nothing written")
    return lines


def table(result: TuneResult, written: Written | None = None, *, dry_run: bool = False) -> str:
    """The human-readable report: context, the ranked configs, the verdict."""
    settings = result.settings
    workload = result.workload
    timing = settings.timing
    stop = "the budget ran out" if result.exhausted else "no knob paid any more"
    header = (
        f"{'rank':>5} {'req/s':>8} {'c':>4} {'p50ms':>6} {'p99ms':>6} {'hl p99':>6} {'err%':>5} {'tok b':>5}"
        f" {'enc b':>5} {'n':>2} {'each':>11}  " + " ".join(KNOB_HEADERS)
    )
    lines = [
        f"tritonstack tune -- {settings.name} ({result.precision}) in {settings.repository}",
        f"SLO {settings.slo.source}: {_objectives(result)}",
        f"load: closed loop, {workload['texts_per_request']} text(s) per request "
        f"({workload['tokens_per_request_mean']:.1f} tokens mean, {workload['tokens_per_request_max']} max), "
        f"concurrency levels {list(result.levels)}, {timing.warmup_s:g} s warm-up + {timing.duration_s:g} s per point",
        "      then the half-load point: open loop, Poisson arrivals at half the best throughput that held",
        f"cores: {result.split.describe()}",
        f"search: {len(result.trials)} measurements of {len(result.ranking)} configs in {result.elapsed_s:.0f} s "
        f"of a {settings.budget_s:g} s budget; stopped because {stop}",
        "",
        header,
        *(_row(i, r, result) for i, r in enumerate(result.ranking, 1)),
        "  * the winner, s the export's config; req/s: highest throughput at which every latency and error",
        "    objective held (c: its concurrency; p50/p99/err% and the achieved batch per step, rows per",
        "    execution, at that point; 'missed': at no level, figures of the closest point, or the half-load",
        "    point missed); hl p99: p99 of the half-load point (Poisson arrivals at half that throughput,",
        "    latency from each arrival), which must hold the same objectives; n: measurements, each: their",
        "    lowest-highest req/s, req/s is their mean (the final round measures the best and the export's",
        "    config once more: those rank first; the best wins if it beat the export's config in every",
        "    measurement);",
        "    lay: layout, ens(emble: tokenizer -> encoder models) or fus(ed: one Python model tokenizes and runs",
        "    the encoder; its batch is in 'enc b', its knobs in the encoder columns; docs/export.md);",
        "    rows: most rows per ONNX Runtime call (all: the whole Triton batch); pref: preferred_batch_size;",
        "    enc/tok us: max_queue_delay; enc ixt: encoder instances x intra-op threads; tok: tokenizer instances;",
        "    waste: max_padding_waste",
        f"    {_cores_note(result)}",
        "",
        *_winner_lines(result, written, dry_run),
    ]
    return "\n".join(lines)


def to_json(result: TuneResult, written: Written | None, dry_run: bool) -> dict[str, Any]:
    winner = result.winner
    return json_safe(
        {
            "model": result.settings.name,
            "repository": str(result.settings.repository),
            "precision": result.precision,
            "one_row_per_call_required": result.rows_fixed,
            "slo": {
                "source": result.settings.slo.source,
                "latency_ms": {f"p{q:g}": ms for q, ms in result.settings.slo.objectives.latency_ms.items()},
                "max_error_ratio": result.settings.slo.objectives.max_error_ratio,
                "min_throughput_rps": result.settings.slo.objectives.min_throughput_rps,
            },
            "workload": result.workload,
            "concurrency_levels": list(result.levels),
            "timing": {"warmup_s": result.settings.timing.warmup_s, "duration_s": result.settings.timing.duration_s},
            "cpu_split": result.split.to_dict(),
            "budget_s": result.settings.budget_s,
            "elapsed_s": result.elapsed_s,
            "stopped_by_budget": result.exhausted,
            "started": result.started,
            "start": result.start.to_dict(),
            "winner": winner.knobs.to_dict() if winner else None,
            "winner_req_per_s": winner.score.throughput_per_s if winner else None,
            # the best config against the export's at half load, where it beat it on throughput
            "half_load_check": _check_json(result),
            "dry_run": dry_run,
            "written": [str(p) for p in written.configs] if written else [],
            "previous_configs": str(written.previous) if written else None,
            "created": [str(p) for p in written.created] if written else [],
            "undo": written.undo_command if written else None,
            "ranking": [
                {
                    "rank": index,
                    "knobs": ranked.knobs.to_dict(),
                    "held": ranked.score.held,
                    "req_per_s": ranked.score.throughput_per_s,
                    "point": ranked.score.point.to_dict() if ranked.score.point else None,
                    "half_load": ranked.score.half_load.to_dict() if ranked.score.half_load else None,
                    "missed": dict(ranked.score.missed),
                    "measured_req_per_s": list(ranked.measured),
                    "half_load_p99_ms": list(ranked.half_load_p99_ms),
                }
                for index, ranked in enumerate(result.ranking, 1)
            ],
            "trials": [
                {
                    "number": trial.number,
                    "phase": trial.phase,
                    "knobs": trial.knobs.to_dict(),
                    "reloaded": list(trial.reloaded),
                    "at_s": trial.at_s,
                    "reload_s": trial.reload_s,
                    "cost_s": trial.cost_s,
                    "held": trial.score.held,
                    "req_per_s": trial.score.throughput_per_s,
                    "points": [p.to_dict() for p in trial.points],
                    "half_load": trial.half_load.to_dict() if trial.half_load else None,
                }
                for trial in result.trials
            ],
        }
    )


def _check_json(result: TuneResult) -> dict[str, Any] | None:
    check, best = result.half_load_check, result.best
    if check is None or best is None:
        return None
    return {
        "knobs": best.knobs.to_dict(),
        "p99_ms": check.chosen_p99_ms,
        "start_p99_ms": check.start_p99_ms,
        "worse": check.worse,
        "kept_start": result.kept_for_half_load,
    }


def plot(result: TuneResult, path: Path) -> Path:
    """p99 against throughput: every sweep point of every config, each config's scored point, the frontier,
    and the half-load points."""
    figure, axes = pyplot().subplots(figsize=(9, 5.5), dpi=110)
    everything = [(p.throughput_per_s, p.latency_ms.get(99.0, math.nan)) for t in result.trials for p in t.points]
    everything = [(x, y) for x, y in everything if math.isfinite(y)]
    if everything:
        xs, ys = zip(*everything, strict=True)
        axes.scatter(xs, ys, s=10, color="lightgray", label="every sweep point")
    half_loads = [(h.throughput_per_s, h.latency_ms.get(99.0, math.nan)) for t in result.trials if (h := t.half_load)]
    half_loads = [(x, y) for x, y in half_loads if math.isfinite(y)]
    if half_loads:
        rates, p99s = zip(*half_loads, strict=True)
        axes.scatter(rates, p99s, s=12, marker="^", color="tab:orange", alpha=0.6, label="half-load point (open loop)")
    frontier: list[tuple[float, float]] = []
    for x, y in sorted(everything, key=lambda xy: (xy[1], -xy[0])):  # by p99; keep what raises throughput
        if not frontier or x > frontier[-1][0]:
            frontier.append((x, y))
    if frontier:
        axes.plot(*zip(*frontier, strict=True), "-", color="tab:blue", alpha=0.5, label="Pareto frontier")
    labelled: set[str] = set()
    for ranked in result.ranking:
        point = ranked.score.point
        if point is None or not math.isfinite(point.latency_ms.get(99.0, math.nan)):
            continue
        held = ranked.score.held
        label = "a config's scored point (last measurement)" if held else "closest point of a config that missed"
        axes.scatter([point.throughput_per_s], [point.latency_ms[99.0]], s=22,
                     color="tab:blue" if held else "tab:red", marker="o" if held else "x",
                     label=None if label in labelled else label)  # fmt: skip
        labelled.add(label)
    for knobs, marker, label in ((result.start, "s", "the export's config"),
                                 (result.winner.knobs if result.winner else None, "*", "winner")):  # fmt: skip
        marked = next((r for r in result.ranking if r.knobs == knobs), None)
        if marked is not None and marked.score.point is not None:
            point = marked.score.point
            axes.scatter([point.throughput_per_s], [point.latency_ms[99.0]], s=140, marker=marker,
                         facecolors="none", edgecolors="black", label=label)  # fmt: skip
    bound = result.settings.slo.objectives.latency_ms.get(99.0)
    if bound is not None:
        axes.axhline(bound, color="tab:red", linestyle="--", alpha=0.6, label=f"SLO p99 {bound:g} ms")
    axes.set_yscale("log")
    axes.set_xlabel("throughput (requests/s)")
    axes.set_ylabel("p99 latency (ms, log)")
    axes.set_title(
        f"tune {result.settings.name} ({result.precision}): blue held the SLO, red x missed; {result.split.describe()}",
        fontsize=8,
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return save(figure, path)


def write(result: TuneResult, report_dir: Path, written: Written | None, *, dry_run: bool) -> dict[str, Path]:
    """Write the table, the JSON and the plot into ``report_dir``; return their paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    table_path = report_dir / TABLE_FILE
    table_path.write_text(table(result, written, dry_run=dry_run) + "\n")
    json_path = report_dir / JSON_FILE
    json_path.write_text(json.dumps(to_json(result, written, dry_run), indent=2, allow_nan=False) + "\n")
    return {"table": table_path, "json": json_path, "plot": plot(result, report_dir / PLOT_FILE)}
