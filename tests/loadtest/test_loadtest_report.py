"""The report directory from a synthetic run: files, plots, JSON, capacity table."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tritonstack.loadtest.report import capacity_table, default_report_dir, write_report
from tritonstack.loadtest.result import CapacityResult, CapacityStep, RunResult
from tritonstack.loadtest.verdict import evaluate
from tritonstack.measure.samples import Sample, read_samples_csv, summarize
from tritonstack.measure.slo import parse_slo
from tritonstack.measure.triton_metrics import Snapshot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SLO = parse_slo(
    {
        "model": "tiny",
        "load": {"users": 2, "duration": "5s"},
        "objectives": {"p50_ms": 4, "p99_ms": 20, "max_error_ratio": 0.1, "min_throughput_rps": 10},
    }
)


def _snapshots(t0: float, step: str = "tiny_encoder", idle: str = "tiny_fused") -> list[Snapshot]:
    """Six scrapes a second apart: 50 text-in requests a second, run by ``step``; ``idle`` is loaded, unused."""
    snapshots = []
    for i in range(6):
        requests = 50.0 * i
        snapshots.append(
            Snapshot(
                t0 + i,
                {
                    "nv_inference_request_success": {"tiny": requests, step: requests, idle: 0.0},
                    "nv_inference_count": {step: requests, idle: 0.0},
                    "nv_inference_exec_count": {step: requests / 2, idle: 0.0},
                    "nv_inference_queue_duration_us": {"tiny": 100 * requests, step: 300 * requests},
                    "nv_inference_compute_infer_duration_us": {"tiny": 900 * requests, step: 500 * requests},
                    "nv_inference_request_duration_us": {"tiny": 1200 * requests, step: 900 * requests},
                },
            )
        )
    return snapshots


def _result(with_capacity: bool = False, step: str = "tiny_encoder", idle: str = "tiny_fused") -> RunResult:
    rng = random.Random(0)
    t0 = 1_700_000_000.0
    samples = [Sample(t0 + i * 0.02, rng.randint(800, 9000), "success", "local") for i in range(250)]
    samples[40] = Sample(samples[40].start_s, 120, "ServerUnavailableError", "local")
    summary = summarize(samples, t0, t0 + 5.0, SLO.objectives.latency_ms)
    capacity = None
    if with_capacity:
        steps = [CapacityStep(u, summary, evaluate(SLO.objectives, summary, include_throughput=False)) for u in (1, 2)]
        capacity = CapacityResult(steps)
    return RunResult(
        slo=SLO,
        host="127.0.0.1:8001",
        samples=samples,
        summary=summary,
        checks=evaluate(SLO.objectives, summary),
        metrics_url="http://127.0.0.1:8002/metrics",
        snapshots=_snapshots(t0, step, idle),
        capacity=capacity,
    )


def test_report_files(tmp_path: Path) -> None:
    result = _result()
    index = write_report(result, tmp_path / "report")
    directory = index.parent
    for name in ("summary.json", "samples.csv", "server_metrics.csv", "index.html"):
        assert (directory / name).is_file(), name
    for name in ("latency.png", "throughput.png", "errors.png", "server.png"):
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name
        assert f"src='{name}'" in index.read_text()
    assert not (directory / "capacity.png").exists()

    summary = json.loads((directory / "summary.json").read_text())
    assert summary["passed"] is False  # p50 of uniform 0.8-9 ms is above 4 ms
    assert [c["key"] for c in summary["checks"] if not c["passed"]] == ["p50_ms"]
    assert summary["summary"]["requests"] == 250
    assert summary["summary"]["errors_by_type"] == {"ServerUnavailableError": 1}
    assert summary["server"]["models"]["tiny_encoder"]["batch_size"] == 2.0
    assert summary["server"]["models"]["tiny_encoder"]["queue_us_per_request"] == 300.0
    assert read_samples_csv(directory / "samples.csv") == [
        Sample(round(s.start_s, 6), s.latency_us, s.outcome, s.worker) for s in result.samples
    ]


@pytest.mark.parametrize(("step", "idle"), [("tiny_encoder", "tiny_fused"), ("tiny_fused", "tiny_encoder")])
def test_the_server_view_follows_the_step_that_ran_the_encoder(tmp_path: Path, step: str, idle: str) -> None:
    write_report(_result(step=step, idle=idle), tmp_path)
    models = json.loads((tmp_path / "summary.json").read_text())["server"]["models"]
    assert set(models) == {"tiny", step}  # the layout's encoding step, not the idle one
    assert models[step]["batch_size"] == 2.0


def test_capacity_report(tmp_path: Path) -> None:
    result = _result(with_capacity=True)
    write_report(result, tmp_path)
    assert (tmp_path / "capacity.png").read_bytes().startswith(PNG_MAGIC)
    table = capacity_table(result)
    assert table.splitlines()[0].split() == ["users", "req/s", "p50", "ms", "p99", "ms", "errors", "held"]
    assert "capacity: none" in table  # p50 broke at the first step
    assert json.loads((tmp_path / "summary.json").read_text())["capacity"]["steps"][0]["violated"] == ["p50_ms"]


def _cached_result() -> RunResult:
    """A run with half its requests repeated and a price: Triton counted 120 hits and 130 misses."""
    slo = parse_slo(
        {
            "model": "tiny",
            "load": {"users": 2, "duration": "5s"},
            "payload": {"repeat_ratio": 0.5, "hot_set": 8},
            "objectives": {"p99_ms": 20},
            "cost": {"price_per_hour_usd": 3.6},
        }
    )
    t0 = 1_700_000_000.0
    samples = [
        Sample(t0 + i * 0.02, 500 if i % 2 else 4000, "success", "local", "repeat" if i % 2 else "unique")
        for i in range(250)
    ]
    summary = summarize(samples, t0, t0 + 5.0, slo.objectives.latency_ms)
    snapshots = [
        Snapshot(
            t0 + i,
            {
                "nv_inference_request_success": {"tiny": 50.0 * i},
                "nv_cache_num_hits_per_model": {"tiny": 24.0 * i},
                "nv_cache_num_misses_per_model": {"tiny": 26.0 * i},
                "nv_cache_hit_duration_per_model": {"tiny": 240.0 * i},
                "nv_cache_miss_duration_per_model": {"tiny": 520.0 * i},
            },
        )
        for i in range(6)
    ]
    return RunResult(
        slo=slo, host="h:1", samples=samples, summary=summary, checks=evaluate(slo.objectives, summary),
        metrics_url="http://h:2/metrics", snapshots=snapshots,
    )  # fmt: skip


def test_cache_and_cost_sections(tmp_path: Path) -> None:
    result = _cached_result()
    index = write_report(result, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # 250 successes in 5 s = 50/s at $3.60/h = $0.001/s: $20 per million
    assert summary["cost"] == {
        "price_per_hour_usd": 3.6,
        "throughput_per_s": 50.0,
        "basis": "run",
        "usd_per_million": 20.0,
    }
    assert summary["slo"]["cost"] == {"price_per_hour_usd": 3.6}
    cache = summary["cache"]
    assert cache["server"] == {
        "hits": 120.0,
        "misses": 130.0,
        "hit_ratio": 0.48,
        "us_per_hit": 10.0,
        "us_per_miss": 20.0,
    }
    assert cache["requests"]["repeat"]["requests"] == 125 and cache["requests"]["repeat"]["share"] == 0.5
    assert cache["requests"]["repeat"]["latency_ms"]["p50"] == 0.5
    assert cache["requests"]["unique"]["latency_ms"]["p99"] == 4.0
    page = index.read_text()
    assert "Response cache" in page and "hit ratio 48.0%" in page and "$20" in page
    assert [s.kind for s in read_samples_csv(tmp_path / "samples.csv")][:2] == ["unique", "repeat"]


def test_capacity_cost_is_at_the_capacity_that_held() -> None:
    result = _cached_result()
    steps = [
        CapacityStep(1, result.summary, evaluate(result.slo.objectives, result.summary, include_throughput=False)),
        CapacityStep(2, summarize([], 0.0, 1.0), []),  # nothing succeeded: not held
    ]
    result.capacity = CapacityResult(steps)
    cost = result.cost
    assert cost is not None and (cost.basis, cost.throughput_per_s, cost.usd_per_million) == ("capacity", 50.0, 20.0)


def test_a_run_without_cache_or_price_has_neither_section(tmp_path: Path) -> None:
    write_report(_result(), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cache"] is None and summary["cost"] is None


def test_default_report_dir_is_timestamped() -> None:
    path = default_report_dir()
    assert path.parent == Path("reports") and path.name[:2] == "20"


def test_the_latency_plot_reads_both_20_ms_percentiles_and_a_1000_ms_slo() -> None:
    """A 1 000 ms bound over 15-25 ms percentiles: on the old linear axis the data were a flat line in its
    bottom 3 %; on the log axis they keep their shape in a readable band, and the bound is on the axis too."""
    from tritonstack.loadtest.plots import latency_figure, run_windows

    loose = parse_slo({"model": "tiny", "load": {"users": 2, "duration": "5s"},
                       "objectives": {"p50_ms": 500, "p99_ms": 1000}})  # fmt: skip
    rng = random.Random(1)
    t0 = 1_700_000_000.0
    samples = [Sample(t0 + i * 0.02, rng.randint(8_000, 25_000), "success", "local") for i in range(250)]
    summary = summarize(samples, t0, t0 + 5.0, loose.objectives.latency_ms)
    result = RunResult(slo=loose, host="h", samples=samples, summary=summary,
                       checks=evaluate(loose.objectives, summary))  # fmt: skip
    series = run_windows(result)
    figure = latency_figure(result, series)
    try:
        ax = figure.axes[0]
        assert ax.get_yscale() == "log"
        measured = [ms for w in series for ms in w.latency_ms.values() if ms is not None]
        low, high = ax.get_ylim()
        assert low <= min(measured) and max(measured) <= 1000 <= high  # every line on the axis
        assert high <= 1000 * 1.5 and low >= min(measured) / 1.5  # no empty decades around them

        def height(ms: float) -> float:  # 0 at the bottom of the axis, 1 at its top
            return float(ax.transAxes.inverted().transform(ax.transData.transform((0, ms)))[1])

        # p50 15 ms to p99 25 ms: on the linear axis up to the bound they spanned 1 % of its height, their top
        # at 2.4 %; here about a tenth of it, ten times more, their top above an eighth of the axis
        assert height(max(measured)) - height(min(measured)) >= 0.08
        assert height(max(measured)) >= 0.12
        figure.canvas.draw()
        labels = {t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high}
        assert {"20", "50", "100", "1000"} <= labels and not any("$" in t for t in labels)  # plain ms, not 10^n
    finally:
        from tritonstack._plots import pyplot

        pyplot().close(figure)
