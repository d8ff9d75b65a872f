"""The soak: growth arithmetic (pure) and a short run against the real embedded Triton."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritonstack.bench import soak
from tritonstack.bench.workload import BenchWorkload
from tritonstack.server.processes import ProcessInfo


def test_growth_is_the_fitted_slope_in_percent_of_the_mean_per_window() -> None:
    # 100 MiB growing 1 MiB a minute: mean 102 MiB over minutes 0..4, slope 10 MiB per 10 minutes.
    times = [0.0, 60.0, 120.0, 180.0, 240.0]
    values = [100.0, 101.0, 102.0, 103.0, 104.0]
    assert soak.growth_pct(times, values, 600.0) == pytest.approx(100 * 10 / 102)
    assert soak.growth_pct(times, [50.0] * 5, 600.0) == 0.0
    # noise around a flat line: the fit, unlike last-minus-first, finds no growth
    assert soak.growth_pct(times, [100.0, 101.0, 99.0, 99.0, 101.0], 600.0) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        soak.growth_pct([0.0], [1.0], 600.0)


def _sample(elapsed_s: float, rss_mib: float, pid: int = 10, errors: int = 0) -> soak.Reading:
    process = ProcessInfo(pid, "tiny_encoder_0_0", alive=True, rss_bytes=int(rss_mib * 2**20), open_fds=12)
    return soak.Reading(elapsed_s, ok=5, errors=errors, processes=(process,))


def test_growth_ignores_the_warm_up_and_a_restarted_process_is_a_new_one() -> None:
    result = soak.SoakResult(duration_s=40, warmup_s=15, concurrency=2)
    result.samples += [_sample(10, 50), _sample(20, 100), _sample(30, 100), _sample(40, 100, pid=11)]
    (row,) = result.growth()  # pid 11 has one sample only: no rate
    assert row.rss_start_mib == 100 and row.rss_growth_pct_per_10min == 0.0 and row.holds
    assert result.ok == 20 and result.errors == 0


def test_the_table_names_a_missed_target() -> None:
    result = soak.SoakResult(duration_s=30, warmup_s=0, concurrency=2)
    result.samples += [_sample(10, 100), _sample(20, 101), _sample(30, 102, errors=3)]
    text = soak.table(result)
    assert "target RSS growth < 2 %/10 min: MISSED" in text
    assert "target 0 errors: MISSED" in text
    assert "shorter than 10 minutes" in text


def test_too_short_a_soak_is_refused_before_starting_anything(tiny_repository: Path) -> None:
    from tritonstack.bench.errors import BenchError

    with pytest.raises(BenchError, match="fewer than two samples"):
        soak.run_soak(
            tiny_repository, "tiny", BenchWorkload.of_texts(["a"]), duration_s=5, warmup_s=0, sample_every_s=5
        )
    with pytest.raises(BenchError, match="warm-up"):
        soak.run_soak(
            tiny_repository, "tiny", BenchWorkload.of_texts(["a"]), duration_s=10, warmup_s=9, sample_every_s=2
        )


@pytest.mark.integration
def test_a_short_soak_samples_triton_and_every_model_process(tiny_repository: Path, tmp_path: Path) -> None:
    texts = ["short text", "a somewhat longer text with more words in it", "ok"]
    result = soak.run_soak(
        tiny_repository, "tiny", BenchWorkload.of_texts(texts), duration_s=6, warmup_s=2, concurrency=2,
        sample_every_s=1, log_path=tmp_path / "triton.log", log=lambda _: None,
    )  # fmt: skip
    assert len(result.samples) == 6
    assert result.errors == 0 and result.first_error is None
    assert result.ok > 0 and all(s.ok > 0 for s in result.samples)
    names = {p.name for p in result.samples[-1].processes}
    # the server and one stub per model instance of the repository (tiny, tiny_cls and tiny_ner are served)
    assert "tritonserver" in names
    assert {"tiny_tokenizer_0_0", "tiny_encoder_0_0"} <= names, names
    for process in result.samples[-1].processes:
        assert process.rss_bytes > 1_000_000 and process.open_fds > 0
        assert not os.path.exists(f"/proc/{process.pid}")  # the server and its stubs stopped with the soak
    rows = {r.name: r for r in result.growth()}
    assert "tritonserver" in rows and rows["tritonserver"].rss_start_mib > 1
    paths = soak.write(result, tmp_path / "report")
    lines = paths["samples"].read_text().splitlines()
    assert lines[0].startswith("elapsed_s,ok,errors,process")
    assert len(lines) == 1 + sum(len(s.processes) for s in result.samples)


def test_the_command_line_refuses_a_malformed_duration(capsys: pytest.CaptureFixture[str]) -> None:
    from tritonstack.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--soak", "10x"])
    assert exit_info.value.code == 2
    assert "argument --soak: expected a duration such as 30s, 2m or 1h30m, got '10x'" in capsys.readouterr().err
