"""How the cores are split between the load generator and the server under test.

``pinned`` (the default where there are at least 2 cores): the server side --
Triton and its model processes, the FastAPI service, and the in-process limit
-- runs on ``server`` cores; the load generator (this process during a load
run) on ``client`` cores. Every variant's model thus gets the same cores, and
the load generator cannot steal them (nor the server starve it). ``shared``
leaves every process on every core.

Affinity is per thread on Linux, and a child inherits the mask of the thread
that forks it: so a server is started while this thread is pinned to the
server cores (its threads and model processes all inherit them), and every
thread of this process is moved explicitly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSplit:
    mode: str  # "pinned" or "shared"
    server: tuple[int, ...]
    client: tuple[int, ...]
    note: str = ""

    def describe(self) -> str:
        if self.mode == "shared":
            return f"shared: server and load generator on cores {_cores(self.server)}{self.note}"
        return (
            f"pinned: model/server on core(s) {_cores(self.server)}, "
            f"load generator on core(s) {_cores(self.client)}{self.note}"
        )

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "server": list(self.server), "client": list(self.client), "text": self.describe()}


def _cores(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def plan(mode: str, available: set[int] | None = None) -> CpuSplit:
    """The split for ``mode`` over the cores this process may use."""
    cpus = tuple(sorted(available if available is not None else os.sched_getaffinity(0)))
    if mode == "shared":
        return CpuSplit("shared", cpus, cpus)
    if mode != "pinned":
        raise ValueError(f"unknown cpu split {mode!r}: use 'pinned' or 'shared'")
    if len(cpus) < 2:
        return CpuSplit("shared", cpus, cpus, note=" (one core only: nothing to split)")
    # The load generator needs far less than the model: a quarter of the cores, at least one.
    client_count = max(1, len(cpus) // 4)
    return CpuSplit("pinned", cpus[:-client_count], cpus[-client_count:])


def _thread_ids() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/task")]


def pin_all_threads(cpus: tuple[int, ...]) -> None:
    """Move every thread of this process to ``cpus``."""
    for tid in _thread_ids():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """Run the block with every thread of this process on ``cpus``; restore the previous mask after."""
    previous = tuple(sorted(os.sched_getaffinity(0)))
    pin_all_threads(cpus)
    try:
        yield
    finally:
        pin_all_threads(previous)


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # after the command name: state(0) ppid(1) pgrp(2)
                pids.append(int(entry.name))
    return pids


def pin_group(pgid: int, cpus: tuple[int, ...]) -> int:
    """Move every thread of every process in group ``pgid`` to ``cpus``; return how many moved.

    Inheritance is not enough: ONNX Runtime pins its own intra-op threads to
    cores of its choosing (one per physical core of the machine), which would
    put a served encoder thread on the load generator's core.
    """
    moved = 0
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    if os.sched_getaffinity(int(tid)) != set(cpus):
                        os.sched_setaffinity(int(tid), cpus)
                        moved += 1
    return moved


def _cpu_ticks(pid: int) -> int:
    """User + system clock ticks of process ``pid`` so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    return _cpu_ticks(pid) / _CLOCK_TICKS


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total_ticks = 0
    for pid in _group_pids(pgid):
        try:
            total_ticks += _cpu_ticks(pid)
        except OSError:
            continue
    return total_ticks / _CLOCK_TICKS


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq of all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS
