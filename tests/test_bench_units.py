"""The benchmark's pure parts: texts, CPU peak, encoder cost, core split, load generator, statistics, summary."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tritonstack._cpu import parse_cpuinfo, read_cpuinfo
from tritonstack.bench import cpus
from tritonstack.bench.hardware import EncoderCost, cpu_peak, vector_rates
from tritonstack.bench.inprocess import InProcessModel, locate
from tritonstack.bench.load import closed_loop, open_loop
from tritonstack.bench.results import BASELINE, INPROCESS, SERVED, Round, best, summarize
from tritonstack.bench.texts import make_texts
from tritonstack.bench.triton_stats import Counters, Window, breakdown, parse_statistics
from tritonstack.in_triton import contract
from tritonstack.repository.config import parse
from tritonstack.repository.writer import ExportedModel, write_text_model

# --- texts ------------------------------------------------------------------------------------


def test_texts_are_fixed_by_the_seed_and_span_the_requested_lengths() -> None:
    texts = make_texts(300, seed=7, min_words=5, max_words=120)
    assert texts == make_texts(300, seed=7, min_words=5, max_words=120)
    assert texts != make_texts(300, seed=8, min_words=5, max_words=120)
    words = [len(t.split()) for t in texts]
    assert min(words) >= 5 and max(words) <= 120
    assert min(words) < 20 and max(words) > 100  # mixed lengths, not a narrow band


# --- hardware ---------------------------------------------------------------------------------

CPUINFO = """processor\t: 0
model name\t: Test CPU
cpu MHz\t\t: 2100.000
flags\t\t: fpu sse avx avx2 fma {extra}
processor\t: 1
model name\t: Test CPU
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse avx avx2 fma {extra}
"""


def test_peak_of_an_avx512_vnni_core_is_64_fp32_flop_and_256_int8_op_per_cycle() -> None:
    peak = cpu_peak(2, cpuinfo=CPUINFO.format(extra="avx512f avx512_vnni"), max_mhz=3000)
    assert (peak.isa, peak.fp32_flop_per_cycle, peak.int8_op_per_cycle) == ("AVX-512", 64, 256)
    assert peak.fp32_gflops == pytest.approx(2 * 3.0 * 64)
    assert peak.int8_gops == pytest.approx(2 * 3.0 * 256)
    assert peak.clock_source == "lscpu CPU max MHz"


def test_peak_without_max_clock_takes_the_fastest_cpuinfo_clock() -> None:
    peak = cpu_peak(1, cpuinfo=CPUINFO.format(extra=""))
    assert peak.clock_ghz == pytest.approx(2.1)
    assert (peak.isa, peak.fp32_flop_per_cycle, peak.int8_op_per_cycle) == ("AVX2+FMA", 32, 64)


def test_amx_and_avx_vnni_raise_the_int8_rate() -> None:
    assert vector_rates({"avx2", "fma", "avx_vnni"})[3] == 128
    assert vector_rates({"avx512f", "avx512_vnni", "amx_int8"})[2:] == ("AMX-INT8", 2048)


def test_cpuinfo_names_the_int8_features_and_is_empty_where_unreadable(tmp_path: Path) -> None:
    info = parse_cpuinfo(CPUINFO.format(extra="avx512f avx512_vnni"))
    assert (info.model, info.clocks_mhz) == ("Test CPU", (2100.0, 2000.0))
    assert info.int8_features == ("avx2", "avx512_vnni", "avx512f")
    assert read_cpuinfo(tmp_path / "no-cpuinfo").int8_features == ()


def test_minilm_l6_costs_about_22_4_mflop_per_token_at_128_tokens() -> None:
    cost = EncoderCost(layers=6, hidden=384, intermediate=1536)
    assert cost.weight_flop_per_token == pytest.approx(21.23e6, rel=1e-3)
    assert cost.flop_per_token(128) == pytest.approx(22.4e6, rel=5e-3)


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


def test_a_capped_encoder_runs_in_process_as_it_is_served(tiny_repository: Path) -> None:
    import numpy as np

    texts = ["the quick brown fox jumps over the lazy dog", "hello", "rain cloud river", "model server latency"]
    capped = InProcessModel(replace(locate(tiny_repository, "tiny"), max_rows_per_call=2), threads=1)
    calls = capped.calls(texts)
    assert [rows for rows, _ in calls] == [[1, 2], [3, 0]]  # by length, two rows a call
    lengths = capped.token_counts(texts)
    assert [inputs["input_ids"].shape for _, inputs in calls] == [(2, lengths[2]), (2, lengths[0])]
    whole = InProcessModel(locate(tiny_repository, "tiny"), threads=1)
    assert len(whole.calls(texts)) == 1
    np.testing.assert_allclose(capped.encode(texts), whole.encode(texts), atol=1e-5)  # same rows, same order


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
    assert min(result.latencies_s) >= 0.01
    assert result.tokens == 3 * result.completed and result.errors == 0
    # a closed loop samples latency over the same completed calls
    assert result.completed_latency_s == pytest.approx(sum(result.latencies_s))
    assert result.machine_cpu_s is not None and result.client_cpu_s is not None
    assert result.elapsed_s == pytest.approx(0.6, abs=0.1)


def test_others_share_is_what_the_machine_used_beyond_client_and_server() -> None:
    window = Round((0.01,), 2.0, 10, 10, client_cpu_s=0.5, server_cpu_s=1.0, machine_cpu_s=2.3)
    point = summarize(SERVED, "concurrency", 1, [window])
    assert point.others_cpu == pytest.approx(0.8 / (2.0 * (os.cpu_count() or 1)))


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
    assert len(result.latencies_s) == result.completed


def test_closed_loop_ends_even_when_every_call_fails_at_once() -> None:
    async def send(index: int) -> None:
        raise ConnectionError("server gone")  # never awaits: the caller must still yield

    result, _ = asyncio.run(closed_loop(send, [1], 4, warmup_s=0.0, duration_s=0.2, max_duration_factor=1))
    assert result.completed == 0 and result.errors > 0 and not result.latencies_s
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
    assert max(result.latencies_s) > 0.2


def test_open_loop_offers_the_requested_rate() -> None:
    async def send(index: int) -> None:
        await asyncio.sleep(0.002)

    result, _ = asyncio.run(open_loop(send, [1] * 8, 200.0, warmup_s=0.1, duration_s=1.0, seed=3))
    assert 120 < result.throughput_per_s < 280
    assert min(result.latencies_s) >= 0.002


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
    window = Window(
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
    window = Window(
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


# --- results ----------------------------------------------------------------------------------


def test_summarize_takes_the_median_round_and_pools_latencies() -> None:
    rounds = [
        Round(tuple([0.010] * 99 + [0.100]), 1.0, 100, 1000, server_cpu_s=0.5),
        Round(tuple([0.010] * 100), 1.0, 120, 1200, server_cpu_s=0.7),
        Round(tuple([0.010] * 100), 1.0, 110, 1100, server_cpu_s=0.6),
    ]
    point = summarize(SERVED, "concurrency", 8, rounds, server_cores=2)
    assert point.others_cpu is None  # no machine-wide CPU time measured
    assert point.throughput_per_s == 110
    assert point.p50_ms == pytest.approx(10.0)
    assert point.samples == 300 and point.tokens_per_text == pytest.approx(10.0)
    assert point.server_cpu == pytest.approx(1.8 / (3.0 * 2))
    assert point.client_cpu is None
    other = summarize(SERVED, "concurrency", 16, rounds[:1])
    open_loop_point = summarize(SERVED, "rate", 500, rounds[1:2])
    assert best([point, other, open_loop_point], SERVED) is point
    assert best([point], BASELINE) is None and best([point], INPROCESS) is None


def test_summary_json_is_strict(tmp_path: Path) -> None:
    from tritonstack.bench.summary import clean

    text = json.dumps(clean({"a": float("nan"), "b": (1.0, float("inf"))}), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.0, None]}


# --- the half-load floor -------------------------------------------------------------------------------


def test_the_ideal_queue_matches_queueing_theory() -> None:
    import numpy as np

    from tritonstack.bench.queueing import ideal_p99_factor

    # M/D/1 at utilisation 0.5: p99 of the response time is 4.34 service times
    assert ideal_p99_factor([0.005] * 10) == pytest.approx(4.34, rel=0.05)
    # M/M/1 at 0.5: the response time is exponential with mean 2 service times; p99 = 2 ln(100) = 9.21
    # mean service times, over the median service time (ln 2 of the mean): 13.3
    service = np.random.default_rng(1).exponential(1.0, 20_000)
    assert ideal_p99_factor(service) == pytest.approx(2 * np.log(100) / np.log(2), rel=0.05)
    assert ideal_p99_factor([]) is None
