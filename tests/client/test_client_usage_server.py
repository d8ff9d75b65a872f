"""``usage=`` against the real embedded Triton: every layout and SDK task answers TOKENS, counted as the tokenizer
rule counts, in the order sent; ``usage=None`` does not ask for it; a model exported before it is not counted.

One repository: ``emb`` (feature-extraction, ensemble layout, exported twice: releases ``emb_v1``/``emb_v2``,
a small batch limit so that long lists are split), ``emb_f`` (fused), ``cls`` (text-classification), ``rank``
(text-ranking) and ``legacy`` (feature-extraction whose configs are as an export from before TOKENS wrote them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tinymodels
from tritonstack.client import AsyncClient, Client, Release, TrafficSplit, Usage, _core
from tritonstack.in_triton import contract
from tritonstack.in_triton.models.tokenization import TextTokenizer
from tritonstack.repository.config import CONFIG_FILENAME, parse, render_proto
from tritonstack.repository.validate import check_repository

pytestmark = pytest.mark.integration

MAX_LENGTH = 64  # the tiny models' max_sequence_length
MAX_BATCH = 4  # emb's: ten texts go out as three requests
TEXTS = [
    "rain",
    "hello world",
    "word " * 300,  # past MAX_LENGTH: cut
    "😀🚀 emoji and 中文字符",
    "the quick brown fox jumps over the lazy dog",
    "model triton server text embedding batch latency token queue compute fast slow " * 3,
    "cat",
    "sun cloud river mountain",
    "a b c d e f",
    "good bad",
]
DOCUMENTS = ["the cat sat on the mat", "rain " * 400, "quick brown fox", "hello"]


def _strip_tokens(repository: Path, name: str) -> None:
    """Rewrite ``name``'s configs as an export from before TOKENS wrote them: no TOKENS output anywhere."""
    for model in (name, contract.release_name(name, 1), contract.tokenizer_name(name)):
        path = repository / model / CONFIG_FILENAME
        config = parse(path.read_text())
        kept = [t for t in config.output if t.name != contract.TOKENS_OUTPUT]
        del config.output[:]
        config.output.extend(kept)
        for step in config.ensemble_scheduling.step:
            step.output_map.pop(contract.TOKENS_OUTPUT, None)
        path.write_text(render_proto(config))


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path], tiny_reranker_dir: Path
) -> Path:
    repository = tmp_path_factory.mktemp("usage") / "model_repository"
    tiny = tiny_model_dirs["tiny"]
    for _ in range(2):  # a second export is release 2, served as emb_v2 beside emb_v1
        tinymodels.export_fp32(tiny, repository, "emb", max_batch_size=MAX_BATCH)
    tinymodels.export_fp32(tiny, repository, "emb_f", layout="fused")
    tinymodels.export_fp32(tiny_model_dirs["tiny_cls"], repository, "cls")
    tinymodels.export_fp32(tiny_reranker_dir, repository, "rank")
    tinymodels.export_fp32(tiny, repository, "legacy")
    _strip_tokens(repository, "legacy")
    return repository


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[Any]:
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(repository, log_path=repository.parent / "triton.log") as running:
        yield running


@pytest.fixture()
def client(server: Any) -> Iterator[Client]:
    with Client(server.grpc_url) as running:
        yield running


def expected(repository: Path, name: str, rows: list[Any], max_length: int = MAX_LENGTH) -> np.ndarray:
    """TOKENS of ``rows`` by the tokenizer rule itself, from the model's own tokenizer files."""
    pair = isinstance(rows[0], tuple)
    tokenizer = TextTokenizer(repository / contract.tokenizer_name(name) / "1", max_length, pair=pair)
    return tokenizer.token_counts(rows, tokenizer.encode(rows))


def test_the_repository_with_tokens_validates(repository: Path) -> None:
    check_repository(repository)


@pytest.mark.parametrize("name", ["emb", "emb_f"])
def test_embed_counts_every_text_in_order_in_both_layouts(
    repository: Path, client: Client, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    requested: list[tuple[str, ...]] = []
    build_outputs = _core.build_outputs
    monkeypatch.setattr(_core, "build_outputs", lambda names: requested.append(names) or build_outputs(names))
    usage = Usage()
    vectors = client.embed(TEXTS, model=name, usage=usage)
    counts = expected(repository, name, TEXTS)
    assert usage.counted and usage.calls == 1
    assert usage.per_row.tolist() == counts[:, 0].tolist()  # split into requests (emb), kept in order
    assert usage.tokens == int(counts[:, 0].sum())
    assert usage.truncated.tolist() == [i == 2 for i in range(len(TEXTS))]
    assert usage.per_row[2] == MAX_LENGTH
    assert requested == [("EMBEDDING", "TOKENS")]
    np.testing.assert_allclose(vectors, client.embed(TEXTS, model=name), atol=1e-6)  # the same answer
    assert requested[-1] == ("EMBEDDING",)  # usage=None: TOKENS not asked for


def test_classify_counts_its_texts(repository: Path, client: Client) -> None:
    usage = Usage()
    labels = client.classify(TEXTS[:3], model="cls", usage=usage)
    assert len(labels) == 3
    assert usage.per_row.tolist() == expected(repository, "cls", TEXTS[:3])[:, 0].tolist()
    assert usage.truncated.tolist() == [False, False, True]


def test_rerank_counts_each_pair_per_document_in_the_order_sent(repository: Path, client: Client) -> None:
    usage = Usage()
    query = "quick brown fox"
    ranked = client.rerank(query, DOCUMENTS, model="rank", usage=usage)
    assert sorted(r.index for r in ranked) == [0, 1, 2, 3]
    counts = expected(repository, "rank", [(query, d) for d in DOCUMENTS], max_length=256)
    assert usage.per_row.tolist() == counts[:, 0].tolist()
    assert usage.truncated.tolist() == [False, True, False, False]  # only the long document was cut
    assert usage.per_row[1] == 256


def test_a_usage_accumulates_over_calls_and_releases(repository: Path, client: Client) -> None:
    usage = Usage()
    first = client.embed_release(TEXTS[:2], Release("emb", 1), usage=usage)
    second = client.embed_release(TEXTS[2:3], TrafficSplit("emb", 1, 2, weight=1.0), usage=usage)
    assert (first.release.served_as, second.release.served_as) == ("emb_v1", "emb_v2")
    assert usage.counted and usage.calls == 2
    assert usage.per_row.tolist() == expected(repository, "emb", TEXTS[:3])[:, 0].tolist()
    assert usage.truncated.tolist() == [False, False, True]
    assert usage.tokens == int(usage.per_row.sum())


def test_a_model_exported_before_tokens_answers_uncounted(client: Client) -> None:
    info = client.model_info(model="legacy")
    assert info.output(contract.TOKENS_OUTPUT) is None and info.task == "feature-extraction"
    usage = Usage()
    vectors = client.embed(TEXTS[:2], model="legacy", usage=usage)
    assert vectors.shape[0] == 2
    assert (usage.counted, usage.calls, usage.tokens, usage.per_row.tolist()) == (False, 1, 0, [])


def test_the_async_client_counts_alike(repository: Path, server: Any) -> None:
    async def calls() -> tuple[Usage, Usage]:
        embedded, reranked = Usage(), Usage()
        async with AsyncClient(server.grpc_url) as client:
            await client.embed(TEXTS, model="emb", usage=embedded)
            await client.rerank_release("fox", DOCUMENTS[:2], Release("rank", 1), usage=reranked)
        return embedded, reranked

    embedded, reranked = asyncio.run(calls())
    assert embedded.per_row.tolist() == expected(repository, "emb", TEXTS)[:, 0].tolist()
    pairs = expected(repository, "rank", [("fox", d) for d in DOCUMENTS[:2]], max_length=256)
    assert reranked.per_row.tolist() == pairs[:, 0].tolist() and reranked.truncated.tolist() == [False, True]
