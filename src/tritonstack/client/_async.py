"""``AsyncClient``: the asyncio SDK over ``tritonclient.grpc.aio``. Only I/O lives here."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from tritonclient.grpc.aio import InferenceServerClient as Connection

from tritonstack.client import _core
from tritonstack.client._config import (
    UNSET,
    CircuitBreakerPolicy,
    RetryPolicy,
    TimeoutArg,
    Timeouts,
    TLSConfig,
    UnsetType,
)
from tritonstack.client._exceptions import DeadlineExceededError, ServerUnavailableError, call_errors, translate
from tritonstack.client._metrics import ClientMetrics, NoMetrics, resolve
from tritonstack.client._models import Classification, ModelInfo, RerankResult, Usage, parse_model_info
from tritonstack.client._releases import Release, Routed, TrafficSplit, pick
from tritonstack.client._retry import Deadline, Endpoint, EndpointPool
from tritonstack.client._routing import CallPlan
from tritonstack.in_triton import contract

R = TypeVar("R")
_CALL_ERRORS = call_errors()


class AsyncClient:
    """The asyncio twin of ``Client``: same constructor, same methods, awaitable.

    Use one per event loop (``async with AsyncClient(...) as client:``); its gRPC
    channels are opened on first use inside the running loop. Split batches go
    out concurrently, at most ``max_concurrency`` at a time per call.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        model: str | None = None,
        *,
        version: str | int | None = None,
        timeouts: Timeouts | float | UnsetType | None = UNSET,
        retry: RetryPolicy | None = None,
        tls: TLSConfig | None = None,
        headers: Mapping[str, str] | None = None,
        max_text_bytes: int | None = _core.DEFAULT_MAX_TEXT_BYTES,
        max_concurrency: int = 8,
        metrics: ClientMetrics | bool = False,
        channel_options: Sequence[tuple[str, Any]] = (),
        breaker: CircuitBreakerPolicy | None = None,
    ) -> None:
        self._settings = _core.make_settings(
            url, model, version, Timeouts.coerce(timeouts), retry, tls, headers,
            max_text_bytes, max_concurrency, channel_options, breaker,
        )  # fmt: skip
        # Read the PEM files now, so that a wrong path fails here and not in the first call.
        self._credentials = self._settings.tls.credentials() if self._settings.tls is not None else None
        self._pool_: EndpointPool[Connection] | None = None
        self._metrics: NoMetrics = resolve(metrics)
        self._infos: dict[tuple[str, str], ModelInfo] = {}
        self._closed = False
        self._rng = random.Random()  # traffic-split draws (TrafficSplit without a key)

    # --- public API ------------------------------------------------------------------------

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        version: str | int | None = None,
        timeout_s: TimeoutArg = UNSET,
        usage: Usage | None = None,
    ) -> np.ndarray:
        """Embeddings of ``texts`` from a feature-extraction model: float32 ``[len(texts), hidden]``. With
        ``usage`` (a ``Usage``), the tokens the model ran for each text are added to it."""
        name, ver = _core.target(self._settings, model, version)
        with self._metrics.timed(name, "embed"):
            outputs, count = await self._texts(texts, name, ver, contract.FEATURE_EXTRACTION, timeout_s, usage)
            return _core.embeddings_from(outputs, count, name)

    async def classify(
        self,
        texts: Sequence[str],
        *,
        model: str | None = None,
        version: str | int | None = None,
        timeout_s: TimeoutArg = UNSET,
        usage: Usage | None = None,
    ) -> list[Classification]:
        """The label and score of each text from a text-classification model, in order; the tokens it ran added
        to ``usage`` when given."""
        name, ver = _core.target(self._settings, model, version)
        with self._metrics.timed(name, "classify"):
            outputs, count = await self._texts(texts, name, ver, contract.TEXT_CLASSIFICATION, timeout_s, usage)
            return _core.classifications_from(outputs, count, name)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        model: str | None = None,
        version: str | int | None = None,
        timeout_s: TimeoutArg = UNSET,
        usage: Usage | None = None,
    ) -> list[RerankResult]:
        """``documents`` ranked by their relevance to ``query`` from a text-ranking model (a cross-encoder),
        best first, the ``top_n`` best (``None``: all); each a ``RerankResult`` (its index in ``documents``, its
        score -- the raw relevance logit -- and, with ``return_documents``, its text). One (query, document) pair
        per row: lists longer than the model's ``max_batch_size`` are split like ``embed``'s. ``usage`` gets the
        tokens of each pair, per document in the order sent."""
        name, ver = _core.target(self._settings, model, version)
        _core.check_top_n(top_n, name)
        rows = _core.text_list(documents, model=name, what="documents")
        with self._metrics.timed(name, "rerank"):
            outputs, count = await self._texts(rows, name, ver, contract.TEXT_RANKING, timeout_s, usage, query=query)
            return _core.rankings_from(outputs, count, name, top_n=top_n, documents=rows if return_documents else None)

    async def embed_release(
        self,
        texts: Sequence[str],
        route: Release | TrafficSplit,
        *,
        key: str | None = None,
        timeout_s: TimeoutArg = UNSET,
        usage: Usage | None = None,
    ) -> Routed[np.ndarray]:
        """Embeddings of ``texts`` from the release ``route`` names or picks (by ``key`` if given), and which."""
        release = pick(route, key=key, draw=self._rng.random())
        return Routed(release, await self.embed(texts, model=release.served_as, timeout_s=timeout_s, usage=usage))

    async def classify_release(
        self,
        texts: Sequence[str],
        route: Release | TrafficSplit,
        *,
        key: str | None = None,
        timeout_s: TimeoutArg = UNSET,
        usage: Usage | None = None,
    ) -> Routed[list[Classification]]:
        """Classifications of ``texts`` from the release ``route`` names or picks (by ``key``), and which."""
        release = pick(route, key=key, draw=self._rng.random())
        return Routed(release, await self.classify(texts, model=release.served_as, timeout_s=timeout_s, usage=usage))

    async def rerank_release(
        self,
        query: str,
        documents: Sequence[str],
        route: Release | TrafficSplit,
        *,
        key: str | None = None,
        top_n: int | None = None,
        timeout_s: TimeoutArg = UNSET,
        usage: Usage | None = None,
    ) -> Routed[list[RerankResult]]:
        """``rerank`` on the release ``route`` names or picks (by ``key`` if given), and which."""
        release = pick(route, key=key, draw=self._rng.random())
        ranked = await self.rerank(
            query, documents, top_n=top_n, model=release.served_as, timeout_s=timeout_s, usage=usage
        )
        return Routed(release, ranked)

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        model: str | None = None,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        timeout_s: TimeoutArg = UNSET,
    ) -> dict[str, np.ndarray]:
        """Run any model: its input tensors by name in, its outputs (all, or ``outputs``) by name out."""
        name, ver = _core.target(self._settings, model, version)
        with self._metrics.timed(name, "infer"):
            deadline = self._deadline(timeout_s)
            request_id = _core.new_request_id()
            info = await self._model_info(name, ver, deadline, request_id)
            arrays = _core.check_inputs(inputs, info)
            names = _core.check_outputs(outputs, info)
            return await self._infer_chunks(info, ver, [arrays], names, deadline, request_id)

    async def ready(
        self, *, model: str | None = None, version: str | int | None = None, timeout_s: TimeoutArg = UNSET
    ) -> bool:
        """Whether a server answers and has the model ready; ``False`` when none can be reached in time."""
        name, ver = _core.probe_target(self._settings, model, version)
        headers = self._settings.headers

        async def op(connection: Connection, timeout: float | None) -> bool:
            if name:
                return bool(await connection.is_model_ready(name, ver, headers=headers, client_timeout=timeout))
            return bool(await connection.is_server_ready(headers=headers, client_timeout=timeout))

        pool = self._pool()
        retry = _core.probe_policy(len(pool.endpoints))
        try:
            return await self._call(op, name, ver, self._deadline(timeout_s), None, retry)
        except (ServerUnavailableError, DeadlineExceededError):
            return False

    async def model_info(
        self,
        *,
        model: str | None = None,
        version: str | int | None = None,
        refresh: bool = False,
        timeout_s: TimeoutArg = UNSET,
    ) -> ModelInfo:
        """The model's inputs, outputs, batch limit and task; cached, ``refresh=True`` asks again."""
        name, ver = _core.target(self._settings, model, version)
        if refresh:
            self._infos.pop((name, ver), None)
        with self._metrics.timed(name, "model_info"):
            return await self._model_info(name, ver, self._deadline(timeout_s), _core.new_request_id())

    async def close(self) -> None:
        """Close the connections; calls after this fail."""
        pool, self._pool_ = self._pool_, None
        self._closed = True
        if pool is not None:
            for endpoint in pool.endpoints:
                await endpoint.connection.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(url={list(self._settings.urls)!r}, model={self._settings.model!r})"

    # --- internals -------------------------------------------------------------------------

    def _pool(self) -> EndpointPool[Connection]:
        if self._closed:
            raise _core.closed_error(self)
        if self._pool_ is None:
            channel_args = self._settings.channel_args()
            self._pool_ = EndpointPool(
                [
                    Endpoint(url, Connection(url, creds=self._credentials, channel_args=channel_args))
                    for url in self._settings.urls
                ],
                self._settings.retry.cooldown_s,
                breaker=self._settings.breaker,
                budget=self._settings.retry.budget,
                metrics=self._metrics,
            )
        return self._pool_

    def _deadline(self, timeout_s: TimeoutArg) -> Deadline:
        return Deadline(_core.call_timeout_s(self._settings, timeout_s))

    async def _texts(
        self,
        texts: Sequence[str],
        name: str,
        ver: str,
        task: contract.Task,
        timeout_s: TimeoutArg,
        usage: Usage | None,
        query: str | None = None,
    ) -> tuple[dict[str, np.ndarray], int]:
        """The task's outputs for ``texts`` (a pair task: the documents of ``query``) and how many rows; the
        tokens the model ran added to ``usage`` when given."""
        deadline = self._deadline(timeout_s)
        max_bytes = self._settings.max_text_bytes
        query_bytes = (
            None if query is None else _core.encode_text(query, max_text_bytes=max_bytes, model=name, what="query")
        )
        encoded = _core.encode_texts(
            texts, max_text_bytes=max_bytes, model=name, what="texts" if query is None else "documents"
        )
        request_id = _core.new_request_id()
        info = await self._model_info(name, ver, deadline, request_id)
        _core.require_task(info, task)
        chunks = _core.text_chunks(encoded, info.max_batch_size, query_bytes)
        names = _core.text_outputs(task, info, usage)
        outputs = await self._infer_chunks(info, ver, chunks, names, deadline, request_id)
        _core.record_usage(usage, outputs, len(encoded), name)
        return outputs, len(encoded)

    async def _model_info(self, name: str, ver: str, deadline: Deadline, request_id: str) -> ModelInfo:
        info = self._infos.get((name, ver))
        if info is not None:
            return info
        headers = self._settings.headers

        async def op(connection: Connection, timeout: float | None) -> ModelInfo:
            metadata = await connection.get_model_metadata(name, ver, headers=headers, client_timeout=timeout)
            config = await connection.get_model_config(name, ver, headers=headers, client_timeout=timeout)
            return parse_model_info(metadata, config)

        info = await self._call(op, name, ver, deadline, request_id)
        self._infos[(name, ver)] = info
        return info

    async def _infer_chunks(
        self,
        info: ModelInfo,
        ver: str,
        chunks: Sequence[Mapping[str, np.ndarray]],
        names: Sequence[str],
        deadline: Deadline,
        request_id: str,
    ) -> dict[str, np.ndarray]:
        requested = list(_core.build_outputs(tuple(names)))
        headers = self._settings.headers or None
        # Only split batches need the limit; one request (the common case) skips it.
        limit = asyncio.Semaphore(self._settings.max_concurrency) if len(chunks) > 1 else None

        async def run(index: int) -> dict[str, np.ndarray]:
            chunk_id = _core.chunk_request_id(request_id, index, len(chunks))
            inputs = _core.build_inputs(chunks[index], info)
            stamp = _core.SendStamp()  # the first attempt's send time, kept by every retry

            async def op(connection: Connection, timeout: float | None) -> dict[str, np.ndarray]:
                result = await connection.infer(
                    info.name, inputs, model_version=ver, outputs=requested, request_id=chunk_id,
                    client_timeout=timeout, timeout=_core.triton_timeout_us(timeout), headers=headers,
                    parameters=stamp.parameters(),
                )  # fmt: skip
                return _core.parse_result(result, names, model=info.name, request_id=chunk_id)

            if limit is None:
                return await self._call(op, info.name, ver, deadline, chunk_id)
            async with limit:
                return await self._call(op, info.name, ver, deadline, chunk_id)

        if len(chunks) == 1:
            return await run(0)
        tasks = [asyncio.ensure_future(run(index)) for index in range(len(chunks))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:  # on failure (or our own cancellation) stop the rest
                task.cancel()
        for task in tasks:  # the first failure in request order
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return _core.merge_chunks([task.result() for task in tasks])

    async def _call(
        self,
        op: Callable[[Connection, float | None], Awaitable[R]],
        model: str | None,
        version: str,
        deadline: Deadline,
        request_id: str | None,
        retry: RetryPolicy | None = None,
    ) -> R:
        """``op`` on an endpoint with retries, failover and circuit breakers, all within ``deadline``."""
        plan = CallPlan(
            self._pool(), retry or self._settings.retry, deadline, model=model, version=version, request_id=request_id
        )
        while True:
            endpoint = plan.next_endpoint()
            try:
                result = await op(endpoint.connection, deadline.remaining_s())
            except _CALL_ERRORS as exc:
                error = translate(exc, model=model, version=version, request_id=request_id, url=endpoint.url)
                pause_s = plan.failed(endpoint, error)
                if pause_s is None:
                    raise error from (None if error is exc else exc)
                await asyncio.sleep(pause_s)
            else:
                plan.succeeded(endpoint)
                return result
