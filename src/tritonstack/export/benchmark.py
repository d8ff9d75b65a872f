"""Throughput of ONNX candidates: sequences per second on the gate split's texts.

Same texts and calls for every candidate (on a CPU one text per call, see
``search.py``; on a GPU batches of 32 padded to the longest text of each),
a fixed number of intra-op threads. Candidates are interleaved call by call
-- A1 B1 C1 A2 B2 C2 ... -- so that bursts of load from other processes on a
shared machine hit all of them alike; a round is one pass over all calls, and
the median round counts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_THREADS = 2
DEFAULT_REPS = 3
WARMUP_CALLS = 16  # untimed calls per session first: allocations, kernel selection (all of them, if fewer)


def make_session(model: Path | Any, *, threads: int = DEFAULT_THREADS, providers: list[str] | None = None) -> Any:
    """An ONNX Runtime session on a file or an ``onnx.ModelProto``, ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fused-op shape warnings are noise here
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])


def _run_timed(session: Any, feed: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    session.run(None, feed)
    return time.perf_counter() - started


def measure_throughput(
    sessions: Mapping[str, Any],
    batches: list[dict[str, np.ndarray]],
    *,
    reps: int = DEFAULT_REPS,
    before_round: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median sequences per second of each session over ``reps`` rounds, interleaved per batch.

    ``WARMUP_CALLS`` untimed calls each first (allocations, kernel selection).
    """
    texts = sum(len(next(iter(b.values()))) for b in batches)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {}
    for name, session in sessions.items():
        inputs = [i.name for i in session.get_inputs()]
        feeds[name] = [{n: b[n] for n in inputs} for b in batches]
        for feed in feeds[name][:WARMUP_CALLS]:
            session.run(None, feed)
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(reps):
        if before_round is not None:
            before_round()
        round_s = dict.fromkeys(sessions, 0.0)
        for index in range(len(batches)):
            for name, session in sessions.items():
                round_s[name] += _run_timed(session, feeds[name][index])
        for name, value in round_s.items():
            seconds[name].append(value)
    return {name: texts / statistics.median(values) for name, values in seconds.items()}
