"""The model routes: ``/v1/embeddings`` (OpenAI), ``/v1/rerank`` and ``/v2/rerank`` (Cohere/Jina), ``/v1/classify``.

Each: validate, pick the release (a configured split), look each input up in the cache, call the SDK for the rest
(its deadline, retries, breaker and failover apply), store what was computed, answer. SDK errors become OpenAI
errors through ``errors.from_sdk`` alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, Request
from starlette.responses import Response

from tritonstack.client import ClientError, ModelInfo, Release, RerankResult, TrafficSplit
from tritonstack.gateway import errors, usage
from tritonstack.gateway.app import labels_of
from tritonstack.gateway.respond import cut, embedding_items, json_response
from tritonstack.gateway.schemas import ClassifyRequest, DocumentObject, EmbeddingsRequest, RerankRequest
from tritonstack.in_triton import contract

if TYPE_CHECKING:
    from tritonstack.gateway.app import Gateway

RELEASE_HEADER = "x-tritonstack-release"


def add_routes(app: FastAPI, gateway: Gateway) -> None:
    @app.post("/v1/embeddings", summary="OpenAI embeddings")
    async def embeddings(body: EmbeddingsRequest, request: Request) -> Response:
        return await _sdk_errors(_embeddings(gateway, body, request))

    async def rerank(body: RerankRequest, request: Request) -> Response:
        return await _sdk_errors(_rerank(gateway, body, request))

    app.post("/v1/rerank", summary="Cohere/Jina rerank")(rerank)
    app.post("/v2/rerank", summary="Cohere/Jina rerank (Cohere v2's path)")(rerank)

    @app.post("/v1/classify", summary="Label and score of each text")
    async def classify(body: ClassifyRequest, request: Request) -> Response:
        return await _sdk_errors(_classify(gateway, body, request))


async def _sdk_errors(answer: Awaitable[Response]) -> Response:
    try:
        return await answer
    except ClientError as error:
        raise errors.from_sdk(error) from None


def _texts(value: object, *, limit: int, param: str = "input") -> list[str]:
    if isinstance(value, str):
        return [value]
    items = list(value) if isinstance(value, list) else []
    if any(not isinstance(item, str) for item in items):
        raise errors.APIError(
            errors.INVALID, "Token-id input is not supported: send the texts (the models tokenize)", param=param
        )
    if not items:
        raise errors.APIError(errors.INVALID, f"'{param}' is empty: send at least one text", param=param)
    if len(items) > limit:
        raise errors.APIError(errors.TOO_LARGE, f"{len(items)} inputs, over the limit of {limit}", param=param)
    try:
        "".join(items).encode()  # JSON may carry lone surrogates ("\\ud800"), which no model can take as UTF-8
    except UnicodeEncodeError:
        raise errors.APIError(errors.INVALID, f"'{param}' holds text that is not valid Unicode", param=param) from None
    return items


class _Call:
    """One request's target: the model asked for, the release that answers, and the texts' options."""

    def __init__(self, gateway: Gateway, request: Request, model: str, user: str | None, truncate: bool | None):
        self.gateway = gateway
        self.model = model
        labels_of(request).model = model
        split = gateway.settings.config.releases.get(model)
        self.release: Release | None = None
        if split is not None:
            if split.header is not None:
                key = request.headers.get(split.header)
            else:
                key = user if split.key == "user" else None
            route = TrafficSplit(model, split.baseline, split.candidate, split.weight)
            self.release = route.choose(key=key, draw=gateway.rng.random())
        self.served = self.release.served_as if self.release is not None else model
        options = gateway.settings.config.options(model)
        self.truncate = options.truncate if truncate is None else truncate
        self.prefixes = options.prefixes
        self.usage = usage.new_usage()

    async def info(self) -> ModelInfo:
        """The served model's description (the SDK caches it); from here on its name labels metrics."""
        info = await self.gateway.client.model_info(model=self.served)
        self.gateway.served.add(self.model)
        return info

    def require(self, info: ModelInfo, task: str, route: str) -> None:
        if info.task != task:
            raise errors.APIError(
                errors.INVALID,
                f"'{self.model}' is a {info.task or 'non-text'} model; {route} needs a {task} model",
                param="model",
            )

    @property
    def headers(self) -> dict[str, str]:
        return {RELEASE_HEADER: self.served} if self.release is not None else {}

    async def cached(
        self,
        route: str,
        params: Mapping[str, object],
        texts: Sequence[str | tuple[str, str]],
        compute: Callable[[list[int]], Awaitable[list[bytes]]],
    ) -> list[bytes]:
        """Each input's value: from the cache where it holds one, else from ``compute(indexes)`` (then stored)."""
        cache = self.gateway.cache
        if cache is None:
            return await compute(list(range(len(texts))))
        from tritonstack.gateway.cache import cache_key

        release = self.served if self.release is not None else ""
        keys = [cache_key(route=route, model=self.model, release=release, params=params, text=t) for t in texts]
        found = await cache.get_many(keys)
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            computed = await compute(missing)
            for i, value in zip(missing, computed, strict=True):
                found[i] = value
            await cache.put_many([(keys[i], value) for i, value in zip(missing, computed, strict=True)])
        return [value for value in found if value is not None]

    def check_truncation(self, indexes: Sequence[int]) -> None:
        """With ``truncate`` false, a row the model cut is refused (before anything computed is cached);
        ``indexes``: the request's positions of the rows sent, in the order sent."""
        counted = usage.counted(self.usage)
        if self.truncate or counted.truncated is None or not counted.truncated.any():
            return
        row = int(np.flatnonzero(counted.truncated)[0])
        tokens = int(counted.per_row[row]) if counted.per_row is not None else 0
        raise errors.APIError(
            errors.TOO_LONG,
            f"input {indexes[row]} is over the model's maximum of {tokens} tokens and truncate is false: shorten "
            "it, or send truncate: true to have it cut",
            param="input",
        )

    def count(self, route: str, inputs: int) -> int:
        """The tokens the model ran for this request (0 where not counted), added to the metrics with the inputs."""
        tokens = usage.counted(self.usage).tokens
        self.gateway.metrics.inputs.labels(route, self.model).inc(inputs)
        self.gateway.metrics.tokens.labels(route, self.model).inc(tokens)
        return tokens


async def _embeddings(gateway: Gateway, body: EmbeddingsRequest, request: Request) -> Response:
    route = "/v1/embeddings"
    call = _Call(gateway, request, body.model, body.user, body.truncate)
    texts = _texts(body.input, limit=gateway.settings.max_inputs)
    info = await call.info()
    call.require(info, contract.FEATURE_EXTRACTION.name, route)
    spec = next(s for s in info.outputs if s.name == contract.EMBEDDING_OUTPUT)
    size = spec.shape[-1]
    if body.dimensions is not None and not 1 <= body.dimensions <= size:
        raise errors.APIError(
            errors.INVALID, f"dimensions must be 1 to the model's {size}, got {body.dimensions}", param="dimensions"
        )
    prefix = call.prefixes.get(body.input_type, "") if body.input_type else ""
    sent = [prefix + text for text in texts] if prefix else texts

    async def compute(indexes: list[int]) -> list[bytes]:
        rows = [sent[i] for i in indexes]
        if call.release is not None:
            routed = await gateway.client.embed_release(rows, call.release, usage=call.usage)
            vectors = routed.value
        else:
            vectors = await gateway.client.embed(rows, model=call.served, usage=call.usage)
        call.check_truncation(indexes)  # a cut row refused before anything is cached
        return [np.ascontiguousarray(row, dtype="<f4").tobytes() for row in vectors]

    values = await call.cached(route, {"prefix": prefix, "truncate": call.truncate}, sent, compute)
    vectors = np.frombuffer(b"".join(values), dtype="<f4").reshape(len(values), size)
    tokens = call.count(route, len(texts))
    answer = {
        "object": "list",
        "data": embedding_items(cut(vectors, body.dimensions), body.encoding_format),
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(answer, headers=call.headers)


async def _rerank(gateway: Gateway, body: RerankRequest, request: Request) -> Response:
    route = request.url.path  # /v1/rerank or /v2/rerank: the same answer, cached apart per route
    call = _Call(gateway, request, body.model, body.user, body.truncate)
    documents = [d.text if isinstance(d, DocumentObject) else d for d in body.documents]
    _texts(documents, limit=gateway.settings.max_inputs, param="documents")
    call.require(await call.info(), contract.TEXT_RANKING.name, route)

    async def compute(indexes: list[int]) -> list[bytes]:
        rows = [documents[i] for i in indexes]
        if call.release is not None:
            ranked: list[RerankResult] = (
                await gateway.client.rerank_release(body.query, rows, call.release, usage=call.usage)
            ).value
        else:
            ranked = await gateway.client.rerank(body.query, rows, model=call.served, usage=call.usage)
        call.check_truncation(indexes)
        scores = np.empty(len(rows), dtype="<f4")
        for result in ranked:
            scores[result.index] = result.score
        return [score.tobytes() for score in scores]

    values = await call.cached(route, {"truncate": call.truncate}, [(body.query, d) for d in documents], compute)
    scores = np.frombuffer(b"".join(values), dtype="<f4")
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[: body.top_n]
    results = []
    for index in order:
        result: dict[str, object] = {
            "index": index,
            "relevance_score": RerankResult(index, float(scores[index])).relevance,
        }
        if body.return_documents:
            result["document"] = {"text": documents[index]}
        results.append(result)
    tokens = call.count(route, len(documents))
    answer = {
        "id": str(uuid.uuid4()),
        "model": body.model,
        "results": results,
        "meta": {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": tokens, "output_tokens": 0}},
        "usage": {"total_tokens": tokens},
    }
    return json_response(answer, headers=call.headers)


async def _classify(gateway: Gateway, body: ClassifyRequest, request: Request) -> Response:
    route = "/v1/classify"
    call = _Call(gateway, request, body.model, body.user, body.truncate)
    texts = _texts(body.input, limit=gateway.settings.max_inputs)
    call.require(await call.info(), contract.TEXT_CLASSIFICATION.name, route)

    async def compute(indexes: list[int]) -> list[bytes]:
        rows = [texts[i] for i in indexes]
        if call.release is not None:
            found = (await gateway.client.classify_release(rows, call.release, usage=call.usage)).value
        else:
            found = await gateway.client.classify(rows, model=call.served, usage=call.usage)
        call.check_truncation(indexes)
        return [json.dumps({"label": c.label, "score": c.score}).encode() for c in found]

    values = await call.cached(route, {"truncate": call.truncate}, texts, compute)
    data = [{"index": i, **json.loads(value)} for i, value in enumerate(values)]
    tokens = call.count(route, len(texts))
    answer = {
        "object": "list",
        "model": body.model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(answer, headers=call.headers)
