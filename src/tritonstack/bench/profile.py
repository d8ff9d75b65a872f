"""Where the server's CPU goes at a served point: samples of Triton and its stubs, grouped by serving stage.

``bench --profile`` runs one extra, unmeasured round at c=1 and at c=16 while
samplers watch the server side, and writes what they saw into the report
folder: per process a collapsed-stack file (``profile-c16-minilm_fused_0_0.txt``,
"root;...;leaf count" lines; speedscope opens it) and a flame graph
(``.svg``), and ``profile.json``/a printed table with the samples grouped into
the stages of issue 23 (:data:`CATEGORIES`, by function and library names:
:func:`category`).

* The Python-backend stubs (``triton_python_backend_stub``, children of
  ``tritonserver``): ``py-spy record --native`` (Python frames with the native
  frames below them). py-spy pauses the process for each sample and counts a
  thread blocked in an unsymbolized libc wait as busy: a stack of unresolved
  addresses only is counted apart (:data:`IDLE`), and shares are of the rest.
* ``tritonserver`` runs no Python, which py-spy refuses ("Failed to find python
  version"): it is sampled with ``perf record --call-graph dwarf`` where perf
  is installed (on-CPU samples only), else left out with the reason.

Both attach with ptrace/perf events: root, or in a container ``CAP_SYS_PTRACE``
(and ``CAP_PERFMON`` or ``kernel.perf_event_paranoid`` <= 1 for perf).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack.bench import flamegraph
from tritonstack.bench.errors import BenchError

Stacks = dict[tuple[str, ...], int]  # frames, root first -> samples

GRPC, ENSEMBLE, CORE, STUB_IPC = "gRPC frontend", "ensemble scheduler", "Triton core (batcher, requests)", "stub IPC"
DECODE, TOKENIZER, ONNX, RESPONSE = "request decode", "tokenizer", "ONNX Runtime per call", "response build"
TURN, OTHER, IDLE = "CPU-turn lock", "other", "idle (unresolved native wait)"
# A stack goes to the rule of its frame nearest the leaf (``category``); within a frame, the first rule that
# names it.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (TURN, ("CpuTurns.", "NoTurns.", "flock")),
    (TOKENIZER, ("TextTokenizer.", "(tokenization.py", "tokenizers", "rayon")),
    (ONNX, ("Session.run", "run_rows (", "_Encoder.run", "length_groups", "onnxruntime", "Ort")),
    (RESPONSE, ("_respond", "_task_outputs", "_classify", "_entities", "_softmax", "InferenceResponse")),
    (DECODE, ("_decode_texts", "_decode_rows", "_Step.read", "deserialize_bytes", "get_input_tensor", "as_numpy")),
    (
        STUB_IPC,
        (
            "is_cancelled",
            "triton::backend::python",
            "libtriton_python",
            "boost::interprocess",
            "MessageQueue",
            "SharedMemory",
            "IPCMessage",
            "Stub::",
        ),
    ),
    (ENSEMBLE, ("Ensemble",)),
    (CORE, ("triton::core::", "DynamicBatch", "RateLimiter", "libtritonserver", "TRITONSERVER_", "TRITONBACKEND_")),
    (GRPC, ("grpc", "gpr_", "chttp2", "protobuf", "triton::server::", "InferHandler", "absl::")),
)
# waits and wake-ups of the stub's message loop: its IPC, where no stage's frame says otherwise
_IPC_WAITS = ("pthread_cond", "sem_post", "sem_wait", "sem_timedwait", "futex")
CATEGORIES = (GRPC, ENSEMBLE, CORE, STUB_IPC, DECODE, TOKENIZER, ONNX, RESPONSE, TURN, OTHER)
_UNRESOLVED = re.compile(r"0x[0-9a-f]+ \(([^)]*)\)")


def tidy(frame: str) -> str:
    """An unresolved native frame (``0x7f.. (libc.so.6)``) as its library (``[libc.so.6]``): addresses differ per
    sample and process, the library does not."""
    return _UNRESOLVED.sub(lambda m: f"[{Path(m.group(1)).name}]", frame)


def parse_collapsed(text: str) -> Stacks:
    """Collapsed stacks ("frame;frame;... count" lines, py-spy's ``raw`` format) -> frames -> samples."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        head, _, count = line.rstrip().rpartition(" ")
        if head and count.isdigit():
            stacks[tuple(head.split(";"))] += int(count)
    return dict(stacks)


def collapsed_text(stacks: Mapping[tuple[str, ...], int]) -> str:
    return "".join(f"{';'.join(frames)} {count}\n" for frames, count in sorted(stacks.items()))


_PERF_FRAME = re.compile(r"^\s*[0-9a-f]+\s+(?P<symbol>.*?)(?:\+0x[0-9a-f]+)?\s+\((?P<dso>[^)]*)\)\s*$")


def collapse_perf_script(text: str) -> Stacks:
    """``perf script`` output (a header line per sample, then its frames leaf first) -> collapsed stacks."""
    stacks: Counter[tuple[str, ...]] = Counter()
    frames: list[str] = []
    in_sample = False
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if in_sample and frames:
                stacks[tuple(reversed(frames))] += 1
            frames, in_sample = [], False
        elif not line[0].isspace():
            in_sample = True
        elif in_sample:
            match = _PERF_FRAME.match(line)
            if match:
                symbol, dso = match["symbol"], Path(match["dso"]).name
                frames.append(f"{symbol} ({dso})" if symbol != "[unknown]" else f"[{dso}]")
    return dict(stacks)


def category(frames: tuple[str, ...]) -> str:
    """The stage of one stack: the rule of the frame nearest the leaf that one names (a gRPC handler that calls
    into the ensemble scheduler is the scheduler's); else a wait of the message loop is stub IPC; a stack of
    unresolved addresses only is :data:`IDLE` (py-spy's view of a blocked thread)."""
    for frame in reversed(frames):
        for name, patterns in RULES:
            if any(p in frame for p in patterns):
                return name
    if frames and all(_UNRESOLVED.fullmatch(f) or (f.startswith("[") and f.endswith("]")) for f in frames):
        return IDLE
    if any(w in f for f in frames for w in _IPC_WAITS):
        return STUB_IPC
    return OTHER


def group(stacks: Mapping[tuple[str, ...], int]) -> dict[str, int]:
    """Samples per stage (:data:`CATEGORIES`, and :data:`IDLE` where there were such samples)."""
    groups = dict.fromkeys(CATEGORIES, 0)
    for frames, count in stacks.items():
        name = category(frames)
        groups[name] = groups.get(name, 0) + count
    return groups


def shares(groups: Mapping[str, int]) -> dict[str, float]:
    """Each stage's fraction of the busy samples (:data:`IDLE` left out)."""
    busy = sum(n for name, n in groups.items() if name != IDLE)
    return {name: (n / busy if busy else 0.0) for name, n in groups.items() if name != IDLE}


PY_SPY, PERF = "py-spy --native", "perf"
PERF_HZ = 1000  # perf counts on-CPU time only: tritonserver's few CPU-ms per second need a high rate


def py_spy() -> str:
    """The py-spy executable (beside this Python first: a virtual environment need not be on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if not found:
        raise BenchError(
            "bench --profile samples the server with py-spy, which is not installed",
            hint="pip install 'tritonstack[bench]' (or pip install py-spy); it attaches with ptrace: run as root, "
            "or give a container CAP_SYS_PTRACE",
        )
    return found


@dataclass
class ProcessProfile:
    """One process's samples at one point."""

    process: str  # "tritonserver" or a stub's instance ("minilm_fused_0_0")
    model: str  # "tritonserver" or the stub's model
    sampler: str  # PY_SPY (Python and native frames, blocked threads too) or PERF (native frames, on-CPU only)
    groups: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0  # the process's CPU time over the window, from /proc
    files: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class PointProfile:
    label: str  # "c16"
    window_s: float
    processes: list[ProcessProfile]


def _cpu_s(pid: int) -> float:
    import os

    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Profiler:
    """Samples Triton's process tree during :meth:`recording` blocks; :meth:`write` adds ``profile.json``."""

    def __init__(
        self, report_dir: Path, concurrencies: tuple[int, ...] = (1, 16), rate_hz: int = 100, duration_s: float = 5.0
    ):
        self.report_dir = report_dir
        self.concurrencies = concurrencies
        self.duration_s = duration_s  # of each profiled round: a few hundred samples per busy process
        self.rate_hz = rate_hz
        self.py_spy = py_spy()  # fails before any measuring when py-spy is missing
        self.perf = shutil.which("perf")
        self.points: list[PointProfile] = []

    @contextlib.contextmanager
    def recording(self, label: str, server_pid: int) -> Iterator[None]:
        """Sample ``tritonserver`` (``server_pid``) and each of its stubs for the duration of the block."""
        from tritonstack.server.processes import process_tree

        self.report_dir.mkdir(parents=True, exist_ok=True)
        samplers: list[tuple[ProcessProfile, subprocess.Popen[bytes] | None, Path, int]] = []

        def start(entry: ProcessProfile, command: list[str], raw: Path, pid: int) -> None:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            samplers.append((entry, process, raw, pid))

        for info in process_tree(server_pid):
            if not info.alive or (info.pid != server_pid and info.model is None):
                continue
            stem = self.report_dir / f"profile-{label}-{info.name}"
            model = "tritonserver" if info.pid == server_pid else info.model or info.name
            if info.pid != server_pid:  # py-spy reads Python's frames; tritonserver has none
                command = [self.py_spy, "record", "--native", "-r", str(self.rate_hz), "-f", "raw",
                           "-p", str(info.pid), "-o", f"{stem}.txt"]  # fmt: skip
                start(ProcessProfile(info.name, model, PY_SPY), command, Path(f"{stem}.txt"), info.pid)
            if self.perf:
                command = [self.perf, "record", "-q", "-F", str(PERF_HZ), "--call-graph", "dwarf,16384",
                           "-p", str(info.pid), "-o", f"{stem}.perf.data"]  # fmt: skip
                start(ProcessProfile(info.name, model, PERF), command, Path(f"{stem}.perf.data"), info.pid)
            elif info.pid == server_pid:
                entry = ProcessProfile(info.name, model, PERF)
                entry.error = "perf is not installed: tritonserver runs no Python, so py-spy cannot sample it"
                samplers.append((entry, None, stem, info.pid))
        time.sleep(0.5)  # py-spy and perf attach before the load starts
        started = time.perf_counter()
        cpu_before = {pid: _cpu_s(pid) for _, _, _, pid in samplers}
        try:
            yield
        finally:
            window_s = time.perf_counter() - started
            for entry, _, _, pid in samplers:
                entry.cpu_s = _cpu_s(pid) - cpu_before[pid]
            for _, process, _, _ in samplers:
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGINT)  # both write what they sampled on SIGINT
            for entry, process, raw, _ in samplers:
                self._collect(entry, process, raw, label)
            self.points.append(PointProfile(label, window_s, [entry for entry, _, _, _ in samplers]))

    def _collect(self, entry: ProcessProfile, process: subprocess.Popen[bytes] | None, raw: Path, label: str) -> None:
        if process is None:
            return
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        if not raw.is_file() or raw.stat().st_size == 0:
            entry.error = _first_line(stderr) or f"{entry.sampler} exited {process.returncode}"
            return
        if raw.suffix == ".data":
            script = subprocess.run([self.perf or "perf", "script", "-i", str(raw)], capture_output=True, timeout=300)
            raw.unlink()
            stacks = collapse_perf_script(script.stdout.decode(errors="replace"))
            if not stacks:
                entry.error = _first_line(script.stderr) or _first_line(stderr) or "perf recorded no sample"
            raw = raw.with_name(raw.name.removesuffix(".data") + ".txt")
            raw.write_text(collapsed_text(stacks))
        else:
            stacks = parse_collapsed(raw.read_text(errors="replace"))
        tidied: Counter[tuple[str, ...]] = Counter()
        for frames, count in stacks.items():
            tidied[tuple(tidy(f) for f in frames)] += count
        svg = raw.with_suffix(".svg")
        svg.write_text(flamegraph.render(tidied, f"{entry.process} at {label} ({entry.sampler})"))
        entry.groups = group(tidied)
        entry.files = [raw.name, svg.name]

    def summary(self) -> dict[str, Any]:
        """``profile.json``'s content: per point and process, samples per stage and the stages' busy shares."""
        return {
            "categories": list(CATEGORIES),
            "points": [
                {
                    "label": point.label,
                    "window_s": round(point.window_s, 3),
                    "processes": [
                        {
                            "process": p.process, "model": p.model, "sampler": p.sampler,
                            "cpu_s": round(p.cpu_s, 3), "samples": p.groups,
                            "shares": {k: round(v, 4) for k, v in shares(p.groups).items()},
                            "files": p.files, "error": p.error,
                        }
                        for p in point.processes
                    ],
                }
                for point in self.points
            ],
        }  # fmt: skip

    def write(self) -> Path:
        path = self.report_dir / "profile.json"
        path.write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path

    def table(self) -> str:
        """Busy shares per stage of tritonserver and each busy stub model (instances summed), per point."""
        columns: list[tuple[str, dict[str, int], float, float]] = []  # title, groups, cpu share, idle share
        for point in self.points:
            models: dict[tuple[str, str], Counter[str]] = {}  # (model, sampler): its instances' samples
            cpu: dict[tuple[str, str], float] = {}
            for p in point.processes:
                if p.groups:
                    key = (p.model, p.sampler)
                    models.setdefault(key, Counter()).update(p.groups)
                    cpu[key] = cpu.get(key, 0.0) + p.cpu_s
            busiest = max(cpu.values(), default=0.0)
            for (model, sampler), groups in models.items():
                busy = sum(n for k, n in groups.items() if k != IDLE)
                if busy and (model == "tritonserver" or cpu[model, sampler] >= 0.25 * busiest):  # idle: files only
                    title = f"{point.label} {model} {sampler.split()[0]}"
                    idle = groups.get(IDLE, 0) / sum(groups.values())
                    columns.append((title, dict(groups), cpu[model, sampler] / point.window_s, idle))
        if not columns:
            return "profile: no samples (see profile.json's errors)"
        width = max(len(c) for c in CATEGORIES) + 2
        lines = ["".join([" " * width, *(f"{title:>28s}" for title, _, _, _ in columns)])]
        for name in CATEGORIES:
            cells = [f"{100 * shares(groups)[name]:27.1f}%" for _, groups, _, _ in columns]
            lines.append(f"{name:<{width}s}" + "".join(cells))
        lines.append(f"{'busy samples':<{width}s}" + "".join(
            f"{sum(n for k, n in g.items() if k != IDLE):28d}" for _, g, _, _ in columns))  # fmt: skip
        lines.append(f"{'idle samples (left out)':<{width}s}" + "".join(f"{100 * i:27.1f}%" for *_, i in columns))
        lines.append(f"{'CPU (cores, /proc)':<{width}s}" + "".join(f"{c:28.2f}" for _, _, c, _ in columns))
        return "\n".join(lines)


def _first_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[0] if lines else ""
