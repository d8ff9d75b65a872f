"""One status line for the long commands (bench, tune, loadtest): rewritten in place on a terminal, silent elsewhere.

A person watching a terminal sees what is being measured, for how long the
command has run, about how long is left and the last throughput measured::

    served c=16 | 1m12s elapsed, about 2m30s left | last 127.6 texts/s

In CI, in a pipe, in a log file or under pytest nothing of it is written, so
logs stay as they were. Lines the command prints meanwhile go through
:meth:`Progress.write`, which takes the status line away, prints, and draws it
again. The remaining time comes from a plan in *units* (``plan``): by the pace
of the units done so far, or, for a plan in seconds with nothing done yet,
the plan itself; a plan that is only a bound (tune's budget) says "at most".

tqdm (export's progress bar) draws a bar of counted steps; these commands
know their points and their time rather than a count, and print a line per
point as well, so a status line that steps aside for them is what fits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

REFRESH_S = 1.0  # how often the line is drawn again while a point runs (elapsed moves on)
SEPARATOR = " | "
MIN_POINT_CHARS = 16  # a long point name is cut to make room for the times, but not below this


def on_terminal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a person watches ``stream``: it is a TTY, ``CI`` is unset (or empty) and ``TERM`` is not dumb."""
    environ = os.environ if environ is None else environ
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        tty = False
    return tty and not environ.get("CI") and environ.get("TERM", "") != "dumb"


def duration_text(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a status line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def remaining_s(done: float, total: float, done_at_s: float, since_s: float, *, pace: float | None = None) -> float:
    """Seconds left of a plan of ``total`` units of which ``done`` took ``done_at_s`` seconds, ``since_s``
    seconds after the last unit was done: the rest at the pace so far (``done_at_s / done`` s per unit), or at
    ``pace`` before any unit is done, less the time the current units have run already; never below 0."""
    if done > 0:
        pace = done_at_s / done
    return max(0.0, (pace or 0.0) * max(0.0, total - done) - since_s)


def status_text(
    point: str,
    elapsed_s: float,
    left_s: float | None,
    measured: str | None,
    *,
    bound: bool = False,
    width: int = 80,
) -> str:
    """The status line, cut to ``width - 1`` characters (a line as wide as the terminal wraps, and ``\\r`` then
    rewrites only its second half): the point's name is shortened first, the times and figure last."""
    times = f"{duration_text(elapsed_s)} elapsed"
    if left_s is not None:
        times += f", {'at most' if bound else 'about'} {duration_text(left_s)} left"
    rest = SEPARATOR.join([times] + ([f"last {measured}"] if measured else []))
    limit = max(1, width - 1)
    room = limit - len(SEPARATOR) - len(rest)  # what the point's name may take
    if len(point) > room:
        point = point[: max(MIN_POINT_CHARS, room) - 1] + "…"
    line = point + SEPARATOR + rest
    return line if len(line) <= limit else line[: limit - 1] + "…"


class Progress:
    """The status line of one command; does nothing unless ``enabled`` (default: :func:`on_terminal`).

    ``start(label, units)`` begins a point that the plan counts as ``units``; the previous one is then done.
    ``measured(text)`` sets the last throughput. ``close()`` ends the line with a newline.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float | None = REFRESH_S,
        width: int | None = None,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = on_terminal(self.stream) if enabled is None else enabled
        self.clock = clock
        self.width = width
        self.started = clock()
        self.point = "starting"
        self.last_measured: str | None = None
        self.total: float | None = None  # the plan, in units
        self.bound = False  # the plan is a bound on the time (tune's budget), not an estimate
        self.pace: float | None = None  # seconds per unit before any is done
        self.done = 0.0  # units of the points finished
        self.current = 0.0  # units of the point running now
        self.plan_started = self.started
        self.done_at = self.started  # when the last point finished
        self.probe: Callable[[], str | None] | None = None  # asked for ``measured`` at each refresh
        self._drawn = 0  # characters of the line on the terminal now
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.enabled and refresh_s:
            self._ticker = threading.Thread(target=self._tick, args=(refresh_s,), name="progress", daemon=True)
            self._ticker.start()

    @classmethod
    def off(cls) -> Progress:
        """A status line that is never drawn: for callers that were given none."""
        return cls(enabled=False)

    def plan(self, total: float, *, pace: float | None = None, bound: bool = False) -> None:
        """``total`` units from now on; ``pace``: seconds per unit until one is done (a plan in seconds: 1);
        ``bound``: the plan is the most time left (a budget), not an estimate."""
        self.total, self.pace, self.bound = total, pace, bound
        self.done, self.current = 0.0, 0.0
        self.plan_started = self.done_at = self.clock()
        self.draw()

    def start(self, point: str, units: float = 0.0) -> None:
        """Point ``point`` begins, ``units`` of the plan; the point before it is done."""
        now = self.clock()
        if self.current:
            self.done += self.current
            self.done_at = now
        self.point, self.current = point, units
        self.draw()

    def measured(self, text: str) -> None:
        """The last throughput measured, as shown: ``127.6 texts/s``."""
        self.last_measured = text
        self.draw()

    def left_s(self) -> float | None:
        """Seconds left by the plan; ``None`` without one."""
        if self.total is None:
            return None
        now = self.clock()
        if self.bound:  # e.g. a budget: the command stops by then at the latest
            return max(0.0, self.total - (now - self.plan_started))
        return remaining_s(self.done, self.total, self.done_at - self.plan_started, now - self.done_at, pace=self.pace)

    def line(self) -> str:
        width = self.width or shutil.get_terminal_size(fallback=(80, 24)).columns
        elapsed = self.clock() - self.started
        return status_text(self.point, elapsed, self.left_s(), self.last_measured, bound=self.bound, width=width)

    def draw(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._draw()

    def _draw(self) -> None:
        line = self.line()
        # spaces over what is left of a longer line before: no terminal escape codes needed
        self.stream.write("\r" + line + " " * max(0, self._drawn - len(line)))
        self.stream.flush()
        self._drawn = len(line)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0

    def write(self, line: str) -> None:
        """Print ``line`` (on stdout, as ``print`` does) with the status line stepped aside; a ``Log``."""
        if not self.enabled:
            print(line)
            return
        with self._lock:
            self._clear()
            print(line, flush=True)
            self._draw()

    def _tick(self, refresh_s: float) -> None:
        while not self._stop.wait(refresh_s):
            if self.probe is not None:
                # a probe that fails must not end the command: the line keeps what it had
                with contextlib.suppress(Exception):
                    self.last_measured = self.probe() or self.last_measured
            self.draw()

    def close(self) -> None:
        """Stop refreshing and end the status line with a newline, so that what follows starts on its own line."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * REFRESH_S)
        if self.enabled:
            with self._lock:
                if self.current:
                    self.done += self.current
                    self.current = 0.0
                self.point, self.total = "done", None  # nothing left to estimate
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
                self.enabled = False  # closed: a second close, or a late write, draws nothing

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
