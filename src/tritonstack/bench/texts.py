"""The benchmark's texts: mixed lengths from a fixed seed, identical for every variant.

Sentences are drawn from a list of common English words so that WordPiece
splits them the way it splits real prose (mostly one token per word); lengths
are uniform between ``min_words`` and ``max_words``.
"""

from __future__ import annotations

import random

WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this be or has had "
    "not but their they one all have new more first also after who two been its time can only other some "
    "would there over most into such when these many used than may three between during about year years "
    "people city state world school work system model data service request response server client latency "
    "throughput batch queue text token language network memory processor core thread cache disk storage "
    "report result number value level small large long short high low early late fast slow good better best "
    "river mountain village forest garden market station church bridge island valley coast north south east "
    "west summer winter spring autumn morning evening night music film book song story history science art "
    "team game season player club league match goal family house road street company business government "
    "public national local general major military war army water energy power light sound color weather "
    "known called named built began found made took gave became remained moved returned opened played "
    "wrote published released designed developed produced recorded measured served tested deployed "
    "because however although while before since until through across around against without within"
).split()


def make_texts(count: int, *, seed: int = 0, min_words: int = 5, max_words: int = 120) -> list[str]:
    """``count`` sentences of ``min_words``..``max_words`` words, the same for the same ``seed``."""
    if count < 1 or min_words < 1 or max_words < min_words:
        raise ValueError("need count >= 1 and 1 <= min_words <= max_words")
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = rng.choices(WORDS, k=rng.randint(min_words, max_words))
        # A comma every dozen words or so: punctuation is a token of its own, as in real text.
        for position in range(12, len(words), 12):
            words[position - 1] += ","
        texts.append(" ".join(words).capitalize() + ".")
    return texts
