"""Helpers for tests that run a real redis-server (RedisServer): count a cache's lookups, pause Redis (a hung
server), crash it (SIGKILL), wait for a cache to use Redis again."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import Iterator

from tritonstack.gateway.cache import ResponseCache
from tritonstack.gateway.redis_server import RedisServer


class Counts(collections.Counter[str]):
    """An ``on_result`` callback that adds up what a ResponseCache reports: ``counts["hit"]``, ``["miss"]``,
    ``["error"]``."""

    def __call__(self, result: str, n: int) -> None:
        assert result in ("hit", "miss", "error"), result
        assert n > 0, n
        self[result] += n


@contextlib.contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """Redis stopped with SIGSTOP inside the block: connections open, nothing answered (a hung server)."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def crash(server: RedisServer) -> None:
    """Kill Redis with SIGKILL (no shutdown), then reap it; ``server.start()`` brings it back on the same port."""
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


async def until_up(cache: ResponseCache, timeout_s: float = 5.0) -> None:
    """Wait until the cache's background PING has found Redis answering again."""
    deadline = time.monotonic() + timeout_s
    while cache.down:
        assert time.monotonic() < deadline, "the cache did not find Redis again"
        await asyncio.sleep(0.01)
