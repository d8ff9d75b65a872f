"""SLO files: parsing, defaults, overrides, and errors that name the field."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tritonstack.measure.errors import LoadTestError, SLOSpecError
from tritonstack.measure.slo import SLO, latency_overrides, load_slo, parse_duration_s, parse_slo

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model": "tiny", "load": {"users": 4, "duration": "10s"}, "objectives": {"p99_ms": 50}}


def _with(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        key: dict(value) if isinstance(value, dict) else value for key, value in MINIMAL.items()
    }
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            target = document.setdefault(section, {})
            assert isinstance(target, dict)
            target[key] = value
        else:
            document[section] = value
    return document


def test_the_shipped_example_is_valid() -> None:
    slo = load_slo(REPO / "loadtest" / "slo.yaml")
    assert slo.objectives.latency_ms  # documents latency objectives
    assert slo.payload.texts_file == REPO / "loadtest" / "texts.txt"
    assert slo.payload.texts_file.is_file()


def test_minimal_file_gets_defaults() -> None:
    slo = parse_slo(MINIMAL)
    assert slo.model == "tiny"
    assert slo.task == "feature-extraction"
    assert (slo.load.users, slo.load.spawn_rate, slo.load.duration_s) == (4, 4.0, 10.0)
    assert slo.load.mode == "users"
    assert slo.objectives.latency_ms == {99.0: 50.0}
    assert slo.objectives.max_error_ratio is None
    assert slo.payload.texts_file is None


def test_arbitrary_percentiles_and_all_objectives() -> None:
    slo = parse_slo(_with(objectives={"p50_ms": 5, "p99.9_ms": 80, "max_error_ratio": 0.01, "min_throughput_rps": 20}))
    assert slo.objectives.latency_ms == {50.0: 5.0, 99.9: 80.0}
    assert slo.objectives.max_error_ratio == 0.01
    assert slo.objectives.min_throughput_rps == 20.0


def test_arrival_rate_without_users_sizes_the_pool() -> None:
    slo = parse_slo(_with(load={"arrival_rate_rps": 200, "duration": "1m"}))
    assert slo.load.mode == "arrival-rate"
    assert slo.load.users == 20  # enough for 100 ms requests at 200 req/s
    assert slo.load.duration_s == 60.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30.0), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0), ("1m30s", 90.0), ("500ms", 0.5), ("2.5", 2.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (_with(load__users=-3), "load.users"),
        (_with(load__users=2.5), "load.users"),
        (_with(load__duration="soon"), "load.duration"),
        (_with(load__duration=0), "load.duration"),
        (_with(load__spawn_rate=0), "load.spawn_rate"),
        (_with(load__speed=3), "load.speed"),
        (_with(objectives={"p99": 100}), "objectives.p99"),
        (_with(objectives={}), "objectives"),
        (_with(objectives={"p99_ms": "fast"}), "objectives.p99_ms"),
        (_with(objectives={"max_error_ratio": 1.5}), "objectives.max_error_ratio"),
        (_with(task="translation"), "task"),
        (_with(model=""), "model"),
        (_with(load=[1, 2]), "load"),
        (_with(payload={"texts": "does-not-exist.txt"}), "payload.texts"),
        (_with(capacity={"factor": 1}), "capacity.factor"),
        (_with(capacity={"start_users": 8, "max_users": 4}), "capacity.max_users"),
        ({"model": "tiny", "objectives": {"p99_ms": 1}}, "load"),
        (_with(payload={"repeat_ratio": 1.5}), "payload.repeat_ratio"),
        (_with(payload={"repeat_ratio": "half"}), "payload.repeat_ratio"),
        (_with(payload={"repeat_ratio": 0.5, "hot_set": 0}), "payload.hot_set"),
        (_with(payload={"hot_set": 8}), "payload.hot_set"),
        (_with(cost={}), "cost.price_per_hour_usd"),
        (_with(cost={"price_per_hour_usd": -1}), "cost.price_per_hour_usd"),
        (_with(cost={"price_per_hour": 2.5}), "cost.price_per_hour"),
        (_with(cost=2.5), "cost"),
    ],
)
def test_errors_name_the_field(document: object, field: str) -> None:
    with pytest.raises(SLOSpecError) as caught:
        parse_slo(document, source="slo.yaml")
    assert caught.value.message.startswith(f"slo.yaml: {field}:"), caught.value.message
    assert caught.value.exit_code == 2


def test_unknown_objective_hints_at_the_known_ones() -> None:
    with pytest.raises(SLOSpecError) as caught:
        parse_slo(_with(objectives={"p99": 100}))
    assert caught.value.hint is not None and "p99_ms" in caught.value.hint


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SLOSpecError, match="cannot read SLO file"):
        load_slo(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(SLOSpecError, match="not valid YAML"):
        load_slo(broken)
    assert issubclass(SLOSpecError, LoadTestError)


def test_texts_path_is_relative_to_the_slo_file(tmp_path: Path) -> None:
    (tmp_path / "mix.txt").write_text("hello\n")
    (tmp_path / "slo.yaml").write_text(
        "model: tiny\nload: {users: 1, duration: 1s}\npayload: {texts: mix.txt}\nobjectives: {p50_ms: 10}\n"
    )
    assert load_slo(tmp_path / "slo.yaml").payload.texts_file == tmp_path / "mix.txt"


def test_overrides() -> None:
    slo: SLO = parse_slo(_with(load={"users": 4, "spawn_rate": 2, "duration": "10s"}))
    changed = slo.with_overrides(users=8, run_time_s=3, latency_ms={99.0: 0.001, 95.0: 10})
    assert changed.load.users == 8
    assert changed.load.spawn_rate == 4.0  # same 2 s ramp as the file
    assert changed.load.duration_s == 3
    assert changed.objectives.latency_ms == {99.0: 0.001, 95.0: 10}
    assert slo.load.users == 4  # the original is untouched
    with pytest.raises(SLOSpecError, match="--users"):
        slo.with_overrides(users=0)


def test_latency_flags_override_only_the_percentiles_given() -> None:
    flags = argparse.Namespace(p50_ms=None, p95_ms=12.5, p99_ms=40.0)
    assert latency_overrides(flags) == {95.0: 12.5, 99.0: 40.0}
    assert latency_overrides(argparse.Namespace(p50_ms=None, p95_ms=None, p99_ms=None)) == {}


def test_repeat_ratio_hot_set_and_cost() -> None:
    plain = parse_slo(MINIMAL)
    assert plain.payload.repeat_ratio is None and plain.cost is None
    slo = parse_slo(
        _with(payload={"repeat_ratio": 0.5, "hot_set": 4}, cost={"price_per_hour_usd": 2.5}), source="slo.yaml"
    )
    assert (slo.payload.repeat_ratio, slo.payload.hot_set) == (0.5, 4)
    assert slo.cost is not None and slo.cost.price_per_hour_usd == 2.5
    assert parse_slo(_with(payload={"repeat_ratio": 0})).payload.repeat_ratio == 0.0


def test_price_override() -> None:
    slo = parse_slo(_with(cost={"price_per_hour_usd": 2.5}))
    assert slo.with_overrides().cost == slo.cost
    changed = parse_slo(MINIMAL).with_overrides(price_per_hour_usd=0.75)
    assert changed.cost is not None and changed.cost.price_per_hour_usd == 0.75
    with pytest.raises(SLOSpecError, match="--price-per-hour"):
        slo.with_overrides(price_per_hour_usd=0)
