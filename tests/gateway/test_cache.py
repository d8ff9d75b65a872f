"""The response cache without a Redis server: keys (canonical, stable across processes, versioned), URL and
password handling, argument checks, a Redis that is not there at start, and RedisServer's missing-binary error."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_fixtures import Counts

from tritonstack._process import free_port
from tritonstack.gateway.cache import KEY_PREFIX, ResponseCache, cache_key, split_password
from tritonstack.gateway.redis_server import RedisServer, RedisServerError

BASE = {"route": "/v1/embeddings", "model": "minilm", "release": "minilm_v1"}
PARAMS = {"prefix": "query: ", "truncate": True}
# The key of these inputs under format v1. If this changes, the canonical form changed: bump KEY_PREFIX's version
# so a new gateway never reads entries an older one wrote in another form.
GOLDEN_KEY = "tritonstack:v1:fa4f7acc27b1e844eebe133cc5af9d4ae09a45ff4a1eb870a667cb74baea2224"
# ... which is the SHA-256 of this canonical JSON: sorted keys, no spaces, ASCII with \u escapes.
GOLDEN_CANONICAL = (
    '{"model":"minilm","params":{"prefix":"query: ","truncate":true},"release":"minilm_v1",'
    '"route":"/v1/embeddings","text":"h\\u00e9llo w\\u00f6rld \\u2713"}'
)
_SRC = Path(__file__).resolve().parents[2] / "src"


def test_key_is_versioned_and_golden() -> None:
    key = cache_key(**BASE, params=PARAMS, text="héllo wörld ✓")
    assert key.startswith(KEY_PREFIX)
    assert len(key) == len(KEY_PREFIX) + 64
    assert key == GOLDEN_KEY
    assert key == KEY_PREFIX + hashlib.sha256(GOLDEN_CANONICAL.encode("ascii")).hexdigest()


def test_key_is_the_same_in_another_process() -> None:
    """No dependence on hash randomisation or dict order: a subprocess with another PYTHONHASHSEED and params
    given in another order computes the same key."""
    program = (
        "from tritonstack.gateway.cache import cache_key\n"
        "print(cache_key(route='/v1/embeddings', model='minilm', release='minilm_v1',"
        " params={'truncate': True, 'prefix': 'query: '}, text='héllo wörld ✓'))\n"
    )
    keys = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(_SRC), "PYTHONIOENCODING": "utf-8"}
        done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True)
        keys.add(done.stdout.strip())
    assert keys == {cache_key(**BASE, params=PARAMS, text="héllo wörld ✓")}


@pytest.mark.parametrize(
    "change",
    [
        {"route": "/v1/rerank"},
        {"model": "bge"},
        {"release": "minilm_v2"},
        {"params": {"prefix": "passage: ", "truncate": True}},
        {"params": {"prefix": "query: ", "truncate": False}},
        {"params": {"prefix": "query: "}},
        {"params": {"prefix": "query: ", "truncate": 1}},  # JSON keeps true and 1 apart
        {"text": "héllo wörld ✓ "},
        {"text": "he\u0301llo wörld ✓"},  # another Unicode form of the same text is another input to the tokenizer
    ],
)
def test_every_field_changes_the_key(change: dict[str, object]) -> None:
    fields: dict[str, object] = {**BASE, "params": PARAMS, "text": "héllo wörld ✓", **change}
    assert cache_key(**fields) != GOLDEN_KEY  # type: ignore[arg-type]


def test_a_text_and_a_pair_never_collide() -> None:
    pair = cache_key(**BASE, params={}, text=("what is x", "x is y"))
    assert pair.startswith(KEY_PREFIX)
    assert pair != cache_key(**BASE, params={}, text='["what is x","x is y"]')
    assert pair != cache_key(**BASE, params={}, text="what is x x is y")
    assert pair != cache_key(**BASE, params={}, text=("x is y", "what is x"))
    # the boundary between query and document is part of the key
    assert cache_key(**BASE, params={}, text=("ab", "c")) != cache_key(**BASE, params={}, text=("a", "bc"))


@pytest.mark.parametrize("text", ["", "\x00", "\ud800 lone surrogate", "😀" * 1000, "a" * 100_000, "\u2028\n\t\"'\\"])
def test_any_text_hashes(text: str) -> None:
    assert cache_key(**BASE, params={}, text=text).startswith(KEY_PREFIX)


@pytest.mark.parametrize(
    "bad",
    [
        {"text": b"bytes"},
        {"text": ("only one",)},
        {"text": ("a", "b", "c")},
        {"text": ("a", 1)},
        {"text": ["a", "b"]},
        {"model": None},
        {"params": {1: "int key"}},
        {"params": {"nan": float("nan")}},
        {"params": {"object": object()}},
    ],
)
def test_bad_fields_are_type_errors(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {**BASE, "params": {}, "text": "x", **bad}
    with pytest.raises(TypeError):
        cache_key(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "stripped", "password"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", None),
        ("redis://:s3cr%40t@redis:6379/1", "redis://redis:6379/1", "s3cr@t"),
        ("redis://app:pw@redis:6379/0", "redis://app@redis:6379/0", "pw"),
        ("redis://app@redis:6379/0", "redis://app@redis:6379/0", None),
        ("rediss://:pw@redis:6380/0?ssl_cert_reqs=none", "rediss://redis:6380/0?ssl_cert_reqs=none", "pw"),
        ("redis://redis:6379/0?password=pw&db=2", "redis://redis:6379/0?db=2", "pw"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0", "pw"),
    ],
)
def test_split_password(url: str, stripped: str, password: str | None) -> None:
    assert split_password(url) == (stripped, password)


def test_password_in_url_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tritonstack.gateway.cache"):
        cache = ResponseCache("redis://:hunter2@127.0.0.1:6379/0")
    assert cache.url == "redis://127.0.0.1:6379/0"
    assert "process listings" in caplog.text
    assert "hunter2" not in caplog.text
    asyncio.run(cache.close())

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tritonstack.gateway.cache"):
        asyncio.run(ResponseCache("redis://127.0.0.1:6379/0", password="hunter2").close())
    assert caplog.text == ""


def test_tls_url_passes_through_to_redis_py() -> None:
    from redis.asyncio.connection import SSLConnection

    cache = ResponseCache("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=none", password="explicit")
    pool = cache._redis.connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    assert pool.connection_kwargs["password"] == "explicit"  # the caller's password wins over the URL's
    assert pool.connection_kwargs["host"] == "redis.example"
    asyncio.run(cache.close())


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl_s": 0}, {"ttl_s": 1.5}, {"ttl_s": True}, {"timeout_s": 0}, {"backoff_s": -1}, {"max_connections": 0}],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ResponseCache("redis://127.0.0.1:6379/0", **kwargs)  # type: ignore[arg-type]


def test_redis_down_at_start_never_raises() -> None:
    """Nothing listens on the port: every call answers at once (connection refused), then the back-off keeps
    Redis out of the path; lookups count as errors, never as misses."""
    counts = Counts()

    async def main() -> None:
        async with ResponseCache(f"redis://127.0.0.1:{free_port()}/0", on_result=counts, backoff_s=60) as cache:
            assert not cache.down
            assert await cache.get_many(["a", "b", "c"]) == [None, None, None]
            assert cache.down
            start = time.perf_counter()
            await cache.put_many([("a", b"1")])
            assert await cache.get_many(["a", "b"]) == [None, None]
            assert time.perf_counter() - start < 0.01  # the back-off: no connection tried
            assert await cache.get_many([]) == []
            assert not await cache.ping()  # ping asks Redis even in the back-off

    asyncio.run(main())
    assert counts == {"error": 5}


def test_put_many_checks_its_items() -> None:
    async def main() -> None:
        async with ResponseCache(f"redis://127.0.0.1:{free_port()}/0") as cache:
            with pytest.raises(TypeError):
                await cache.put_many([("key", "not bytes")])  # type: ignore[list-item]

    asyncio.run(main())


def test_redis_server_missing_binary_says_how_to_install() -> None:
    with pytest.raises(RedisServerError) as raised:
        RedisServer(binary="redis-server-that-does-not-exist").start()
    assert raised.value.hint is not None
    assert "apt-get install" in raised.value.hint
