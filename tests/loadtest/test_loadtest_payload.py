"""The payload mix: plain random draws, and repeats of a hot set against never-seen requests."""

from __future__ import annotations

from collections import Counter

import pytest

from tritonstack.measure.payload import REPEAT, UNIQUE, PayloadMix, hot_set

TEXTS = [f"text number {i}" for i in range(50)]


def test_without_a_repeat_ratio_texts_come_from_the_file_unmarked() -> None:
    mix = PayloadMix(TEXTS, texts_per_request=3, seed=1)
    requests = [mix.draw() for _ in range(200)]
    assert all(r.kind == "" and len(r.texts) == 3 and set(r.texts) <= set(TEXTS) for r in requests)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_repeats_come_from_the_hot_set_and_the_rest_is_never_seen_twice(ratio: float) -> None:
    mix = PayloadMix(TEXTS, texts_per_request=2, seed=7, repeat_ratio=ratio, hot_set_size=4)
    requests = [mix.draw() for _ in range(4000)]
    kinds = Counter(r.kind for r in requests)
    assert set(kinds) <= {REPEAT, UNIQUE}
    assert kinds[REPEAT] / len(requests) == pytest.approx(ratio, abs=0.03)
    hot = {tuple(texts) for texts in hot_set(TEXTS, 2, 4)}
    assert {tuple(r.texts) for r in requests if r.kind == REPEAT} <= hot
    unique = [tuple(r.texts) for r in requests if r.kind == UNIQUE]
    assert len(set(unique)) == len(unique) and not set(unique) & hot
    # Both kinds are file texts with a 12-hex-digit reference: the same length mix.
    for request in requests[:100]:
        for text in request.texts:
            base, _, reference = text.rpartition(" #")
            assert base in TEXTS and len(reference) == 12 and int(reference, 16) >= 0


def test_every_user_and_process_shares_one_hot_set() -> None:
    first = PayloadMix(TEXTS, seed=1, repeat_ratio=1.0, hot_set_size=3)
    second = PayloadMix(TEXTS, seed=2, repeat_ratio=1.0, hot_set_size=3)
    assert first.hot == second.hot and len(first.hot) == 3
    assert {tuple(first.draw().texts) for _ in range(100)} == {tuple(t) for t in first.hot}
