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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tritonstack._texts import read_texts
from tritonstack.export._errors import ExportError

KINDS = ("short", "query", "sentence", "passage", "multilingual", "code", "unicode")
USER_KIND = "user"  # the texts of --parity-texts
CALIBRATION, GATE = "calibration", "gate"


@dataclass(frozen=True)
class TextSplit:
    """One split: texts and the kind of each."""

    name: str  # CALIBRATION or GATE
    texts: tuple[str, ...]
    kinds: tuple[str, ...]  # one per text

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        """Texts per kind, in ``KINDS`` order (then user texts)."""
        counted = Counter(self.kinds)
        return {kind: counted[kind] for kind in (*KINDS, USER_KIND) if counted[kind]}

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.texts), "kinds": self.counts()}


@dataclass(frozen=True)
class TextSplits:
    """The calibration and the gate split of one export; disjoint by construction (``load_splits``)."""

    calibration: TextSplit
    gate: TextSplit
    user_file: Path | None = None  # --parity-texts, added to the gate split

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
