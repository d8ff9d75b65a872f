"""``create_app``: the gateway's FastAPI app -- its front (auth, body limit, metrics), errors and plain routes.

FastAPI (over Starlette) for request validation with useful messages, the OpenAPI schema at ``/docs`` and because
the team knows it; the per-request cost stays low because responses are built as plain dicts and serialised by
pydantic-core (``respond.py``), never through response models.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from tritonstack.gateway import errors
from tritonstack.gateway.auth import OPEN_PATHS, authorized
from tritonstack.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from tritonstack.gateway.respond import json_response
from tritonstack.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from tritonstack.client import AsyncClient
    from tritonstack.gateway.cache import ResponseCache
    from tritonstack.gateway.tokenize import GatewayTokenizer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ROUTES = ("/v1/embeddings", "/v1/rerank", "/v2/rerank", "/v1/classify", "/v1/models", "/health", "/metrics")
NO_MODEL = ""  # the model label of a request refused before its body named one
UNKNOWN_MODEL = "unknown"  # the model label of a name Triton has not confirmed serving
DRAIN_FACTOR = 8  # a refused body is read and dropped up to 8x the limit, then the connection is closed
STATE_KEY = "tritonstack.gateway"  # the request's Labels in the ASGI scope


@dataclass(slots=True)
class Labels:
    """What a request's metrics are labelled with; the route handler fills in the model and the error code."""

    route: str
    model: str = NO_MODEL
    error: str | None = None


@dataclass(slots=True)
class Gateway:
    """What the routes share: settings, the SDK client, the cache, the metrics."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    cache: ResponseCache | None = None
    client_: AsyncClient | None = None
    rng: random.Random = field(default_factory=random.Random)  # release draws without a key
    # Names Triton confirmed it serves. Only these label metrics: a caller's made-up names would otherwise grow
    # the registry without bound (one series per name); the rest count as UNKNOWN_MODEL.
    served: set[str] = field(default_factory=set)
    # models configured with the experimental ``tokenize_at: gateway`` (gateway/tokenize.py), by name
    tokenizers: dict[str, GatewayTokenizer] = field(default_factory=dict)

    def model_label(self, model: str) -> str:
        return model if not model or model in self.served else UNKNOWN_MODEL

    @property
    def client(self) -> AsyncClient:
        assert self.client_ is not None, "the app's lifespan has not started"
        return self.client_


_CURRENT: ContextVar[tuple[GatewayMetrics, Labels] | None] = ContextVar("tritonstack_gateway_request", default=None)


def record_cache_result(result: str, count: int) -> None:
    """``ResponseCache``'s ``on_result``: counts lookups under the route and model of the request making them."""
    current = _CURRENT.get()
    if current is not None:
        metrics, labels = current
        metrics.cache_lookups.labels(labels.route, labels.model, result).inc(count)  # the model is confirmed


def labels_of(request: Request) -> Labels:
    labels = request.scope.get(STATE_KEY)
    if labels is None:  # a request that did not come through the front (not expected): count it somewhere
        labels = request.scope[STATE_KEY] = Labels("other")
    return labels


class Front:
    """Pure ASGI in front of the routes: the API key, the body size (read before any parsing) and the metrics."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        labels = Labels(path if path in ROUTES else "other")
        scope[STATE_KEY] = labels
        token = _CURRENT.set((self.gateway.metrics, labels))
        status = 500  # what the caller gets if the app raises before answering (ServerErrorMiddleware's)
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is None:
                body, refusal = await _read_body(scope, receive, self.gateway.settings.max_body_bytes)
            if refusal is not None:
                labels.error = refusal.kind.code
                await json_response(refusal.body(), refusal.kind.status, refusal.headers)(scope, receive, sending)
                return
            await self.app(scope, _replay(body, receive), sending)
        finally:
            metrics, model = self.gateway.metrics, self.gateway.model_label(labels.model)
            metrics.observe(labels.route, model, status, time.perf_counter() - started)
            if status >= 400:
                metrics.errors.labels(labels.route, model, labels.error or f"http_{status}").inc()
            _CURRENT.reset(token)

    def _refusal(self, scope: Scope, path: str) -> errors.APIError | None:
        keys = self.gateway.settings.api_keys
        if not keys or path in OPEN_PATHS:
            return None
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if authorized(header, keys):
            return None
        return errors.APIError(errors.UNAUTHORIZED, "Missing or invalid API key: send 'Authorization: Bearer KEY'")


async def _read_body(scope: Scope, receive: Receive, limit: int) -> tuple[bytes, errors.APIError | None]:
    """The whole body, or a 413 as soon as it is known to pass ``limit`` (its Content-Length, else its bytes)."""
    too_large = errors.APIError(errors.TOO_LARGE, f"Request body over the gateway's limit of {limit} bytes")
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return b"", errors.APIError(errors.INVALID, "Content-Length is not a number")
            if declared > limit:
                await _drain(receive, limit * DRAIN_FACTOR)
                return b"", too_large
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(receive, limit * DRAIN_FACTOR)
            return b"", too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), None


async def _drain(receive: Receive, most_bytes: int) -> None:
    """Read (and drop) the rest of a refused body, up to ``most_bytes``: a client that sends all of its body before
    reading (urllib, many others) then reads the 413 instead of a broken pipe. Nothing is kept."""
    seen = 0
    while seen <= most_bytes:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


def create_app(
    settings: GatewaySettings, *, client: AsyncClient | None = None, cache: ResponseCache | None = None
) -> FastAPI:
    """The gateway app. It owns one ``AsyncClient`` (made in its lifespan unless ``client`` is given; closed
    either way) and closes ``cache`` when it stops."""
    gateway = Gateway(settings, GatewayMetrics(), cache, client, tokenizers=_gateway_tokenizers(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from tritonstack.client import AsyncClient

        if gateway.client_ is None:
            gateway.client_ = AsyncClient(list(settings.triton_urls), timeouts=settings.timeout_s, tls=settings.tls)
        try:
            yield
        finally:
            await gateway.client.close()
            if gateway.cache is not None:
                await gateway.cache.close()

    app = FastAPI(
        title="tritonstack gateway",
        summary="OpenAI embeddings, Cohere/Jina rerank and classify in front of Triton",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    _add_error_handlers(app)
    _add_plain_routes(app, gateway)
    from tritonstack.gateway import routes

    routes.add_routes(app, gateway)
    app.add_middleware(Front, gateway=gateway)
    return app


def _gateway_tokenizers(settings: GatewaySettings) -> dict[str, GatewayTokenizer]:
    """The tokenizers of the models configured ``tokenize_at: gateway``, read at start (a bad path fails then)."""
    configured = {name: o for name, o in settings.config.models.items() if o.tokenize_at == "gateway"}
    if not configured:
        return {}
    from tritonstack.gateway.tokenize import GatewayTokenizer, read_target

    return {
        name: GatewayTokenizer(read_target(options.repository, name))
        for name, options in configured.items()
        if options.repository is not None
    }


def _add_error_handlers(app: FastAPI) -> None:
    def send(request: Request, error: errors.APIError) -> Response:
        labels_of(request).error = error.kind.code
        return Response(error.body(), error.kind.status, error.headers, media_type="application/json")

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, errors.APIError)
        return send(request, error)

    async def invalid(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid request')}"
        return send(request, errors.APIError(errors.INVALID, message, param=where[0] if where else None))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        kind = {404: errors.ROUTE_NOT_FOUND, 405: errors.METHOD_NOT_ALLOWED}.get(error.status_code, errors.INVALID)
        return send(request, errors.APIError(kind, f"{request.method} {request.url.path}: {error.detail}"))

    async def unexpected(request: Request, error: Exception) -> Response:
        return send(request, errors.APIError(errors.INTERNAL, f"internal error: {type(error).__name__}"))

    app.add_exception_handler(errors.APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _add_plain_routes(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/health", summary="200 when Triton behind the gateway is ready, else 503")
    async def health() -> Response:
        ready = await gateway.client.ready(timeout_s=min(gateway.settings.timeout_s, 2.0))
        body = b'{"status":"ok"}' if ready else b'{"status":"triton not ready"}'
        return Response(body, 200 if ready else 503, media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", summary="The text-in models Triton serves: name, task, dimensions")
    async def models() -> Response:
        from tritonstack.gateway.catalog import list_models

        listed = await list_models(gateway)
        return json_response({"object": "list", "data": listed})
