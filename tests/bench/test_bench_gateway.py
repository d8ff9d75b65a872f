"""``tritonstack bench --gateway``: the gateway's HTTP path against the SDK's gRPC path; its figures and targets,
and one short real run against a real gateway in front of the real embedded Triton."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from tritonstack.bench import gateway
from tritonstack.bench.gateway import GATEWAY, SDK, GatewayBenchResult, GatewayServer, Point, Round


def _point(concurrency: int, sdk: tuple[list[float], float], gw: tuple[list[float], float], cpu_s: float) -> Point:
    point = Point(concurrency)
    point.rounds[SDK] = [Round(sdk[0], sdk[1])]
    point.rounds[GATEWAY] = [Round(gw[0], gw[1], gateway_cpu_s=cpu_s)]
    return point


def _result() -> GatewayBenchResult:
    return GatewayBenchResult(
        model="m", split="shared", encoding_format="base64",
        points=[
            # 1 caller: 4 calls each; p50 SDK 2.5 ms, gateway 3.1 ms
            _point(1, ([2000.0, 2000.0, 3000.0, 3000.0], 0.1), ([2600.0, 2600.0, 3600.0, 3600.0], 0.13), 0.0008),
            # 4 callers: SDK 100 req/s, gateway 95 req/s over 1 s; 200 us of gateway CPU per request
            _point(4, ([5000.0] * 100, 1.0), ([5200.0] * 95, 1.0), 0.019),
        ],
    )  # fmt: skip


def test_the_targets_compare_each_paths_best_point_and_the_p50_at_one_caller() -> None:
    figures = _result().figures()
    assert figures["best_sdk"] == {"concurrency": 4, "calls_per_s": 100.0}
    assert figures["best_gateway"] == {"concurrency": 4, "calls_per_s": 95.0}
    assert figures["throughput_ratio"] == pytest.approx(0.95) and figures["throughput_target_held"] is True
    assert figures["p50_c1_ms"] == {"sdk": 2.5, "gateway": 3.1, "delta": pytest.approx(0.6)}
    assert figures["p50_target_held"] is True
    assert figures["gateway_cpu_us_per_call_at_best"] == pytest.approx(200.0)


def test_the_table_and_the_summary_say_the_same(tmp_path: Path) -> None:
    result = _result()
    text = gateway.table(result)
    assert "best point: SDK 100.0 req/s at 4, gateway 95.0 req/s at 4: 0.950x (target >= 0.9x: held)" in text
    assert "p50 at 1 caller: SDK 2.50 ms, gateway 3.10 ms, +0.60 ms (target <= +1 ms: held)" in text
    assert "the gateway's own CPU: 200 us per request at its best point" in text
    summary = json.loads(gateway.write(result, tmp_path).read_text())
    assert summary["figures"]["throughput_ratio"] == pytest.approx(0.95)
    assert summary["points"][1][GATEWAY]["runs_calls_per_s"] == [95.0]


def test_a_missed_target_says_so_and_an_empty_run_still_renders() -> None:
    slow = _point(1, ([1000.0], 0.001), ([5000.0], 0.005), 0.001)
    text = gateway.table(GatewayBenchResult("m", "shared", "base64", [slow]))
    assert "(target >= 0.9x: MISSED)" in text and "+4.00 ms (target <= +1 ms: MISSED)" in text
    empty = GatewayBenchResult("m", "shared", "base64", [])
    assert empty.figures()["throughput_ratio"] is None
    assert "p50 at 1 caller: SDK - ms" in gateway.table(empty)
    assert json.dumps(empty.to_dict(), allow_nan=False)


def test_the_bench_command_has_a_gateway_mode() -> None:
    from tritonstack.commands import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args(["--gateway", "--concurrency", "1,8"]).gateway
    assert not parser.parse_args([]).gateway


@pytest.mark.integration
def test_a_short_run_through_a_real_gateway_measures_both_paths(triton: Any, tmp_path: Path) -> None:
    with GatewayServer(triton.grpc_url, log_path=tmp_path / "gateway.log") as server:
        result = gateway.measure(
            triton.grpc_url, server, "tiny", ["a short text", "another text, a little longer"],
            concurrencies=[1, 2], rounds=1, duration_s=0.5, log=lambda _: None,
        )  # fmt: skip
    for point in result.points:
        assert point.throughput(SDK) and point.throughput(GATEWAY)
        cpu = point.gateway_cpu_us_per_call()
        assert cpu is not None and cpu > 0
    assert all(value is not None for value in result.figures().values())
