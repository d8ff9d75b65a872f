"""``tritonstack bench`` end to end on the tiny model: real ONNX Runtime, real Triton, real FastAPI service."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tritonstack.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_SETTINGS = [
    "--texts", "32", "--batch-sizes", "1,4", "--concurrency", "1,4", "--baseline-concurrency", "1,2",
    "--rounds", "2", "--warmup-s", "0.1", "--duration-s", "0.4",
]  # fmt: skip


def _bench(model_dir: Path, repository: Path, report_dir: Path, *extra: str) -> dict[str, Any]:
    argv = ["bench", "--model-dir", str(model_dir), "--repository", str(repository), "--name", "tiny"]
    code = main([*argv, "--report-dir", str(report_dir), *TINY_SETTINGS, *extra])
    assert code == 0
    return dict(json.loads((report_dir / "summary.json").read_text()))


def _best(summary: dict[str, Any], variant: str) -> float:
    return max(p["throughput_per_s"] for p in summary["points"] if p["variant"] == variant and p["setting"] != "rate")


def _check_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes().startswith(PNG_MAGIC)
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 500


@pytest.mark.integration
def test_bench_measures_inprocess_and_served_on_the_tiny_model(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    summary = _bench(tiny_model_dirs["tiny"], tiny_repository, tmp_path / "report", "--no-baseline",
                     "--price-per-hour", "3.6")  # fmt: skip
    assert time.perf_counter() - started < 120
    printed = capsys.readouterr().out
    assert "served / in-process" in printed and "GFLOP/s" in printed and "targets" in printed
    # cost per million texts at each variant's best point: $3.60/h = $0.001/s over texts/s, times a million
    for variant in ("in-process", "served"):
        cost = summary["cost"][variant]
        assert cost["throughput_per_s"] == _best(summary, variant)
        assert cost["usd_per_million"] == pytest.approx(1000.0 / cost["throughput_per_s"], rel=1e-12)
        assert f"${cost['usd_per_million']:,.4g}" in printed
    assert summary["cost"]["baseline"] is None

    points = summary["points"]
    assert {(p["variant"], p["label"]) for p in points} >= {
        ("in-process", "b=1"), ("in-process", "b=4"), ("served", "c=1"), ("served", "c=4"),
    }  # fmt: skip
    assert all(p["errors"] == 0 and p["samples"] > 0 and p["throughput_per_s"] > 0 for p in points)
    assert summary["served_over_inprocess"] == pytest.approx(_best(summary, "served") / _best(summary, "in-process"))
    assert summary["served_over_baseline"] is None
    assert summary["half_load"]["rate_per_s"] == pytest.approx(_best(summary, "served") / 2)

    served = next(p for p in points if p["label"] == "c=4")
    assert served["details"]["models"]["encoder"]["requests"] > 0  # Triton's statistics cover the window
    assert served["details"]["parts_ms"]["encoder_compute"] > 0
    assert served["server_cpu"] is not None and served["client_cpu"] is not None
    assert summary["cpu_split"]["mode"] in ("pinned", "shared")
    assert summary["model"]["precision"] == "fp32"  # tiny_repository is an fp32 export
    # the serving floor (bench/floor.py): the same layout with no model work, at c=1 and the top concurrency,
    # beside the model's own points, and printed; the user's repository got no floor model
    floor = summary["serving_floor"]["points"]
    assert [row["concurrency"] for row in floor] == [1, 4]
    for row in floor:
        assert row["floor"]["variant"] == "floor" and row["floor"]["errors"] == 0
        assert row["floor"]["throughput_per_s"] > 0 and row["served"]["variant"] == "served"
    assert "serving floor (same layout, no model work)" in printed
    assert not any(path.name.endswith("_floor") for path in tiny_repository.iterdir())
    _check_png(tmp_path / "report" / "latency_vs_throughput.png")


@pytest.mark.integration
@pytest.mark.slow
def test_bench_with_the_pytorch_baseline(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path, tmp_path: Path
) -> None:
    for package in ("fastapi", "uvicorn", "aiohttp"):
        pytest.importorskip(package, reason="the bench extra is not installed")
    summary = _bench(tiny_model_dirs["tiny"], tiny_repository, tmp_path / "report", "--no-half-load")
    baseline = [p for p in summary["points"] if p["variant"] == "baseline"]
    assert [p["label"] for p in baseline] == ["c=1", "c=2"]
    assert all(p["errors"] == 0 and p["samples"] > 0 for p in baseline)
    assert summary["served_over_baseline"] == pytest.approx(_best(summary, "served") / _best(summary, "baseline"))
    assert (tmp_path / "report" / "baseline.log").is_file()
    _check_png(tmp_path / "report" / "latency_vs_throughput.png")


@pytest.mark.integration
def test_bench_repeat_ratio_serves_without_and_with_the_cache_on_the_same_requests(
    tiny_model_dirs: dict[str, Path], tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report"
    argv = ["bench", "--model-dir", str(tiny_model_dirs["tiny"]), "--repository", str(tiny_repository)]
    settings = [
        "--name", "tiny", "--texts", "32", "--concurrency", "4", "--rounds", "2", "--warmup-s", "0.3",
        "--duration-s", "0.6", "--repeat-ratio", "0.5", "--hot-set", "4", "--price-per-hour", "3.6",
    ]  # fmt: skip
    config_before = (tiny_repository / "tiny" / "config.pbtxt").read_text()
    assert main([*argv, "--report-dir", str(report), *settings]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((report / "summary.json").read_text())

    without, with_cache = summary["runs"]["no cache"], summary["runs"]["local cache"]
    for run in (without, with_cache):
        assert run["point"]["errors"] == 0 and run["point"]["samples"] > 0
    assert without["cache_hits"] == without["cache_misses"] == 0 and without["hit_ratio"] is None
    # half the requests repeat 4 hot ones, cached from the warm-up on: about half the lookups hit
    assert 0.35 < with_cache["hit_ratio"] < 0.65
    assert with_cache["hot_requests_answered_from_cache"] == 4 and without["hot_requests_answered_from_cache"] == 0
    speedup = with_cache["point"]["throughput_per_s"] / without["point"]["throughput_per_s"]
    assert summary["speedup"] == pytest.approx(speedup)
    assert (summary["limit"], summary["target"]) == (2.0, 1.7)
    identical = summary["hits_bitwise_identical"]
    assert identical["hot_requests"] == 4 and 0 <= identical["identical"] <= 4
    assert (identical["identical"] == 4) == (identical["max_abs_difference"] == 0.0)
    assert identical["max_abs_difference"] < 1e-5  # the same model: at most rounding apart
    for cost in summary["cost"]:
        assert cost["usd_per_million"] == pytest.approx(1000.0 / cost["throughput_per_s"], rel=1e-12)
    assert "throughput with / without the cache" in printed and "hits bitwise identical" in printed
    assert (tiny_repository / "tiny" / "config.pbtxt").read_text() == config_before, "the source is untouched"
    assert {"triton-no-cache.log", "triton-cache.log", "report.txt"} <= {p.name for p in report.iterdir()}


def test_bench_rejects_bad_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--batch-sizes", "1,0"])
    assert exit_info.value.code == 2
    assert "positive integers" in capsys.readouterr().err


def test_bench_rejects_a_repeat_ratio_outside_0_1_and_a_price_of_0(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value in (("--repeat-ratio", "1.5"), ("--price-per-hour", "0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", flag, value])
        assert exit_info.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err
