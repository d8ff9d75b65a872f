"""`tritonstack loadtest --gateway` against a real `tritonstack gateway` in front of the real embedded Triton:
the same SLO file, verdict and report as over gRPC, for /v1/embeddings and /v1/rerank, with the API key on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from serve_process import run_to_completion
from tritonstack.bench.gateway import GatewayServer
from tritonstack.loadtest.gateway_client import API_KEY_ENV
from tritonstack.measure.samples import read_samples_csv

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240
KEY = "load-test-key-0123456789"
LOOSE = "objectives: {p50_ms: 5000, p95_ms: 8000, p99_ms: 10000, max_error_ratio: 0.5, min_throughput_rps: 1}"


def _slo(tmp_path: Path, model: str, task: str = "") -> Path:
    path = tmp_path / f"slo-{model}.yaml"
    lines = [
        f"model: {model}",
        *([f"task: {task}"] if task else []),
        "load: {users: 2, spawn_rate: 2, duration: 3s, timeout_s: 10}",
        f"payload: {{texts: {REPO / 'loadtest' / 'texts.txt'}}}",
        LOOSE,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _gateway(triton: Any, tmp_path: Path) -> GatewayServer:
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    return GatewayServer(triton.grpc_url, log_path=tmp_path / "gateway.log", extra=["--api-key-file", str(keys)])


def _loadtest(gateway: GatewayServer, triton: Any, slo: Path, report: Path) -> Any:
    command = [
        sys.executable, "-m", "tritonstack", "loadtest", "--slo", str(slo), "--gateway", gateway.url,
        "--host", triton.grpc_url, "--metrics-url", triton.metrics_url, "--report-dir", str(report),
        "--exporter-port", "0",
    ]  # fmt: skip
    return run_to_completion(command, TIMEOUT_S)


def _judged(report: Path) -> tuple[dict[str, Any], list[Any]]:
    summary = json.loads((report / "summary.json").read_text())
    samples = read_samples_csv(report / "samples.csv")
    assert summary["summary"]["requests"] == len(samples)
    return summary, samples


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)  # the load test's child process reads it


def test_embeddings_through_the_gateway_hold_the_slo_with_the_same_report(triton: Any, tmp_path: Path) -> None:
    report = tmp_path / "report"
    with _gateway(triton, tmp_path) as gateway:
        result = _loadtest(gateway, triton, _slo(tmp_path, "tiny"), report)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SLO held" in result.stdout
    summary, samples = _judged(report)
    assert len(samples) > 10 and {s.outcome for s in samples} == {"success"}
    assert summary["passed"] is True and summary["host"] == gateway.url
    # Triton's side of the report: the gateway's calls reached the encoder
    assert summary["server"]["models"]["tiny_encoder"]["requests"] > 0
    for name in ("index.html", "latency.png", "server_metrics.csv"):
        assert (report / name).is_file(), name


def test_rerank_through_the_gateway(rerank_triton: Any, tmp_path: Path) -> None:
    report = tmp_path / "report"
    with _gateway(rerank_triton, tmp_path) as gateway:
        result = _loadtest(gateway, rerank_triton, _slo(tmp_path, "rerank", "text-ranking"), report)
    assert result.returncode == 0, result.stdout + result.stderr
    _, samples = _judged(report)
    assert len(samples) > 5 and {s.outcome for s in samples} == {"success"}


def test_a_wrong_key_fails_the_pre_flight_request_with_exit_2(
    triton: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "not-the-key")
    with _gateway(triton, tmp_path) as gateway:
        result = _loadtest(gateway, triton, _slo(tmp_path, "tiny"), tmp_path / "report")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "PermissionDeniedError: HTTP 401" in result.stderr
