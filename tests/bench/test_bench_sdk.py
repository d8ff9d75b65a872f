"""``tritonstack bench --sdk``: the SDK against plain tritonclient; its figures and ratios, and one short real run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from tritonstack.bench import sdk_overhead
from tritonstack.bench.sdk_overhead import ASYNC, RAW_AIO, SYNC, Run, SdkOverheadResult, SdkSettings, Side


def _result() -> SdkOverheadResult:
    result = SdkOverheadResult(model="m", settings=SdkSettings(calls=4, block=2, in_flight=8), split="shared")
    result.raw = Side(sdk_overhead.RAW, [1000.0, 2000.0, 3000.0, 4000.0], cpu_s=0.0004)
    result.sdk = Side(sdk_overhead.SDK, [1100.0, 2200.0, 3300.0, 4400.0], cpu_s=0.0006)
    result.runs = {
        SYNC: [Run(100.0, 200e-6), Run(120.0, 220e-6), Run(110.0, 210e-6)],
        ASYNC: [Run(200.0, 100e-6), Run(240.0, 105e-6), Run(220.0, 110e-6)],
        RAW_AIO: [Run(250.0, 90e-6)],
    }
    return result


def test_the_figures_are_medians_of_microsecond_samples_and_cpu_per_call() -> None:
    result = _result()
    raw = result.raw.figures()
    assert raw["calls"] == 4
    assert raw["median_ms"] == pytest.approx(2.5) and raw["mean_ms"] == pytest.approx(2.5)
    assert raw["p90_ms"] == pytest.approx(3.7)
    assert raw["client_cpu_us_per_call"] == pytest.approx(100.0)
    assert result.throughput(SYNC) == {"calls_per_s": 110.0, "client_cpu_us_per_call": pytest.approx(210.0)}
    ratios = result.ratios()
    assert ratios["sdk_over_raw_median"] == pytest.approx(1.1)
    assert ratios["sdk_over_raw_mean"] == pytest.approx(1.1)
    assert ratios["sdk_over_raw_client_cpu"] == pytest.approx(1.5)
    assert ratios["async_over_sync_throughput"] == pytest.approx(2.0)
    assert ratios["async_over_sync_client_cpu"] == pytest.approx(105 / 210)


def test_an_unmeasured_side_has_no_ratio_and_still_renders() -> None:
    empty = SdkOverheadResult(model="m", settings=SdkSettings(), split="shared")
    assert set(empty.ratios().values()) == {None}
    assert empty.raw.figures()["client_cpu_us_per_call"] is None
    assert "SDK / raw: median -x" in sdk_overhead.table(empty)
    assert json.dumps(empty.to_dict(), allow_nan=False)


def test_the_table_and_the_summary_say_the_same(tmp_path: Path) -> None:
    result = _result()
    text = sdk_overhead.table(result)
    assert "SDK / raw: median 1.100x, mean 1.100x (overhead +10.0% median); client CPU 1.500x" in text
    assert "AsyncClient / sync threads: throughput 2.000x, client CPU per call 0.500x" in text
    assert "100, 120, 110" in text  # each run's throughput
    summary = json.loads(sdk_overhead.write(result, tmp_path).read_text())
    assert summary["ratios"]["sdk_over_raw_median"] == pytest.approx(1.1)
    assert summary["sequential"][sdk_overhead.SDK]["median_ms"] == pytest.approx(2.75)
    assert summary["concurrent"][ASYNC]["runs_calls_per_s"] == [200.0, 240.0, 220.0]
    assert summary["settings"]["in_flight"] == 8


def test_settings_refuse_a_count_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SdkSettings(block=0)


def test_the_bench_command_has_an_sdk_mode() -> None:
    from tritonstack.commands import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--sdk", "--quick", "--concurrency", "2,4"])
    assert args.sdk and args.concurrency == (2, 4)
    assert not parser.parse_args([]).sdk


@pytest.mark.integration
def test_a_short_run_against_triton_measures_both_sides(triton: Any) -> None:
    settings = SdkSettings(calls=20, block=10, in_flight=2, concurrent_calls=8, rounds=1)
    result = sdk_overhead.measure(triton.grpc_url, "tiny", settings)
    assert len(result.raw.latencies_us) == len(result.sdk.latencies_us) == 20
    assert min(result.raw.latencies_us + result.sdk.latencies_us) > 0
    assert all(len(result.runs[kind]) == 1 and result.runs[kind][0].calls_per_s > 0 for kind in (SYNC, ASYNC, RAW_AIO))
    assert all(value is not None for value in result.ratios().values())
