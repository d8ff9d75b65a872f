"""tune's workload of a text-ranking SLO counts the tokens the server tokenizes: each (query, document) pair."""

from __future__ import annotations

from pathlib import Path

import tinymodels
from tritonstack.in_triton.models.tokenization import TextTokenizer
from tritonstack.tune.session import describe_workload, workload_from

MAX_LENGTH = 32
TEXTS = [
    "reset password",
    "where is my order",
    " ".join(tinymodels.WORDS[:50]),  # longer than MAX_LENGTH: truncated beside its query
    "the quick brown fox jumps over the lazy dog",
]


def test_a_ranking_request_counts_its_query_beside_each_document(tmp_path: Path) -> None:
    tinymodels._bert_tokenizer(tmp_path, MAX_LENGTH)
    workload = workload_from(TEXTS, 3, "text-ranking", tmp_path, MAX_LENGTH, requests=16, seed=1)
    pairs = TextTokenizer(tmp_path, MAX_LENGTH, pair=True)
    singles = TextTokenizer(tmp_path, MAX_LENGTH)
    for request, counted in zip(workload.requests, workload.token_counts, strict=True):
        query = min(request, key=len)  # payload.request_call's query: the shortest drawn text
        documents = list(request)
        documents.remove(query)
        assert counted == sum(len(e.ids) for e in pairs.encode([(query, d) for d in documents]))
        assert all(len(e.ids) <= MAX_LENGTH for e in pairs.encode([(query, d) for d in documents]))
    # text by text, the query would be counted once and no document beside it
    one_by_one = [sum(len(e.ids) for e in singles.encode(list(r))) for r in workload.requests]
    assert list(workload.token_counts) != one_by_one
    assert describe_workload(workload)["task"] == "text-ranking"
    embedding = workload_from(TEXTS, 3, "feature-extraction", tmp_path, MAX_LENGTH, requests=16, seed=1)
    assert list(embedding.token_counts) == [
        sum(len(e.ids) for e in singles.encode(list(r))) for r in embedding.requests
    ]  # the other tasks as before
