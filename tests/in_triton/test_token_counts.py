"""TOKENS (contract.TOKENS_OUTPUT) from the one tokenizer rule: each row's tokens and whether it was cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import tinymodels
from tritonstack.in_triton import contract
from tritonstack.in_triton.models.tokenization import TextTokenizer, char_limit

MAX_LENGTH = 24
WORDS = tinymodels.WORDS


@pytest.fixture(params=["bert", "roberta"])
def tokenizer_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    builders = {"bert": tinymodels._bert_tokenizer, "roberta": tinymodels._roberta_tokenizer}
    builders[request.param](tmp_path, MAX_LENGTH)
    return tmp_path


def _counts(tokenizer: TextTokenizer, rows: list) -> np.ndarray:
    return tokenizer.token_counts(rows, tokenizer.encode(rows))


def test_counts_are_the_tokens_the_model_runs_with_the_special_ones(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir, MAX_LENGTH)
    rows = ["hello world", "the quick brown fox", " ".join(WORDS[:80])]
    encodings = tokenizer.encode(rows)
    counts = tokenizer.token_counts(rows, encodings)
    assert counts.dtype == np.int32 and counts.shape == (3, 2)
    assert counts[:, contract.TOKEN_COUNT].tolist() == [len(e.ids) for e in encodings]
    # the rows the encoder runs: the padded features' attention mask counts the same tokens
    mask = tokenizer.features(encodings, ("attention_mask",))["attention_mask"]
    assert counts[:, contract.TOKEN_COUNT].tolist() == mask.sum(axis=1).tolist()
    assert counts[:, contract.TOKENS_CUT].tolist() == [0, 0, 1]
    assert counts[2, contract.TOKEN_COUNT] == MAX_LENGTH


def test_a_text_that_fills_max_length_exactly_is_not_cut(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir, MAX_LENGTH)
    whole = Tokenizer.from_str(tokenizer.tokenizer.to_str())  # the same rule, untruncated
    whole.no_truncation()
    lengths = {len(whole.encode(" ".join(WORDS[:n])).ids): " ".join(WORDS[:n]) for n in range(1, 40)}
    fits, over = lengths[MAX_LENGTH], lengths[MAX_LENGTH + 1]
    assert _counts(tokenizer, [fits, over]).tolist() == [[MAX_LENGTH, 0], [MAX_LENGTH, 1]]


def test_a_pair_is_one_row_cut_only_when_its_document_was(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir, MAX_LENGTH, pair=True)
    query = "quick brown fox"
    rows = [(query, "hello world"), (query, " ".join(WORDS[:60])), (" ".join(WORDS[:15]), "cat sat")]
    encodings = tokenizer.encode(rows)
    counts = tokenizer.token_counts(rows, encodings)
    assert counts[:, contract.TOKEN_COUNT].tolist() == [len(e.ids) for e in encodings]
    assert counts[1, contract.TOKEN_COUNT] == MAX_LENGTH
    # only_second: the long document is cut; a long query with a short document fits whole
    assert counts[:, contract.TOKENS_CUT].tolist() == [0, 1, 0]


def test_a_text_cut_to_the_character_limit_counts_as_cut(tokenizer_dir: Path) -> None:
    # blank past the cut: no token is lost, yet the text the model saw is not the one sent
    tokenizer = TextTokenizer(tokenizer_dir, MAX_LENGTH)
    text = "hello " + " " * char_limit(MAX_LENGTH)
    assert _counts(tokenizer, [text])[0, contract.TOKENS_CUT] == 1
    pairs = TextTokenizer(tokenizer_dir, MAX_LENGTH, pair=True)
    assert _counts(pairs, [("hello", text)])[0, contract.TOKENS_CUT] == 1
