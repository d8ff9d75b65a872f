"""The model's own time after the core idled: one text per ONNX Runtime call, back to back and with idle gaps.

``python -m tritonstack.bench.idle_gap [--repository R] [--name NAME] [--words 2-10] [--gaps-ms 0,0.5,2,10]``
runs the encoder a repository serves as ``NAME`` in this process on one core, one text per call (tokenized
beforehand, so only the model is timed), and sleeps ``gap`` between calls, the gaps alternating in every round.
A served model at one caller or at half load computes after its core has idled (the round trip, the next
arrival), while the in-process limit of ``bench`` runs its calls back to back on a hot core: the difference is
part of the served c=1 and half-load figures that no serving path can take out. docs/bench.md has a run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tritonstack.bench.texts import make_texts
from tritonstack.measure import cpus

DEFAULT_GAPS_MS = (0.0, 0.5, 2.0, 10.0)


def call_ms(run: Callable[[Any], Any], calls: Sequence[Any], gap_s: float) -> list[float]:
    """Milliseconds of each ``run(call)``, with ``gap_s`` of sleep before each."""
    timings = []
    for call in calls:
        if gap_s:
            time.sleep(gap_s)
        start = time.perf_counter()
        run(call)
        timings.append(1000 * (time.perf_counter() - start))
    return timings


def measure(
    run: Callable[[Any], Any], calls: Sequence[Any], gaps_ms: Sequence[float], rounds: int
) -> dict[float, list[float]]:
    """Median call time (ms) of each gap in each round; the gaps alternate within a round, after one warm-up
    pass back to back."""
    call_ms(run, calls, 0.0)
    medians: dict[float, list[float]] = {gap: [] for gap in gaps_ms}
    for _ in range(rounds):
        for gap in gaps_ms:
            medians[gap].append(statistics.median(call_ms(run, calls, gap / 1000)))
    return medians


def table(medians: dict[float, list[float]]) -> list[str]:
    """One line per gap: the medians of its rounds and their median against the back-to-back one's."""
    gaps = list(medians)
    hot = statistics.median(medians[gaps[0]])
    lines = [f"{'idle gap':>9}  {'median call, per round (ms)':<34} {'median':>7}  vs {gaps[0]:g} ms gap"]
    for gap in gaps:
        median = statistics.median(medians[gap])
        rounds = " ".join(f"{m:.3f}" for m in medians[gap])
        lines.append(f"{gap:>7g} ms  {rounds:<34} {median:7.3f}  {median / hot:.2f}x (+{median - hot:.3f} ms)")
    return lines


def _gaps(text: str) -> tuple[float, ...]:
    try:
        gaps = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: milliseconds separated by commas, e.g. 0,0.5,2") from None
    if not gaps or any(g < 0 for g in gaps):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more gaps >= 0")
    return gaps


def main(argv: Sequence[str] | None = None) -> int:
    from tritonstack.bench.inprocess import InProcessModel
    from tritonstack.commands._args import word_range
    from tritonstack.commands.bench import DEFAULT_REPOSITORY
    from tritonstack.measure.served_files import locate

    parser = argparse.ArgumentParser(prog="python -m tritonstack.bench.idle_gap", description=__doc__)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="the repository bench serves")
    parser.add_argument("--name", default="minilm", help="text-in model name in the repository")
    parser.add_argument("--words", type=word_range, default=(2, 10), metavar="MIN-MAX", help="words per text")
    parser.add_argument("--texts", type=int, default=256, help="texts per pass")
    parser.add_argument("--gaps-ms", type=_gaps, default=DEFAULT_GAPS_MS, metavar="MS,MS,...", help="idle gaps")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every gap once in each")
    args = parser.parse_args(argv)

    core = cpus.plan("pinned").server[0]  # where bench puts its server and its in-process limit
    os.sched_setaffinity(0, {core})
    model = InProcessModel(locate(args.repository, args.name), threads=1)
    texts = make_texts(args.texts, seed=0, min_words=args.words[0], max_words=args.words[1])
    calls = [inputs for text in texts for _, inputs in model.calls([text])]
    print(
        f"{args.name} in {args.repository}: {len(calls)} texts of {args.words[0]}-{args.words[1]} words, one per "
        f"ONNX Runtime call, 1 thread on core {core}; {args.rounds} rounds, gaps alternating"
    )
    names = [model.output_name]
    medians = measure(lambda feeds: model.session.run(names, feeds), calls, args.gaps_ms, args.rounds)
    for line in table(medians):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
