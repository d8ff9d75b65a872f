"""The status line of bench, tune and loadtest: its text, its estimate, and silence off a terminal."""

from __future__ import annotations

import io

import pytest

from tritonstack.measure.progress import Progress, duration_text, on_terminal, remaining_s, status_text


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (or not) and keeps what was written to it."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_short() -> None:
    assert [duration_text(s) for s in (0, 4.4, 59.6, 65, 3599, 3720, -3)] == [
        "0s", "4s", "1m00s", "1m05s", "59m59s", "1h02m", "0s",
    ]  # fmt: skip


def test_the_rest_of_the_plan_goes_at_the_pace_so_far() -> None:
    # 10 of 40 planned units took 30 s: 3 s a unit, 90 s for the other 30, less the 5 s the current point ran
    assert remaining_s(10, 40, 30.0, 5.0) == 85.0
    assert remaining_s(0, 40, 0.0, 5.0, pace=1.0) == 35.0  # a plan in seconds, nothing done yet: the plan itself
    assert remaining_s(0, 40, 0.0, 5.0) == 0.0  # no pace known: no time claimed
    assert remaining_s(40, 40, 30.0, 5.0) == 0.0  # past the plan: never below 0
    assert remaining_s(10, 40, 30.0, 500.0) == 0.0


def test_the_status_line_names_the_point_the_times_and_the_last_throughput() -> None:
    line = status_text("served c=16", 72, 150, "127.6 texts/s")
    assert line == "served c=16 | 1m12s elapsed, about 2m30s left | last 127.6 texts/s"
    assert status_text("config #3", 10, 50, None, bound=True) == "config #3 | 10s elapsed, at most 50s left"
    assert status_text("ramp users=8", 3, None, None) == "ramp users=8 | 3s elapsed"
    # as wide as the terminal would wrap, and \r would then fail: the point's name gives way first
    long_name = "config #5 (confirm): layout ensemble->fused, rows_per_call 0->1"
    cut = status_text(long_name, 16, 14, "343.9 req/s at c=2", bound=True, width=80)
    assert cut == "config #5 (confirm):… | 16s elapsed, at most 14s left | last 343.9 req/s at c=2"
    assert len(cut) == 79
    narrow = status_text("candidate " + "x" * 100, 1, 1, "1 req/s", width=40)
    assert len(narrow) == 39 and narrow.startswith("candidate xxxxx… | 1s elapsed") and narrow.endswith("…")


@pytest.mark.parametrize(
    ("tty", "environ", "expected"),
    [
        (True, {"TERM": "xterm-256color"}, True),
        (True, {}, True),
        (False, {"TERM": "xterm"}, False),
        (True, {"TERM": "xterm", "CI": "true"}, False),
        (True, {"TERM": "xterm", "CI": ""}, True),  # set but empty: as unset
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_only_a_terminal_outside_ci_gets_the_line(tty: bool, environ: dict[str, str], expected: bool) -> None:
    assert on_terminal(FakeTerminal(tty), environ) is expected


def test_a_stream_without_isatty_or_closed_is_no_terminal() -> None:
    closed = io.StringIO()
    closed.close()  # its isatty raises ValueError
    assert not on_terminal(closed, {}) and not on_terminal(object(), {})  # type: ignore[arg-type]


def test_on_a_terminal_the_line_is_rewritten_in_place_and_ends_with_a_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal, clock = FakeTerminal(tty=True), Clock()
    progress = Progress(terminal, clock=clock, refresh_s=None, width=100)
    assert progress.enabled
    progress.plan(20, pace=1.0)  # two points of 10 s each
    progress.start("in-process b=1", 10)
    clock.now += 12
    progress.measured("166.3 texts/s")
    progress.start("served c=1", 10)  # the first took 12 s for its 10 units: the second about 12 s too
    progress.write("    served   c=1     92.9 texts/s")
    clock.now += 2
    progress.close()
    written = terminal.getvalue()
    assert written.startswith("\rstarting | 0s elapsed")
    assert "\rin-process b=1 | 0s elapsed, about 20s left" in written
    assert "\rserved c=1 | 12s elapsed, about 12s left | last 166.3 texts/s" in written
    assert "\rdone | 14s elapsed | last 166.3 texts/s" in written
    assert written.endswith("\n") and written.count("\n") == 1  # one line, rewritten with \r, then ended
    assert capsys.readouterr().out == "    served   c=1     92.9 texts/s\n"  # the command's own line, untouched
    progress.write("after")  # closed: plain lines again, nothing more on the status stream
    assert terminal.getvalue() == written


def test_a_budget_is_a_bound_on_the_time_left() -> None:
    terminal, clock = FakeTerminal(tty=True), Clock()
    progress = Progress(terminal, enabled=True, clock=clock, refresh_s=None, width=100)
    progress.plan(600, bound=True)
    clock.now += 150
    progress.start("config #2 (search): rows_per_call 0->1")
    assert progress.line() == "config #2 (search): rows_per_call 0->1 | 2m30s elapsed, at most 7m30s left"
    progress.close()


def test_off_a_terminal_nothing_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    pipe = FakeTerminal(tty=False)
    progress = Progress(pipe, refresh_s=0.01)
    assert not progress.enabled and progress._ticker is None
    progress.plan(10, pace=1.0)
    progress.start("served c=16", 5)
    progress.measured("127.6 texts/s")
    progress.write("    served   c=16   127.6 texts/s")
    progress.close()
    assert pipe.getvalue() == ""
    assert capsys.readouterr().out == "    served   c=16   127.6 texts/s\n"  # lines print as before


def test_the_ticker_redraws_with_the_probe_and_stops_on_close() -> None:
    import time

    terminal = FakeTerminal(tty=True)
    progress = Progress(terminal, enabled=True, refresh_s=0.01, width=100)
    progress.probe = lambda: "8/8 users, 120.3 req/s so far"
    progress.start("load users=8")
    deadline = time.monotonic() + 5
    while "120.3 req/s" not in terminal.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.close()
    assert "load users=8 | 0s elapsed | last 8/8 users, 120.3 req/s so far" in terminal.getvalue()
    assert progress._ticker is not None and not progress._ticker.is_alive()
