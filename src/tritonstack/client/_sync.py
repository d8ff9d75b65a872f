"""``Client``: the blocking SDK over ``tritonclient.grpc``. Only I/O lives here."""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from tritonclient.grpc import InferenceServerClient as Connection

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
from tritonstack.client._exceptions import (
    DeadlineExceededError,
    ServerUnavailableError,
    call_errors,
    translate,
)
from tritonstack.client._metrics import ClientMetrics, NoMetrics, resolve
from tritonstack.client._models import Classification, ModelInfo, RerankResult, Usage, parse_model_info
from tritonstack.client._releases import Release, Routed, TrafficSplit, pick
from tritonstack.client._retry import Deadline, Endpoint, EndpointPool
from tritonstack.client._routing import CallPlan
from tritonstack.in_triton import contract

R = TypeVar("R")
_CALL_ERRORS = call_errors()


class Client:
    """A blocking client for models served by Triton over gRPC; thread-safe.

    ``url`` is ``"host:port"`` of Triton's gRPC port, or a list of them in order
    of preference (failover). ``model`` (and ``version``) is the default target
    of calls; each call may name another. ``timeouts``: a ``Timeouts``, seconds
    for both, or ``None`` for no limits (not passed: connect 5 s, call 30 s).
    ``retry``: a ``RetryPolicy`` (default: 4 attempts with backoff, within a
    retry budget). ``breaker``: a ``CircuitBreakerPolicy`` per endpoint
    (default: on; ``CircuitBreakerPolicy.disabled()`` turns it off).
    ``headers`` go with every call as gRPC metadata (e.g. a proxy's auth header).
    Lists longer than the model's ``max_batch_size`` are split and sent on up to
    ``max_concurrency`` threads. ``metrics=True`` records Prometheus metrics.

    Every call raises a ``ClientError`` subclass on failure (see
    ``tritonstack.client._exceptions``).
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
        credentials = self._settings.tls.credentials() if self._settings.tls is not None else None
        channel_args = self._settings.channel_args()
        self._metrics: NoMetrics = resolve(metrics)
        self._pool: EndpointPool[Connection] = EndpointPool(
            [
                Endpoint(url, Connection(url, creds=credentials, channel_args=channel_args))
                for url in self._settings.urls
            ],
            self._settings.retry.cooldown_s,
            breaker=self._settings.breaker,
            budget=self._settings.retry.budget,
            metrics=self._metrics,
        )
        self._infos: dict[tuple[str, str], ModelInfo] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._rng = random.Random()  # traffic-split draws (TrafficSplit without a key)

    # --- public API ------------------------------------------------------------------------

    def embed(
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
            outputs, count = self._texts(texts, name, ver, contract.FEATURE_EXTRACTION, timeout_s, usage)
            return _core.embeddings_from(outputs, count, name)

    def classify(
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
            outputs, count = self._texts(texts, name, ver, contract.TEXT_CLASSIFICATION, timeout_s, usage)
            return _core.classifications_from(outputs, count, name)

    def rerank(
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
            outputs, count = self._texts(rows, name, ver, contract.TEXT_RANKING, timeout_s, usage, query=query)
            return _core.rankings_from(outputs, count, name, top_n=top_n, documents=rows if return_documents else None)

    def embed_release(
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
        return Routed(release, self.embed(texts, model=release.served_as, timeout_s=timeout_s, usage=usage))

    def classify_release(
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
        return Routed(release, self.classify(texts, model=release.served_as, timeout_s=timeout_s, usage=usage))

    def rerank_release(
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
        ranked = self.rerank(query, documents, top_n=top_n, model=release.served_as, timeout_s=timeout_s, usage=usage)
        return Routed(release, ranked)

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        model: str | None = None,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        timeout_s: TimeoutArg = UNSET,
    ) -> dict[str, np.ndarray]:
        """Run any model: its input tensors by name in, its outputs (all, or ``outputs``) by name out.

        Inputs are checked against the model's metadata (names, dtypes, ranks,
        dims, batch size, NaN) before anything is sent.
        """
        name, ver = _core.target(self._settings, model, version)
        with self._metrics.timed(name, "infer"):
            deadline = self._deadline(timeout_s)
            request_id = _core.new_request_id()
            info = self._model_info(name, ver, deadline, request_id)
            arrays = _core.check_inputs(inputs, info)
            names = _core.check_outputs(outputs, info)
            return self._infer_chunks(info, ver, [arrays], names, deadline, request_id)

    def ready(
        self, *, model: str | None = None, version: str | int | None = None, timeout_s: TimeoutArg = UNSET
    ) -> bool:
        """Whether a server answers and has the model ready (just the server when no model is set).

        ``False`` when no endpoint can be reached in time; other errors raise.
        """
        name, ver = _core.probe_target(self._settings, model, version)
        headers = self._settings.headers

        def op(connection: Connection, timeout: float | None) -> bool:
            if name:
                return bool(connection.is_model_ready(name, ver, headers=headers, client_timeout=timeout))
            return bool(connection.is_server_ready(headers=headers, client_timeout=timeout))

        retry = _core.probe_policy(len(self._pool.endpoints))
        try:
            return self._call(op, name, ver, self._deadline(timeout_s), None, retry)
        except (ServerUnavailableError, DeadlineExceededError):
            return False

    def model_info(
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
            return self._model_info(name, ver, self._deadline(timeout_s), _core.new_request_id())

    def close(self) -> None:
        """Close the connections; calls after this fail."""
        with self._lock:
            executor, self._executor = self._executor, None
            self._closed = True
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        for endpoint in self._pool.endpoints:
            endpoint.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={list(self._settings.urls)!r}, model={self._settings.model!r})"

    # --- internals -------------------------------------------------------------------------

    def _deadline(self, timeout_s: TimeoutArg) -> Deadline:
        return Deadline(_core.call_timeout_s(self._settings, timeout_s))

    def _texts(
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
        info = self._model_info(name, ver, deadline, request_id)
        _core.require_task(info, task)
        chunks = _core.text_chunks(encoded, info.max_batch_size, query_bytes)
        names = _core.text_outputs(task, info, usage)
        outputs = self._infer_chunks(info, ver, chunks, names, deadline, request_id)
        _core.record_usage(usage, outputs, len(encoded), name)
        return outputs, len(encoded)

    def _model_info(self, name: str, ver: str, deadline: Deadline, request_id: str) -> ModelInfo:
        info = self._infos.get((name, ver))
        if info is not None:
            return info
        headers = self._settings.headers

        def op(connection: Connection, timeout: float | None) -> ModelInfo:
            metadata = connection.get_model_metadata(name, ver, headers=headers, client_timeout=timeout)
            config = connection.get_model_config(name, ver, headers=headers, client_timeout=timeout)
            return parse_model_info(metadata, config)

        info = self._call(op, name, ver, deadline, request_id)
        self._infos[(name, ver)] = info
        return info

    def _infer_chunks(
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

        def run(index: int) -> dict[str, np.ndarray]:
            chunk_id = _core.chunk_request_id(request_id, index, len(chunks))
            inputs = _core.build_inputs(chunks[index], info)
            stamp = _core.SendStamp()  # the first attempt's send time, kept by every retry

            def op(connection: Connection, timeout: float | None) -> dict[str, np.ndarray]:
                result = connection.infer(
                    info.name, inputs, model_version=ver, outputs=requested, request_id=chunk_id,
                    client_timeout=timeout, timeout=_core.triton_timeout_us(timeout), headers=headers,
                    parameters=stamp.parameters(),
                )  # fmt: skip
                return _core.parse_result(result, names, model=info.name, request_id=chunk_id)

            return self._call(op, info.name, ver, deadline, chunk_id)

        if len(chunks) == 1:
            return run(0)
        futures = [self._pool_executor().submit(run, index) for index in range(len(chunks))]
        done, pending = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:  # the first failure in request order
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return _core.merge_chunks([future.result() for future in futures])

    def _pool_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._settings.max_concurrency, thread_name_prefix="tritonstack-client"
                )
            return self._executor

    def _call(
        self,
        op: Callable[[Connection, float | None], R],
        model: str | None,
        version: str,
        deadline: Deadline,
        request_id: str | None,
        retry: RetryPolicy | None = None,
    ) -> R:
        """``op`` on an endpoint with retries, failover and circuit breakers, all within ``deadline``."""
        if self._closed:
            raise _core.closed_error(self)
        plan = CallPlan(
            self._pool, retry or self._settings.retry, deadline, model=model, version=version, request_id=request_id
        )
        while True:
            endpoint = plan.next_endpoint()
            try:
                result = op(endpoint.connection, deadline.remaining_s())
            except _CALL_ERRORS as exc:
                error = translate(exc, model=model, version=version, request_id=request_id, url=endpoint.url)
                pause_s = plan.failed(endpoint, error)
                if pause_s is None:
                    raise error from (None if error is exc else exc)
                time.sleep(pause_s)
            else:
                plan.succeeded(endpoint)
                return result
