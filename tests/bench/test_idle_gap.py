"""bench.idle_gap: the model timed one text per call, back to back and after idle gaps (no timing asserted)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tritonstack.bench import idle_gap


def test_every_gap_is_measured_in_every_round_and_the_gap_is_slept_before_each_call() -> None:
    seen: list[tuple[str, float]] = []
    last = [time.perf_counter()]

    def run(call: str) -> None:
        now = time.perf_counter()
        seen.append((call, now - last[0]))
        last[0] = now

    medians = idle_gap.measure(run, ["a", "b"], (0.0, 5.0), rounds=2)
    assert list(medians) == [0.0, 5.0] and all(len(v) == 2 for v in medians.values())
    # one warm-up pass, then per round: the 0 ms pass, the 5 ms pass
    assert [call for call, _ in seen] == ["a", "b"] * 5
    slept = [since for k, (_, since) in enumerate(seen) if (k // 2) in (2, 4)]
    assert min(slept) >= 0.005


def test_the_table_reads_each_gap_against_the_first() -> None:
    lines = idle_gap.table({0.0: [1.0, 1.2, 1.1], 2.0: [1.5, 1.6, 1.7]})
    assert lines[1].split()[:2] == ["0", "ms"] and "1.00x (+0.000 ms)" in lines[1]
    assert "1.600" in lines[2] and "1.45x (+0.500 ms)" in lines[2]


def test_the_command_runs_the_served_encoder(tiny_repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--repository", str(tiny_repository), "--name", "tiny", "--texts", "4", "--rounds", "1"]
    assert idle_gap.main([*args, "--gaps-ms", "0,0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"tiny in {tiny_repository}: 4 texts of 2-10 words") and len(out) == 4
    with pytest.raises(SystemExit):
        idle_gap.main([*args, "--gaps-ms", "-1"])
