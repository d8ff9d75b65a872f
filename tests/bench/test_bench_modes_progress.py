"""The status line of bench's other modes (--soak, --overload, --repeat-ratio, --sdk): the plan and points each
gives it, against a fake client and no server, and the command's Progress (its log steps aside, --no-progress)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tritonstack.bench import cache, overload, sdk_overhead, soak
from tritonstack.bench.workload import BenchWorkload
from tritonstack.in_triton import contract
from tritonstack.measure.progress import Progress
from tritonstack.measure.timing import Timing
from tritonstack.measure.triton_stats import Counters, TritonStatsProbe

TEXTS = ["short text", "a somewhat longer text with more words in it", "ok", "four words of text"]


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal and keeps what was written to it."""

    def isatty(self) -> bool:
        return True


class Recording(Progress):
    """A real status line on a fake terminal that also keeps the calls made to it, in order."""

    def __init__(self) -> None:
        super().__init__(FakeTerminal(), refresh_s=None, width=200)
        self.calls: list[tuple[Any, ...]] = []

    def plan(self, total: float, *, pace: float | None = None, bound: bool = False) -> None:
        self.calls.append(("plan", total, pace, bound))
        super().plan(total, pace=pace, bound=bound)

    def start(self, point: str, units: float = 0.0) -> None:
        self.calls.append(("start", point, units))
        super().start(point, units)

    def measured(self, text: str) -> None:
        self.calls.append(("measured", text))
        super().measured(text)

    def points(self) -> list[str]:
        return [call[1] for call in self.calls if call[0] == "start"]

    def planned(self) -> float:
        """The units of the points started after the plan: what the plan should add up to."""
        index = next(k for k, call in enumerate(self.calls) if call[0] == "plan")
        return sum(call[2] for call in self.calls[index:] if call[0] == "start")

    @property
    def written(self) -> str:
        return self.stream.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def progress(monkeypatch: pytest.MonkeyPatch) -> Recording:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    recording = Recording()
    assert recording.enabled
    return recording


class FakeAsyncClient:
    """The SDK's AsyncClient as the modes use it: an embedding model that answers after ``delay_s``."""

    delay_s = 0.002

    def __init__(self, url: str, **_options: Any) -> None:
        self.url = url

    async def __aenter__(self) -> FakeAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def embed(self, texts: list[str]) -> np.ndarray:
        await asyncio.sleep(self.delay_s)
        return np.ones((len(texts), 4), dtype=np.float32)


class FakeStats(TritonStatsProbe):
    """Triton's statistics of a server that counted nothing."""

    async def snapshot(self) -> dict[str, Counters]:
        return {model: Counters() for model in self.models}

    async def close(self) -> None:
        return None


@contextlib.contextmanager
def fake_serving(*_args: Any, **_kwargs: Any) -> Iterator[Any]:
    yield SimpleNamespace(grpc_url="fake:8001", pid=os.getpgid(0))  # this process's group: its CPU is readable


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonstack.client

    monkeypatch.setattr(tritonstack.client, "AsyncClient", FakeAsyncClient)
    monkeypatch.setattr("tritonstack.bench.served.serving", fake_serving)
    monkeypatch.setattr(cache, "serving", fake_serving)
    monkeypatch.setattr(cache, "TritonStatsProbe", FakeStats)
    monkeypatch.setattr(overload, "TritonStatsProbe", FakeStats)


def test_the_soak_plans_its_samples_and_names_the_warm_up(
    progress: Recording, no_server: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class FakeServer:
        grpc_url, pid = "fake:8001", os.getpid()

        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            self.stopped = False

        def start(self) -> None:
            return None

        def stop(self) -> None:
            self.stopped = True

    monkeypatch.setattr("tritonstack.server.EmbeddedServer", FakeServer)
    assert soak.sample_count(0.3, 0.1) == 3 and soak.sample_count(0.35, 0.1) == 3
    result = soak.run_soak(
        Path("unused"), "m", BenchWorkload.of_texts(TEXTS), duration_s=0.3, warmup_s=0.15, concurrency=2,
        sample_every_s=0.1, log=progress.write, progress=progress,
    )  # fmt: skip
    assert len(result.samples) == 3 and result.ok > 0
    assert progress.points() == [
        "starting Triton",
        "soak sample 1/3 (warm-up)",
        "soak sample 2/3 (growth judged)",
        "soak sample 3/3 (growth judged)",
        "stopping Triton",
    ]
    assert progress.calls[1] == ("plan", pytest.approx(0.3), 1.0, False)  # once Triton is up, in seconds
    assert progress.planned() == pytest.approx(0.3)
    measured = [call[1] for call in progress.calls if call[0] == "measured"]
    assert len(measured) == 3 and all(" calls/s, RSS " in text and text.endswith(" MiB") for text in measured)
    assert re.search(
        r"\rsoak sample 2/3 \(growth judged\) \| \d+s elapsed, about \d+s left \| last \d", progress.written
    )
    # the sample lines went through the status line's write: printed whole, on stdout
    assert capsys.readouterr().out.count(" calls/s ") == 3


def test_the_overload_plans_its_phases_and_shows_the_burst_as_it_goes(
    progress: Recording, no_server: None, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeAsyncClient.delay_s = 0.005
    try:
        result = overload.run_overload(
            Path("unused"), "m", BenchWorkload.of_texts(TEXTS), multiple=2, burst_s=0.3, deadline_s=1.0,
            concurrency=2, capacity_s=0.2, probe_every_s=0.05, recovery_window_s=0.2, cpu_split="shared",
            log=progress.write, progress=progress,
        )  # fmt: skip
    finally:
        FakeAsyncClient.delay_s = 0.002
    assert result.capacity_rps > 0 and result.outcomes["ok"] == len(result.calls) > 0
    assert progress.points() == [
        "starting Triton",
        "overload: single calls (normal latency)",
        "overload: capacity at 2 callers",
        f"overload: burst at {result.rate_rps:.0f} calls/s (2x)",
        "overload: recovery probes",
        "overload: waiting for the burst's last answers",
        "stopping Triton",
    ]
    planned = overload.planned_s(capacity_s=0.2, burst_s=0.3, recovery_window_s=0.2)
    assert planned == pytest.approx(1.0 + 0.2 + 0.3 + 0.2)  # the capacity phase's warm-up counts
    assert ("plan", pytest.approx(planned), 1.0, False) in progress.calls
    assert progress.planned() == pytest.approx(planned)
    measured = [call[1] for call in progress.calls if call[0] == "measured"]
    assert measured[0] == f"capacity {result.capacity_rps:.1f} calls/s"
    assert measured[-1].startswith(f"goodput {result.goodput_rps:.1f} calls/s, 0% shed, recovered in ")
    assert progress.probe is None  # the burst's live count ends with it
    assert "capacity " in capsys.readouterr().out


def test_the_overloads_live_figure_counts_the_answers_by_kind() -> None:
    calls = [overload.Call(0.0, 0.01, outcome) for outcome in ("ok", "ok", "OverloadedError", "DeadlineExceeded")]
    calls.append(overload.Call(0.0, 0.01, "ResourceExhaustedError"))
    assert overload.answered(calls) == "5 answered: 2 ok, 2 shed"
    assert overload.answered([]) == "0 answered: 0 ok, 0 shed"


def test_the_cache_bench_plans_both_runs_rounds_once_the_first_triton_is_up(
    progress: Recording, no_server: None, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    (repository / "m").mkdir(parents=True)
    (repository / "m" / "config.pbtxt").write_text('name: "m"\nplatform: "ensemble"\n')
    timing = Timing(rounds=2, warmup_s=0.02, duration_s=0.05)
    settings = cache.CacheBenchSettings(
        repository=repository, name="m", report_dir=tmp_path / "report", texts=TEXTS * 4, repeat_ratio=0.5,
        hot_set=2, concurrency=2, timing=timing, cpu_split="shared", task=contract.FEATURE_EXTRACTION,
    )  # fmt: skip
    assert cache.planned_s(settings) == 2 * 2 * (0.02 + 0.05)
    result = cache.run_cache_bench(settings, log=progress.write, progress=progress)
    assert result.uncached.point.throughput_per_s > 0
    assert progress.points() == [
        "starting Triton (no cache)",
        "no cache, round 1/2",
        "no cache, round 2/2",
        "no cache: the hot requests once more",
        "stopping Triton (no cache)",
        "starting Triton (local cache)",
        "local cache, round 1/2",
        "local cache, round 2/2",
        "local cache: the hot requests once more",
        "stopping Triton (local cache)",
    ]
    assert progress.calls[1] == ("plan", pytest.approx(cache.planned_s(settings)), 1.0, False)
    assert progress.planned() == pytest.approx(cache.planned_s(settings))
    measured = [call[1] for call in progress.calls if call[0] == "measured"]
    assert len(measured) == 2 * (2 + 1)  # each round, then each run's summary
    assert measured[0].endswith(" texts/s (no cache)")
    assert measured[-1].startswith(f"{result.cached.point.throughput_per_s:.1f} texts/s (local cache), hit ratio ")


def test_the_sdk_bench_plans_in_calls_at_the_warm_ups_pace(
    progress: Recording, monkeypatch: pytest.MonkeyPatch, no_server: None
) -> None:
    settings = sdk_overhead.SdkSettings(calls=20, block=10, in_flight=4, concurrent_calls=9, rounds=2)
    assert sdk_overhead.calls_per_run(settings) == 8  # 9 calls shared by 4 callers: 2 each
    assert sdk_overhead.planned_calls(settings) == 2 * 20 + 2 * 3 * 8

    def sequential(_url: str, result: sdk_overhead.SdkOverheadResult, progress: Progress) -> None:
        sdk_overhead._alternate(lambda: None, lambda: None, result, progress)

    def run(url: str, model: str, in_flight: int, calls: int) -> sdk_overhead.Run:
        return sdk_overhead.Run(123.0, 1e-4)

    monkeypatch.setattr(sdk_overhead, "_sequential", sequential)
    for name in ("_sync_threads", "_async_client", "_raw_aio"):
        monkeypatch.setattr(sdk_overhead, name, run)
    result = sdk_overhead.run_sdk_overhead(Path("unused"), "m", settings, cpu_split="shared", progress=progress)
    assert len(result.sdk.latencies_us) == 20 and all(len(runs) == 2 for runs in result.runs.values())
    assert progress.points() == [
        "starting Triton",
        "sequential calls: warm-up",
        "sequential calls: block 1/2, raw and SDK",
        "sequential calls: block 2/2, raw and SDK",
        *(f"{kind} run {n}/2, 4 in flight" for n in (1, 2) for kind in ("sync", "async", "raw-aio")),
        "stopping Triton",
    ]
    (plan,) = [call for call in progress.calls if call[0] == "plan"]
    assert plan[1] == sdk_overhead.planned_calls(settings) and plan[2] > 0  # the warm-up's seconds per call
    assert progress.planned() == sdk_overhead.planned_calls(settings)
    measured = [call[1] for call in progress.calls if call[0] == "measured"]
    assert measured[0].startswith("SDK / raw median ") and measured[-1] == "123 calls/s (raw-aio)"


class Stop(Exception):
    """Raised by a fake run_* once it has recorded how the command called it."""


MODES = {
    "--soak": (["--soak", "30s"], soak, "run_soak"),
    "--overload": (["--overload", "4"], overload, "run_overload"),
    "--repeat-ratio": (["--repeat-ratio", "0.5"], cache, "run_cache_bench"),
    "--sdk": (["--sdk"], sdk_overhead, "run_sdk_overhead"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("no_progress", [False, True])
def test_each_mode_runs_under_a_status_line_its_lines_step_aside_for(
    mode: str, no_progress: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tritonstack.commands import bench

    argv, module, function = MODES[mode]
    seen: dict[str, Any] = {}

    def fake_run(*_args: Any, **kwargs: Any) -> None:
        seen.update(kwargs, enabled=kwargs["progress"].enabled)
        raise Stop

    monkeypatch.setattr(module, function, fake_run)
    monkeypatch.setattr(bench, "_ensure_model", lambda *a, **k: "reused")
    monkeypatch.setattr(bench, "_served_task", lambda *a, **k: contract.FEATURE_EXTRACTION)
    monkeypatch.setattr(bench, "_workload", lambda *a, **k: BenchWorkload.of_texts(TEXTS))
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)  # where the status line goes: a terminal here
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.chdir(tmp_path)  # no loadtest/slo.yaml here
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        [*argv, "--model-dir", str(tmp_path), "--report-dir", str(tmp_path / "report")]
        + (["--no-progress"] if no_progress else [])
    )
    with pytest.raises(Stop):
        bench.run(args)
    progress = seen["progress"]
    assert isinstance(progress, Progress) and seen["enabled"] is not no_progress
    assert seen["log"] == progress.write  # the mode's lines go through the status line
    # closed on the way out, error or not: the line ended with a newline, and nothing is drawn after
    assert not progress.enabled
    assert terminal.getvalue() == "" if no_progress else terminal.getvalue().endswith("\n")


def test_the_gateway_bench_shows_each_round_of_each_path_and_its_throughput(
    monkeypatch: pytest.MonkeyPatch, progress: Recording
) -> None:
    from tritonstack.bench import gateway

    async def sdk_round(*args: Any) -> gateway.Round:
        return gateway.Round([1000.0] * 50, 1.0)

    async def gateway_round(*args: Any) -> gateway.Round:
        return gateway.Round([2000.0] * 40, 1.0)

    monkeypatch.setattr(gateway, "_sdk_round", sdk_round)
    monkeypatch.setattr(gateway, "_gateway_round", gateway_round)
    lines: list[str] = []
    result = gateway.measure(
        "127.0.0.1:1", None, "m", TEXTS, concurrencies=(1, 4), rounds=2, duration_s=0.5, log=lines.append,
        progress=progress,
    )  # fmt: skip
    assert progress.calls[0] == ("plan", 4.0, 1.0, False)  # 2 concurrencies x 2 rounds x 2 paths x 0.5 s
    assert progress.points() == [
        f"gateway bench: c={c} {path}, round {k}/2" for c in (1, 4) for k in (1, 2) for path in ("SDK", "gateway")
    ]
    assert progress.planned() == 4.0
    assert ("measured", "SDK 50.0 req/s") in progress.calls and ("measured", "gateway 40.0 req/s") in progress.calls
    assert [p.throughput(gateway.GATEWAY) for p in result.points] == [40.0, 40.0] and len(lines) == 2
