"""`tritonstack loadtest` and the locustfile as users run them: subprocesses (Locust monkey-patches
its process with gevent, which must not happen inside pytest) against the real embedded Triton."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from serve_process import run_to_completion
from tritonstack.measure.samples import read_samples_csv

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slo(tmp_path: Path, **objectives: float) -> Path:
    path = tmp_path / "slo.yaml"
    lines = [
        "model: tiny",
        "load: {users: 2, spawn_rate: 2, duration: 3s, timeout_s: 10}",
        f"payload: {{texts: {REPO / 'loadtest' / 'texts.txt'}}}",
        "objectives:",
        *(f"  {key}: {value}" for key, value in objectives.items()),
        "capacity: {start_users: 1, factor: 2, max_users: 4, step_duration: 1.5s}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


LOOSE = {"p50_ms": 5000, "p95_ms": 8000, "p99_ms": 10000, "max_error_ratio": 0.5, "min_throughput_rps": 1}


def _loadtest(triton: Any, slo: Path, report: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tritonstack", "loadtest", "--slo", str(slo), "--host", triton.grpc_url,
        "--metrics-url", triton.metrics_url, "--report-dir", str(report), "--exporter-port", "0", *extra,
    ]  # fmt: skip


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return run_to_completion(command, TIMEOUT_S)


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


@pytest.mark.integration
def test_loose_slo_passes_with_a_consistent_report_and_live_metrics(triton: Any, tmp_path: Path) -> None:
    report = tmp_path / "report"
    exporter_port = _free_port()
    command = _loadtest(triton, _slo(tmp_path, **LOOSE), report)
    command[command.index("--exporter-port") + 1] = str(exporter_port)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    exported = None
    deadline = time.monotonic() + TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        text = _scrape(f"http://127.0.0.1:{exporter_port}/metrics")
        if text and 'tritonstack_client_requests_total{model="tiny",outcome="success"}' in text:
            exported = text
            break
        time.sleep(0.2)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, stdout + stderr
    assert "SLO held" in stdout
    assert exported is not None, "the exporter never served a successful request while the test ran"
    assert 'tritonstack_client_request_duration_seconds_bucket{le="0.25",model="tiny",outcome="success"}' in exported

    # every file of the report, and real images
    for name in ("summary.json", "samples.csv", "server_metrics.csv", "index.html"):
        assert (report / name).is_file(), name
    for name in ("latency.png", "throughput.png", "errors.png", "server.png"):
        data = (report / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name

    # the JSON summary agrees with the samples it was computed from
    summary = json.loads((report / "summary.json").read_text())
    samples = read_samples_csv(report / "samples.csv")
    measured = summary["summary"]
    assert measured["requests"] == len(samples) > 10
    ok_us = [s.latency_us for s in samples if s.outcome == "success"]
    assert measured["successes"] == len(ok_us)
    assert measured["error_ratio"] == pytest.approx((len(samples) - len(ok_us)) / len(samples))
    cuts = statistics.quantiles(ok_us, n=100, method="inclusive")
    for p in (50, 95, 99):
        assert measured["latency_ms"][f"p{p}"] == pytest.approx(cuts[p - 1] / 1000, rel=1e-9)
    assert measured["throughput_rps"] == pytest.approx(len(ok_us) / measured["duration_s"])
    assert all(measured["start_s"] <= s.start_s < measured["end_s"] for s in samples)
    assert len({s.latency_us % 1000 for s in samples}) > 1  # microseconds, not Locust's whole ms
    checks = {c["key"]: c for c in summary["checks"]}
    assert checks["p99_ms"]["measured"] == measured["latency_ms"]["p99"]
    assert summary["passed"] is True

    # Triton's side: the encoder ran, with a batch size of at least one inference per execution
    encoder = summary["server"]["models"]["tiny_encoder"]
    assert encoder["requests"] > 0 and encoder["batch_size"] >= 1.0
    assert encoder["compute_us_per_request"] > 0


@pytest.mark.integration
def test_repeats_hit_the_cache_and_the_cost_follows_from_the_throughput(cached_triton: Any, tmp_path: Path) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text(
        "model: tiny_cached\n"
        "load: {users: 2, spawn_rate: 2, duration: 3s, timeout_s: 10}\n"
        f"payload: {{texts: {REPO / 'loadtest' / 'texts.txt'}, repeat_ratio: 0.5, hot_set: 4}}\n"
        "objectives: {p99_ms: 10000, max_error_ratio: 0.5}\n"
    )
    report = tmp_path / "report"
    result = _run(_loadtest(cached_triton, slo, report, "--price-per-hour", "3.6"))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((report / "summary.json").read_text())
    samples = read_samples_csv(report / "samples.csv")

    # cost per million = price per hour / inferences per hour, at the run's own throughput
    throughput = summary["summary"]["throughput_rps"]
    assert summary["cost"]["basis"] == "run" and summary["cost"]["throughput_per_s"] == throughput
    assert summary["cost"]["usd_per_million"] == pytest.approx(3.6 / (throughput * 3600) * 1e6, rel=1e-12)
    cost_row = next(line for line in result.stdout.splitlines() if line.startswith("cost per 1M inferences"))
    assert f"${summary['cost']['usd_per_million']:,.4g}" in cost_row
    assert "cost per 1M inferences" in (report / "index.html").read_text()

    # Triton looked every request of the run up (the pre-flight request came before the first scrape)
    cache = summary["cache"]
    server, sent = cache["server"], cache["requests"]
    repeats = sum(1 for s in samples if s.kind == "repeat")
    assert {s.kind for s in samples} == {"repeat", "unique"} and sent["repeat"]["requests"] == repeats
    assert server["hits"] + server["misses"] == len(samples)
    # a hot request misses only until its first answer is in (at most once per user in flight)
    assert repeats - 4 * 2 <= server["hits"] <= repeats
    assert server["hit_ratio"] == pytest.approx(server["hits"] / len(samples))
    assert sent["repeat"]["latency_ms"]["p50"] < sent["unique"]["latency_ms"]["p50"]
    assert "response cache of 'tiny_cached' (Triton): hit ratio" in result.stdout


@pytest.mark.integration
def test_impossible_p99_exits_1_and_names_it_with_two_processes(triton: Any, tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _run(_loadtest(triton, _slo(tmp_path, **LOOSE), report, "--p99-ms", "0.001", "--processes", "2"))
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-2]
    assert last.startswith("SLO violated") and "p99" in last, result.stdout
    p99_row = next(line for line in result.stdout.splitlines() if line.startswith("p99 latency"))
    assert p99_row.endswith("FAIL")
    # samples from both worker processes reached the verdict
    assert {s.worker for s in read_samples_csv(report / "samples.csv")} == {"w1", "w2"}
    assert json.loads((report / "summary.json").read_text())["processes"] == 2


@pytest.mark.integration
def test_capacity_search_terminates_with_a_number(triton: Any, tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = _run(_loadtest(triton, _slo(tmp_path, **LOOSE), report, "--find-capacity"))
    assert result.returncode == 0, result.stdout + result.stderr
    capacity = json.loads((report / "summary.json").read_text())["capacity"]
    assert [step["users"] for step in capacity["steps"]] == [1, 2, 4]
    assert capacity["capacity_rps"] > 0
    assert f"capacity: {capacity['capacity_rps']:.1f} req/s" in result.stdout
    assert (report / "capacity.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.integration
def test_locustfile_with_processes_gives_the_verdict(triton: Any, tmp_path: Path) -> None:
    report = tmp_path / "report"
    command = [
        sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless",
        "-u", "2", "-r", "2", "-t", "3s", "--processes", "2", "--host", triton.grpc_url,
        "--slo", str(_slo(tmp_path, **LOOSE)), "--triton-metrics-url", triton.metrics_url,
        "--exporter-port", "0", "--report-dir", str(report), "--only-summary",
    ]  # fmt: skip
    result = _run(command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SLO held" in result.stdout
    samples = read_samples_csv(report / "samples.csv")
    assert {s.worker for s in samples} == {"w1", "w2"}
    summary = json.loads((report / "summary.json").read_text())
    # the workers' last samples (after Locust's final report) are in: ~3 s of load, not ~1 s
    assert summary["summary"]["requests"] == len(samples)
    assert max(s.start_s for s in samples) - min(s.start_s for s in samples) > 2.0


def test_server_down_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens here
    command = [
        sys.executable, "-m", "tritonstack", "loadtest", "--slo", str(_slo(tmp_path, **LOOSE)),
        "--host", f"127.0.0.1:{port}", "--exporter-port", "0", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    result = _run(command)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the load test could not start: model 'tiny' at 127.0.0.1:{port} did not answer" in result.stderr
    assert "hint:" in result.stderr
    assert not (tmp_path / "report").exists()


def test_invalid_slo_exits_2_naming_the_field(tmp_path: Path) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text("model: tiny\nload: {users: 0, duration: 3s}\nobjectives: {p99_ms: 10}\n")
    result = _run([sys.executable, "-m", "tritonstack", "loadtest", "--slo", str(slo), "--exporter-port", "0"])
    assert result.returncode == 2
    assert f"{slo}: load.users: must be a positive integer, got 0" in result.stderr
