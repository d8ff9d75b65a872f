"""The gateway's response cache in Redis, shared by its replicas: one entry per input (a text, or a (query,
document) pair), so a request that mixes cached and new inputs only computes the new ones.

Keys (:func:`cache_key`) are ``tritonstack:v1:`` + the SHA-256 of a canonical JSON of everything that changes the
answer; values are the route's own bytes. :class:`ResponseCache` never raises on a Redis failure: a lookup then
answers "not cached" and the gateway computes the answer, as it would without a cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tritonstack._exceptions import TritonStackError

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger(__name__)

# Bump the version when the canonical form below changes: old entries are then never read under the new format
# (they expire by their TTL).
KEY_PREFIX = "tritonstack:v1:"
# A cache call (wait for a connection, connect, send, read the reply) that takes longer than this is abandoned and
# counted as a Redis failure. Measured against a loopback Redis on a 2-core machine shared with other work (load
# average 3.5 to 6.5; p50 / p99): 32 entries of 1.5 KB, MGET 0.4 / 8 ms and pipelined SET 1.0 / 9 ms; a whole
# 2 048-input request (3 MB), MGET 49 / 97 ms and SET 145 / 415 ms, nearly all of it redis-py's own Python CPU.
# 500 ms leaves the largest call room on such a machine (past it, the cache turns itself off for one back-off, the
# gateway answers uncached). It is what the calls in flight when Redis hangs wait, once: the back-off below keeps
# later ones off Redis.
DEFAULT_TIMEOUT_S = 0.5
# After a failure no request calls Redis for this long (lookups answer "not cached" at once). After it, a background
# PING (not a request) checks Redis; requests use it again once it answers.
DEFAULT_BACKOFF_S = 5.0

# Connections to Redis per cache (per gateway process). More calls at once wait for one (within their timeout_s):
# at a fraction of a millisecond a call, 64 connections serve tens of thousands of lookups a second; redis-py's
# non-blocking pool would instead fail the 101st concurrent call.
DEFAULT_MAX_CONNECTIONS = 64

_T = TypeVar("_T")


def cache_key(
    *, route: str, model: str, release: str, params: Mapping[str, object], text: str | tuple[str, str]
) -> str:
    """The Redis key of one input's answer: ``tritonstack:v1:`` + 64 hex digits.

    ``params`` holds everything else that changes the answer (the prefix applied, truncation), as JSON values
    with string keys; not what the route derives from the cached value (``dimensions``: the cache holds the full
    vector). ``text`` is one text or a (query, document) pair; a text and a pair never share a key. The key is the
    same in every process and on every machine (no dependence on ``PYTHONHASHSEED`` or dict order); any text,
    including lone surrogates, hashes safely. Raises ``TypeError`` for fields that are not of these types.
    """
    for name, field in (("route", route), ("model", model), ("release", release)):
        if not isinstance(field, str):
            raise TypeError(f"cache_key: {name} must be a str, not {type(field).__name__}")
    if not isinstance(params, Mapping) or not all(isinstance(name, str) for name in params):
        raise TypeError("cache_key: params must be a mapping with str keys")
    fields: dict[str, object] = {"route": route, "model": model, "release": release, "params": dict(params)}
    # Different field names for the two kinds of input, so a pair can never read as a text.
    if isinstance(text, str):
        fields["text"] = text
    elif isinstance(text, tuple) and len(text) == 2 and all(isinstance(part, str) for part in text):
        fields["pair"] = list(text)
    else:
        raise TypeError("cache_key: text must be a str or a (query, document) tuple of two str")
    try:
        # ASCII with \u escapes: one byte string for any text, lone surrogates included (UTF-8 would refuse them)
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"cache_key: params must hold JSON values (finite numbers, str, bool, None): {error}"
        ) from error
    return KEY_PREFIX + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password (in the user part or a ``password=`` query field), and that password."""
    parts = urllib.parse.urlsplit(url)
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        username = userinfo.partition(":")[0]
        netloc = f"{username}@{hostport}" if username else hostport
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name != "password"]
    if len(kept) != len(query):
        password = next(value for name, value in query if name == "password")
    if password is None:
        return url, None
    # by hand: urlunsplit would drop the empty authority of unix:///path
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    if kept:
        rebuilt += "?" + urllib.parse.urlencode(kept)
    if parts.fragment:
        rebuilt += "#" + parts.fragment
    return rebuilt, password


class ResponseCache:
    """Per-input answers in Redis (redis-py's asyncio client), shared by the gateway's replicas.

    ``url``: ``redis://host:6379/0``; ``rediss://`` (TLS) and ``unix://`` pass through to redis-py (query fields
    such as ``ssl_ca_certs`` included). ``password``: from the caller (the CLI reads a file or
    ``TRITONSTACK_REDIS_PASSWORD``). A password inside ``url`` is accepted, because managed Redis services and
    Kubernetes secrets often hand out whole URLs, but a warning is logged: a URL passed as a command-line flag shows
    in process listings (``ps``, ``/proc/PID/cmdline``) to every user of the machine. An explicit ``password`` wins
    over one in the URL; :attr:`url` is the URL without it (safe to log).

    ``ttl_s``: every entry expires this many seconds after it was written (``SET ... EX``).
    ``on_result(result, n)``: called after each lookup with ``"hit"``, ``"miss"`` or ``"error"`` and how many keys
    had that result (never with ``n == 0``); ``"error"`` means Redis was not asked or did not answer.

    Failures: no method raises on a Redis failure (refused connection, timeout, wrong or missing password, a
    restarted Redis, an error reply). Each Redis call is bounded by ``timeout_s`` in all (connect, send, reply; see
    :data:`DEFAULT_TIMEOUT_S`). The first failure opens a back-off of ``backoff_s`` during which no Redis call is
    made: lookups answer all ``None`` at once (counted as ``"error"``) and writes are dropped. The first call after
    it starts a PING in the background and answers uncached too: when the PING succeeds, calls use Redis again; when
    it fails, the back-off starts over. So only the calls in flight when Redis fails wait (at most ``timeout_s``);
    no request waits on a Redis that has not answered since. A stale connection left by a Redis restart is retried
    once on a fresh connection before it counts as a failure. Up to ``max_connections`` connections are pooled; a
    call beyond them waits for a free one, and that wait counts within its ``timeout_s``.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        ttl_s: int = 3600,
        on_result: Callable[[str, int], None] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
            raise ValueError(f"ttl_s must be a whole number of seconds >= 1, not {ttl_s!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a whole number >= 1, not {max_connections!r}")
        if not backoff_s >= 0:
            raise ValueError(f"backoff_s must be >= 0, not {backoff_s!r}")
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as error:
            raise TritonStackError(
                "the gateway's Redis cache needs redis-py", hint="pip install 'tritonstack[gateway]'"
            ) from error
        self.url, url_password = split_password(url)
        if url_password is not None:
            log.warning(
                "the Redis URL %s carries a password: passed on a command line it shows in process listings; "
                "give it in a file (--redis-password-file) or TRITONSTACK_REDIS_PASSWORD instead",
                self.url,
            )
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._on_result = on_result
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self.url,
            password=password if password is not None else url_password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # one immediate retry on a fresh connection (a pooled one may be dead after a Redis restart); the
            # overall timeout still bounds the two
            retry=Retry(NoBackoff(), 1),
            decode_responses=False,
            max_connections=max_connections,
            timeout=None,  # a call waiting for a free connection: bounded by timeout_s with the rest of the call
        )
        self._redis: redis.asyncio.Redis = redis.asyncio.Redis.from_pool(pool)
        self._down = False
        self._retry_at_s = 0.0  # time.monotonic() after which a call starts the background PING
        self._probe: asyncio.Task[None] | None = None  # that PING, while in flight

    @property
    def down(self) -> bool:
        """Whether Redis failed and has not answered since (calls answer "not cached" without asking Redis)."""
        return self._down

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The cached value of each key, ``None`` where there is none, in the order given; one MGET.

        Never raises: when Redis fails or the back-off is on, every value is ``None``."""
        keys = list(keys)
        if not keys:
            return []
        values = await self._attempt(lambda: self._redis.mget(keys))
        if values is None:
            self._count("error", len(keys))
            return [None] * len(keys)
        hits = sum(value is not None for value in values)
        self._count("hit", hits)
        self._count("miss", len(keys) - hits)
        return cast("list[bytes | None]", values)  # bytes: the client does not decode replies

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store each (key, value) with a TTL of ``ttl_s``; one round trip (a non-transactional pipeline of
        ``SET key value EX ttl_s``). Never raises on a Redis failure: the values are then not stored."""
        items = list(items)
        for key, value in items:
            if not isinstance(key, str) or not isinstance(value, bytes):
                raise TypeError(
                    f"put_many takes (str, bytes) pairs, not ({type(key).__name__}, {type(value).__name__})"
                )
        if not items:
            return

        async def write() -> list[Any]:
            pipeline = self._redis.pipeline(transaction=False)
            for key, value in items:
                pipeline.set(key, value, ex=self.ttl_s)
            return await pipeline.execute()

        await self._attempt(write)

    async def ping(self) -> bool:
        """Whether Redis answers PING within ``timeout_s``. Asks Redis even during a back-off; an answer ends it."""
        return await self._attempt(self._redis.ping, force=True) is not None

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        try:
            await self._redis.aclose()
        except Exception as error:  # closing a connection to a dead Redis must not fail the gateway's shutdown
            log.debug("closing the Redis connections: %s", error)

    async def __aenter__(self) -> ResponseCache:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _count(self, result: str, n: int) -> None:
        if n and self._on_result is not None:
            self._on_result(result, n)

    async def _attempt(self, call: Callable[[], Awaitable[_T]], *, force: bool = False) -> _T | None:
        """``call()`` bounded by ``timeout_s``; ``None`` when it failed, or was not made because Redis is down."""
        if self._down and not force:
            if self._probe is None and time.monotonic() >= self._retry_at_s:
                self._probe = asyncio.create_task(self._ping_in_background())
            return None
        try:
            result = await asyncio.wait_for(call(), self.timeout_s)
        except Exception as error:  # whatever the I/O raised: the cache is best-effort (inputs are checked above)
            self._fail(error)
            return None
        if self._down:
            self._down = False
            log.warning("the Redis cache at %s answers again", self.url)
        return result

    async def _ping_in_background(self) -> None:
        try:
            await self._attempt(self._redis.ping, force=True)
        finally:
            self._probe = None

    def _fail(self, error: Exception) -> None:
        self._retry_at_s = time.monotonic() + self.backoff_s
        if not self._down:
            self._down = True
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            log.warning(
                "the Redis cache at %s failed (%s); answering uncached, next try in %.1f s",
                self.url,
                reason,
                self.backoff_s,
            )
