"""The texts an export is judged on, in two disjoint splits.

* **calibration** guides the int8 search: the smoothing statistics, the
  smoothing strength and the sensitivity ranking are all measured on it.
* **gate** judges every candidate (``--parity-texts`` adds to it). Nothing in
  the search looks at it except the pass/fail verdict of a finished candidate,
  so a gate figure is not tuned on the texts it reports.

Both ship with the package (``data/calibration.tsv``, ``data/gate.tsv``: one
``KIND<TAB>TEXT`` per line, ``#`` comments) and cover the same kinds -- short
phrases, queries, sentences, long passages, non-English, code and odd Unicode
-- because quantization error is not uniform across them: the shortest phrases
are the hardest for int8 (few tokens to average an error over).

A pair task (text-ranking) is judged on (query, document) pairs built from the
same splits (``TextSplit.paired``): each query text of a split with
``DOCUMENTS_PER_QUERY`` of the split's other texts, drawn by a fixed seed. So
the gate's pairs share no text with the calibration's, and the per-query
rankings parity compares are held out from the search like every other figure.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from tritonstack._texts import read_texts
from tritonstack.export._errors import ExportError

KINDS = ("short", "query", "sentence", "passage", "multilingual", "code", "unicode")
USER_KIND = "user"  # the texts of --parity-texts
CALIBRATION, GATE = "calibration", "gate"
QUERY_KIND = "query"  # a pair split's queries; every other kind is a document
DOCUMENTS_PER_QUERY = 8  # documents ranked per query in a pair split


@dataclass(frozen=True)
class TextSplit:
    """One split: texts and the kind of each; for a pair task, (query, document) rows (``paired``)."""

    name: str  # CALIBRATION or GATE
    texts: tuple[str, ...]  # a pair split: the query of each row
    kinds: tuple[str, ...]  # one per text; a pair split: the document's
    text_pairs: tuple[str, ...] | None = None  # a pair split: the document of each row

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def queries(self) -> int:
        """Distinct queries of a pair split; 0 for a split of single texts."""
        return len(set(self.texts)) if self.text_pairs is not None else 0

    def paired(self, documents_per_query: int = DOCUMENTS_PER_QUERY) -> TextSplit:
        """This split as (query, document) rows: each ``query`` text with ``documents_per_query`` of the other
        texts, drawn with a seed of the split's name, so the pairs are the same in every export."""
        queries = [t for t, k in zip(self.texts, self.kinds, strict=True) if k == QUERY_KIND]
        documents = [(t, k) for t, k in zip(self.texts, self.kinds, strict=True) if k != QUERY_KIND]
        if not queries or len(documents) < 2:
            raise ExportError(f"the {self.name} split has too few queries or documents to rank")
        rng = random.Random(f"tritonstack-pairs-{self.name}")
        rows = [(q, d) for q in queries for d in rng.sample(documents, min(documents_per_query, len(documents)))]
        return replace(
            self,
            texts=tuple(q for q, _ in rows),
            kinds=tuple(kind for _, (_, kind) in rows),
            text_pairs=tuple(document for _, (document, _) in rows),
        )

    def counts(self) -> dict[str, int]:
        """Texts per kind, in ``KINDS`` order (then user texts)."""
        counted = Counter(self.kinds)
        return {kind: counted[kind] for kind in (*KINDS, USER_KIND) if counted[kind]}

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.texts), "kinds": self.counts(), **({"queries": self.queries} if self.queries else {})}


@dataclass(frozen=True)
class TextSplits:
    """The calibration and the gate split of one export; disjoint by construction (``load_splits``)."""

    calibration: TextSplit
    gate: TextSplit
    user_file: Path | None = None  # --parity-texts, added to the gate split

    def paired(self, documents_per_query: int = DOCUMENTS_PER_QUERY) -> TextSplits:
        """Both splits as (query, document) rows (``TextSplit.paired``), for a pair task."""
        return replace(
            self, calibration=self.calibration.paired(documents_per_query), gate=self.gate.paired(documents_per_query)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            CALIBRATION: self.calibration.summary(),
            GATE: self.gate.summary(),
            "user_file": None if self.user_file is None else str(self.user_file),
        }


def _read_builtin(name: str) -> TextSplit:
    text = resources.files("tritonstack.export").joinpath(f"data/{name}.tsv").read_text(encoding="utf-8")
    texts, kinds = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        kind, separator, body = line.partition("\t")
        if not separator or kind not in KINDS or not body.strip():
            raise ValueError(f"data/{name}.tsv line {number}: expected KIND<TAB>TEXT with KIND in {KINDS}")
        kinds.append(kind)
        texts.append(body)
    return TextSplit(name, tuple(texts), tuple(kinds))


def builtin_split(name: str) -> TextSplit:
    """The built-in ``calibration`` or ``gate`` split."""
    if name not in (CALIBRATION, GATE):
        raise ValueError(f"no built-in split {name!r}")
    return _read_builtin(name)


def load_splits(user_file: Path | None = None) -> TextSplits:
    """The built-in splits, the texts of ``user_file`` (:mod:`tritonstack._texts`' one rule) added to the gate split.

    A user text that is also a calibration text leaves the calibration split: the
    gate must not judge on what the search was guided by.
    """
    calibration, gate = builtin_split(CALIBRATION), builtin_split(GATE)
    if user_file is not None:
        extra = read_texts(user_file, what="parity texts file", error=ExportError)
        gate = TextSplit(GATE, gate.texts + tuple(extra), gate.kinds + (USER_KIND,) * len(extra))
    judged = set(gate.texts)
    kept = [(t, k) for t, k in zip(calibration.texts, calibration.kinds, strict=True) if t not in judged]
    calibration = TextSplit(CALIBRATION, tuple(t for t, _ in kept), tuple(k for _, k in kept))
    return TextSplits(calibration, gate, user_file)
