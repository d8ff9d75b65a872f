"""Throughput of ONNX candidates: sequences per second on the gate split's texts.

Same texts and calls for every candidate (on a CPU one text per call, see
``search.py``; on a GPU batches of 32 padded to the longest text of each),
a fixed number of intra-op threads. Candidates take turns block by block --
A1..A16 B1..B16 C1..C16 A17.. -- so that bursts of load from other processes
on a shared machine hit all of them alike, and each block starts with an
untimed call: a served model runs alone, with its weights in the CPU's
caches, and switching models call by call measured MiniLM 2-3x slower than
that (cold caches), blocks of 16 only a little. A round is one pass over all
calls. Each block's time is its median over the rounds, and a candidate's
time the sum of those: a burst that slows a few blocks of one round is voted
out block by block.
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
BLOCK_CALLS = 16  # consecutive timed calls of one session before the next one's turn


def make_session(model: Path | Any, *, threads: int = DEFAULT_THREADS, providers: list[Any] | None = None) -> Any:
    """An ONNX Runtime session on a file or an ``onnx.ModelProto``, ``threads`` intra-op threads (one inter-op),
    on exactly ``providers`` (names or (name, options) pairs): ONNX Runtime's own fallback to the CPU is off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fused-op shape warnings are noise here
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"], enable_fallback=0)


def _run_block(session: Any, feeds: list[dict[str, np.ndarray]]) -> float:
    """Seconds for ``feeds`` back to back, after one untimed call that brings the model back into the caches."""
    session.run(None, feeds[0])
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
    """Sequences per second of each session over ``reps`` rounds, taking turns block by block, each block's
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
    starts = range(0, len(batches), BLOCK_CALLS)
    seconds: dict[str, list[list[float]]] = {name: [[] for _ in starts] for name in sessions}
    for _ in range(reps):
        if before_round is not None:
            before_round()
        for block, start in enumerate(starts):
            for name, session in sessions.items():
                seconds[name][block].append(_run_block(session, feeds[name][start : start + BLOCK_CALLS]))
    return {name: texts / sum(statistics.median(times) for times in blocks) for name, blocks in seconds.items()}
