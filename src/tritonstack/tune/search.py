"""The two searches of ``tune``, as pure functions of what was measured.

* Across configs, :func:`climb`: coordinate hill-climbing from the export's
  defaults. One knob at a time, it steps along that knob's ordered values in
  one direction, then the other, keeping the best config seen on the way. A
  direction is abandoned after ``PATIENCE`` consecutive steps clearly below the
  best of its line (it "stopped paying"; one noisy measurement is not enough).
  Flat stretches are crossed rather than stopped at: a cap on rows per call
  changes nothing until it is below the batch Triton forms, yet the best value
  may lie beyond. A line's best must beat the incumbent by ``min_gain``, and
  keep beating it when measured a second time (judged on the mean of both), to
  become the new incumbent: noise alone does not move the search. Passes over
  all knobs repeat until one changes nothing or the budget ends (``evaluate``
  returns ``None``). A config is measured once, twice if it was a move.
* Within a config, :func:`next_concurrency`: a closed-loop sweep over the SLO's
  capacity levels (``start_users`` x ``factor`` ... ``max_users``) that starts
  where the incumbent peaked, climbs while the objectives hold and throughput
  still grows by ``saturation_gain``, and descends from a start that missed
  until a level holds. In a closed loop latency grows with concurrency, so
  the levels it skips would not have scored higher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tritonstack.measure.slo import CapacitySpec, Objectives
from tritonstack.tune.knobs import Knobs
from tritonstack.tune.score import Score, SweepPoint, combine, misses
from tritonstack.tune.space import Dimension

Evaluate = Callable[[Knobs], Score | None]  # None: the budget cannot pay for another measurement
MIN_GAIN = 0.03
SATURATION_GAIN = 0.05
MAX_PASSES = 3
PATIENCE = 2  # consecutive clearly worse steps that end a direction


@dataclass
class SearchOutcome:
    best: Knobs
    scores: dict[Knobs, Score] = field(default_factory=dict)  # every config measured (mean of its measurements)
    exhausted: bool = False  # the budget ended the search (else no direction paid any more)


class _Memo:
    """Every measurement of every config; a config's score is ``combine`` of its measurements.
    After ``evaluate`` first returns ``None`` (the budget is spent), nothing more is measured."""

    def __init__(self, evaluate: Evaluate) -> None:
        self.evaluate = evaluate
        self.measurements: dict[Knobs, list[Score]] = {}
        self.exhausted = False

    def __call__(self, knobs: Knobs) -> Score | None:
        """The config's score, measured now if it never was."""
        if knobs in self.measurements:
            return combine(self.measurements[knobs])
        return self.again(knobs)

    def again(self, knobs: Knobs) -> Score | None:
        """Measure the config once more; its score over all its measurements."""
        if self.exhausted:
            return None
        result = self.evaluate(knobs)
        if result is None:
            self.exhausted = True
            return None
        self.measurements.setdefault(knobs, []).append(result)
        return combine(self.measurements[knobs])

    def scores(self) -> dict[Knobs, Score]:
        return {knobs: combine(scores) for knobs, scores in self.measurements.items()}


def _line(best: Knobs, dimension: Dimension, measured: _Memo, min_gain: float) -> Knobs:
    """The best config along ``dimension`` from ``best``: one direction, then the other if the first did not pay."""
    incumbent = measured(best)
    assert incumbent is not None  # measured before any line starts
    values, index = dimension.around(best)
    for step in (1, -1):
        line_best, line_score, worse = best, incumbent, 0
        position = index + step
        while 0 <= position < len(values):
            candidate = dimension.set(best, values[position])
            result = measured(candidate)
            if result is None:
                break
            if result.key() > line_score.key():
                line_best, line_score, worse = candidate, result, 0
            elif line_score.beats(result, min_gain):
                worse += 1
                if worse == PATIENCE:
                    break  # the direction stopped paying
            position += step
        if line_best != best and line_score.beats(incumbent, min_gain):
            again = measured.again(line_best)  # a move must hold up when measured a second time
            if again is not None and again.beats(incumbent, min_gain):
                return line_best
        if measured.exhausted:
            break
    return best


def climb(
    start: Knobs,
    dimensions: Sequence[Dimension],
    evaluate: Evaluate,
    *,
    min_gain: float = MIN_GAIN,
    max_passes: int = MAX_PASSES,
) -> SearchOutcome:
    """Coordinate hill-climbing from ``start`` over ``dimensions`` (see the module docstring)."""
    measured = _Memo(evaluate)
    best = start
    if measured(start) is not None:
        for _ in range(max_passes):
            before = best
            for dimension in dimensions:
                if dimension.applies(best):
                    best = _line(best, dimension, measured, min_gain)
                if measured.exhausted:
                    break
            if best == before or measured.exhausted:
                break
    return SearchOutcome(best=best, scores=measured.scores(), exhausted=measured.exhausted)


def concurrency_levels(capacity: CapacitySpec) -> tuple[int, ...]:
    """``start_users``, x ``factor``, ... up to ``max_users`` (distinct integers)."""
    levels: list[int] = []
    users = float(capacity.start_users)
    while round(users) <= capacity.max_users:
        if not levels or round(users) > levels[-1]:
            levels.append(round(users))
        users *= capacity.factor
    return tuple(levels)


def next_concurrency(
    levels: Sequence[int],
    points: Sequence[SweepPoint],
    objectives: Objectives,
    *,
    saturation_gain: float = SATURATION_GAIN,
) -> int | None:
    """The level to measure after ``points`` (in measurement order, the first at the start level); ``None``: done."""
    first, last = points[0], points[-1]
    position = levels.index(last.concurrency)
    if misses(first, objectives):  # descending until a level holds
        return levels[position - 1] if misses(last, objectives) and position > 0 else None
    if misses(last, objectives) or position == len(levels) - 1:
        return None
    if len(points) > 1 and last.throughput_per_s < points[-2].throughput_per_s * (1 + saturation_gain):
        return None  # saturated: more callers only queue
    return levels[position + 1]
