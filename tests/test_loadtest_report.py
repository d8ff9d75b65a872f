"""The report directory from a synthetic run: files, plots, JSON, capacity table."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tritonstack.loadtest.report import capacity_table, default_report_dir, write_report
from tritonstack.loadtest.result import CapacityResult, CapacityStep, RunResult
from tritonstack.loadtest.slo import parse_slo
from tritonstack.loadtest.stats import Sample, read_samples_csv, summarize
from tritonstack.loadtest.triton_metrics import Snapshot
from tritonstack.loadtest.verdict import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SLO = parse_slo(
    {
        "model": "tiny",
        "load": {"users": 2, "duration": "5s"},
        "objectives": {"p50_ms": 4, "p99_ms": 20, "max_error_ratio": 0.1, "min_throughput_rps": 10},
    }
)


def _snapshots(t0: float) -> list[Snapshot]:
    snapshots = []
    for i in range(6):
        requests = 50.0 * i
        snapshots.append(
            Snapshot(
                t0 + i,
                {
                    "nv_inference_request_success": {"tiny": requests, "tiny_encoder": requests},
                    "nv_inference_count": {"tiny_encoder": requests},
                    "nv_inference_exec_count": {"tiny_encoder": requests / 2},
                    "nv_inference_queue_duration_us": {"tiny": 100 * requests, "tiny_encoder": 300 * requests},
                    "nv_inference_compute_infer_duration_us": {"tiny": 900 * requests, "tiny_encoder": 500 * requests},
                    "nv_inference_request_duration_us": {"tiny": 1200 * requests, "tiny_encoder": 900 * requests},
                },
            )
        )
    return snapshots


def _result(with_capacity: bool = False) -> RunResult:
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
        snapshots=_snapshots(t0),
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


def test_capacity_report(tmp_path: Path) -> None:
    result = _result(with_capacity=True)
    write_report(result, tmp_path)
    assert (tmp_path / "capacity.png").read_bytes().startswith(PNG_MAGIC)
    table = capacity_table(result)
    assert table.splitlines()[0].split() == ["users", "req/s", "p50", "ms", "p99", "ms", "errors", "held"]
    assert "capacity: none" in table  # p50 broke at the first step
    assert json.loads((tmp_path / "summary.json").read_text())["capacity"]["steps"][0]["violated"] == ["p50_ms"]


def test_default_report_dir_is_timestamped() -> None:
    path = default_report_dir()
    assert path.parent == Path("reports") and path.name[:2] == "20"
