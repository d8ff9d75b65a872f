"""The SDK's release routing, pure: named releases, weighted (canary) and sticky (A/B) splits."""

from __future__ import annotations

import math
import random

import pytest

from tritonstack.client import InvalidInputError, Release, TrafficSplit
from tritonstack.client._releases import key_bucket, pick


def binomial_bounds(n: int, p: float, sigmas: float = 4.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


def test_a_named_release_is_served_under_its_own_name() -> None:
    release = Release("minilm", 2)
    assert release.served_as == "minilm_v2"
    assert pick(release, key="anyone", draw=0.99) is release


@pytest.mark.parametrize("weight", [0.05, 0.3, 0.5])
def test_a_weighted_split_sends_the_weight_to_the_candidate(weight: float) -> None:
    split = TrafficSplit("m", baseline=1, candidate=2, weight=weight)
    rng = random.Random(7)
    calls = 10_000
    to_candidate = sum(split.choose(key=None, draw=rng.random()).version == 2 for _ in range(calls))
    low, high = binomial_bounds(calls, weight)
    assert low <= to_candidate <= high


def test_the_weight_s_ends_are_all_or_nothing() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        draw = rng.random()
        assert TrafficSplit("m", 1, 2, 0.0).choose(key=None, draw=draw).version == 1
        assert TrafficSplit("m", 1, 2, 1.0).choose(key=None, draw=draw).version == 2


def test_a_key_always_reaches_the_same_release_whatever_the_draw() -> None:
    split = TrafficSplit("m", baseline=1, candidate=2, weight=0.5)
    rng = random.Random(3)
    for user in range(200):
        chosen = {split.choose(key=f"user-{user}", draw=rng.random()).version for _ in range(20)}
        assert len(chosen) == 1


def test_keys_split_by_weight_and_a_bigger_weight_only_moves_keys_to_the_candidate() -> None:
    keys = [f"user-{i}" for i in range(5000)]
    small = {k for k in keys if TrafficSplit("m", 1, 2, 0.1).choose(key=k, draw=0.0).version == 2}
    large = {k for k in keys if TrafficSplit("m", 1, 2, 0.4).choose(key=k, draw=0.0).version == 2}
    low, high = binomial_bounds(len(keys), 0.1)
    assert low <= len(small) <= high
    assert small <= large  # a key on the candidate stays there as the canary grows


def test_buckets_are_stable_and_per_model() -> None:
    assert key_bucket("m", "alice") == key_bucket("m", "alice")
    assert 0.0 <= key_bucket("m", "alice") < 1.0
    assert key_bucket("m", "alice") != key_bucket("other", "alice")


def test_a_weight_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a share"):
        TrafficSplit("m", 1, 2, 1.5)
