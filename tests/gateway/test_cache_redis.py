"""The response cache against a real redis-server (RedisServer): round trips, TTL, passwords, and a Redis that is
killed, restarted or hung while the cache uses it. No mocks: every failure is a real one."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_fixtures import Counts, crash, paused, until_up

from tritonstack.gateway.cache import ResponseCache, cache_key
from tritonstack.gateway.redis_server import RedisServer

pytestmark = pytest.mark.integration

BACKOFF_S = 0.3  # short, so the tests can wait it out


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


def admin(server: RedisServer) -> redis.Redis:
    """A plain synchronous client, to look at what the cache wrote."""
    return redis.Redis.from_url(server.url, password=server.password)


def command_calls(server: RedisServer) -> dict[str, int]:
    with admin(server) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def key(text: str) -> str:
    return cache_key(route="/v1/embeddings", model="minilm", release="minilm_v1", params={}, text=text)


def test_round_trip_keeps_the_order_of_mixed_hits_and_misses(server: RedisServer) -> None:
    counts = Counts()
    keys = [key(f"text {i}") for i in range(10)]

    async def main() -> list[bytes | None]:
        async with ResponseCache(server.url, on_result=counts) as cache:
            assert await cache.ping()
            await cache.put_many([(k, f"value {i}".encode()) for i, k in enumerate(keys) if i % 3 == 0])
            return await cache.get_many(keys)

    found = asyncio.run(main())
    assert found == [f"value {i}".encode() if i % 3 == 0 else None for i in range(10)]
    assert counts == {"hit": 4, "miss": 6}
    calls = command_calls(server)
    assert calls["mget"] == 1  # one lookup, one command
    assert calls["set"] == 4
    assert "get" not in calls
    assert "multi" not in calls  # a plain pipeline, not a transaction


def test_entries_carry_the_ttl(server: RedisServer) -> None:
    counts = Counts()

    async def main() -> None:
        async with ResponseCache(server.url, ttl_s=100) as cache:
            await cache.put_many([("long", b"1")])
        async with ResponseCache(server.url, ttl_s=1, on_result=counts) as cache:
            await cache.put_many([("short", b"2")])
            assert await cache.get_many(["short"]) == [b"2"]
            await asyncio.sleep(1.2)
            assert await cache.get_many(["short", "long"]) == [None, b"1"]

    asyncio.run(main())
    with admin(server) as client:
        assert 98 <= client.ttl("long") <= 100
    assert counts == {"hit": 2, "miss": 1}


def test_password() -> None:
    counts = Counts()
    with RedisServer(password="s3cret-pass") as server:
        # the password never appears on the server's command line
        assert b"s3cret-pass" not in Path(f"/proc/{server.pid}/cmdline").read_bytes()

        async def main() -> None:
            async with ResponseCache(server.url, password="s3cret-pass") as cache:
                await cache.put_many([("k", b"v")])
                assert await cache.get_many(["k"]) == [b"v"]
            for password in ("wrong", None):
                async with ResponseCache(server.url, password=password, on_result=counts) as cache:
                    assert not await cache.ping()
                    assert await cache.get_many(["k", "k2"]) == [None, None]
                    await cache.put_many([("k", b"other")])  # dropped, not raised
            url = server.url.replace("redis://", "redis://:s3cret-pass@")
            async with ResponseCache(url, on_result=counts) as cache:
                assert await cache.get_many(["k"]) == [b"v"]

        asyncio.run(main())
    assert counts == {"error": 4, "hit": 1}


def test_redis_killed_then_restarted(server: RedisServer) -> None:
    """A crash mid-use: lookups answer None at once and count as errors (the back-off asks nothing); after the
    restart (empty: no persistence) and the back-off, a lookup starts the background PING and answers uncached;
    once the PING has answered the cache misses, then hits again."""
    counts = Counts()

    async def main() -> None:
        async with ResponseCache(server.url, on_result=counts, backoff_s=BACKOFF_S) as cache:
            await cache.put_many([("a", b"1"), ("b", b"2")])
            assert await cache.get_many(["a", "b"]) == [b"1", b"2"]
            crash(server)
            assert await cache.get_many(["a", "b"]) == [None, None]
            assert cache.down
            start = time.perf_counter()
            assert await cache.get_many(["a", "b", "c"]) == [None, None, None]
            await cache.put_many([("a", b"1")])
            assert time.perf_counter() - start < 0.01  # the back-off: nothing asked of Redis
            assert counts == {"hit": 2, "error": 5}

            server.start()  # same port, no data
            await asyncio.sleep(BACKOFF_S + 0.05)
            assert cache.down  # nothing has asked Redis yet
            assert await cache.get_many(["a", "b"]) == [None, None]  # starts the PING, does not wait for it
            await until_up(cache)
            assert await cache.get_many(["a", "b"]) == [None, None]
            await cache.put_many([("a", b"1"), ("b", b"2")])
            assert await cache.get_many(["b", "a"]) == [b"2", b"1"]

    asyncio.run(main())
    assert counts == {"hit": 4, "miss": 2, "error": 7}


def test_restart_between_calls_costs_nothing(server: RedisServer) -> None:
    """A Redis restarted while the cache was idle leaves dead connections in its pool: the next call retries once
    on a fresh connection instead of failing."""
    counts = Counts()

    async def main() -> None:
        async with ResponseCache(server.url, on_result=counts, backoff_s=60) as cache:
            await cache.put_many([("a", b"1")])
            assert await cache.get_many(["a"]) == [b"1"]
            crash(server)
            server.start()
            assert await cache.get_many(["a"]) == [None]
            assert not cache.down

    asyncio.run(main())
    assert counts == {"hit": 1, "miss": 1}


def test_hung_redis_costs_at_most_the_timeout(server: RedisServer) -> None:
    """SIGSTOP: the connection is open but nothing answers. The lookup in flight gives up after timeout_s; later
    ones answer at once, the back-off's included: its PING waits in the background, not in a request. Once Redis
    answers, hits resume with the right values (an abandoned reply is never read as another call's)."""
    counts = Counts()
    timeout_s = 0.2

    async def main() -> None:
        async with ResponseCache(server.url, on_result=counts, timeout_s=timeout_s, backoff_s=BACKOFF_S) as cache:
            await cache.put_many([("a", b"1"), ("b", b"2")])
            with paused(server):
                start = time.perf_counter()
                assert await cache.get_many(["a", "b"]) == [None, None]
                elapsed_s = time.perf_counter() - start
                assert timeout_s * 0.9 <= elapsed_s < timeout_s + 0.3
                start = time.perf_counter()
                results = await asyncio.gather(*(cache.get_many(["a"]) for _ in range(20)))
                await cache.put_many([("c", b"3")])
                assert time.perf_counter() - start < 0.02
                assert results == [[None]] * 20
                await asyncio.sleep(BACKOFF_S + 0.05)
                start = time.perf_counter()
                assert await cache.get_many(["a"]) == [None]  # starts the PING
                assert await cache.get_many(["b"]) == [None]
                assert time.perf_counter() - start < 0.02
                await asyncio.sleep(timeout_s + 0.1)
                assert cache.down  # the PING timed out: a new back-off
            await asyncio.sleep(BACKOFF_S + 0.05)
            assert await cache.get_many(["a"]) == [None]
            await until_up(cache)
            assert await cache.get_many(["b", "a", "c"]) == [b"2", b"1", None]

    asyncio.run(main())
    assert counts == {"error": 2 + 20 + 2 + 1, "hit": 2, "miss": 1}


def test_a_caller_cancelled_while_redis_hangs(server: RedisServer) -> None:
    """The caller's cancellation (its own deadline) goes through the cache, and leaves it usable."""

    async def main() -> None:
        async with ResponseCache(server.url, timeout_s=2.0) as cache:
            await cache.put_many([("a", b"1")])
            with paused(server):
                lookup = asyncio.create_task(cache.get_many(["a"]))
                await asyncio.sleep(0.05)
                lookup.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await lookup
            assert not cache.down
            assert await cache.get_many(["a"]) == [b"1"]

    asyncio.run(main())


def test_large_values(server: RedisServer) -> None:
    """A whole 2 048-input request of 1.5 KB vectors (3 MB in one pipeline and one MGET) and one 8 MB value.
    timeout_s is raised: what is tested is the size, not this busy machine's speed."""
    batch = [(key(f"text {i}"), os.urandom(1536)) for i in range(2048)]
    big = os.urandom(8 * 1024 * 1024)

    async def main() -> None:
        async with ResponseCache(server.url, timeout_s=5.0) as cache:
            await cache.put_many([*batch, ("big", big)])
            assert await cache.get_many([k for k, _ in batch]) == [v for _, v in batch]
            assert await cache.get_many(["big"]) == [big]
            assert not cache.down

    asyncio.run(main())


def test_many_calls_at_once(server: RedisServer) -> None:
    """200 tasks writing and reading at once through one cache: every value comes back to the task that asked."""
    counts = Counts()

    async def worker(cache: ResponseCache, n: int) -> None:
        mine = [(f"w{n}:{i}", f"{n}:{i}".encode()) for i in range(8)]
        await cache.put_many(mine)
        found = await cache.get_many([k for k, _ in mine] + [f"absent:{n}"])
        assert found == [v for _, v in mine] + [None]

    async def main() -> None:
        async with ResponseCache(server.url, on_result=counts, timeout_s=5.0) as cache:
            await asyncio.gather(*(worker(cache, n) for n in range(200)))

    asyncio.run(main())
    assert counts == {"hit": 200 * 8, "miss": 200}


def test_redis_server_leaves_nothing_behind() -> None:
    """Stopped on an exception, even while paused, and its temporary directory removed."""
    with pytest.raises(RuntimeError), RedisServer() as server:
        pid, log_path = server.pid, server.log_path
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        os.kill(pid, signal.SIGSTOP)  # still paused when the test fails
        start = time.perf_counter()
        raise RuntimeError("a failing test")
    assert time.perf_counter() - start < 3
    assert not Path(f"/proc/{pid}").exists()
    assert log_path is not None
    assert not log_path.parent.exists()
