"""The measurement library: samples and percentiles, served files, cores, load generator, Triton's statistics."""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from pathlib import Path

import pytest

from tritonstack.in_triton import contract
from tritonstack.measure import cpus
from tritonstack.measure.load import closed_loop, open_loop
from tritonstack.measure.samples import (
    Round,
    Sample,
    completed_mean_ms,
    mean_ms,
    percentile_ms,
    read_samples_csv,
    summarize,
    window_width_s,
    windows,
    write_samples_csv,
)
from tritonstack.measure.served_files import locate
from tritonstack.measure.triton_stats import CounterDeltas, Counters, breakdown, parse_statistics
from tritonstack.repository.config import parse
from tritonstack.repository.writer import ExportedModel, write_text_model


def test_percentile_interpolates_between_ranks() -> None:
    latencies_us = [1000, 2000, 3000, 4000]
    assert percentile_ms(latencies_us, 0) == 1.0
    assert percentile_ms(latencies_us, 50) == 2.5
    assert percentile_ms(latencies_us, 100) == 4.0
    assert percentile_ms([], 99) is None
    # the same definition as the standard library's inclusive quantiles
    values = [137, 5, 901, 77, 12, 3000, 45, 610, 222, 18, 99]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in (1, 50, 95, 99):
        assert percentile_ms(values, p) == pytest.approx(cuts[p - 1] / 1000)


def test_percentiles_keep_microseconds() -> None:
    # Locust would report all of these as 0 or 1 ms.
    assert percentile_ms([250, 260, 270], 50) == 0.26


def test_the_bench_and_the_load_test_compute_one_percentile_from_one_unit() -> None:
    # bench's rounds and the load test's samples hold latencies in µs; both go through percentile_ms
    from tritonstack.bench.results import SERVED, summarize_rounds

    latencies_us = [1000, 2000, 3000, 4000]
    point = summarize_rounds(SERVED, "concurrency", 1, [Round(tuple(map(float, latencies_us)), 1.0, 4, 4)])
    summary = summarize([Sample(0.0, us) for us in latencies_us], 0.0, 1.0)
    assert point.p50_ms == summary.latency_ms[50.0] == percentile_ms(latencies_us, 50) == 2.5
    assert point.p99_ms == summary.latency_ms[99.0] == percentile_ms(latencies_us, 99)
    assert point.mean_ms == summary.mean_ms == mean_ms(latencies_us) == 2.5
    assert completed_mean_ms([Round((), 1.0, 4, 4, completed_latency_us=10_000.0)]) == 2.5
    assert mean_ms([]) is None and math.isnan(completed_mean_ms([]))


def test_summary_counts_failures_apart_from_latency() -> None:
    samples = [Sample(100.0 + i * 0.1, 1000 * (i + 1)) for i in range(10)]
    samples.append(Sample(100.5, 5, "DeadlineExceededError"))
    samples.append(Sample(99.0, 1))  # before the window: not counted
    summary = summarize(samples, 100.0, 102.0, percentiles=[99.9])
    assert summary.requests == 11
    assert summary.successes == 10
    assert summary.failures == 1
    assert summary.errors_by_type == {"DeadlineExceededError": 1}
    assert summary.error_ratio == pytest.approx(1 / 11)
    assert summary.throughput_rps == pytest.approx(5.0)
    assert summary.latency_ms[50.0] == 5.5  # the 5 µs failure does not pull it down
    assert 99.9 in summary.latency_ms
    assert summary.max_ms == 10.0


def test_empty_summary() -> None:
    summary = summarize([], 0.0, 1.0)
    assert summary.requests == 0
    assert summary.error_ratio is None
    assert summary.latency_ms[99.0] is None


def test_windows_split_the_run() -> None:
    samples = [
        Sample(10.0 + t, 1000, "success" if t != 2.5 else "ServerUnavailableError") for t in (0.1, 0.2, 1.5, 2.5)
    ]
    series = windows(samples, 10.0, 13.0, 1.0, [50.0])
    assert [w.successes for w in series] == [2, 1, 0]
    assert [w.failures for w in series] == [0, 0, 1]
    assert series[2].latency_ms[50.0] is None
    assert window_width_s(30) == 1.0
    assert window_width_s(600) == 10.0


def test_csv_round_trip(tmp_path: Path) -> None:
    samples = [Sample(1700000000.123456, 1234, "success", "w1"), Sample(1700000000.5, 7, "ModelNotFoundError")]
    write_samples_csv(samples, tmp_path / "s.csv")
    assert read_samples_csv(tmp_path / "s.csv") == samples


def test_csv_keeps_the_kind_and_reads_files_written_before_it(tmp_path: Path) -> None:
    samples = [Sample(1.5, 10, "success", "w1", "repeat"), Sample(2.5, 20, "success", "w2", "unique")]
    write_samples_csv(samples, tmp_path / "s.csv")
    assert read_samples_csv(tmp_path / "s.csv") == samples
    (tmp_path / "old.csv").write_text("start_s,latency_us,outcome,worker\n1.500000,10,success,local\n")
    assert read_samples_csv(tmp_path / "old.csv") == [Sample(1.5, 10, "success", "local", "")]
    (tmp_path / "bad.csv").write_text("start,latency\n1,2\n")
    with pytest.raises(ValueError, match="expected columns"):
        read_samples_csv(tmp_path / "bad.csv")


# --- the served files ---------------------------------------------------------------------------


def _repository(tmp_path: Path, precision: str, recipe: str | None, max_rows_per_call: int = 0) -> Path:
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")  # locate reads configs only
    (tmp_path / "model.onnx").write_bytes(b"")
    model = ExportedModel(
        name="m",
        task="feature-extraction",
        onnx_path=tmp_path / "model.onnx",
        tokenizer_dir=tokenizer,
        input_names=("input_ids", "attention_mask"),
        output_name="sentence_embedding",
        output_dim=8,
        labels=(),
        max_batch_size=8,
        max_sequence_length=32,
        precision=precision,
        recipe=recipe,
        max_rows_per_call=max_rows_per_call,
    )
    write_text_model(tmp_path / "repo", model)
    return tmp_path / "repo"


def test_the_precision_comes_from_the_encoder_config(tmp_path: Path) -> None:
    from google.protobuf import text_format

    repository = _repository(tmp_path, "int8", "blockwise32_optimized")
    assert locate(repository, "m").precision == "int8 blockwise32_optimized"
    config_path = repository / contract.encoder_name("m") / "config.pbtxt"
    config = parse(config_path.read_text())
    del config.parameters[contract.RECIPE_PARAMETER]
    config_path.write_text(text_format.MessageToString(config))
    assert locate(repository, "m").precision == "int8"
    del config.parameters[contract.PRECISION_PARAMETER]  # written before encoders recorded it
    config_path.write_text(text_format.MessageToString(config))
    assert locate(repository, "m").precision == "unknown"


def test_the_rows_per_call_cap_comes_from_the_encoder_config(tmp_path: Path) -> None:
    files = locate(_repository(tmp_path, "int8", "smoothed_a0.75_fp32x2", max_rows_per_call=1), "m")
    assert files.max_rows_per_call == 1 and files.knobs["encoder_max_rows_per_call"] == 1
    (tmp_path / "b").mkdir()
    uncapped = locate(_repository(tmp_path / "b", "int8", "blockwise32_optimized"), "m")
    assert uncapped.max_rows_per_call == 0 and "encoder_max_rows_per_call" not in uncapped.knobs


# --- cores ------------------------------------------------------------------------------------


def test_pinned_split_gives_the_load_generator_a_quarter_of_the_cores() -> None:
    assert cpus.plan("pinned", {0, 1}) == cpus.CpuSplit("pinned", (0,), (1,))
    split = cpus.plan("pinned", set(range(8)))
    assert split.server == (0, 1, 2, 3, 4, 5) and split.client == (6, 7)
    single = cpus.plan("pinned", {3})
    assert single.mode == "shared" and "one core" in single.describe()
    assert cpus.plan("shared", {0, 1}).server == cpus.plan("shared", {0, 1}).client == (0, 1)
    with pytest.raises(ValueError, match="unknown cpu split"):
        cpus.plan("half", {0, 1})


def test_pinned_moves_every_thread_and_restores_the_mask() -> None:
    before = os.sched_getaffinity(0)
    target = (min(before),)
    with cpus.pinned(target):
        for tid in os.listdir("/proc/self/task"):
            assert os.sched_getaffinity(int(tid)) == set(target)
    assert os.sched_getaffinity(0) == before


def test_pin_group_moves_threads_that_pinned_themselves_elsewhere() -> None:
    import subprocess
    import sys

    cores = sorted(os.sched_getaffinity(0))
    # the child pins one of its threads to the last core, as ONNX Runtime does with its pool threads
    code = (
        "import os, threading, time; e = threading.Event()\n"
        f"def run():\n    os.sched_setaffinity(0, {{{cores[-1]}}}); e.set(); time.sleep(30)\n"
        "threading.Thread(target=run, daemon=True).start(); e.wait(); print('ready', flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        target = (cores[0],)
        assert cpus.pin_group(child.pid, target) >= (1 if len(cores) > 1 else 0)
        masks = {tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir(f"/proc/{child.pid}/task")}
        assert masks == {target}
        assert cpus.pin_group(child.pid, target) == 0
    finally:
        child.kill()
        child.wait()


def test_group_cpu_counts_this_process_group() -> None:
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpus.group_cpu_s(os.getpgid(0)) >= 0.05


# --- load generator ---------------------------------------------------------------------------


def test_closed_loop_measures_throughput_and_latency_of_the_window() -> None:
    async def send(index: int) -> None:
        await asyncio.sleep(0.01)

    result, probe = asyncio.run(closed_loop(send, [3] * 10, 4, warmup_s=0.1, duration_s=0.6))
    assert probe is None
    # 4 callers x 10 ms: at most 400 per second; a loaded machine only makes it slower
    assert 100 < result.throughput_per_s <= 420
    assert min(result.latencies_us) >= 10_000
    assert result.tokens == 3 * result.completed and result.errors == 0
    # a closed loop samples latency over the same completed calls
    assert result.completed_latency_us == pytest.approx(sum(result.latencies_us))
    assert result.machine_cpu_s is not None and result.client_cpu_s is not None
    assert result.elapsed_s == pytest.approx(0.6, abs=0.1)


def test_closed_loop_stretches_a_window_too_short_for_slow_calls() -> None:
    async def send(index: int) -> None:
        await asyncio.sleep(0.15)

    result, _ = asyncio.run(closed_loop(send, [1] * 4, 2, warmup_s=0.0, duration_s=0.1, max_duration_factor=20))
    assert result.completed >= 4  # 2 calls per caller, not the 0 or 2 a 0.1 s window would catch
    assert result.elapsed_s > 0.25
    capped, _ = asyncio.run(closed_loop(send, [1] * 4, 2, warmup_s=0.0, duration_s=0.1, max_duration_factor=1))
    assert capped.elapsed_s < 0.14


def test_closed_loop_counts_failures_as_errors_not_completions() -> None:
    async def send(index: int) -> None:
        await asyncio.sleep(0.002)
        if index % 2:
            raise RuntimeError("odd text")

    result, _ = asyncio.run(closed_loop(send, [1] * 4, 2, warmup_s=0.05, duration_s=0.3))
    assert result.errors > 0 and result.completed > 0
    assert result.first_error == "RuntimeError: odd text"
    assert len(result.latencies_us) == result.completed


def test_closed_loop_ends_even_when_every_call_fails_at_once() -> None:
    async def send(index: int) -> None:
        raise ConnectionError("server gone")  # never awaits: the caller must still yield

    result, _ = asyncio.run(closed_loop(send, [1], 4, warmup_s=0.0, duration_s=0.2, max_duration_factor=1))
    assert result.completed == 0 and result.errors > 0 and not result.latencies_us
    assert result.first_error == "ConnectionError: server gone"


def test_open_loop_latency_runs_from_the_scheduled_arrival() -> None:
    # One request at a time, 20 ms each (50/s) offered 100/s: a closed loop would hide the queue,
    # the open loop's latency must grow with it.
    lock = asyncio.Lock()

    async def send(index: int) -> None:
        async with lock:
            await asyncio.sleep(0.02)

    result, _ = asyncio.run(open_loop(send, [1] * 8, 100.0, warmup_s=0.0, duration_s=1.0, seed=1))
    assert result.throughput_per_s <= 55
    assert max(result.latencies_us) > 200_000


def test_open_loop_offers_the_requested_rate() -> None:
    async def send(index: int) -> None:
        await asyncio.sleep(0.002)

    result, _ = asyncio.run(open_loop(send, [1] * 8, 200.0, warmup_s=0.1, duration_s=1.0, seed=3))
    assert 120 < result.throughput_per_s < 280
    assert min(result.latencies_us) >= 2_000


# --- Triton statistics ------------------------------------------------------------------------


def _stat(count: int, ns: int) -> dict[str, str]:
    return {"count": str(count), "ns": str(ns)}


def _model(name: str, requests: int, executions: int, queue_ns: int, infer_ns: int, batch: int) -> dict[str, object]:
    return {
        "name": name,
        "version": "1",
        "inference_count": str(requests),
        "execution_count": str(executions),
        "inference_stats": {
            "success": _stat(requests, 10 * infer_ns),
            "queue": _stat(requests, queue_ns),
            "compute_input": _stat(requests, 0),
            "compute_infer": _stat(requests, infer_ns),
            "compute_output": _stat(requests, 0),
        },
        "batch_stats": [{"batch_size": str(batch), "compute_infer": _stat(executions, infer_ns // batch)}],
    }


def test_statistics_parse_into_per_model_counters() -> None:
    parsed = parse_statistics({"model_stats": [_model("m_encoder", 40, 10, 4_000_000, 80_000_000, 4)]})
    assert parsed["m_encoder"] == Counters(40, 800_000_000, 4_000_000, 80_000_000, 40, 10, 20_000_000)


def test_breakdown_splits_the_call_into_client_queue_compute_and_ensemble() -> None:
    ms = 1_000_000
    window = CounterDeltas(
        2.0,
        {
            "m": Counters(requests=100, request_ns=100 * 10 * ms),
            "m_tokenizer": Counters(100, 0, 100 * 1 * ms, 100 * 2 * ms, 100, 25, 25 * 2 * ms),
            "m_encoder": Counters(100, 0, 100 * 3 * ms, 100 * 3 * ms, 100, 10, 10 * 3 * ms),
        },
    )
    view = breakdown(window, "m", client_mean_ms=12.0)
    parts = view["parts_ms"]
    assert view["server_ms"] == pytest.approx(10.0)
    assert parts["client"] == pytest.approx(2.0)
    assert (parts["tokenizer_queue"], parts["tokenizer_compute"]) == (pytest.approx(1.0), pytest.approx(2.0))
    assert (parts["encoder_queue"], parts["encoder_compute"]) == (pytest.approx(3.0), pytest.approx(3.0))
    assert parts["ensemble"] == pytest.approx(1.0)
    encoder = view["models"]["encoder"]
    assert encoder["batch_size"] == pytest.approx(10.0)
    assert encoder["busy"] == pytest.approx(30e-3 / 2.0)
    assert encoder["compute_ms_per_text"] == pytest.approx(0.3)


def test_breakdown_of_the_fused_layout_has_its_one_step_instead_of_tokenizer_and_encoder() -> None:
    ms = 1_000_000
    window = CounterDeltas(
        2.0,
        {
            "m": Counters(requests=100, request_ns=100 * 10 * ms),
            "m_fused": Counters(100, 0, 100 * 4 * ms, 100 * 5 * ms, 100, 20, 20 * 5 * ms),
            "m_encoder": Counters(),  # idle in this layout
        },
    )
    view = breakdown(window, "m", client_mean_ms=12.0, instances={"m_fused": 2})
    parts = view["parts_ms"]
    assert set(parts) == {"client", "fused_queue", "fused_compute", "ensemble"}
    assert (parts["fused_queue"], parts["fused_compute"], parts["ensemble"]) == (
        pytest.approx(4.0), pytest.approx(5.0), pytest.approx(1.0),
    )  # fmt: skip
    assert set(view["models"]) == {"text_in", "fused"}
    assert view["models"]["fused"]["batch_size"] == pytest.approx(5.0)
    assert view["models"]["fused"]["busy"] == pytest.approx(100e-3 / (2.0 * 2))
