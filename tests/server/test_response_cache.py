"""Triton's response cache: the config knob, the embedded server's local cache, and hits on a real server.

``cached_triton`` serves one ONNX export of ``tiny`` twice: ``tiny_cached`` (response cache on its text-in
ensemble, as ``export --cache`` writes it) and ``tiny_uncached``. Hits are read from Triton's own counters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonstack.measure.triton_metrics import Snapshot, fetch
from tritonstack.repository.config import ModelConfig, Tensor, parse, render, response_cache_enabled
from tritonstack.server import EmbeddedServer, flags
from tritonstack.server.response_cache import embedded_cache, format_size, models_with_cache, parse_size_bytes

HITS = "nv_cache_num_hits_per_model"
MISSES = "nv_cache_num_misses_per_model"


# -- sizes, configs, flags (no server) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("268435456", 268435456), ("256MiB", 256 * 2**20), ("256M", 256 * 2**20), ("256MB", 256_000_000),
     ("1GiB", 2**30), ("1.5GB", 1_500_000_000), ("64k", 65536), (" 2 GiB ", 2 * 2**30)],
)  # fmt: skip
def test_cache_sizes(text: str, size: int) -> None:
    assert parse_size_bytes(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1MiB", "0", "256 XB", "1e9"])
def test_bad_cache_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size_bytes(text)


def test_sizes_print_in_the_largest_whole_unit() -> None:
    assert [format_size(n) for n in (256 * 2**20, 2**30, 3 * 1024, 1536, 1000)] == [
        "256 MiB", "1 GiB", "3 KiB", "1536 B", "1000 B",
    ]  # fmt: skip


def _write_config(repository: Path, name: str, *, response_cache: bool) -> None:
    config = ModelConfig(
        name=name, platform="ensemble", max_batch_size=8, inputs=(Tensor("TEXT", "TYPE_STRING", (1,)),),
        outputs=(Tensor("EMBEDDING", "TYPE_FP32", (4,)),), response_cache=response_cache,
    )  # fmt: skip
    (repository / name).mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(render(config))


def test_the_embedded_server_starts_a_cache_when_a_model_enables_one(tmp_path: Path) -> None:
    _write_config(tmp_path, "plain", response_cache=False)
    assert models_with_cache(tmp_path) == [] and embedded_cache(tmp_path) is None
    assert embedded_cache(tmp_path, 1024) == flags.LocalCache(1024)  # asked for: started regardless
    _write_config(tmp_path, "cached", response_cache=True)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("not a config {")
    assert models_with_cache(tmp_path) == ["cached"]
    assert embedded_cache(tmp_path) == flags.LocalCache(flags.DEFAULT_LOCAL_CACHE_BYTES)
    assert embedded_cache(tmp_path, 4096) == flags.LocalCache(4096)


def test_the_response_cache_renders_through_tritons_protobuf() -> None:
    from tritonstack.repository.config import set_response_cache

    base = ModelConfig(name="m", platform="ensemble", max_batch_size=1, inputs=(), outputs=())
    assert "response_cache" not in render(base)
    on = render(ModelConfig(**{**base.__dict__, "response_cache": True}))
    assert "response_cache {\n  enable: true\n}" in on and response_cache_enabled(parse(on))
    assert set_response_cache(render(base), enable=True) == on
    assert set_response_cache(on, enable=False) == render(base)


def test_local_and_redis_cache_flags() -> None:
    assert flags.LocalCache(1024).args() == ["--cache-config=local,size=1024"]
    redis = flags.RedisCache(host="r", port=1, connect_timeout_ms=2, socket_timeout_ms=3, pool_size=4).args()
    assert redis == [
        "--cache-config=redis,host=r", "--cache-config=redis,port=1", "--cache-config=redis,connect_timeout=2",
        "--cache-config=redis,socket_timeout=3", "--cache-config=redis,pool_size=4",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        flags.LocalCache(0)
    plain = flags.TritonFlags(model_repository="/m", admin_key="k").args()
    assert not [a for a in plain if a.startswith("--cache")]


def test_the_embedded_command_points_triton_at_the_wheels_cache_directory(tmp_path: Path) -> None:
    from tritonstack.server.embedded import pytriton_dir

    server = EmbeddedServer(tmp_path)
    assert not [a for a in server.command(tmp_path / "backends") if a.startswith("--cache")]
    server.cache = flags.LocalCache(4096)
    command = server.command(tmp_path / "backends")
    directory = pytriton_dir() / "caches"
    assert f"--cache-directory={directory}" in command and "--cache-config=local,size=4096" in command
    assert (directory / "local" / "libtritoncache_local.so").is_file()


# -- the real server ---------------------------------------------------------------------------------


def _count(snapshot: Snapshot, metric: str, model: str) -> float | None:
    return snapshot.get(metric, model)


def _settled(server: Any) -> Snapshot:
    """Triton's metrics once the last answered request is counted: a client can have its response before the
    server has added it to ``nv_inference_request_success`` (seen on a busy machine: +2 where one request ran)."""
    import time

    last = fetch(server.metrics_url)
    for _ in range(20):
        time.sleep(0.05)
        snapshot = fetch(server.metrics_url)
        if snapshot.values == last.values:
            return snapshot
        last = snapshot
    return last


def _embedding(server: Any, model: str, text: str) -> np.ndarray:
    from tritonstack.client import Client

    with Client(server.grpc_url, model=model) as client:
        return np.asarray(client.embed([text]))


@pytest.mark.integration
def test_a_repeated_text_is_a_hit_and_returns_the_computed_vector_bit_for_bit(cached_triton: Any) -> None:
    text = "the quick brown fox caches a response"
    before = _settled(cached_triton)
    first = _embedding(cached_triton, "tiny_cached", text)  # a miss: computed and inserted
    middle = _settled(cached_triton)
    second = _embedding(cached_triton, "tiny_cached", text)  # a hit
    after = _settled(cached_triton)
    assert (_count(middle, MISSES, "tiny_cached") or 0) - (_count(before, MISSES, "tiny_cached") or 0) == 1
    assert (_count(after, HITS, "tiny_cached") or 0) - (_count(middle, HITS, "tiny_cached") or 0) == 1
    assert second.dtype == np.float32 and second.tobytes() == first.tobytes()
    # The same weights computing afresh, without a cache: the hit is what a recompute gives.
    recomputed = _embedding(cached_triton, "tiny_uncached", text)
    assert recomputed.tobytes() == second.tobytes()


@pytest.mark.integration
def test_a_hit_runs_neither_the_tokenizer_nor_the_encoder(cached_triton: Any) -> None:
    text = "a hit is answered before any step of the ensemble runs"
    _embedding(cached_triton, "tiny_cached", text)
    before = _settled(cached_triton)
    _embedding(cached_triton, "tiny_cached", text)
    after = _settled(cached_triton)
    success = "nv_inference_request_success"
    assert (_count(after, HITS, "tiny_cached") or 0) - (_count(before, HITS, "tiny_cached") or 0) == 1
    assert _count(after, success, "tiny_cached") == (_count(before, success, "tiny_cached") or 0) + 1
    for step in ("tiny_cached_tokenizer", "tiny_cached_encoder"):
        assert _count(after, success, step) == _count(before, success, step), step
        # only the ensemble caches: the steps' token ids and embeddings are not stored a second time
        assert _count(after, HITS, step) is None and _count(after, MISSES, step) is None, step


@pytest.mark.integration
def test_a_model_without_the_cache_never_hits(cached_triton: Any) -> None:
    for _ in range(3):
        _embedding(cached_triton, "tiny_uncached", "the same text, three times")
    snapshot = fetch(cached_triton.metrics_url)
    assert _count(snapshot, HITS, "tiny_uncached") is None and _count(snapshot, MISSES, "tiny_uncached") is None
    assert (_count(snapshot, "nv_inference_request_success", "tiny_uncached_encoder") or 0) >= 3


@pytest.mark.integration
def test_the_key_is_the_whole_request(cached_triton: Any) -> None:
    from tritonstack.client import Client

    before = fetch(cached_triton.metrics_url)
    with Client(cached_triton.grpc_url, model="tiny_cached") as client:
        pair = np.asarray(client.embed(["one text of a pair", "the other text"]))
        alone = np.asarray(client.embed(["one text of a pair"]))  # a miss: another request
        again = np.asarray(client.embed(["one text of a pair", "the other text"]))  # a hit
    after = fetch(cached_triton.metrics_url)
    assert (_count(after, MISSES, "tiny_cached") or 0) - (_count(before, MISSES, "tiny_cached") or 0) == 2
    assert (_count(after, HITS, "tiny_cached") or 0) - (_count(before, HITS, "tiny_cached") or 0) == 1
    assert again.tobytes() == pair.tobytes() and alone.shape == (1, pair.shape[1])


@pytest.mark.integration
def test_the_server_runs_the_local_cache_of_the_default_size(cached_triton: Any) -> None:
    assert cached_triton.cache == flags.LocalCache(flags.DEFAULT_LOCAL_CACHE_BYTES)
    arguments = Path(f"/proc/{cached_triton.pid}/cmdline").read_bytes().split(b"\0")
    assert f"--cache-config=local,size={flags.DEFAULT_LOCAL_CACHE_BYTES}".encode() in arguments


@pytest.mark.integration
def test_serve_starts_the_cache_of_the_size_asked_for(cached_repository: Path, tmp_path: Path) -> None:
    import signal

    from serve_process import start_serve

    process, output = start_serve(cached_repository, tmp_path / "t.log", "--cache-size", "3MiB")
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output + rest
    assert "cache    local, 3 MiB for tiny_cached" in output, output
    # Triton itself logs which cache it created, from where, and how large
    log = (tmp_path / "t.log").read_text()
    (created,) = [line for line in log.splitlines() if "Creating TritonCache with name: 'local'" in line]
    assert "caches/local/libtritoncache_local.so" in created and str(3 * 2**20) in created, created
