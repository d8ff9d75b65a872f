"""The benchmark's summary, table and plot from measured points (no servers needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tritonstack.bench import report
from tritonstack.bench.hardware import EncoderCost, cpu_peak
from tritonstack.bench.results import BASELINE, INPROCESS, SERVED, Point, summarize_rounds
from tritonstack.bench.runner import BenchResult, BenchSettings
from tritonstack.bench.summary import summarize_run
from tritonstack.measure import cpus
from tritonstack.measure.samples import Round
from tritonstack.measure.served_files import ServedFiles
from tritonstack.measure.triton_stats import CounterDeltas, Counters, breakdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000


def _point(variant: str, setting: str, value: float, per_s: float, latency_s: float, *, cpu: float = 0.9) -> Point:
    latency_us = latency_s * 1e6
    rounds = [Round(tuple([latency_us] * 50 + [latency_us * 3]), 1.0, int(per_s), int(per_s) * 40, server_cpu_s=cpu)]
    point = summarize_rounds(variant, setting, value, rounds, client_cores=1, server_cores=1)
    if variant == SERVED:
        window = CounterDeltas(
            1.0,
            {
                "m": Counters(requests=100, request_ns=100 * 8 * MS),
                "m_tokenizer": Counters(100, 0, 100 * MS, 200 * MS, 100, 20, 40 * MS),
                "m_encoder": Counters(100, 0, 300 * MS, 400 * MS, 100, 10, 500 * MS),
            },
        )
        point.details.update(breakdown(window, "m", point.mean_ms))
    return point


@pytest.fixture()
def result(tmp_path: Path) -> BenchResult:
    points = [
        _point(INPROCESS, "batch", 1, 100, 0.010),
        _point(INPROCESS, "batch", 16, 400, 0.040),
        _point(SERVED, "concurrency", 1, 60, 0.016),
        _point(SERVED, "concurrency", 16, 300, 0.050),
        _point(SERVED, "rate", 150, 150, 0.030),
        _point(BASELINE, "concurrency", 1, 30, 0.033),
        _point(BASELINE, "concurrency", 4, 35, 0.110),
    ]
    points[1].details.update({"tokenize_ms_per_text": 0.5, "encode_ms_per_text": 2.0})
    return BenchResult(
        settings=BenchSettings(model_dir=tmp_path, repository=tmp_path, name="m", report_dir=tmp_path / "report"),
        split=cpus.CpuSplit("pinned", (0,), (1,)),
        files=ServedFiles(
            "m", tmp_path / "model.onnx", tmp_path, ("input_ids",), 128, "int8", {"encoder_intra_op_threads": 0}
        ),
        peak=cpu_peak(1, cpuinfo="flags\t: avx2 fma\n", max_mhz=2000),
        cost=EncoderCost(6, 384, 1536),
        corpus={"texts": 64, "seed": 0, "words_min": 5, "words_max": 120, "tokens_mean": 40.0, "tokens_max": 150},
        points=points,
        machine={"logical_cpus": 2, "load_average_1m_before": 0.3},
    )


def test_ratios_come_from_the_best_measured_points(result: BenchResult) -> None:
    summary = summarize_run(result)
    measured = {}
    for point in summary["points"]:
        if point["setting"] != "rate":
            measured[point["variant"]] = max(measured.get(point["variant"], 0), point["throughput_per_s"])
    assert summary["served_over_inprocess"] == pytest.approx(measured[SERVED] / measured[INPROCESS])
    assert summary["served_over_baseline"] == pytest.approx(measured[SERVED] / measured[BASELINE])
    assert summary["best"][SERVED]["label"] == "c=16"  # the open-loop point never counts as "best"
    assert summary["inprocess_single_request_ms"] == pytest.approx(summary["points"][0]["p50_ms"])
    assert summary["half_load"]["rate_per_s"] == 150


def test_a_thread_count_above_the_server_cores_is_called_out(result: BenchResult) -> None:
    result.files.knobs["encoder_intra_op_threads"] = 4  # on one server core
    targets = {t["name"]: t for t in summarize_run(result)["targets"]}
    explain = " ".join(targets["served_over_inprocess"]["explain"])
    assert "1 encoder instance(s) x intra_op_thread_count 4 exceed the 1 server core(s)" in explain


def test_the_busy_time_of_several_encoder_instances_is_not_compared_with_in_process(result: BenchResult) -> None:
    result.files.knobs["encoder_instances"] = 2  # their busy time overlaps on the shared core
    targets = {t["name"]: t for t in summarize_run(result)["targets"]}
    explain = " ".join(targets["served_over_inprocess"]["explain"])
    assert "x the work for the same texts" not in explain
    assert "encoder: mean batch 10.0" in explain  # Triton's per-model figures are still printed


def test_targets_report_values_and_explain_the_misses(result: BenchResult) -> None:
    summary = summarize_run(result)
    targets = {t["name"]: t for t in summary["targets"]}
    assert targets["served_over_inprocess"]["value"] == pytest.approx(0.75)
    assert targets["served_over_inprocess"]["met"] is False
    explain = " ".join(targets["served_over_inprocess"]["explain"])
    assert "encoder queue 3.0 + compute 4.0" in explain and "largest: client" in explain
    assert "encoder: mean batch 10.0, busy 50%" in explain
    # 5 ms per text in Triton (500 ms busy / 100 texts) vs 2 ms in-process at b=16, the batch closest to 10
    assert (
        "encoder computes 5.00 ms per text in Triton at mean batch 10.0 against 2.00 ms in-process at b=16" in explain
    )
    assert "intra_op_thread_count" not in explain  # absent: the backend shares the server cores among instances
    assert targets["served_over_baseline"]["met"] is True and targets["served_over_baseline"]["explain"] == []
    half = targets["half_load_p99_over_single_request"]
    assert half["value"] == pytest.approx(summary["half_load"]["p99_ms"] / summary["inprocess_single_request_ms"])
    assert half["value"] > 5 and half["met"] is False and half["explain"]


def test_gflops_count_real_tokens_against_the_peak(result: BenchResult) -> None:
    figures = summarize_run(result)["gflops"][SERVED]
    flop_per_token = EncoderCost(6, 384, 1536).flop_per_token(40.0)
    assert figures["gflops"] == pytest.approx(300 * 40 * flop_per_token / 1e9)
    assert figures["fp32_peak_fraction"] == pytest.approx(figures["gflops"] / (2.0 * 32))


def test_report_writes_strict_json_a_real_png_and_the_table(result: BenchResult, tmp_path: Path) -> None:
    summary = summarize_run(result)
    paths = report.write(result, summary, tmp_path / "out")
    data = json.loads(paths["summary"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert {"served_over_inprocess", "served_over_baseline", "targets", "gflops", "cpu_split"} <= set(data)
    png = paths["plot"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    from PIL import Image

    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 300
    text = paths["table"].read_text()
    assert "served / in-process  = 0.75" in text and "MISSED" in text and "GFLOP/s" in text


def test_other_processes_on_the_machine_are_called_out(result: BenchResult) -> None:
    assert result.busy_warning() is None
    result.points[3] = dataclasses.replace(result.points[3], others_cpu=0.4)
    warning = result.busy_warning() or ""
    assert "up to 40%" in warning and "served c=16" in warning
    assert "WARNING" in report.table(result, summarize_run(result))
