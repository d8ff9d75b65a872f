"""The payload mix: texts drawn at random from a file, one text per line.

A realistic mix matters: the tokenizer pads each batch to its longest text, so
a load test of equal short strings measures a server that production never
sees. ``loadtest/texts.txt`` spreads from a few words to a few hundred.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from tritonstack._texts import read_texts
from tritonstack.loadtest.errors import LoadTestError

# Used when the SLO names no texts file: short queries, sentences and a paragraph.
BUILTIN_TEXTS = (
    "reset password",
    "where is my order",
    "Battery drains overnight even with every app closed.",
    "The delivery arrived two days late and the box was damaged, but the product itself works fine.",
    "Can I change the shipping address after the order has been confirmed, or do I need to cancel it?",
    "Quarterly revenue rose eight percent as cloud subscriptions offset weaker hardware sales in Europe "
    "and North America, the company said on Tuesday, raising its full-year guidance.",
    "I have been using this laptop for three months now. The keyboard is comfortable, the screen is bright "
    "enough to work outdoors, and the battery easily lasts a full working day. My only complaint is the fan, "
    "which spins up loudly during video calls and makes it hard to hear the other side without headphones. "
    "Support suggested a firmware update, which helped a little but did not fix it completely.",
)


def load_texts(path: Path | None) -> list[str]:
    """The texts of ``path`` (:mod:`tritonstack._texts`' rule), or the built-in mix when ``path`` is ``None``."""
    if path is None:
        return list(BUILTIN_TEXTS)
    return read_texts(path, what="texts file", error=LoadTestError)


class PayloadMix:
    """Draws ``texts_per_request`` texts per request, uniformly, from its own seeded RNG
    (one per user, so users do not send in lockstep)."""

    def __init__(self, texts: Sequence[str], texts_per_request: int = 1, seed: int | None = None) -> None:
        self.texts = list(texts)
        self.texts_per_request = texts_per_request
        self._random = random.Random(seed)

    def draw(self) -> list[str]:
        return self._random.choices(self.texts, k=self.texts_per_request)
