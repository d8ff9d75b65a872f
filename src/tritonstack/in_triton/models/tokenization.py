"""Texts -> the encoder's int64 inputs, by the one rule the served tokenizer and the bench share.

The rule: cut absurdly long texts, tokenize without padding and truncate to
``max_sequence_length`` tokens, then pad every row to the longest row *of the
batch* with the pad id of ``tokenizer_config.json`` (0 when it names none the
vocabulary has).

A pair task (a reranker's query and document) tokenizes each row as a pair with
the model's own template (``tokenizer.json``'s post-processor: ``[CLS] q [SEP]
d [SEP]`` and segment ids for BERT, ``<s> q </s></s> d </s>`` for RoBERTa) and
truncates the second text only (``only_second``), as rerankers are trained: the
query is never cut. A query too long to leave the document a token is refused
(:meth:`TextTokenizer.check_queries`) rather than silently ranked on nothing.

This module runs in two places. ``tritonstack export`` copies it beside
``model.py`` into each Python-backend version folder, where ``model.py``
(``text_model.py``) loads it inside Triton's Python backend stub; there, in the
embedded server and in the NGC image alike, the tritonstack package may be
absent, so this file imports nothing but the standard library, ``numpy`` and
``tokenizers``. The bench imports it from the package, so its in-process limit
tokenizes exactly as the server does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

# Tokenization only ever keeps the first max_sequence_length tokens; cutting
# absurdly long texts first bounds the work a single request can cause.
MAX_CHARS_PER_TOKEN = 256
MIN_CHAR_LIMIT = 65536

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


def char_limit(max_length: int) -> int:
    """Characters of a text that are tokenized at all, for ``max_length`` tokens kept."""
    return max(MIN_CHAR_LIMIT, max_length * MAX_CHARS_PER_TOKEN)


def _pad_id(tokenizer: Tokenizer, version_dir: str) -> int:
    """``tokenizer_config.json``'s pad token where the vocabulary has it, else 0."""
    path = os.path.join(version_dir, TOKENIZER_CONFIG_FILE)
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        pad_token = json.load(f).get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    found = tokenizer.token_to_id(pad_token) if pad_token else None
    return found if found is not None else 0


class QueryTooLongError(ValueError):
    """A pair's first text leaves its second no token within ``max_length`` (only the second is truncated)."""


class TextTokenizer:
    """The tokenizer files of one version folder, with the cut, truncation and batch padding applied.

    ``pair``: rows are (query, document) pairs, truncated on the document only.
    """

    def __init__(self, version_dir: str | os.PathLike[str], max_length: int, *, pair: bool = False) -> None:
        version_dir = os.fspath(version_dir)
        path = os.path.join(version_dir, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file {path} is missing; re-export the model")
        self.tokenizer = Tokenizer.from_file(path)
        # tokenizer.json may carry fixed padding (MiniLM's pads to 128): pad per batch instead, in features().
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length, strategy="only_second" if pair else "longest_first")
        self.pad_id = _pad_id(self.tokenizer, version_dir)
        self.char_limit = char_limit(max_length)
        self.max_length = max_length
        self.pair = pair
        # counts a query's tokens (check_queries): only_second truncation refuses to encode one text alone
        self._counter = Tokenizer.from_str(self.tokenizer.to_str()) if pair else None
        if self._counter is not None:
            self._counter.no_truncation()

    def encode(self, rows: Sequence[str] | Sequence[tuple[str, str]]) -> list[Encoding]:
        """Each text (each text of a pair) cut to ``char_limit`` characters, tokenized and truncated; no padding."""
        limit = self.char_limit
        if self.pair:  # a row is (query, document)
            return self.tokenizer.encode_batch([(row[0][:limit], row[1][:limit]) for row in rows])
        return self.tokenizer.encode_batch([row[:limit] for row in rows])

    def check_queries(self, queries: Sequence[str]) -> None:
        """``QueryTooLongError`` when a query, with the pair template's special tokens, leaves its document no
        token of ``max_length``: only documents are truncated, so such a pair cannot be scored."""
        if self._counter is None:
            raise ValueError("check_queries is for a pair tokenizer (pair=True)")
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(True)
        for query in dict.fromkeys(queries):  # a rerank request repeats its one query on every row
            tokens = len(self._counter.encode(query[: self.char_limit], add_special_tokens=False).ids)
            if tokens >= room:
                raise QueryTooLongError(
                    f"the query is {tokens} tokens; with the pair template's special tokens it leaves the document "
                    f"no room in max_sequence_length {self.max_length} (only documents are truncated)"
                )

    def token_counts(
        self, rows: Sequence[str] | Sequence[tuple[str, str]], encodings: Sequence[Encoding]
    ) -> np.ndarray:
        """``contract.TOKENS`` of each row: int32 ``[rows, 2]``, its tokens (the special ones included) and 1
        where it was cut -- to ``max_length`` tokens (tokenizers keeps what truncation dropped in
        ``overflowing``; for a pair, what ``only_second`` dropped of the document) or, before tokenizing, to
        ``char_limit`` characters."""
        limit = self.char_limit
        counts = np.empty((len(encodings), 2), dtype=np.int32)
        for index, (row, encoding) in enumerate(zip(rows, encodings, strict=True)):
            tokens = len(encoding.ids)
            texts = row if self.pair else (row,)
            # truncation leaves exactly max_length tokens: only such a row can have been cut, and only for it is
            # `overflowing` (a copy of every dropped piece) worth building
            cut = (tokens >= self.max_length and bool(encoding.overflowing)) or any(len(t) > limit for t in texts)
            counts[index] = (tokens, cut)
        return counts

    def features(self, encodings: Sequence[Encoding], input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """The encoder inputs ``input_names`` of ``encodings``: int64 ``[rows, longest row]``, padded."""
        length = max(len(e.ids) for e in encodings)
        batch = {
            "input_ids": np.full((len(encodings), length), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(encodings), length), dtype=np.int64),
            "token_type_ids": np.zeros((len(encodings), length), dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            batch["input_ids"][row, :n] = encoding.ids
            batch["attention_mask"][row, :n] = encoding.attention_mask
            batch["token_type_ids"][row, :n] = encoding.type_ids
        return {name: batch[name] for name in input_names}
