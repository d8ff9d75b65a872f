"""The gateway's shared cache against a real redis-server: per-input lookups (a request mixing cached and new
texts computes only the new), answers equal to uncached ones, hit/miss/error metrics, Redis down -> still answered."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_process import EMBEDDER, RERANKER, get, post, start_gateway

from tritonstack.gateway.redis_server import RedisServer

pytestmark = pytest.mark.integration


def lookups(url: str, route: str = "/v1/embeddings", model: str = EMBEDDER) -> dict[str, float]:
    text = get(url + "/metrics")[1].decode()
    found = {}
    for result in ("hit", "miss", "error"):
        pattern = rf'tritonstack_gateway_cache_lookups_total{{model="{model}",result="{result}",route="{route}"}} (\S+)'
        match = re.search(pattern, text)
        found[result] = float(match.group(1)) if match else 0.0
    return found


def test_cached_answers_equal_fresh_ones_and_redis_down_is_served(gateway_triton: Any, tmp_path: Path) -> None:
    with RedisServer(password="pw-for-tests") as redis:
        env = {"TRITONSTACK_REDIS_PASSWORD": "pw-for-tests"}
        running = start_gateway(gateway_triton.grpc_url, tmp_path, "--redis-url", redis.url, env=env)
        url = running.url
        try:
            assert "cache redis" in running.output[-1]
            first = post(url + "/v1/embeddings", {"model": EMBEDDER, "input": ["a b", "c d"]})[1]
            assert lookups(url) == {"hit": 0, "miss": 2, "error": 0}
            mixed = post(url + "/v1/embeddings", {"model": EMBEDDER, "input": ["c d", "e f", "a b"]})[1]
            assert lookups(url) == {"hit": 2, "miss": 3, "error": 0}
            vectors = np.array([item["embedding"] for item in mixed["data"]])
            np.testing.assert_array_equal(vectors[[2, 0]], np.array([item["embedding"] for item in first["data"]]))
            cut = post(url + "/v1/embeddings", {"model": EMBEDDER, "input": ["a b"], "dimensions": 8})[1]
            assert len(cut["data"][0]["embedding"]) == 8  # the cache holds the full vector; the route cuts it
            body = {"model": RERANKER, "query": "q", "documents": ["a b", "c d", "e f"]}
            fresh, again = post(url + "/v1/rerank", body)[1], post(url + "/v1/rerank", body)[1]
            assert fresh["results"] == again["results"]
            assert lookups(url, "/v1/rerank", RERANKER) == {"hit": 3, "miss": 3, "error": 0}
            redis.stop()
            status, down, _ = post(url + "/v1/embeddings", {"model": EMBEDDER, "input": ["a b", "g h"]})
            assert status == 200 and len(down["data"]) == 2
            np.testing.assert_allclose(down["data"][0]["embedding"], first["data"][0]["embedding"], atol=1e-6)
            assert lookups(url)["error"] == 2
        finally:
            running.stop()
