"""Throughput of ONNX candidates: sequences per second on the parity texts.

Same texts for every candidate, batches of 32 padded to the longest text of
each batch (what the served tokenizer does), a fixed number of intra-op
threads. Rounds are interleaved across candidates -- A B C, A B C, ... -- so
that load from other processes on a shared machine hits all of them alike; the
median round counts.
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


def make_session(path: Path, *, threads: int = DEFAULT_THREADS, providers: list[str] | None = None) -> Any:
    """An ONNX Runtime session with ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fused-op shape warnings are noise here
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def _one_pass(session: Any, feeds: list[dict[str, np.ndarray]]) -> float:
    started = time.perf_counter()
    for feed in feeds:
        session.run(None, feed)
    return time.perf_counter() - started


def measure_throughput(
    sessions: Mapping[str, Any],
    batches: list[dict[str, np.ndarray]],
    *,
    reps: int = DEFAULT_REPS,
    before_round: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median sequences per second of each session over ``reps`` interleaved rounds.

    One untimed warm-up pass each first (allocations, kernel selection).
    """
    texts = sum(len(next(iter(b.values()))) for b in batches)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {}
    for name, session in sessions.items():
        inputs = [i.name for i in session.get_inputs()]
        feeds[name] = [{n: b[n] for n in inputs} for b in batches]
        _one_pass(session, feeds[name])
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(reps):
        if before_round is not None:
            before_round()
        for name, session in sessions.items():
            seconds[name].append(_one_pass(session, feeds[name]))
    return {name: texts / statistics.median(values) for name, values in seconds.items()}
