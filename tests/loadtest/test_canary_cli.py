"""`tritonstack canary` as users run it (a subprocess: Locust patches its process with gevent) against the
real embedded Triton serving two releases of a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tinymodels
from serve_process import run_to_completion

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIMEOUT_S = 240
LOOSE = {"p50_ms": 5000, "p99_ms": 10000, "max_error_ratio": 0.5, "min_throughput_rps": 1}


@pytest.fixture(scope="module")
def identical_releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Triton serving ``same`` (embeddings) and ``same_cls`` (classification), each exported twice from one
    tiny model: two releases with equal weights."""
    from tritonstack.server import EmbeddedServer

    root = tmp_path_factory.mktemp("canary")
    repository = root / "model_repository"
    for name, task in (("same", "feature-extraction"), ("same_cls", "text-classification")):
        model_dir = tinymodels.build(root / name, "bert", task)
        for _ in range(2):
            tinymodels.export_fp32(model_dir, repository, name)
    with EmbeddedServer(repository) as server:
        yield server


def _slo(tmp_path: Path, task: str = "feature-extraction", **objectives: float) -> Path:
    path = tmp_path / "slo.yaml"
    lines = [
        "model: same",
        f"task: {task}",
        "load: {users: 2, spawn_rate: 2, duration: 4s, timeout_s: 10}",
        f"payload: {{texts: {REPO / 'loadtest' / 'texts.txt'}}}",
        "objectives:",
        *(f"  {key}: {value}" for key, value in objectives.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _canary(
    server: Any, tmp_path: Path, *extra: str, task: str = "feature-extraction"
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "tritonstack", "canary", "--slo", str(_slo(tmp_path, task, **LOOSE)),
        "--host", server.grpc_url, "--model", "same", "--baseline", "1", "--candidate", "2",
        "--weight", "0.5", "--report-dir", str(tmp_path / "report"), *extra,
    ]  # fmt: skip
    return run_to_completion(command, TIMEOUT_S)


def test_identical_releases_promote_with_a_report_per_release(identical_releases: Any, tmp_path: Path) -> None:
    # Identical models on a shared 2-core machine: the p99 of two halves of the same load jitters by more
    # than the default 5 ms slack; the relative check is what an impossible bound proves below.
    result = _canary(identical_releases, tmp_path, "--p99-slack-ms", "200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "promote: the candidate held all" in result.stdout
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["verdict"] == "promote" and (summary["baseline"], summary["candidate"]) == (1, 2)
    releases = summary["releases"]
    assert releases["1"]["role"] == "baseline" and releases["2"]["role"] == "candidate"
    total = releases["1"]["requests"] + releases["2"]["requests"]
    assert total == summary["load"]["requests"] and total > 20
    # a 50 % split of independent draws: each release gets a real share
    assert min(releases["1"]["requests"], releases["2"]["requests"]) > total * 0.2
    for release in releases.values():
        assert release["errors"] == 0 and 0 < release["p50_ms"] <= release["p99_ms"]
    assert summary["agreement"]["metric"] == "cosine" and summary["agreement"]["min"] > 0.9999
    for name in ("latency_release_1.png", "latency_release_2.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "report" / "load" / "index.html").is_file()


def test_a_classification_canary_reports_label_agreement(identical_releases: Any, tmp_path: Path) -> None:
    result = _canary(
        identical_releases, tmp_path, "--model", "same_cls", "--p99-slack-ms", "200", task="text-classification"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["model"] == "same_cls" and summary["verdict"] == "promote"
    assert summary["agreement"]["metric"] == "same label" and summary["agreement"]["min"] == 1.0
    assert all(release["requests"] > 0 for release in summary["releases"].values())


def test_an_impossible_p99_rolls_back_naming_p99(identical_releases: Any, tmp_path: Path) -> None:
    result = _canary(identical_releases, tmp_path, "--p99-ms", "0.001")
    assert result.returncode == 1, result.stdout + result.stderr
    last = [line for line in result.stdout.splitlines() if line.startswith("roll back:")]
    assert last and "candidate p99 latency (p99_ms)" in last[0]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["verdict"] == "roll back"
    assert [c["key"] for c in summary["checks"] if not c["passed"]] == ["p99_ms"]


def test_a_missing_release_exits_2_with_a_hint(identical_releases: Any, tmp_path: Path) -> None:
    result = _canary(identical_releases, tmp_path, "--candidate", "7")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "release 7 of 'same' at" in result.stderr and "did not answer" in result.stderr
    assert "hint: is it served? `tritonstack release list --model same`" in result.stderr
    assert not (tmp_path / "report").exists()


def test_building_the_command_line_imports_neither_locust_nor_grpc() -> None:
    # `canary --help` reads the default tolerances; the CLI reference builds this parser beside every other
    # command's in one process: Locust's gevent patching at that point would patch that process (and slow
    # `--help`). Locust comes with a run.
    code = (
        "import sys; from tritonstack.cli import build_parser, command_parser; build_parser(); "
        "command_parser('canary'); "
        "print(sorted(m for m in ('locust', 'gevent', 'grpc') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
