"""The payload mix: texts drawn at random from a file, one text per line.

A realistic mix matters: the tokenizer pads each batch to its longest text, so
a load test of equal short strings measures a server that production never
sees. ``loadtest/texts.txt`` spreads from a few words to a few hundred.

With a repeat ratio R (for a response cache) a request is, with probability R,
one of a *hot set* of requests fixed for the whole run -- the same in every user
and every load process -- and otherwise one never sent before: a text of the
file with a random reference appended (`` #3fa9c2e01b7d``). The hot requests
carry a reference too, so both kinds have the same length mix. Each request
says which kind it is, so the report can split latency into repeats (cache hits
once each hot request was computed) and unique requests (always misses).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack._texts import read_texts
from tritonstack.in_triton import contract
from tritonstack.measure.errors import LoadTestError
from tritonstack.measure.slo import DEFAULT_HOT_SET

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


def request_call(call: Callable[..., Any], task: str) -> Callable[..., Any]:
    """The SDK call of ``task`` (``embed``, ``classify``, ``rerank``; sync or async) as a call on one request's
    drawn texts (keywords passed on). For a pair task (text-ranking) the shortest drawn text is the query and
    the others, in order, its documents: a search query is short, and a reranker refuses a query that leaves
    its document no room (a passage of the mix drawn as the query would fail as bad input, not load)."""
    if not contract.task(task).pair:
        return call

    def rerank(texts: Sequence[str], **keywords: Any) -> Any:
        return call(*query_and_documents(texts), **keywords)

    return rerank


def query_and_documents(texts: Sequence[str]) -> tuple[str, list[str]]:
    """A pair task's request of drawn ``texts``: the shortest is the query, the others, in order, its documents
    (``request_call``)."""
    query = min(range(len(texts)), key=lambda i: len(texts[i]))
    return texts[query], [t for i, t in enumerate(texts) if i != query]


REPEAT = "repeat"  # one of the hot set
UNIQUE = "unique"  # never sent before
_HOT_SET_SEED = 20240607  # any constant: the same hot set in every user and every load process
_REFERENCE_BITS = 48  # 12 hex digits: no two unique requests of a run collide in practice


@dataclass(frozen=True)
class Request:
    """The texts of one request and its kind: ``"repeat"``, ``"unique"``, or ``""`` without a repeat ratio."""

    texts: list[str]
    kind: str = ""


def _with_reference(text: str, reference: int) -> str:
    return f"{text} #{reference:0{_REFERENCE_BITS // 4}x}"


def hot_set(texts: Sequence[str], texts_per_request: int, size: int) -> list[list[str]]:
    """The ``size`` requests repeats are drawn from: a function of the texts alone."""
    rng = random.Random(_HOT_SET_SEED)
    return [
        [_with_reference(text, rng.getrandbits(_REFERENCE_BITS)) for text in rng.choices(texts, k=texts_per_request)]
        for _ in range(size)
    ]


class PayloadMix:
    """Draws ``texts_per_request`` texts per request from its own seeded RNG (one per user, so users do not
    send in lockstep): uniformly from the texts, or -- with ``repeat_ratio`` -- a repeat of one of
    ``hot_set_size`` hot requests or a unique request (see the module docstring)."""

    def __init__(
        self,
        texts: Sequence[str],
        texts_per_request: int = 1,
        seed: int | None = None,
        *,
        repeat_ratio: float | None = None,
        hot_set_size: int = DEFAULT_HOT_SET,
    ) -> None:
        self.texts = list(texts)
        self.texts_per_request = texts_per_request
        self.repeat_ratio = repeat_ratio
        self.hot = hot_set(self.texts, texts_per_request, hot_set_size) if repeat_ratio is not None else []
        self._random = random.Random(seed)

    def draw(self) -> Request:
        if self.repeat_ratio is None:
            return Request(self._random.choices(self.texts, k=self.texts_per_request))
        if self._random.random() < self.repeat_ratio:
            return Request(list(self._random.choice(self.hot)), REPEAT)
        texts = self._random.choices(self.texts, k=self.texts_per_request)
        return Request([_with_reference(text, self._random.getrandbits(_REFERENCE_BITS)) for text in texts], UNIQUE)
