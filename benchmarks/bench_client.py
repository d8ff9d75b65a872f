"""SDK overhead and concurrency, measured side by side in one run.

1. Sync call overhead: ``Client.embed([text])`` against the same request made
   with plain ``tritonclient.grpc`` (InferInput built per call, ``as_numpy`` on
   the result), one text per call, in alternating blocks so that both see the
   same server state. Reports median and mean latency, client CPU per call, and the ratios.
2. Concurrency: ``AsyncClient`` with 64 calls in flight against one sync
   ``Client`` shared by 64 threads, the same number of calls each (and plain
   ``tritonclient.grpc.aio`` as a reference). Reports throughput, the client
   process's CPU per call, and the ratios.

    python benchmarks/bench_client.py --repository model_repository --model minilm
    python benchmarks/bench_client.py --url 127.0.0.1:8001 --model minilm

With ``--repository`` an embedded Triton is started (and stopped) here. This is a
measurement to read, not a test: nothing fails on a bad ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient

from tritonstack.client import AsyncClient, Client
from tritonstack.in_triton import contract

TEXT = "the quick brown fox jumps over the lazy dog"


@contextlib.contextmanager
def server_url(args: argparse.Namespace) -> Iterator[str]:
    if args.url:
        yield args.url
        return
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(args.repository) as server:
        yield server.grpc_url


def raw_call(raw: grpcclient.InferenceServerClient, model: str) -> Callable[[], np.ndarray]:
    def call() -> np.ndarray:
        array = np.array([[TEXT.encode()]], dtype=np.object_)
        tensor = grpcclient.InferInput(contract.TEXT_INPUT, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        result = raw.infer(model, [tensor])
        return np.asarray(result.as_numpy(contract.EMBEDDING_OUTPUT))

    return call


def timed_block(call: Callable[[], object], count: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of each call; adds this process's CPU seconds for the block to ``cpu``."""
    samples = []
    cpu_start = time.process_time()
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    if cpu is not None:
        cpu.append(time.process_time() - cpu_start)
    return samples


def overhead(url: str, model: str, calls: int, block: int) -> None:
    with grpcclient.InferenceServerClient(url) as raw, Client(url, model=model) as client:
        raw_fn, sdk_fn = raw_call(raw, model), lambda: client.embed([TEXT])
        np.testing.assert_allclose(raw_fn()[0], sdk_fn()[0], atol=1e-5)  # same work on both sides
        timed_block(raw_fn, 50), timed_block(sdk_fn, 50)  # warm-up
        raw_s: list[float] = []
        sdk_s: list[float] = []
        raw_cpu: list[float] = []
        sdk_cpu: list[float] = []
        for _ in range(max(1, calls // block)):
            raw_s += timed_block(raw_fn, block, raw_cpu)
            sdk_s += timed_block(sdk_fn, block, sdk_cpu)
    print(f"\n1. sync call overhead, one text per call, {len(raw_s)} calls each, alternating blocks of {block}")
    print(f"   {'':28}{'median ms':>11}{'mean ms':>10}{'p90 ms':>9}{'client CPU us/call':>20}")
    for name, samples, cpu in (("raw tritonclient.grpc", raw_s, raw_cpu), ("tritonstack Client.embed", sdk_s, sdk_cpu)):
        p90 = float(np.percentile(samples, 90))
        print(f"   {name:28}{statistics.median(samples) * 1e3:>11.3f}{statistics.fmean(samples) * 1e3:>10.3f}"
              f"{p90 * 1e3:>9.3f}{sum(cpu) / len(samples) * 1e6:>20.0f}")  # fmt: skip
    ratio_median = statistics.median(sdk_s) / statistics.median(raw_s)
    ratio_mean = statistics.fmean(sdk_s) / statistics.fmean(raw_s)
    cpu_ratio = sum(sdk_cpu) / sum(raw_cpu)
    print(f"   SDK / raw: median {ratio_median:.3f}x, mean {ratio_mean:.3f}x "
          f"(overhead {(ratio_median - 1) * 100:+.1f}% median); client CPU {cpu_ratio:.3f}x")  # fmt: skip


def sync_threads(url: str, model: str, concurrency: int, calls: int) -> tuple[float, float]:
    """(calls per second, client CPU seconds per call)."""
    with Client(url, model=model) as client:
        client.embed([TEXT])
        per_thread = calls // concurrency
        barrier = threading.Barrier(concurrency + 1)

        def worker() -> None:
            barrier.wait()
            for _ in range(per_thread):
                client.embed([TEXT])

        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(worker) for _ in range(concurrency)]
            barrier.wait()
            start, cpu_start = time.perf_counter(), time.process_time()
            for future in futures:
                future.result()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return per_thread * concurrency / elapsed, cpu / (per_thread * concurrency)


def async_in_flight(url: str, model: str, concurrency: int, calls: int) -> tuple[float, float]:
    """(calls per second, client CPU seconds per call)."""

    async def main() -> tuple[float, float]:
        async with AsyncClient(url, model=model) as client:
            await client.embed([TEXT])
            per_worker = calls // concurrency

            async def worker() -> None:
                for _ in range(per_worker):
                    await client.embed([TEXT])

            start, cpu_start = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            total = per_worker * concurrency
            return total / (time.perf_counter() - start), (time.process_time() - cpu_start) / total

    return asyncio.run(main())


def raw_aio_in_flight(url: str, model: str, concurrency: int, calls: int) -> tuple[float, float]:
    """The reference for AsyncClient: plain tritonclient.grpc.aio, same calls."""
    import tritonclient.grpc.aio as grpcaio

    async def main() -> tuple[float, float]:
        async with grpcaio.InferenceServerClient(url) as raw:

            async def call() -> None:
                array = np.array([[TEXT.encode()]], dtype=np.object_)
                tensor = grpcclient.InferInput(contract.TEXT_INPUT, list(array.shape), "BYTES")
                tensor.set_data_from_numpy(array)
                (await raw.infer(model, [tensor])).as_numpy(contract.EMBEDDING_OUTPUT)

            await call()
            per_worker = calls // concurrency

            async def worker() -> None:
                for _ in range(per_worker):
                    await call()

            start, cpu_start = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            total = per_worker * concurrency
            return total / (time.perf_counter() - start), (time.process_time() - cpu_start) / total

    return asyncio.run(main())


def concurrency(url: str, model: str, in_flight: int, calls: int, rounds: int) -> None:
    runs: dict[str, list[tuple[float, float]]] = {"sync": [], "async": [], "raw-aio": []}
    for _ in range(rounds):  # alternate, so that neither side gets only the cold or the hot server
        runs["sync"].append(sync_threads(url, model, in_flight, calls))
        runs["async"].append(async_in_flight(url, model, in_flight, calls))
        runs["raw-aio"].append(raw_aio_in_flight(url, model, in_flight, calls))
    print(f"\n2. throughput at {in_flight} in flight, one text per call, {calls} calls per run, {rounds} runs each")
    print(f"   {'':36}{'median req/s':>13}{'client CPU us/call':>20}   req/s of each run")
    labels = {
        "sync": f"sync Client, {in_flight} threads",
        "async": f"AsyncClient, {in_flight} in flight",
        "raw-aio": f"(raw tritonclient aio, {in_flight})",
    }
    medians = {}
    for kind, results in runs.items():
        rps = [r for r, _ in results]
        medians[kind] = (statistics.median(rps), statistics.median(c for _, c in results))
        print(f"   {labels[kind]:36}{medians[kind][0]:>13.0f}{medians[kind][1] * 1e6:>20.0f}   "
              f"{', '.join(f'{v:.0f}' for v in rps)}")  # fmt: skip
    print(f"   AsyncClient / sync threads: throughput {medians['async'][0] / medians['sync'][0]:.3f}x, "
          f"client CPU per call {medians['async'][1] / medians['sync'][1]:.3f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running Triton's gRPC host:port")
    where.add_argument("--repository", help="start an embedded Triton over this model repository")
    parser.add_argument("--model", required=True, help="a feature-extraction text-in model")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per side for the overhead")
    parser.add_argument("--block", type=int, default=100, help="calls per alternating block")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--concurrent-calls", type=int, default=3200, help="calls per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per side")
    args = parser.parse_args()
    with server_url(args) as url:
        print(f"server {url}, model {args.model}")
        overhead(url, args.model, args.calls, args.block)
        concurrency(url, args.model, args.in_flight, args.concurrent_calls, args.rounds)


if __name__ == "__main__":
    main()
