"""Everything the sync and async clients share that is not I/O.

Settings and gRPC channel options, validation of texts and tensors against a
model's ``ModelInfo`` (before anything is sent), splitting into batches,
building ``tritonclient`` inputs, and turning responses into arrays.
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import np_to_triton_dtype

from tritonstack.client._config import UNSET, CircuitBreakerPolicy, RetryPolicy, TimeoutArg, Timeouts, TLSConfig
from tritonstack.client._exceptions import (
    ClientError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidInputError,
    TritonServerError,
)
from tritonstack.client._models import Classification, ModelInfo, RerankResult, TensorSpec, Usage
from tritonstack.client._retry import Deadline
from tritonstack.in_triton import contract

DEFAULT_MAX_TEXT_BYTES = 64 * 1024
# gRPC's own cap is 4 MiB received; Triton sends and accepts up to INT32_MAX. Large
# batches of embeddings exceed 4 MiB, so match the server.
MAX_MESSAGE_BYTES = 2**31 - 1
# Triton rejects client pings more often than every 5 min without data
# (--grpc-http2-min-recv-ping-interval-without-data) with GOAWAY "too_many_pings".
KEEPALIVE_TIME_MS = 300_000
KEEPALIVE_TIMEOUT_MS = 20_000
# gRPC's reconnect backoff grows to 120 s by default: a restarted server would stay
# unused for minutes. Cap it so a client finds a server that came back within ~2 s.
INITIAL_RECONNECT_BACKOFF_MS = 200
MAX_RECONNECT_BACKOFF_MS = 2_000


@dataclass(frozen=True)
class Settings:
    """A client's validated constructor arguments."""

    urls: tuple[str, ...]
    model: str | None
    version: str
    timeouts: Timeouts
    retry: RetryPolicy
    tls: TLSConfig | None
    headers: dict[str, str]
    max_text_bytes: int | None
    max_concurrency: int
    channel_options: tuple[tuple[str, Any], ...]
    breaker: CircuitBreakerPolicy

    def channel_args(self) -> list[tuple[str, Any]]:
        args: dict[str, Any] = {
            "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
            "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
            "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
            "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
            "grpc.keepalive_permit_without_calls": 0,
            "grpc.http2.max_pings_without_data": 2,
            "grpc.initial_reconnect_backoff_ms": INITIAL_RECONNECT_BACKOFF_MS,
            "grpc.max_reconnect_backoff_ms": MAX_RECONNECT_BACKOFF_MS,
            # Each client its own connections: one client's failures and backoff
            # must not leak into another's (gRPC shares subchannels process-wide).
            "grpc.use_local_subchannel_pool": 1,
        }
        if self.timeouts.connect_s is not None:
            # gRPC's per-attempt connect timeout (its "min connect timeout").
            args["grpc.min_reconnect_backoff_ms"] = max(1, round(self.timeouts.connect_s * 1000))
        if self.tls is not None:
            args.update(self.tls.channel_options())
        args.update(dict(self.channel_options))
        return list(args.items())


def _scheme_and_tls(urls: tuple[str, ...], tls: TLSConfig | None) -> tuple[tuple[str, ...], TLSConfig | None]:
    """``host:port`` of each URL, and the TLS they ask for: ``grpcs://`` is TLS (with the system's roots unless
    ``tls`` says otherwise); ``grpc://`` and a bare ``host:port`` whatever ``tls`` says (plaintext without it). A ``grpcs://``
    URL was once stripped to plaintext in silence: a caller who wrote it must get TLS or an error."""
    schemes = {u.split("://", 1)[0] for u in urls if "://" in u}
    if schemes - {"grpc", "grpcs"}:
        raise ConfigurationError(
            f"unsupported URL scheme {sorted(schemes - {'grpc', 'grpcs'})[0]!r}: the SDK speaks gRPC",
            hint="use host:port, grpc://host:port (plaintext) or grpcs://host:port (TLS)",
        )
    if schemes == {"grpc", "grpcs"} and tls is None:
        raise ConfigurationError(
            "grpc:// (plaintext) and grpcs:// (TLS) URLs mixed: one client's endpoints share one channel security",
            hint="use grpcs:// for every URL, or pass tls=TLSConfig(...) for all of them",
        )
    if "grpcs" in schemes and tls is None:
        tls = TLSConfig()  # the system's root certificates
    return tuple(u.split("://", 1)[-1] for u in urls), tls


def make_settings(
    url: str | Sequence[str],
    model: str | None,
    version: str | int | None,
    timeouts: Timeouts,
    retry: RetryPolicy | None,
    tls: TLSConfig | None,
    headers: Mapping[str, str] | None,
    max_text_bytes: int | None,
    max_concurrency: int,
    channel_options: Iterable[tuple[str, Any]],
    breaker: CircuitBreakerPolicy | None = None,
) -> Settings:
    urls = (url,) if isinstance(url, str) else tuple(url)
    if not urls or not all(isinstance(u, str) and u for u in urls):
        raise ConfigurationError("url must be 'host:port' or a non-empty list of them")
    urls, tls = _scheme_and_tls(urls, tls)
    if max_concurrency < 1:
        raise ConfigurationError("max_concurrency must be >= 1")
    if max_text_bytes is not None and max_text_bytes < 1:
        raise ConfigurationError("max_text_bytes must be >= 1 or None")
    return Settings(
        urls=urls,
        model=model,
        version=version_string(version),
        timeouts=timeouts,
        retry=RetryPolicy() if retry is None else retry,
        tls=tls,
        headers=lower_headers(headers),
        max_text_bytes=max_text_bytes,
        max_concurrency=max_concurrency,
        channel_options=tuple(channel_options),
        breaker=CircuitBreakerPolicy() if breaker is None else breaker,
    )


def version_string(version: str | int | None) -> str:
    """Triton's version field: ``""`` lets the server choose."""
    if version is None:
        return ""
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise InvalidInputError(f"version must be an int or a string, got {type(version).__name__}")
    return str(version)


# Request ids: a random prefix per process and a counter; unique across clients and
# processes for tracing, at a fraction of uuid4's cost per call.
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def chunk_request_id(request_id: str, index: int, count: int) -> str:
    return request_id if count == 1 else f"{request_id}.{index}"


# --- texts -----------------------------------------------------------------------------------


def text_list(texts: Any, *, model: str, what: str = "texts") -> list[Any]:
    """``texts`` as a list (``what`` names them in errors: ``texts``, ``documents``); a lone string is refused."""

    def invalid(message: str, hint: str | None = None) -> InvalidInputError:
        return InvalidInputError(message, hint=hint, model=model)

    if isinstance(texts, str | bytes):
        raise invalid(f"{what} must be a list of strings, got a single string", hint="wrap it: [text]")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Iterable):
        raise invalid(f"{what} must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise invalid(f"{what} is empty: nothing to send")
    return items


def encode_text(text: Any, *, max_text_bytes: int | None, model: str, what: str) -> bytes:
    """UTF-8 bytes of one text (``what`` names it in errors: ``texts[3]``, ``query``), checked as the
    text-in models accept it."""

    def invalid(message: str, hint: str | None = None) -> InvalidInputError:
        return InvalidInputError(message, hint=hint, model=model)

    if not isinstance(text, str):
        raise invalid(f"{what} is {type(text).__name__}, not str")
    if not text.strip():
        raise invalid(f"{what} is empty or only whitespace")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise invalid(f"{what} is not valid Unicode ({error.reason})") from error
    if max_text_bytes is not None and len(data) > max_text_bytes:
        raise invalid(
            f"{what} is {len(data)} bytes of UTF-8, over the limit of {max_text_bytes}",
            hint="the model truncates long texts anyway; cut it or raise max_text_bytes",
        )
    return data


def encode_texts(texts: Any, *, max_text_bytes: int | None, model: str, what: str = "texts") -> list[bytes]:
    """UTF-8 bytes of each text, after checking what the text-in models accept."""
    items = text_list(texts, model=model, what=what)
    return [
        encode_text(text, max_text_bytes=max_text_bytes, model=model, what=f"{what}[{index}]")
        for index, text in enumerate(items)
    ]


def require_task(info: ModelInfo, task: contract.Task) -> None:
    """The model must be a text-in model of ``task``, batching, with the contract's ``TEXT`` input."""
    if info.task != task.name:
        served = contract.TASKS_BY_NAME.get(info.task or "")
        method = served.sdk_method if served else None
        hint = f"use {method}()" if method else "use infer() with the model's own inputs"
        raise InvalidInputError(
            f"{task.sdk_method}() needs a {task.name} model; {info.name!r} is "
            f"{info.task or 'not a tritonstack text model'}",
            hint=hint,
            model=info.name,
        )
    for name in contract.text_inputs(task):
        text = info.input(name)
        if text is None or text.datatype != "BYTES" or not info.batches:
            raise InvalidInputError(f"{info.name!r} has no batched BYTES input {name!r}", model=info.name)


def _column(items: Sequence[bytes]) -> np.ndarray:
    # np.array on a list of bytes would make a fixed-width "S" array; fill an object array instead
    column = np.empty(len(items), dtype=np.object_)
    column[:] = items
    return column.reshape(-1, 1)


def text_chunks(
    encoded: Sequence[bytes], max_batch_size: int, query: bytes | None = None
) -> list[dict[str, np.ndarray]]:
    """The ``TEXT`` tensors ([rows, 1] of bytes) of each request, at most ``max_batch_size`` rows each.

    With ``query`` (a pair task): ``TEXT`` is the query on every row and ``TEXT_PAIR`` the texts, one
    (query, document) pair per row -- Triton batches a request's inputs row by row, so the query is repeated.
    """
    tensor = _column(encoded)
    if query is None:
        return [
            {contract.TEXT_INPUT: tensor[start : start + max_batch_size]}
            for start in range(0, len(encoded), max_batch_size)
        ]
    queries = _column([query] * len(encoded))
    return [
        {
            contract.TEXT_INPUT: queries[start : start + max_batch_size],
            contract.TEXT_PAIR_INPUT: tensor[start : start + max_batch_size],
        }
        for start in range(0, len(encoded), max_batch_size)
    ]


# --- tensors ---------------------------------------------------------------------------------


def _check_bytes_tensor(name: str, array: np.ndarray, model: str) -> np.ndarray:
    if array.dtype.kind == "U":  # numpy str arrays: send them as UTF-8
        return np.vectorize(lambda text: text.encode("utf-8"), otypes=[np.object_])(array)
    if array.dtype.kind == "S":
        return array
    for position, item in np.ndenumerate(array):
        if not isinstance(item, bytes | str):
            raise InvalidInputError(
                f"input {name!r} holds a {type(item).__name__} at {list(position)}; BYTES takes str or bytes",
                model=model,
            )
    return array


def check_inputs(inputs: Any, info: ModelInfo) -> dict[str, np.ndarray]:
    """Check ``inputs`` against the model: names, dtypes, ranks, dims, batch size, NaN."""
    model = info.name

    def invalid(message: str, hint: str | None = None) -> InvalidInputError:
        return InvalidInputError(message, hint=hint, model=model)

    if not isinstance(inputs, Mapping):
        raise invalid(f"inputs must be a mapping of name -> numpy array, got {type(inputs).__name__}")
    if not inputs:
        raise invalid("inputs is empty")
    specs = {spec.name: spec for spec in info.inputs}
    expected = ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in info.inputs)
    unknown = sorted(set(inputs) - set(specs), key=str)
    if unknown:
        raise invalid(f"unknown input {unknown[0]!r}; the model takes: {expected}")
    missing = [s.name for s in info.inputs if not s.optional and s.name not in inputs]
    if missing:
        raise invalid(f"missing input {missing[0]!r}; the model takes: {expected}")
    checked: dict[str, np.ndarray] = {}
    batch_sizes: dict[str, int] = {}
    for name, array in inputs.items():
        spec: TensorSpec = specs[name]
        if not isinstance(array, np.ndarray):
            raise invalid(f"input {name!r} must be a numpy array, got {type(array).__name__}")
        if spec.datatype == "BYTES":
            if array.dtype.kind not in "OSU":
                raise invalid(f"input {name!r} is {array.dtype}, the model takes BYTES (str or bytes objects)")
            array = _check_bytes_tensor(name, array, model)
        else:
            actual = np_to_triton_dtype(array.dtype)
            if actual != spec.datatype:
                raise invalid(f"input {name!r} is {array.dtype} ({actual}), the model takes {spec.datatype}")
        row_shape = array.shape[1:] if info.batches else array.shape
        if len(row_shape) != len(spec.shape):
            rank = len(spec.shape) + (1 if info.batches else 0)
            raise invalid(
                f"input {name!r} has rank {array.ndim}, the model takes rank {rank} "
                f"({'[batch] + ' if info.batches else ''}{list(spec.shape)})"
            )
        for axis, (got, want) in enumerate(zip(row_shape, spec.shape, strict=True)):
            if want != -1 and got != want:
                raise invalid(f"input {name!r} has {got} on axis {axis + info.batches}, the model takes {want}")
        if info.batches:
            if array.shape[0] == 0:
                raise invalid(f"input {name!r} has an empty batch")
            if array.shape[0] > info.max_batch_size:
                raise invalid(
                    f"input {name!r} has a batch of {array.shape[0]}, over the model's max_batch_size "
                    f"{info.max_batch_size}",
                    hint="split it, or use embed()/classify(), which split for you",
                )
            batch_sizes[name] = array.shape[0]
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise invalid(f"input {name!r} contains NaN")
        checked[name] = array
    if len(set(batch_sizes.values())) > 1:
        raise invalid(f"inputs disagree on the batch size: {batch_sizes}")
    return checked


def check_outputs(outputs: Sequence[str] | None, info: ModelInfo) -> tuple[str, ...]:
    """The output names to request; all of the model's when ``outputs`` is ``None``."""
    known = tuple(spec.name for spec in info.outputs)
    if outputs is None:
        return known
    if isinstance(outputs, str):
        outputs = [outputs]
    for name in outputs:
        if name not in known:
            raise InvalidInputError(f"unknown output {name!r}; the model has: {', '.join(known)}", model=info.name)
    return tuple(outputs)


# --- requests and responses ------------------------------------------------------------------


def build_inputs(arrays: Mapping[str, np.ndarray], info: ModelInfo) -> list[InferInput]:
    result = []
    for name, array in arrays.items():
        spec = info.input(name)
        datatype = spec.datatype if spec is not None else np_to_triton_dtype(array.dtype)
        infer_input = InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        result.append(infer_input)
    return result


@functools.lru_cache(maxsize=256)
def build_outputs(names: tuple[str, ...]) -> tuple[InferRequestedOutput, ...]:
    """The requested outputs; shared between calls (tritonclient copies them into each request)."""
    return tuple(InferRequestedOutput(name) for name in names)


def parse_result(result: Any, names: Sequence[str], *, model: str, request_id: str) -> dict[str, np.ndarray]:
    """The requested outputs of a ``tritonclient`` ``InferResult`` as arrays."""
    arrays = {}
    for name in names:
        array = result.as_numpy(name)
        if array is None:
            raise TritonServerError(f"the response has no output {name!r}", model=model, request_id=request_id)
        arrays[name] = array
    return arrays


def merge_chunks(chunks: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per output, the chunks' arrays joined along the batch axis, in order."""
    if len(chunks) == 1:
        return dict(chunks[0])
    return {name: np.concatenate([chunk[name] for chunk in chunks], axis=0) for name in chunks[0]}


def embeddings_from(outputs: Mapping[str, np.ndarray], count: int, model: str) -> np.ndarray:
    embedding = np.asarray(outputs[contract.EMBEDDING_OUTPUT], dtype=np.float32)
    if embedding.ndim != 2 or embedding.shape[0] != count:
        raise TritonServerError(
            f"expected {contract.EMBEDDING_OUTPUT} of shape [{count}, hidden], got {list(embedding.shape)}",
            model=model,
        )
    return embedding


def classifications_from(outputs: Mapping[str, np.ndarray], count: int, model: str) -> list[Classification]:
    labels = outputs[contract.LABEL_OUTPUT].reshape(-1)
    scores = outputs[contract.SCORE_OUTPUT].reshape(-1)
    if len(labels) != count or len(scores) != count:
        raise TritonServerError(f"expected {count} labels and scores, got {len(labels)} and {len(scores)}", model=model)
    return [
        Classification(label.decode("utf-8") if isinstance(label, bytes) else str(label), float(score))
        for label, score in zip(labels, scores, strict=True)
    ]


def text_outputs(task: contract.Task, info: ModelInfo, usage: Usage | None) -> tuple[str, ...]:
    """The outputs a text call requests: the task's, and ``TOKENS`` only where the caller passed ``usage`` and
    the model lists it (an export from before token counts does not): without ``usage`` nothing more is sent."""
    if usage is not None and info.output(contract.TOKENS_OUTPUT) is not None:
        return (*task.outputs, contract.TOKENS_OUTPUT)
    return task.outputs


def record_usage(usage: Usage | None, outputs: Mapping[str, np.ndarray], count: int, model: str) -> None:
    """Add a text call's ``TOKENS`` (``[count, 2]``, the rows in the order sent: chunks are merged in order) to
    ``usage``; a call whose model has no ``TOKENS`` is recorded as not counted."""
    if usage is None:
        return
    counts = outputs.get(contract.TOKENS_OUTPUT)
    if counts is not None and counts.shape != (count, 2):
        raise TritonServerError(
            f"expected {contract.TOKENS_OUTPUT} of shape [{count}, 2], got {list(counts.shape)}", model=model
        )
    usage.record(counts)


def check_top_n(top_n: Any, model: str) -> None:
    """``top_n`` must be ``None`` (every document) or a positive int."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInputError(f"top_n must be a positive int or None, got {top_n!r}", model=model)


def rankings_from(
    outputs: Mapping[str, np.ndarray],
    count: int,
    model: str,
    *,
    top_n: int | None = None,
    documents: Sequence[str] | None = None,
) -> list[RerankResult]:
    """The documents by score, best first (ties keep the order sent), cut to ``top_n``; each with its text
    when ``documents`` is given."""
    scores = np.asarray(outputs[contract.SCORE_OUTPUT], dtype=np.float32).reshape(-1)
    if len(scores) != count:
        raise TritonServerError(f"expected {count} scores, got {len(scores)}", model=model)
    order = np.argsort(-scores, kind="stable")[:top_n]
    return [RerankResult(int(i), float(scores[i]), None if documents is None else documents[i]) for i in order.tolist()]


def target(settings: Settings, model: str | None, version: str | int | None) -> tuple[str, str]:
    """The model and version a call goes to: its own arguments, else the client's."""
    name, ver = probe_target(settings, model, version)
    if not name:
        raise InvalidInputError("no model given", hint="pass model= to the client or to the call")
    return name, ver


def probe_target(settings: Settings, model: str | None, version: str | int | None) -> tuple[str | None, str]:
    """Like :func:`target`, for ``ready()``: no model at all asks about the server itself."""
    name = model if model is not None else settings.model
    return name, settings.version if version is None else version_string(version)


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """gRPC metadata keys must be lowercase; HTTP habits ("Authorization") would fail in grpc."""
    return {key.lower(): value for key, value in (headers or {}).items()}


def deadline_error(
    deadline: Deadline, model: str | None, version: str, request_id: str | None, url: str | None
) -> DeadlineExceededError:
    """The error for a deadline found spent before an attempt (gRPC reports the others)."""
    return DeadlineExceededError(
        f"the call's deadline of {deadline.timeout_s} s passed",
        hint="raise Timeouts(call_s=...) or the call's timeout_s",
        model=model,
        version=version or None,
        code=grpc.StatusCode.DEADLINE_EXCEEDED,
        request_id=request_id,
        url=url,
    )


def closed_error(client: object) -> ClientError:
    return ClientError(f"{client!r} is closed", hint="make a new client, or call before close()")


def call_timeout_s(settings: Settings, timeout_s: TimeoutArg) -> float | None:
    """A call's deadline in seconds: its ``timeout_s`` when passed (``None``: none), else the client's."""
    if timeout_s is UNSET:
        return settings.timeouts.call_s
    return Timeouts(call_s=timeout_s).call_s


def probe_policy(endpoint_count: int) -> RetryPolicy:
    """For ``ready()``: one try per endpoint and no backoff; a probe should answer now."""
    return RetryPolicy(max_attempts=endpoint_count, retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}))


def triton_timeout_us(remaining_s: float | None) -> int | None:
    """Triton's own request timeout for an attempt: the call's remaining deadline, in microseconds.

    Sent with the gRPC deadline, so that a server drops a request still queued
    once its caller has given up instead of computing it. Triton 2.51 honours it
    only in a queue whose policy sets ``allow_timeout_override`` and a non-zero
    ``default_timeout_microseconds`` (the request's timeout can only shorten
    that one), and passes it from an ensemble to its steps' queues.
    """
    if remaining_s is None:
        return None
    return max(1, int(remaining_s * 1_000_000))


def request_parameters() -> dict[str, int]:
    """The parameters every attempt carries: the wall-clock send time (µs since the epoch), by which the
    served Python steps shed a request that queued past their budget (``contract.SENT_AT_PARAMETER``,
    ``in_triton/models/error_responses.py``). A call's attempts all carry its first one's (``SendStamp``)."""
    return {contract.SENT_AT_PARAMETER: time.time_ns() // 1000}


class SendStamp:
    """The send time of a request's first attempt, which its retries carry too.

    The served steps shed by the age of the stamp, so a retry keeps the age the
    call has already: re-stamped, each retry of a shed call got a fresh budget,
    and a call retried N times could queue N budgets plus the backoffs -- an
    admitted call then took seconds against a 500 ms budget. With the first
    stamp, a call's queueing stays within one budget (and a call shed for its
    age is not retried: ``_retry.Attempts``).
    """

    def __init__(self) -> None:
        self._parameters: dict[str, int] | None = None

    def parameters(self) -> dict[str, int]:
        """The request parameters of the next attempt: stamped at the first, the same for every later one."""
        if self._parameters is None:
            self._parameters = request_parameters()
        return dict(self._parameters)
