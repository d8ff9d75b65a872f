"""``tritonstack tune`` end to end on a tiny model: real Triton, real ONNX Runtime, real reloads."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import tinymodels
from tritonstack.cli import main
from tritonstack.repository.config import parse
from tritonstack.repository.validate import check_repository
from tritonstack.tune.apply import replace_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHORT_POINTS = ["--warmup-s", "0.3", "--point-s", "0.5", "--no-progress"]


@pytest.fixture
def repository(exported: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny export for each test: tune may rewrite it."""
    return Path(shutil.copytree(exported, tmp_path / "model_repository"))


def _slo(path: Path, *, p99_ms: float, max_users: int) -> Path:
    path.write_text(
        "model: tiny\n"
        "load: {users: 1, duration: 10s, timeout_s: 10}\n"
        f"objectives: {{p99_ms: {p99_ms}, max_error_ratio: 0.01}}\n"
        f"capacity: {{start_users: 1, factor: 2, max_users: {max_users}}}\n"
    )
    return path


def _files(repository: Path) -> dict[str, bytes]:
    """Every file of the repository but the bytecode Triton's Python stubs leave beside model.py."""
    return {
        str(p.relative_to(repository)): p.read_bytes()
        for p in sorted(repository.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _tune(repository: Path, slo: Path, report: Path, budget: str, *extra: str) -> tuple[int, dict[str, Any]]:
    argv = ["tune", "--repository", str(repository), "--slo", str(slo), "--budget", budget, "--report-dir", str(report)]
    code = main([*argv, *SHORT_POINTS, *extra])
    return code, json.loads((report / "tune.json").read_text())


@pytest.mark.integration
def test_a_dry_run_stops_within_its_budget_and_writes_nothing(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(repository)
    budget_s = 25.0
    started = time.monotonic()
    # long points against the budget: the search cannot finish its first pass before the budget ends
    code, summary = _tune(
        repository, _slo(tmp_path / "slo.yaml", p99_ms=2000, max_users=2), tmp_path / "report", f"{budget_s:g}s",
        "--dry-run", "--point-s", "2",
    )  # fmt: skip
    wall_s = time.monotonic() - started

    assert code == 0
    assert summary["stopped_by_budget"] and summary["elapsed_s"] <= budget_s
    assert wall_s <= budget_s + 30  # stopping Triton and writing the report
    assert _files(repository) == before
    assert summary["dry_run"] and summary["written"] == [] and summary["previous_configs"] is None
    assert summary["trials"][0]["knobs"] == summary["start"]
    assert all(t["points"] and t["points"][0]["completed"] > 0 for t in summary["trials"])
    assert summary["ranking"][0]["point"]["batch"]["encoder"] > 0  # Triton's statistics of the window
    for trial in summary["trials"]:  # each measurement ends with the open loop at half its best throughput
        held = [p for p in trial["points"] if p["latency_ms"]["p99"] <= 2000 and p["error_ratio"] <= 0.01]
        held = held or trial["points"]  # none held: half the best point
        half = trial["half_load"]
        assert half["rate_per_s"] == pytest.approx(max(p["throughput_per_s"] for p in held) / 2)
        assert half["concurrency"] == 0 and half["completed"] > 0 and half["batch"]["encoder"] > 0
        assert half["throughput_per_s"] == pytest.approx(half["rate_per_s"], rel=0.6)  # Poisson over a 2 s window
    assert summary["ranking"][0]["half_load"]["latency_ms"]["p99"] > 0
    printed = capsys.readouterr().out
    assert "rank" in printed and "req/s" in printed and "the budget ran out" in printed and "hl p99" in printed
    assert (tmp_path / "report" / "pareto.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "report" / "ranked.txt").is_file()


@pytest.mark.integration
def test_configs_that_break_p99_never_win_and_nothing_is_written(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(repository)
    code, summary = _tune(repository, _slo(tmp_path / "slo.yaml", p99_ms=0.01, max_users=4), tmp_path / "r", "25s")

    assert code == 1
    assert summary["winner"] is None and summary["written"] == []
    assert summary["trials"] and not any(t["held"] for t in summary["trials"])
    assert all(r["missed"]["p99_ms"] > 1 for r in summary["ranking"])
    assert all(r["missed"]["half_load p99_ms"] > 1 for r in summary["ranking"])  # measured though nothing held
    assert _files(repository) == before
    assert "no config held the SLO" in capsys.readouterr().out


def _slowed(repository: Path, step: str) -> Any:
    """Make ``step`` of the tiny export wait 200 ms for a batch to fill: a start that cannot win. Its config."""
    config = parse((repository / step / "config.pbtxt").read_text())
    config.dynamic_batching.max_queue_delay_microseconds = 200_000
    replace_config(repository, config)
    return config


def _serves(repository: Path) -> None:
    from tritonstack.client import Client
    from tritonstack.server import EmbeddedServer

    check_repository(repository)
    with EmbeddedServer(repository) as server:
        assert Client(server.grpc_url, model="tiny").embed(["hello world"]).shape == (1, 32)


@pytest.mark.integration
def test_the_winner_is_written_validates_loads_and_can_be_undone(repository: Path, tmp_path: Path) -> None:
    _slowed(repository, "tiny_encoder")
    original = _files(repository)

    code, summary = _tune(repository, _slo(tmp_path / "slo.yaml", p99_ms=5000, max_users=1), tmp_path / "r", "75s")

    assert code == 0
    assert summary["winner"]["encoder_delay_us"] < 200_000
    # the fused step, tried first, starts from the encoder's settings (200 ms too): either layout may win
    step = "tiny_fused" if summary["winner"]["layout"] == "fused" else "tiny_encoder"
    assert str(repository / step / "config.pbtxt") in summary["written"]
    tuned = parse((repository / step / "config.pbtxt").read_text())
    assert tuned.dynamic_batching.max_queue_delay_microseconds == summary["winner"]["encoder_delay_us"]
    # no queue policy written (it stalls Triton 2.51's batcher); a Python step keeps shedding by its budget
    assert not tuned.dynamic_batching.HasField("default_queue_policy")
    if step == "tiny_fused":
        assert tuned.parameters["queue_budget_ms"].string_value == str(tinymodels.QUEUE_TIMEOUT_MS)
    _serves(repository)

    previous = Path(summary["previous_configs"])
    if step == "tiny_encoder":
        assert (previous / step / "config.pbtxt").read_bytes() == original["tiny_encoder/config.pbtxt"]
    for created in summary["created"]:  # the undo the report prints: [rm -r fused &&] cp -r previous/. repo/
        shutil.rmtree(created)
    shutil.copytree(previous, repository, dirs_exist_ok=True)
    assert _files(repository) == original


@pytest.mark.integration
def test_a_fused_winner_adds_the_fused_step_and_can_be_undone(repository: Path, tmp_path: Path) -> None:
    # A start that cannot win in the ensemble layout: every request waits 200 ms for the tokenizer's batch to
    # fill. The fused step tokenizes itself, with the encoder's batching: the layout is the first knob tried.
    _slowed(repository, "tiny_tokenizer")
    original = _files(repository)

    code, summary = _tune(repository, _slo(tmp_path / "slo.yaml", p99_ms=5000, max_users=1), tmp_path / "r", "75s")

    assert code == 0 and summary["winner"]["layout"] == "fused"
    assert str(repository / "tiny" / "config.pbtxt") in summary["written"]
    text_in = parse((repository / "tiny" / "config.pbtxt").read_text())
    assert [step.model_name for step in text_in.ensemble_scheduling.step] == ["tiny_fused"]
    release = parse((repository / "tiny_v1" / "config.pbtxt").read_text())  # the release's own entry point too
    assert [(s.model_name, s.model_version) for s in release.ensemble_scheduling.step] == [("tiny_fused", 1)]
    fused = parse((repository / "tiny_fused" / "config.pbtxt").read_text())
    assert fused.dynamic_batching.max_queue_delay_microseconds == summary["winner"]["encoder_delay_us"]
    assert (repository / "tiny_fused" / "1" / "model.py").is_file()
    _serves(repository)

    # the undo the report prints: remove the fused step, put the previous configs back
    assert summary["undo"].startswith(f"rm -r {repository / 'tiny_fused'} && cp -r ")
    assert summary["created"] == [str(repository / "tiny_fused")]
    shutil.rmtree(repository / "tiny_fused")
    shutil.copytree(Path(summary["previous_configs"]), repository, dirs_exist_ok=True)
    assert _files(repository) == original


def test_a_budget_too_small_for_one_config_is_a_clear_error(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slo = _slo(tmp_path / "slo.yaml", p99_ms=100, max_users=8)
    report = tmp_path / "report"
    argv = ["tune", "--repository", str(repository), "--slo", str(slo), "--budget", "2s", "--report-dir", str(report)]
    assert main([*argv, *SHORT_POINTS]) == 1
    assert not report.exists()  # refused before anything started
    err = capsys.readouterr().err
    assert "a budget of 2 s cannot pay for one config" in err and "hint: give --budget at least" in err
