"""Both clients against the real embedded Triton: results, batching, and the bad-input matrix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonstack.client import (
    AsyncClient,
    Classification,
    Client,
    ClientError,
    InvalidInputError,
    ModelNotFoundError,
    RetryPolicy,
    ServerUnavailableError,
    Timeouts,
)

pytestmark = pytest.mark.integration

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "rain", "good model, fast server!"]


def raw_infer(url: str, model: str, texts: list[str]) -> Any:
    """The same request through plain tritonclient: the reference the SDK must match."""
    array = np.array([[t.encode()] for t in texts], dtype=np.object_)
    tensor = grpcclient.InferInput("TEXT", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    with grpcclient.InferenceServerClient(url) as raw:
        return raw.infer(model, [tensor])


def served(url: str, model: str) -> tuple[int, int]:
    """Triton's counts for ``model``: (successful requests, rows inferred)."""
    with grpcclient.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics(model).model_stats
    return sum(int(s.inference_stats.success.count) for s in stats), sum(int(s.inference_count) for s in stats)


@pytest.fixture()
def client(triton: Any) -> Iterator[Client]:
    with Client(triton.grpc_url, model="tiny") as c:
        yield c


def test_embed_matches_a_raw_tritonclient_call(triton: Any, client: Client) -> None:
    embeddings = client.embed(TEXTS)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(TEXTS), 32)
    reference = raw_infer(triton.grpc_url, "tiny", TEXTS).as_numpy("EMBEDDING")
    np.testing.assert_allclose(embeddings, reference, atol=1e-5)
    assert client.ready() and client.ready(model="tiny_cls") and not client.ready(model="nope")


def test_a_grpcs_url_speaks_tls_never_plaintext(triton: Any) -> None:
    """The embedded server speaks plaintext: a grpcs:// URL must not reach it (it did, stripped to plaintext)."""
    with (
        Client(f"grpcs://{triton.grpc_url}", model="tiny", timeouts=Timeouts(3), retry=RetryPolicy.disabled()) as c,
        pytest.raises(ServerUnavailableError),
    ):
        c.embed(TEXTS)
    with Client(f"grpc://{triton.grpc_url}", model="tiny") as plain:
        assert plain.embed(TEXTS).shape == (len(TEXTS), 32)


def test_classify_matches_a_raw_tritonclient_call(triton: Any, client: Client) -> None:
    results = client.classify(TEXTS, model="tiny_cls")
    reference = raw_infer(triton.grpc_url, "tiny_cls", TEXTS)
    labels = [label.decode() for label in reference.as_numpy("LABEL").reshape(-1)]
    assert [r.label for r in results] == labels
    np.testing.assert_allclose([r.score for r in results], reference.as_numpy("SCORE").reshape(-1), atol=1e-6)
    assert all(isinstance(r, Classification) and r.label in {"NEGATIVE", "POSITIVE"} for r in results)
    assert all(0.5 <= r.score <= 1.0 for r in results)  # the top of a two-label softmax


def test_long_lists_are_split_at_max_batch_size_and_keep_their_order(triton: Any, client: Client) -> None:
    info = client.model_info()
    assert info.max_batch_size == 64 and info.task == "feature-extraction"
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(3 * info.max_batch_size + 5)]
    requests_before, rows_before = served(triton.grpc_url, "tiny")
    embeddings = client.embed(texts)
    assert embeddings.shape == (len(texts), 32)
    for index in (0, 63, 64, 127, 128, 191, 192, len(texts) - 1):  # both sides of each split
        np.testing.assert_allclose(embeddings[index], client.embed([texts[index]])[0], atol=1e-4)
    assert len({row.tobytes() for row in embeddings}) == len(texts)
    # the list went as ceil(197 / 64) = 4 requests, then the 8 single-text checks
    expected = (requests_before + 4 + 8, rows_before + len(texts) + 8)
    # Triton counts an ensemble's request just after it sent the response: let the last one land.
    settle_by = time.monotonic() + 2.0
    while served(triton.grpc_url, "tiny") != expected and time.monotonic() < settle_by:
        time.sleep(0.05)
    assert served(triton.grpc_url, "tiny") == expected


def test_infer_runs_any_model_with_named_tensors(client: Client) -> None:
    text = np.array([[b"hello world"], ["rain"]], dtype=np.object_)
    outputs = client.infer({"TEXT": text}, model="tiny_cls", outputs=["SCORE"])
    assert list(outputs) == ["SCORE"] and outputs["SCORE"].shape == (2, 1)
    encoder = client.model_info(model="tiny_encoder")
    ids = np.array([[2, 5, 6, 3]], np.int64)
    tensors = {spec.name: ids if spec.name == "input_ids" else np.ones_like(ids) for spec in encoder.inputs}
    if "token_type_ids" in tensors:
        tensors["token_type_ids"] = np.zeros_like(ids)
    embedding = client.infer(tensors, model="tiny_encoder")
    assert next(iter(embedding.values())).shape == (1, 32)


def test_async_client_gives_the_same_answers(triton: Any, client: Client) -> None:
    texts = [f"async text {i}" for i in range(150)]
    expected = client.embed(texts)

    async def main() -> tuple[np.ndarray, list[Classification], list[np.ndarray], bool]:
        async with AsyncClient(triton.grpc_url, model="tiny") as aclient:
            embeddings = await aclient.embed(texts)
            labels = await aclient.classify(TEXTS, model="tiny_cls")
            singles = await asyncio.gather(*(aclient.embed([text]) for text in texts[:64]))
            return embeddings, labels, singles, await aclient.ready()

    embeddings, labels, singles, ready = asyncio.run(main())
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    np.testing.assert_allclose(np.concatenate(singles), expected[:64], atol=1e-4)
    assert [c.label for c in labels] == [c.label for c in client.classify(TEXTS, model="tiny_cls")]
    assert ready


# --- the bad-input matrix --------------------------------------------------------------------

TEXT_ROWS = np.array([[b"hello"], [b"world"]], dtype=np.object_)
CLIENT = None  # the code of errors found before sending
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _encoder_ids(dtype: Any) -> dict[str, np.ndarray]:
    ids = np.array([[2, 5, 3]], dtype)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


# (id, call, expected error, expected gRPC status: None when refused client-side, message fragment)
BAD_INPUTS: list[tuple[str, Callable[[Any], Any], type[ClientError], grpc.StatusCode | None, str]] = [
    ("a single string", lambda c: c.embed("hello"), InvalidInputError, CLIENT, "single string"),
    ("empty list", lambda c: c.embed([]), InvalidInputError, CLIENT, "texts is empty"),
    ("empty string", lambda c: c.embed(["ok", ""]), InvalidInputError, CLIENT, r"texts\[1\] is empty"),
    ("whitespace string", lambda c: c.embed([" \n "]), InvalidInputError, CLIENT, "only whitespace"),
    ("None in texts", lambda c: c.embed(["ok", None]), InvalidInputError, CLIENT, "is NoneType, not str"),
    ("bytes in texts", lambda c: c.embed([b"bytes"]), InvalidInputError, CLIENT, "is bytes, not str"),
    ("number in texts", lambda c: c.classify([1.5], model="tiny_cls"), InvalidInputError, CLIENT, "is float"),
    ("huge text", lambda c: c.embed(["word " * 20_000]), InvalidInputError, CLIENT, "100000 bytes"),
    ("lone surrogate", lambda c: c.embed(["\ud800"]), InvalidInputError, CLIENT, "not valid Unicode"),
    ("unknown model", lambda c: c.embed(["x"], model="nope"), ModelNotFoundError, NOT_FOUND, "nope"),
    ("unknown version", lambda c: c.embed(["x"], version=7), ModelNotFoundError, NOT_FOUND, "7"),
    ("classify an embedder", lambda c: c.classify(["x"]), InvalidInputError, CLIENT, "is feature-extraction"),
    ("embed a classifier", lambda c: c.embed(["x"], model="tiny_cls"), InvalidInputError, CLIENT, "is text-class"),
    ("embed an encoder", lambda c: c.embed(["x"], model="tiny_encoder"), InvalidInputError, CLIENT, "not a trit"),
    ("no inputs", lambda c: c.infer({}), InvalidInputError, CLIENT, "inputs is empty"),
    ("not a mapping", lambda c: c.infer([TEXT_ROWS]), InvalidInputError, CLIENT, "mapping"),
    ("wrong input name", lambda c: c.infer({"TEXTS": TEXT_ROWS}), InvalidInputError, CLIENT, "unknown input"),
    ("wrong dtype", lambda c: c.infer({"TEXT": np.ones((2, 1), np.float32)}), InvalidInputError, CLIENT, "BYTES"),
    ("rank too low", lambda c: c.infer({"TEXT": TEXT_ROWS[:, 0]}), InvalidInputError, CLIENT, "rank 1"),
    ("rank too high", lambda c: c.infer({"TEXT": TEXT_ROWS[None]}), InvalidInputError, CLIENT, "rank 3"),
    ("wrong dim", lambda c: c.infer({"TEXT": np.hstack([TEXT_ROWS] * 2)}), InvalidInputError, CLIENT, "2 on axis 1"),
    ("empty batch", lambda c: c.infer({"TEXT": TEXT_ROWS[:0]}), InvalidInputError, CLIENT, "empty batch"),
    ("huge batch", lambda c: c.infer({"TEXT": np.repeat(TEXT_ROWS, 40, 0)}), InvalidInputError, CLIENT, "of 80"),
    (
        "non-string object",
        lambda c: c.infer({"TEXT": np.array([[b"ok"], [{"a": 1}]], dtype=np.object_)}),
        InvalidInputError,
        CLIENT,
        "holds a dict",
    ),
    ("not an array", lambda c: c.infer({"TEXT": [["hello"]]}), InvalidInputError, CLIENT, "got list"),
    ("unknown output", lambda c: c.infer({"TEXT": TEXT_ROWS}, outputs=["X"]), InvalidInputError, CLIENT, "output"),
    (
        "int32 ids for INT64",
        lambda c: c.infer(_encoder_ids(np.int32), model="tiny_encoder"),
        InvalidInputError,
        CLIENT,
        "takes INT64",
    ),
    (
        "missing input",
        lambda c: c.infer({"input_ids": _encoder_ids(np.int64)["input_ids"]}, model="tiny_encoder"),
        InvalidInputError,
        CLIENT,
        "missing input",
    ),
    # Well-formed for the client, refused by the server: its INVALID_ARGUMENT comes back typed.
    (
        "bytes that are not UTF-8",
        lambda c: c.infer({"TEXT": np.array([[b"\xff\xfe"]], dtype=np.object_)}),
        InvalidInputError,
        grpc.StatusCode.INVALID_ARGUMENT,
        "UTF-8",
    ),
]
# NaN in float inputs is refused by the same check_inputs (tests/client/test_client_core.py); the
# served models have no float input to send one to.


class AsyncAdapter:
    """The AsyncClient behind the sync call shapes of the matrix (one event loop per call)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            async def main() -> Any:
                async with AsyncClient(self.url, model="tiny") as aclient:
                    return await getattr(aclient, method)(*args, **kwargs)

            return asyncio.run(main())

        return call


def test_the_matrix_has_at_least_20_cases() -> None:
    assert len(BAD_INPUTS) >= 20


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("call", "error", "code", "match"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_its_typed_error_and_the_next_good_call_works(
    triton: Any,
    client: Client,
    kind: str,
    call: Callable[[Any], Any],
    error: type[ClientError],
    code: grpc.StatusCode | None,
    match: str,
) -> None:
    target = client if kind == "sync" else AsyncAdapter(triton.grpc_url)
    with pytest.raises(ClientError, match=match) as info:
        call(target)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert info.value.code is code
    assert info.value.model is not None and info.value.message
    if code is not None:  # the server answered: the error names the request and the endpoint
        assert info.value.request_id and info.value.url == triton.grpc_url
    assert target.embed(["the next good call"]).shape == (1, 32)
