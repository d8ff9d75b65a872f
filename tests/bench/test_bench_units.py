"""The benchmark's pure parts: texts, CPU peak, encoder cost, the in-process limit, results, the queue floor."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tritonstack._cpu import parse_cpuinfo, read_cpuinfo
from tritonstack.bench.hardware import EncoderCost, cpu_peak, vector_rates
from tritonstack.bench.inprocess import InProcessModel
from tritonstack.bench.results import BASELINE, INPROCESS, SERVED, best, summarize_rounds
from tritonstack.bench.texts import make_texts
from tritonstack.measure.samples import Round
from tritonstack.measure.served_files import locate

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


# --- the served files, in-process ----------------------------------------------------------


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


# --- results ----------------------------------------------------------------------------------


def test_others_share_is_what_the_machine_used_beyond_client_and_server() -> None:
    window = Round((10_000.0,), 2.0, 10, 10, client_cpu_s=0.5, server_cpu_s=1.0, machine_cpu_s=2.3)
    point = summarize_rounds(SERVED, "concurrency", 1, [window])
    assert point.others_cpu == pytest.approx(0.8 / (2.0 * (os.cpu_count() or 1)))


def test_summarize_takes_the_median_round_and_pools_latencies() -> None:
    rounds = [
        Round(tuple([10_000.0] * 99 + [100_000.0]), 1.0, 100, 1000, server_cpu_s=0.5),
        Round(tuple([10_000.0] * 100), 1.0, 120, 1200, server_cpu_s=0.7),
        Round(tuple([10_000.0] * 100), 1.0, 110, 1100, server_cpu_s=0.6),
    ]
    point = summarize_rounds(SERVED, "concurrency", 8, rounds, server_cores=2)
    assert point.others_cpu is None  # no machine-wide CPU time measured
    assert point.throughput_per_s == 110
    assert point.p50_ms == pytest.approx(10.0)
    assert point.samples == 300 and point.tokens_per_text == pytest.approx(10.0)
    assert point.server_cpu == pytest.approx(1.8 / (3.0 * 2))
    assert point.client_cpu is None
    other = summarize_rounds(SERVED, "concurrency", 16, rounds[:1])
    open_loop_point = summarize_rounds(SERVED, "rate", 500, rounds[1:2])
    assert best([point, other, open_loop_point], SERVED) is point
    assert best([point], BASELINE) is None and best([point], INPROCESS) is None


def test_summary_json_is_strict(tmp_path: Path) -> None:
    from tritonstack.measure.json_safe import json_safe

    text = json.dumps(json_safe({"a": float("nan"), "b": (1.0, float("inf"))}), allow_nan=False)
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


def test_the_progress_plan_counts_every_point_the_run_measures() -> None:
    from tritonstack.bench.runner import QUICK, BenchSettings, planned_s

    settings = replace(BenchSettings(Path("m"), Path("r"), "minilm", Path("out")), **QUICK)  # type: ignore[arg-type]
    assert settings.timing.point_s == 2 * (0.5 + 1.5)
    # in-process b=1,8,32 and sorted 8,32; served c=1,4,16 and half load; floor c=1,16; baseline c=1,8
    assert planned_s(settings, rows_per_request=1) == (5 + 4 + 2 + 2) * 4.0
    # a reranker's request of 10 rows adds b=10, twice; no baseline, no half load
    reranker = replace(settings, baseline=False, half_load=False)
    assert planned_s(reranker, rows_per_request=10) == (7 + 3 + 2) * 4.0


def test_words_sets_the_length_of_the_sweeps_texts(tmp_path: Path) -> None:
    import argparse

    from tritonstack.commands import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    short = bench.settings_from(parser.parse_args(["--words", "2-10"]), tmp_path, tmp_path)
    assert (short.min_words, short.max_words) == (2, 10)
    default = bench.settings_from(parser.parse_args([]), tmp_path, tmp_path)
    assert (default.min_words, default.max_words) == (5, 120)
    for wrong in ("10-2", "0-3", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--words", wrong])
