"""Pairs in the one tokenizer rule (in_triton/models/tokenization.py): the model's pair template, the document
truncated and never the query, as transformers tokenizes a cross-encoder's (query, document) pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tinymodels
from tritonstack.in_triton.models.tokenization import QueryTooLongError, TextTokenizer

MAX_LENGTH = 24
QUERY = "quick brown fox"
LONG_DOCUMENT = " ".join(tinymodels.WORDS[:60])  # far over MAX_LENGTH tokens


@pytest.fixture(params=["bert", "roberta"])
def tokenizer_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    builders = {"bert": tinymodels._bert_tokenizer, "roberta": tinymodels._roberta_tokenizer}
    builders[request.param](tmp_path, MAX_LENGTH)
    return tmp_path


def _transformers(tokenizer_dir: Path, queries: list[str], documents: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoded = tokenizer(queries, documents, truncation="only_second", max_length=MAX_LENGTH, padding="longest")
    return {name: np.asarray(values, dtype=np.int64) for name, values in encoded.items()}


def test_pairs_are_tokenized_with_the_template_and_truncation_transformers_uses(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir, MAX_LENGTH, pair=True)
    queries = [QUERY, "hello", "rain sun cloud river mountain"]
    documents = [LONG_DOCUMENT, "the lazy dog", "data test export serve client load metric time"]
    encodings = tokenizer.encode(list(zip(queries, documents, strict=True)))
    expected = _transformers(tokenizer_dir, queries, documents)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in expected]
    features = tokenizer.features(encodings, names)
    for name in names:
        np.testing.assert_array_equal(features[name], expected[name], err_msg=name)
    assert len(encodings[0].ids) == MAX_LENGTH  # the long document was cut ...
    query_ids = tokenizer.tokenizer.encode(QUERY, add_special_tokens=False).ids
    assert encodings[0].ids[1 : 1 + len(query_ids)] == query_ids  # ... and the query kept whole


def test_bert_pairs_carry_segment_ids_for_the_document(tmp_path: Path) -> None:
    tinymodels._bert_tokenizer(tmp_path, MAX_LENGTH)
    (encoding,) = TextTokenizer(tmp_path, MAX_LENGTH, pair=True).encode([("hello", "world")])
    assert encoding.tokens == ["[CLS]", "hello", "[SEP]", "world", "[SEP]"]
    assert encoding.type_ids == [0, 0, 0, 1, 1]


def test_only_the_document_is_cut_even_when_the_query_is_the_longer(tmp_path: Path) -> None:
    tinymodels._bert_tokenizer(tmp_path, MAX_LENGTH)
    query = " ".join(tinymodels.WORDS[:15])  # 15 tokens: longest_first would cut it too
    (encoding,) = TextTokenizer(tmp_path, MAX_LENGTH, pair=True).encode([(query, LONG_DOCUMENT)])
    assert encoding.type_ids.count(0) == 15 + 2  # [CLS] query [SEP]
    assert len(encoding.ids) == MAX_LENGTH


def test_a_query_that_leaves_its_document_no_room_is_refused_with_its_length(tmp_path: Path) -> None:
    tinymodels._bert_tokenizer(tmp_path, MAX_LENGTH)
    tokenizer = TextTokenizer(tmp_path, MAX_LENGTH, pair=True)
    tokenizer.check_queries([QUERY, " ".join(tinymodels.WORDS[:20])])  # 20 + 3 special tokens: 1 left
    with pytest.raises(QueryTooLongError, match=r"the query is 21 tokens; .* max_sequence_length 24"):
        tokenizer.check_queries([QUERY, " ".join(tinymodels.WORDS[:21])])
    with pytest.raises(QueryTooLongError, match=r"the query is 40 tokens"):  # over max_length: counted whole
        tokenizer.check_queries([" ".join(tinymodels.WORDS[:40])])


def test_single_texts_keep_the_rule_they_had(tmp_path: Path) -> None:
    tinymodels._bert_tokenizer(tmp_path, MAX_LENGTH)
    tokenizer = TextTokenizer(tmp_path, MAX_LENGTH)
    (encoding,) = tokenizer.encode([LONG_DOCUMENT])
    assert len(encoding.ids) == MAX_LENGTH
    assert tokenizer.tokenizer.truncation["strategy"] == "longest_first"
