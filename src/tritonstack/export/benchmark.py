"""Throughput of ONNX candidates: sequences per second on the gate split's texts.

Same texts and calls for every candidate (on a CPU one text per call, see
``search.py``; on a GPU batches of 32 padded to the longest text of each),
a fixed number of intra-op threads. Candidates are interleaved call by call
-- A1 B1 C1 A2 B2 C2 ... -- so that bursts of load from other processes on a
shared machine hit all of them alike; a round is one pass over all calls.
Each call's time is its median over the rounds, and a candidate's time the
sum of those: a burst that slows a few calls of one round is voted out call by
call, where a median over whole rounds would keep a round that one long burst
spoilt for one candidate and not the next.
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
    """Sequences per second of each session over ``reps`` rounds, interleaved per batch, each batch's
    time the median of its rounds (see the module docstring).

    ``WARMUP_CALLS`` untimed calls each first (allocations, kernel selection).
    """
    texts = sum(len(next(iter(b.values()))) for b in batches)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {}
    for name, session in sessions.items():
        inputs = [i.name for i in session.get_inputs()]
        feeds[name] = [{n: b[n] for n in inputs} for b in batches]
        for feed in feeds[name][:WARMUP_CALLS]:
            session.run(None, feed)
    seconds: dict[str, list[list[float]]] = {name: [[] for _ in batches] for name in sessions}
    for _ in range(reps):
        if before_round is not None:
            before_round()
        for index in range(len(batches)):
            for name, session in sessions.items():
                seconds[name][index].append(_run_timed(session, feeds[name][index]))
    return {name: texts / sum(statistics.median(calls) for calls in per_call) for name, per_call in seconds.items()}
