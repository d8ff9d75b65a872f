"""``tune``'s pure parts: the score against an SLO, the two searches, the knob space, knobs <-> configs."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tritonstack.in_triton import contract
from tritonstack.measure.cpus import CpuSplit
from tritonstack.measure.slo import SLO, CapacitySpec, LoadSpec, Objectives
from tritonstack.measure.timing import Timing
from tritonstack.repository import layouts
from tritonstack.repository.config import parse, render_proto
from tritonstack.repository.errors import RepositoryError
from tritonstack.tune.apply import replace_config
from tritonstack.tune.errors import TuneError
from tritonstack.tune.knobs import Knobs, StepConfigs, apply_knobs, read_knobs
from tritonstack.tune.runner import Trial, TuneResult, TuneSettings, _check_budget, rank, sweep_s
from tritonstack.tune.score import Score, SweepPoint, check_half_load, combine, half_load_rate, misses, score
from tritonstack.tune.search import climb, concurrency_levels, next_concurrency
from tritonstack.tune.space import Dimension, dimensions, encoder_splits, per_call_activation_scales

GOLDEN = Path(__file__).parents[1] / "golden"
P99 = Objectives(latency_ms={99.0: 100.0}, max_error_ratio=0.01)


def point(concurrency: int, throughput: float, p99_ms: float, errors: int = 0, completed: int = 1000) -> SweepPoint:
    return SweepPoint(concurrency, throughput, {50.0: p99_ms / 2, 99.0: p99_ms}, completed, errors)


def half_load(rate: float, p99_ms: float, errors: int = 0) -> SweepPoint:
    """An open-loop point at ``rate`` requests/s that served them all (but ``errors``)."""
    return SweepPoint(0, rate, {50.0: p99_ms / 2, 99.0: p99_ms}, 1000, errors, rate_per_s=rate)


# -- score ---------------------------------------------------------------------------------------------------


def test_the_score_is_the_highest_throughput_at_which_the_objectives_hold() -> None:
    result = score([point(1, 50, 20), point(4, 120, 80), point(16, 200, 300)], P99)
    assert result.held and result.throughput_per_s == 120
    assert result.point is not None and result.point.concurrency == 4


def test_a_config_that_breaks_p99_never_wins_however_fast() -> None:
    fast_but_slow_tail = score([point(1, 500, 101), point(4, 900, 400)], P99)
    slow_but_within = score([point(1, 40, 60)], P99)
    assert not fast_but_slow_tail.held and fast_but_slow_tail.throughput_per_s == 0
    assert fast_but_slow_tail.missed == {"p99_ms": pytest.approx(1.01)}  # the closest point, c=1
    assert slow_but_within.beats(fast_but_slow_tail, min_gain=0.5)
    assert not fast_but_slow_tail.beats(slow_but_within, min_gain=0.0)
    assert sorted([fast_but_slow_tail, slow_but_within], key=Score.key)[-1] is slow_but_within


def test_errors_above_the_bound_break_a_point_and_a_point_without_successes_misses_every_latency() -> None:
    assert misses(point(8, 300, 50, errors=20, completed=980), P99) == {"max_error_ratio": pytest.approx(2.0)}
    nothing = SweepPoint(8, 0.0, {99.0: float("nan")}, 0, 12)
    assert misses(nothing, P99) == {"p99_ms": float("inf"), "max_error_ratio": pytest.approx(100.0)}
    strict = Objectives(latency_ms={}, max_error_ratio=0.0)
    assert misses(point(1, 10, 5, errors=1, completed=9), strict) == {"max_error_ratio": pytest.approx(1.1)}


def test_misses_rank_by_how_far_the_closest_point_missed() -> None:
    near, far = score([point(1, 10, 120)], P99), score([point(1, 10, 400)], P99)
    assert near.beats(far, min_gain=0.1) and not far.beats(near, min_gain=0.0)
    assert score([], P99).excess == float("inf")


def test_gains_below_min_gain_do_not_count() -> None:
    a, b = score([point(4, 100, 50)], P99), score([point(4, 102, 50)], P99)
    assert not b.beats(a, min_gain=0.03) and b.beats(a, min_gain=0.01)


def test_the_half_load_rate_is_half_the_best_throughput_that_held() -> None:
    assert half_load_rate([point(1, 50, 20), point(4, 120, 80), point(16, 200, 300)], P99) == 60
    assert half_load_rate([point(8, 90, 200), point(4, 80, 150)], P99) == 45  # none held: the best point
    assert half_load_rate([SweepPoint(1, 0.0, {99.0: float("nan")}, 0, 12)], P99) is None  # nothing served
    assert half_load_rate([], P99) is None


def test_a_config_whose_half_load_point_misses_does_not_hold_however_fast_its_closed_loop() -> None:
    """Triton 2.51's stalled batcher: a closed loop at high concurrency is fast, half the load in an open loop
    queues requests for the next arrival."""
    sweep = [point(4, 120, 30), point(16, 180, 60)]
    stalls = score(sweep, P99, half_load(90, 830, errors=50))
    assert not stalls.held and stalls.throughput_per_s == 0
    assert stalls.point is not None and stalls.point.concurrency == 16  # the closed loop's best point held
    assert stalls.missed == {
        "half_load p99_ms": pytest.approx(8.3),
        "half_load max_error_ratio": pytest.approx(50 / 1050 / 0.01),
    }
    assert (
        stalls.describe() == "missed half_load p99_ms (8.30x its bound) at half load (90.0 req/s arriving, open loop)"
    )
    slow_but_steady = score([point(4, 40, 60)], P99, half_load(20, 44))
    assert slow_but_steady.held and slow_but_steady.throughput_per_s == 40  # the score is the closed loop's
    assert slow_but_steady.beats(stalls, min_gain=0.5)
    assert combine([slow_but_steady, stalls]) is stalls


def test_a_half_load_miss_adds_to_the_closest_points_misses() -> None:
    missed = score([point(8, 90, 200)], P99, half_load(45, 300))
    assert missed.missed == {"p99_ms": pytest.approx(2.0), "half_load p99_ms": pytest.approx(3.0)}
    assert missed.excess == pytest.approx(3.0)
    assert missed.describe().startswith("missed half_load p99_ms (3.00x its bound) at half load (45.0 req/s")


def test_a_config_without_a_half_load_point_is_scored_on_its_closed_loop_as_before() -> None:
    served_nothing = [SweepPoint(1, 0.0, {99.0: float("nan")}, 0, 12)]
    assert score(served_nothing, P99, None) == score(served_nothing, P99)
    assert score(served_nothing, P99).missed == {"p99_ms": float("inf"), "max_error_ratio": pytest.approx(100.0)}
    held = score([point(4, 120, 80)], P99)
    assert held.held and held.throughput_per_s == 120 and held.half_load is None


def test_repeated_measurements_average_but_a_single_miss_disqualifies() -> None:
    held = [score([point(4, 100, 50)], P99), score([point(4, 80, 60)], P99)]
    assert combine(held).held and combine(held).throughput_per_s == 90
    flaky = [score([point(4, 300, 50)], P99), score([point(4, 300, 150)], P99)]
    assert not combine(flaky).held and combine(flaky).throughput_per_s == 0
    with_half_load = [
        score([point(4, 100, 50)], P99, half_load(50, 30)),
        score([point(4, 80, 60)], P99, half_load(40, 35)),
    ]
    assert combine(with_half_load).half_load == half_load(40, 35)  # the last measurement's, as its point


# -- ranking and the winner -----------------------------------------------------------------------------------


def _result(trials: list[Trial], start: Knobs) -> TuneResult:
    slo = SLO(model="m", load=LoadSpec(users=1, spawn_rate=1, duration_s=1), objectives=P99)
    settings = TuneSettings(repository=Path("r"), name="m", slo=slo, budget_s=60, report_dir=Path("out"))
    steps = _golden_steps()
    workload = {"requests": 8, "texts_per_request": 1, "tokens_per_request_mean": 40.0, "tokens_per_request_max": 90}
    result = TuneResult(settings, CpuSplit("shared", (0,), (0,)), steps, start, (1, 4), workload, "fp32", False, trials)
    result.ranking = rank(trials)
    return result


def _trial(number: int, knobs: Knobs, phase: str, *points: SweepPoint, half: SweepPoint | None = None) -> Trial:
    return Trial(number, knobs, phase, points, score(points, P99, half), (), 0.0, 0.5, 1.0, half)


def test_the_winner_comes_from_the_confirmation_round_and_never_broke_the_slo() -> None:
    start, fast, tailing, lucky = Knobs(), Knobs(rows_per_call=1), Knobs(encoder_delay_us=0), Knobs(rows_per_call=2)
    trials = [
        _trial(1, start, "search", point(4, 100, 50)),
        _trial(2, tailing, "search", point(4, 400, 150)),  # fastest, but its p99 breaks the SLO
        _trial(3, fast, "search", point(4, 150, 60)),
        _trial(4, lucky, "search", point(4, 160, 60)),
        _trial(5, start, "confirm", point(4, 100, 50)),
        _trial(6, fast, "confirm", point(4, 150, 60)),
        _trial(7, lucky, "confirm", point(4, 140, 120)),  # broke the SLO when measured again
    ]
    result = _result(trials, start)
    assert [r.knobs for r in result.ranking][:1] == [fast]
    assert result.winner is not None and result.winner.knobs == fast
    assert result.winner.score.throughput_per_s == 150 and result.winner.trials == 2
    assert next(r for r in result.ranking if r.knobs == tailing).score.held is False
    changed = result.changed_steps()
    assert changed is not None and changed.encoder.parameters["max_rows_per_call"].string_value == "1"


def test_a_winner_within_min_gain_of_the_start_changes_nothing() -> None:
    start, other = Knobs(), Knobs(encoder_delay_us=250)
    trials = [_trial(1, start, "search", point(4, 100, 50)), _trial(2, other, "search", point(4, 102, 50))]
    result = _result(trials, start)
    assert result.winner is not None and result.winner.knobs == start
    assert result.changed_steps() is None


def test_a_gain_inside_the_spread_of_the_measurements_changes_nothing() -> None:
    start, other = Knobs(), Knobs(rows_per_call=16)
    trials = [
        _trial(1, start, "search", point(8, 77, 50)),
        _trial(2, other, "search", point(8, 85, 50)),
        _trial(3, start, "confirm", point(8, 62, 50)),
        _trial(4, other, "confirm", point(8, 72, 50)),  # mean 78.5 against 69.5, but 72 < the start's 77
    ]
    result = _result(trials, start)
    assert result.best is not None and result.best.knobs == other
    assert result.winner is not None and result.winner.knobs == start and result.changed_steps() is None
    assert result.best.measured == (85, 72)


def test_half_load_p99s_compare_the_chosen_mean_with_the_exports_highest() -> None:
    worse = check_half_load([40.0, 44.0], [20.0, 25.0])
    assert worse is not None and worse.worse
    assert (worse.chosen_p99_ms, worse.start_p99_ms, worse.chosen_measurements, worse.start_measurements) == (
        42.0, 25.0, 2, 2,
    )  # fmt: skip
    within_spread = check_half_load([22.0, 26.0, 21.0], [20.0, 25.0])  # mean 23: inside the export's own spread
    assert within_spread is not None and not within_spread.worse
    unmeasured = check_half_load([math.nan], [20.0])  # a chosen config without a figure cannot show it is not worse
    assert unmeasured is not None and unmeasured.worse
    assert check_half_load([30.0], [math.nan]) is None  # the export's config served nothing at half load


def test_a_faster_config_worse_at_half_load_is_not_written_and_the_report_says_why(tmp_path: Path) -> None:
    """The issue's case: tune's winner served more, but its half-load p99 was 15x a text against the export's 8x."""
    from tritonstack.tune import report

    start, batching = Knobs(), Knobs(encoder_delay_us=4000)
    trials = [
        _trial(1, start, "search", point(4, 100, 50), half=half_load(50, 30)),
        _trial(2, batching, "search", point(16, 130, 90), half=half_load(65, 55)),
        _trial(3, batching, "search", point(16, 128, 90), half=half_load(64, 60)),
        _trial(4, start, "confirm", point(4, 101, 50), half=half_load(50, 33)),
        _trial(5, batching, "confirm", point(16, 131, 90), half=half_load(65, 58)),
    ]
    result = _result(trials, start)
    assert result.best is not None and result.best.knobs == batching
    assert result.best.clearly_beats(next(r for r in result.ranking if r.knobs == start), 0.03)
    assert result.best.half_load_p99_ms == (55, 60, 58)
    check = result.half_load_check
    assert result.kept_for_half_load and check is not None
    assert check.start_p99_ms == 33 and check.chosen_p99_ms == pytest.approx(57.67, abs=0.01)
    assert result.winner is not None and result.winner.knobs == start and result.changed_steps() is None
    text = report.table(result)
    assert "winner: the export's config (" in text
    assert (
        "the best other, encoder_delay_us 500 -> 4000, beat it on throughput (req/s 128.0-131.0 against "
        "100.0-101.0) but not at half load: p99 57.7 ms (mean of 3) against the export's 33.0 ms (highest of 2)"
    ) in text
    summary = report.to_json(result, None, dry_run=False)
    assert summary["half_load_check"]["worse"] is True and summary["half_load_check"]["kept_start"] is True
    assert summary["half_load_check"]["start_p99_ms"] == 33


def test_a_faster_config_no_worse_at_half_load_is_written_with_both_figures() -> None:
    from tritonstack.tune import report

    start, faster = Knobs(), Knobs(rows_per_call=1)
    trials = [
        _trial(1, start, "search", point(4, 100, 50), half=half_load(50, 30)),
        _trial(2, faster, "search", point(4, 130, 50), half=half_load(65, 26)),
        _trial(3, start, "confirm", point(4, 101, 50), half=half_load(50, 35)),
        _trial(4, faster, "confirm", point(4, 131, 50), half=half_load(65, 36)),  # mean 31 <= the export's 35
    ]
    result = _result(trials, start)
    assert not result.kept_for_half_load
    assert result.winner is not None and result.winner.knobs == faster and result.changed_steps() is not None
    assert "half load: p99 31.0 ms (mean of 2) against the export's 35.0 ms (highest of 2)" in report.table(result)


def test_no_winner_when_no_config_held() -> None:
    start = Knobs()
    result = _result([_trial(1, start, "search", point(1, 100, 500))], start)
    assert result.winner is None and result.changed_steps() is None


# -- the search across configs --------------------------------------------------------------------------------


def _rows_dimension() -> Dimension:
    return next(d for d in dimensions(cores=1, max_batch_size=64, rows_fixed=False) if d.name == "rows_per_call")


def _landscape(knobs: Knobs) -> Score:
    """One row per call is best; caps above the batch Triton forms (8) change nothing: a flat stretch."""
    throughput = {1: 80.0, 2: 72.0, 4: 66.0}.get(knobs.rows_per_call, 60.0)
    throughput -= abs(knobs.encoder_delay_us - 250) / 100  # a gentle optimum at 250 us
    return score([point(8, throughput, 50)], P99)


def test_climb_crosses_a_flat_stretch_to_the_best_value_and_measures_each_config_once() -> None:
    calls: list[Knobs] = []

    def evaluate(knobs: Knobs) -> Score:
        calls.append(knobs)
        return _landscape(knobs)

    space = [d for d in dimensions(cores=1, max_batch_size=64, rows_fixed=False)
             if d.name in ("rows_per_call", "encoder_delay_us")]  # fmt: skip
    outcome = climb(Knobs(), space, evaluate, min_gain=0.03)
    assert outcome.best.rows_per_call == 1
    assert not outcome.exhausted
    assert calls[0] == Knobs() and set(calls) == set(outcome.scores)
    times = Counter(calls)
    assert times[outcome.best] == 2  # a move is measured twice
    assert sum(1 for n in times.values() if n > 1) <= 2 and max(times.values()) == 2


def test_climb_ignores_gains_below_min_gain() -> None:
    outcome = climb(Knobs(), [_rows_dimension()], lambda k: score([point(8, 100 + k.rows_per_call / 10, 50)], P99))
    assert outcome.best == Knobs()


def test_climb_stops_when_the_budget_does() -> None:
    calls: list[Knobs] = []

    def evaluate(knobs: Knobs) -> Score | None:
        if len(calls) == 3:
            return None
        calls.append(knobs)
        return _landscape(knobs)

    outcome = climb(Knobs(), dimensions(cores=4, max_batch_size=64, rows_fixed=False), evaluate)
    assert outcome.exhausted and len(calls) == 3 and set(outcome.scores) == set(calls)


def test_an_abandoned_direction_is_one_that_got_clearly_worse_twice() -> None:
    """From the start, the steps up are much worse: the climb turns round after two of them."""
    calls: list[int] = []

    def evaluate(knobs: Knobs) -> Score:
        calls.append(knobs.encoder_delay_us)
        return score([point(8, 100 - abs(knobs.encoder_delay_us - 100) / 10, 50)], P99)

    delay = next(d for d in dimensions(cores=1, max_batch_size=64, rows_fixed=False) if d.name == "encoder_delay_us")
    outcome = climb(Knobs(encoder_delay_us=500), [delay], evaluate, min_gain=0.03)
    assert calls[:3] == [500, 1000, 2000]  # each clearly worse than 500: up is abandoned after two steps
    assert 4000 not in calls and outcome.best.encoder_delay_us == 100
    assert calls[3:] == [250, 100, 0, 100]  # down pays; its best, 100, holds up when measured again


def test_a_move_that_does_not_hold_up_when_measured_again_is_not_made() -> None:
    measured: dict[int, int] = {}

    def evaluate(knobs: Knobs) -> Score:
        measured[knobs.rows_per_call] = measured.get(knobs.rows_per_call, 0) + 1
        lucky = knobs.rows_per_call == 16 and measured[16] == 1  # 16 looks 30 % better once, then 30 % worse
        unlucky = knobs.rows_per_call == 16 and measured[16] > 1
        return score([point(8, 130 if lucky else 70 if unlucky else 100, 50)], P99)

    outcome = climb(Knobs(), [_rows_dimension()], evaluate)
    assert measured[16] == 2 and outcome.best == Knobs()


# -- the sweep within a config --------------------------------------------------------------------------------


def test_concurrency_levels_follow_the_slo_capacity_section() -> None:
    assert concurrency_levels(CapacitySpec(1, 2.0, 32)) == (1, 2, 4, 8, 16, 32)
    assert concurrency_levels(CapacitySpec(2, 1.5, 8)) == (2, 3, 4, 7)


LEVELS = (1, 2, 4, 8, 16)


def test_the_sweep_climbs_while_it_holds_and_pays() -> None:
    assert next_concurrency(LEVELS, [point(2, 50, 20)], P99) == 4
    assert next_concurrency(LEVELS, [point(2, 50, 20), point(4, 90, 40)], P99) == 8
    assert next_concurrency(LEVELS, [point(2, 50, 20), point(4, 51, 40)], P99) is None  # saturated
    assert next_concurrency(LEVELS, [point(2, 50, 20), point(4, 90, 140)], P99) is None  # broke the SLO
    assert next_concurrency(LEVELS, [point(8, 50, 20), point(16, 90, 40)], P99) is None  # top level


def test_the_sweep_descends_from_a_start_that_missed_until_a_level_holds() -> None:
    assert next_concurrency(LEVELS, [point(8, 90, 200)], P99) == 4
    assert next_concurrency(LEVELS, [point(8, 90, 200), point(4, 80, 150)], P99) == 2
    assert next_concurrency(LEVELS, [point(8, 90, 200), point(4, 80, 50)], P99) is None
    assert next_concurrency(LEVELS, [point(1, 90, 200)], P99) is None


def test_a_budget_below_one_configs_sweep_is_refused_up_front() -> None:
    timing = Timing(rounds=1, warmup_s=1.0, duration_s=2.0)
    assert sweep_s((1, 2, 4, 8), timing) == 15.0  # four levels and the half-load point, 3 s each
    with pytest.raises(TuneError, match="cannot pay for one config") as error:
        _check_budget(14.0, (1, 2, 4, 8), timing)
    assert "4 concurrency levels and the half-load point, each 3 s" in error.value.message
    assert error.value.hint is not None and "--budget" in error.value.hint
    _check_budget(15.0, (1, 2, 4, 8), timing)


# -- the space ------------------------------------------------------------------------------------------------


def test_encoder_instances_times_threads_fit_the_server_cores_and_two_instances_are_always_a_candidate() -> None:
    assert encoder_splits(1) == ((1, 1), (2, 1))  # two instances share the one core
    assert encoder_splits(2) == ((1, 2), (2, 1))
    assert encoder_splits(3) == ((1, 3), (2, 1), (3, 1))
    assert encoder_splits(4) == ((1, 4), (2, 2), (4, 1))
    assert encoder_splits(6) == ((1, 6), (2, 3), (4, 1), (6, 1))
    assert all(i * t <= cores for cores in (2, 3, 4, 6, 8, 16) for i, t in encoder_splits(cores))


def test_the_space_follows_the_cores_and_a_per_call_scale_graph() -> None:
    one_core = dimensions(cores=1, max_batch_size=64, rows_fixed=False)
    assert one_core[0].name == "encoder_split" and one_core[0].values == ((1, 1), (2, 1))
    assert "rows_per_call" in {d.name for d in one_core}
    fixed = {d.name for d in dimensions(cores=4, max_batch_size=64, rows_fixed=True)}
    assert "rows_per_call" not in fixed and "max_padding_waste" not in fixed and "encoder_split" in fixed
    small = next(d for d in dimensions(cores=1, max_batch_size=4, rows_fixed=False) if d.name == "preferred_batch")
    assert small.values == ((2,), (4,), ())


def test_the_backends_share_of_the_cores_is_written_as_zero_threads() -> None:
    split = next(d for d in dimensions(cores=4, max_batch_size=64, rows_fixed=False) if d.name == "encoder_split")
    assert split.get(Knobs()) == (1, 4)
    assert split.set(Knobs(encoder_instances=2, encoder_threads=2), (1, 4)) == Knobs()
    # two instances of two threads on four cores is the backend's own share: no explicit count
    assert split.set(Knobs(), (2, 2)) == Knobs(encoder_instances=2, encoder_threads=0)
    assert split.get(Knobs(encoder_instances=2)) == (2, 2)
    assert split.set(Knobs(), (4, 1)) == Knobs(encoder_instances=4, encoder_threads=0)
    one_core = next(d for d in dimensions(cores=1, max_batch_size=64, rows_fixed=False) if d.name == "encoder_split")
    assert one_core.get(Knobs()) == (1, 1) and one_core.set(Knobs(), (1, 1)) == Knobs()
    # the export's CPU default (two instances, no thread count) is the (2, 1) split on one core
    assert one_core.get(Knobs(encoder_instances=2)) == (2, 1)
    assert one_core.set(Knobs(), (2, 1)) == Knobs(encoder_instances=2)
    # a count the backend would not choose stays explicit
    assert split.set(Knobs(), (2, 1)) == Knobs(encoder_instances=2, encoder_threads=1)


def test_a_value_outside_the_list_is_placed_in_order() -> None:
    values, index = _rows_dimension().around(Knobs(rows_per_call=3))
    assert values == (1, 2, 3, 4, 8, 16, 0) and index == 2
    delay = next(d for d in dimensions(cores=1, max_batch_size=64, rows_fixed=False) if d.name == "encoder_delay_us")
    values, index = delay.around(Knobs(encoder_delay_us=200_000))
    assert values[0] == 0 and values[index - 1] == 4000 and index == len(values) - 1
    preferred = next(d for d in dimensions(cores=1, max_batch_size=64, rows_fixed=False) if d.name == "preferred_batch")
    values, index = preferred.around(Knobs(preferred_batch=(3,)))
    assert values == ((2,), (3,), (4,), (8,), (16,), ()) and index == 1


def test_a_dynamic_int8_graph_is_recognised_by_its_operators(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [weight],
    )
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    int8 = tmp_path / "int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    assert per_call_activation_scales(int8)
    assert not per_call_activation_scales(fp32)


# -- knobs <-> configs ----------------------------------------------------------------------------------------


def _golden_steps() -> StepConfigs:
    encoder, tokenizer = (parse((GOLDEN / f"feature-extraction-cpu-demo_{step}.pbtxt").read_text())
                          for step in ("encoder", "tokenizer"))  # fmt: skip
    text_in = parse((GOLDEN / "feature-extraction-cpu-demo.pbtxt").read_text())
    return StepConfigs(encoder, tokenizer, layouts.fused_step(text_in, encoder, tokenizer), text_in)


def test_the_export_defaults_read_back_and_apply_unchanged() -> None:
    steps = _golden_steps()
    knobs = read_knobs(steps)
    assert (knobs.rows_per_call, knobs.encoder_delay_us, knobs.tokenizer_delay_us) == (0, 500, 2000)
    # the golden files are an export for a one-core server: one instance per core
    assert (knobs.encoder_instances, knobs.encoder_threads, knobs.max_padding_waste) == (1, 0, 0.25)
    assert apply_knobs(steps, knobs) == steps
    assert [render_proto(c) for c in apply_knobs(steps, knobs).all()] == [render_proto(c) for c in steps.all()]


def test_applied_knobs_land_in_the_configs_and_every_other_field_stays() -> None:
    steps = _golden_steps()
    # fields tune does not own, from releases and GPU exports: they must come through untouched
    steps.encoder.version_policy.specific.versions[:] = [1, 2]
    steps.tokenizer.version_policy.specific.versions[:] = [1, 2]
    steps.encoder.instance_group[0].name = "pinned-by-hand"
    knobs = Knobs(rows_per_call=1, preferred_batch=(4,), encoder_delay_us=100, tokenizer_delay_us=0,
                  encoder_instances=4, encoder_threads=1, tokenizer_instances=2, max_padding_waste=0.5)  # fmt: skip
    tuned = apply_knobs(steps, knobs)
    assert read_knobs(tuned) == knobs
    encoder = parse(render_proto(tuned.encoder))
    assert list(encoder.dynamic_batching.preferred_batch_size) == [4]
    assert encoder.instance_group[0].count == 4 and encoder.instance_group[0].name == "pinned-by-hand"
    assert {k: encoder.parameters[k].string_value for k in ("max_rows_per_call", "intra_op_thread_count")} == {
        "max_rows_per_call": "1", "intra_op_thread_count": "1",
    }  # fmt: skip
    assert encoder.parameters["max_padding_waste"].string_value == "0.5"
    assert encoder.parameters["precision"].string_value == "int8"
    assert (tuned.fused, tuned.text_in) == (steps.fused, steps.text_in)  # the ensemble layout's steps only
    for before, after in zip((steps.encoder, steps.tokenizer), (tuned.encoder, tuned.tokenizer), strict=True):
        assert list(after.version_policy.specific.versions) == [1, 2]
        assert after.dynamic_batching.default_queue_policy == before.dynamic_batching.default_queue_policy
        assert not after.dynamic_batching.HasField("default_queue_policy")  # export writes none: see below
        assert after.model_warmup == before.model_warmup
    assert steps.encoder.instance_group[0].count == 1  # the configs read are not changed in place
    assert apply_knobs(tuned, read_knobs(steps)) == steps  # back to the defaults: the settings are left out again


def test_tune_writes_no_queue_policy_and_a_python_step_keeps_shedding() -> None:
    """An export from before the steps shed by age gave every step a queue policy; any policy stalls Triton
    2.51's batcher up to 500 ms (repository/queue_policy.py): tune drops it, and a Python step without a queue
    budget gets the default one, so that it still sheds."""
    steps = _golden_steps()
    for step in (steps.encoder, steps.tokenizer):
        step.dynamic_batching.default_queue_policy.max_queue_size = 256
        step.dynamic_batching.default_queue_policy.default_timeout_microseconds = 100_000
    del steps.tokenizer.parameters[contract.QUEUE_BUDGET_MS_PARAMETER]
    for layout in contract.LAYOUTS:
        tuned = apply_knobs(steps, replace(read_knobs(steps), layout=layout))
        written = (tuned.encoder, tuned.tokenizer) if layout == contract.ENSEMBLE_LAYOUT else (tuned.fused,)
        for config in written:
            assert not config.dynamic_batching.HasField("default_queue_policy"), (layout, config.name)
            if config.backend == "python":
                assert config.parameters[contract.QUEUE_BUDGET_MS_PARAMETER].string_value == "500", layout
            else:  # the encoder's backend does not shed by age
                assert contract.QUEUE_BUDGET_MS_PARAMETER not in config.parameters


def test_the_fused_layout_takes_the_encoder_knobs_and_one_step() -> None:
    steps = _golden_steps()
    knobs = Knobs(rows_per_call=1, preferred_batch=(), encoder_delay_us=100, encoder_instances=2,
                  tokenizer_delay_us=0, tokenizer_instances=4, layout="fused")  # fmt: skip
    tuned = apply_knobs(steps, knobs)
    assert (tuned.encoder, tuned.tokenizer) == (steps.encoder, steps.tokenizer)  # idle in this layout
    assert [s.model_name for s in tuned.text_in.ensemble_scheduling.step] == ["demo_fused"]
    assert tuned.layout == "fused" and steps.layout == "ensemble"
    fused = tuned.fused
    assert fused.dynamic_batching.max_queue_delay_microseconds == 100
    assert list(fused.dynamic_batching.preferred_batch_size) == []
    assert fused.instance_group[0].count == 2 and fused.parameters["max_rows_per_call"].string_value == "1"
    assert fused.parameters["cpu_turns"].string_value == "1" and fused.parameters["role"].string_value == "text-in"
    # read back: the encoder knobs from the fused step; the tokenizer's as the (idle) tokenizer has them
    assert read_knobs(tuned) == replace(knobs, tokenizer_delay_us=2000, tokenizer_instances=1)
    with pytest.raises(TuneError, match="fused layout"):  # no way back to the ensemble's steps
        apply_knobs(tuned, replace(knobs, layout="ensemble"))


def test_replace_config_rewrites_one_config_atomically(tmp_path: Path) -> None:
    steps = _golden_steps()
    model_dir = tmp_path / steps.encoder.name
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(render_proto(steps.encoder))
    tuned = apply_knobs(steps, Knobs(encoder_delay_us=123, tokenizer_delay_us=2000))
    assert replace_config(tmp_path, tuned.encoder) == model_dir / "config.pbtxt"
    assert parse((model_dir / "config.pbtxt").read_text()) == tuned.encoder
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.pbtxt"]  # nothing staged is left behind
    with pytest.raises(RepositoryError, match="no model 'demo_tokenizer'"):
        replace_config(tmp_path, tuned.tokenizer)


def test_knob_changes_name_what_moved() -> None:
    assert replace(Knobs(), rows_per_call=1).changes_from(Knobs()) == {"rows_per_call": (0, 1)}


def test_the_report_ranks_marks_and_serialises_every_config(tmp_path: Path) -> None:
    import json

    from tritonstack.tune import report

    start, fast, stalls = Knobs(), Knobs(rows_per_call=1, preferred_batch=(4,)), Knobs(encoder_delay_us=0)
    trials = [
        _trial(1, start, "search", point(1, 40, 30), point(2, 70, 60), half=half_load(35, 40)),
        _trial(2, fast, "search", point(2, 90, 50), point(4, 95, 500), half=half_load(45, 30)),
        _trial(3, stalls, "search", point(2, 200, 50), half=half_load(100, 777)),
        _trial(4, start, "confirm", point(2, 72, 60), half=half_load(36, 41)),
        _trial(5, fast, "confirm", point(2, 88, 55), half=half_load(44, 31)),
    ]
    result = _result(trials, start)
    paths = report.write(result, tmp_path, None, dry_run=True)

    text = paths["table"].read_text()
    header = next(line for line in text.splitlines() if line.lstrip().startswith("rank"))
    rows = [line for line in text.splitlines() if line.lstrip()[:1].isdigit()]
    assert rows[0].startswith("  1*") and " 1 " in rows[0] and "4" in rows[0]  # the winner: 1 row per call, pref 4
    assert rows[1].startswith("  2 s")
    hl = header.index("hl p99") + len("hl p99")
    assert [row[hl - 6 : hl].strip() for row in rows] == ["31", "41", "777"]
    assert rows[2].split()[1] == "missed" and max(len(line) for line in [header, *rows]) <= 120
    assert "winner: rows_per_call 0 -> 1, preferred_batch () -> (4,): 89.0 req/s at c=2" in text
    assert "--dry-run: nothing written" in text
    summary = json.loads(paths["json"].read_text())
    assert summary["winner"]["rows_per_call"] == 1 and summary["winner_req_per_s"] == 89.0
    assert [t["number"] for t in summary["trials"]] == [1, 2, 3, 4, 5]
    assert summary["ranking"][0]["point"]["latency_ms"]["p99"] == 55
    assert summary["ranking"][0]["half_load"]["latency_ms"]["p99"] == 31
    assert summary["ranking"][2]["missed"] == {"half_load p99_ms": 7.77}
    assert summary["trials"][2]["half_load"] == {
        "concurrency": 0, "throughput_per_s": 100, "latency_ms": {"p50": 388.5, "p99": 777}, "completed": 1000,
        "errors": 0, "error_ratio": 0.0, "batch": {}, "rate_per_s": 100,
    }  # fmt: skip
    assert paths["plot"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


class FirstRequests:
    """A model's answers to tune's first request of a config: each call raises the next error, or answers."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, index: int) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


def test_a_config_whose_first_requests_are_shed_is_measured_not_fatal() -> None:
    import asyncio

    from tritonstack.client import DeadlineExceededError, OverloadedError
    from tritonstack.tune.session import FIRST_REQUEST_ATTEMPTS, _first_request

    shed = FirstRequests(*[OverloadedError("Request timeout expired")] * FIRST_REQUEST_ATTEMPTS, None)
    asyncio.run(_first_request(shed, "minilm"))  # it stalls: the sweep counts its errors
    assert shed.calls == FIRST_REQUEST_ATTEMPTS
    answered = FirstRequests(OverloadedError("Exceeds maximum queue size"), None)
    asyncio.run(_first_request(answered, "minilm"))
    assert answered.calls == 2  # answered on the second try: no more attempts
    late = FirstRequests(DeadlineExceededError("deadline"), None)
    asyncio.run(_first_request(late, "minilm"))
    assert late.calls == 1  # a try that ran out of time costs the whole timeout: not repeated


def test_a_config_whose_first_request_fails_otherwise_stops_tune() -> None:
    import asyncio

    from tritonstack.client import InvalidInputError
    from tritonstack.tune.session import _first_request

    broken = FirstRequests(InvalidInputError("bad input"))
    with pytest.raises(TuneError, match="failed its first request: bad input"):
        asyncio.run(_first_request(broken, "minilm"))
    assert broken.calls == 1
