"""Triton's process tree, read from ``/proc``: the server and the Python-backend stubs it runs.

Each instance of a Python-backend model (the tokenizer, postprocess, and on the
embedded server the encoder too) runs in its own stub process, a child of
``tritonserver``, whose command line names the instance (``minilm_encoder_0_0``:
model, instance group, instance) and the ``/dev/shm`` region it shares with the
server. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

STUB = "triton_python_backend_stub"
# The stub's argv: binary, model path, shm region, shm sizes (2), parent pid, backend dir, ?, instance name.
_STUB_REGION_ARG = 2
_STUB_INSTANCE_ARG = 8
_INSTANCE_SUFFIX = re.compile(r"_\d+_\d+$")  # _<instance group>_<instance>


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str  # "tritonserver", or the model instance a stub runs ("minilm_encoder_0_0"); "" for a zombie
    alive: bool  # running, not a zombie
    rss_bytes: int
    open_fds: int
    shm_region: str | None = None  # a stub's /dev/shm region

    @property
    def model(self) -> str | None:
        """The model a stub serves (its instance name without the group and instance numbers)."""
        if self.name in ("", "tritonserver") or not _INSTANCE_SUFFIX.search(self.name):
            return None
        return _INSTANCE_SUFFIX.sub("", self.name)


def _children(pid: int) -> list[int]:
    children = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                children += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return children


def _read(pid: int) -> ProcessInfo:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    rss_bytes = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_bytes = int(line.split()[1]) * 1024  # kB; a zombie has none
    fds = len(os.listdir(f"/proc/{pid}/fd")) if state != "Z" else 0
    program = os.path.basename(argv[0].decode(errors="replace"))
    if program == STUB and len(argv) > _STUB_INSTANCE_ARG:
        name, region = argv[_STUB_INSTANCE_ARG].decode(errors="replace"), argv[_STUB_REGION_ARG].decode()
        return ProcessInfo(pid, name, state != "Z", rss_bytes, fds, region)
    return ProcessInfo(pid, program, state != "Z", rss_bytes, fds)


def process_tree(root_pid: int) -> tuple[ProcessInfo, ...]:
    """``root_pid`` and every process below it, server first; processes that exit meanwhile are left out."""
    pids, found = [root_pid], []
    while pids:
        pid = pids.pop()
        pids += _children(pid)
        with contextlib.suppress(OSError, IndexError):
            found.append(_read(pid))
    return tuple(sorted(found, key=lambda p: (p.name != "tritonserver", p.name, p.pid)))


def stubs(root_pid: int) -> list[ProcessInfo]:
    """The Python-backend stubs under Triton ``root_pid`` (dead ones, not yet reaped, included)."""
    return [p for p in process_tree(root_pid) if p.shm_region is not None or (not p.alive and p.pid != root_pid)]
