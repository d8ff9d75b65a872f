"""``tritonstack bench --gateway``: the same served model through ``tritonstack gateway`` (HTTP) and through the
SDK's gRPC path, on the same server and the same texts.

One text per call, at each concurrency of the sweep, the two paths in alternating
rounds so that both see the same server state: throughput and p50 latency, the
gateway's own CPU per request (its process's user + system time over the round,
from ``/proc``) and the issue's targets side by side: throughput through the
gateway >= 0.9x the SDK's at each path's best point, p50 at one caller <= +1 ms.

Triton and the gateway run on the server cores (the gateway is part of what
serves), this process on the client cores (``measure.cpus``). The SDK side is
``AsyncClient.embed([text])``; the gateway side is ``POST /v1/embeddings`` with
``encoding_format: base64`` (what the official ``openai`` client asks for by
default) over keep-alive HTTP/1.1 connections, one per caller, from a minimal
asyncio client, so that the load generator's cost per call stays near the SDK's.
A measurement to read, not a gate: a missed target is printed, not failed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack._exceptions import TritonStackError
from tritonstack._process import LOOPBACK
from tritonstack.bench.errors import BenchError
from tritonstack.bench.results import write_summary
from tritonstack.bench.service import LoopbackHTTPService
from tritonstack.measure import cpus
from tritonstack.measure.json_safe import json_safe
from tritonstack.measure.progress import Progress
from tritonstack.measure.samples import percentile_ms

Log = Callable[[str], None]
Call = Callable[[str], Awaitable[object]]  # one caller's request for one text
SDK, GATEWAY = "SDK gRPC", "gateway HTTP"
THROUGHPUT_TARGET = 0.9  # gateway / SDK at each one's best point
P50_TARGET_MS = 1.0  # gateway p50 - SDK p50 at one caller
EMBEDDINGS_PATH = "/v1/embeddings"


class GatewayServer(LoopbackHTTPService):
    """``tritonstack gateway --triton URL`` on a free loopback port, ready when ``/health`` answers 200 (Triton
    behind it ready). Auth off (loopback); no cache unless ``extra`` passes ``--redis-url``."""

    name = "the gateway"

    def __init__(self, triton_url: str, *, log_path: Path, extra: Sequence[str] = (), startup_timeout_s: float = 60.0):
        super().__init__(log_path, startup_timeout_s)
        self.triton_url = triton_url
        self.extra = list(extra)

    def start(self) -> GatewayServer:
        command = [sys.executable, "-m", "tritonstack", "gateway", "--triton", self.triton_url]
        command += ["--host", LOOPBACK, "--port", str(self._pick_port()), *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRITONSTACK_GATEWAY_API_KEYS": ""}
        self._launch(command, env, probe_timeout_s=1.0, stop_timeout_s=40)
        return self

    def cpu_s(self) -> float:
        """The gateway process's user + system CPU seconds so far."""
        return cpus.process_cpu_s(self.pid)


class HTTPConnection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the whole answer (uvicorn sends its length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> HTTPConnection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: str, body: bytes) -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line, *headers = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = next(int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:"))
        content = await self.reader.readexactly(length)
        if not status_line.split()[1].startswith("2"):
            raise BenchError(f"the gateway answered {status_line}: {content[:300].decode(errors='replace')}")
        return content

    def close(self) -> None:
        self.writer.close()


@dataclass
class Round:
    """One path at one concurrency: each successful call's latency (µs), the wall time, the gateway's CPU seconds
    and the calls that failed."""

    latencies_us: list[float]
    elapsed_s: float
    gateway_cpu_s: float | None = None
    errors: int = 0  # calls refused (shed: 429 / OverloadedError) or failed; not in the latencies

    @property
    def calls_per_s(self) -> float:
        return len(self.latencies_us) / self.elapsed_s


@dataclass
class Point:
    concurrency: int
    rounds: dict[str, list[Round]] = field(default_factory=lambda: {SDK: [], GATEWAY: []})

    def throughput(self, path: str) -> float | None:
        return statistics.median(r.calls_per_s for r in self.rounds[path]) if self.rounds[path] else None

    def p50_ms(self, path: str) -> float | None:
        return percentile_ms([x for r in self.rounds[path] for x in r.latencies_us], 50)

    def errors(self, path: str) -> int:
        return sum(r.errors for r in self.rounds[path])

    def gateway_cpu_us_per_call(self) -> float | None:
        rounds = [r for r in self.rounds[GATEWAY] if r.gateway_cpu_s is not None]
        calls = sum(len(r.latencies_us) + r.errors for r in rounds)
        return sum(r.gateway_cpu_s or 0.0 for r in rounds) / calls * 1e6 if calls else None


@dataclass
class GatewayBenchResult:
    model: str
    split: str
    encoding_format: str
    points: list[Point]

    def best(self, path: str) -> Point | None:
        measured = [p for p in self.points if p.throughput(path)]
        return max(measured, key=lambda p: p.throughput(path) or 0.0) if measured else None

    def figures(self) -> dict[str, Any]:
        sdk, gw = self.best(SDK), self.best(GATEWAY)
        one = next((p for p in self.points if p.concurrency == 1), None)
        ratio = gw.throughput(GATEWAY) / sdk.throughput(SDK) if sdk and gw else None  # type: ignore[operator]
        p50_sdk, p50_gw = (one.p50_ms(SDK), one.p50_ms(GATEWAY)) if one else (None, None)
        delta = p50_gw - p50_sdk if p50_sdk is not None and p50_gw is not None else None
        return {
            "best_sdk": {"concurrency": sdk.concurrency, "calls_per_s": sdk.throughput(SDK)} if sdk else None,
            "best_gateway": {"concurrency": gw.concurrency, "calls_per_s": gw.throughput(GATEWAY)} if gw else None,
            "throughput_ratio": ratio,
            "throughput_target_held": None if ratio is None else ratio >= THROUGHPUT_TARGET,
            "p50_c1_ms": {"sdk": p50_sdk, "gateway": p50_gw, "delta": delta},
            "p50_target_held": None if delta is None else delta <= P50_TARGET_MS,
            "gateway_cpu_us_per_call_at_best": gw.gateway_cpu_us_per_call() if gw else None,
        }

    def to_dict(self) -> dict[str, Any]:
        points = [
            {
                "concurrency": p.concurrency,
                **{
                    path: {"calls_per_s": p.throughput(path), "p50_ms": p.p50_ms(path), "errors": p.errors(path),
                           "runs_calls_per_s": [r.calls_per_s for r in p.rounds[path]]}
                    for path in (SDK, GATEWAY)
                },
                "gateway_cpu_us_per_call": p.gateway_cpu_us_per_call(),
            }
            for p in self.points
        ]  # fmt: skip
        return json_safe({"model": self.model, "cpu_split": self.split, "encoding_format": self.encoding_format,
                          "points": points, "figures": self.figures()})  # fmt: skip


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: GatewayBenchResult) -> str:
    """The sweep side by side, then the targets."""
    lines = [
        f"Through the gateway vs the SDK's gRPC path on {result.model} ({result.split}); one text per call, "
        f"gateway encoding_format={result.encoding_format}",
        f"{'callers':>8}{'SDK req/s':>11}{'gw req/s':>10}{'gw/SDK':>8}{'SDK p50 ms':>12}{'gw p50 ms':>11}"
        f"{'gw CPU us/req':>15}{'errors SDK/gw':>15}",
    ]
    for p in result.points:
        sdk, gw = p.throughput(SDK), p.throughput(GATEWAY)
        lines.append(
            f"{p.concurrency:>8}{_fmt(sdk, '.1f'):>11}{_fmt(gw, '.1f'):>10}"
            f"{_fmt(gw / sdk if sdk and gw else None, '.3f'):>8}{_fmt(p.p50_ms(SDK), '.2f'):>12}"
            f"{_fmt(p.p50_ms(GATEWAY), '.2f'):>11}{_fmt(p.gateway_cpu_us_per_call(), '.0f'):>15}"
            f"{f'{p.errors(SDK)}/{p.errors(GATEWAY)}':>15}"
        )
    f = result.figures()
    best_sdk, best_gw, p50 = f["best_sdk"], f["best_gateway"], f["p50_c1_ms"]

    def held(value: bool | None) -> str:
        return "-" if value is None else "held" if value else "MISSED"

    if best_sdk and best_gw:
        lines.append(
            f"best point: SDK {best_sdk['calls_per_s']:.1f} req/s at {best_sdk['concurrency']}, gateway "
            f"{best_gw['calls_per_s']:.1f} req/s at {best_gw['concurrency']}: {f['throughput_ratio']:.3f}x "
            f"(target >= {THROUGHPUT_TARGET}x: {held(f['throughput_target_held'])})"
        )
    lines.append(
        f"p50 at 1 caller: SDK {_fmt(p50['sdk'], '.2f')} ms, gateway {_fmt(p50['gateway'], '.2f')} ms, "
        f"{_fmt(p50['delta'], '+.2f')} ms (target <= +{P50_TARGET_MS:g} ms: {held(f['p50_target_held'])})"
    )
    lines.append(
        f"the gateway's own CPU: {_fmt(f['gateway_cpu_us_per_call_at_best'], '.0f')} us per request at its best point"
    )
    return "\n".join(lines)


def write(result: GatewayBenchResult, report_dir: Path) -> Path:
    return write_summary(result.to_dict(), report_dir)


async def _closed_loop(calls: Sequence[Call], texts: Sequence[str], duration_s: float) -> Round:
    """Each caller sends one text at a time, back to back, for ``duration_s``; every successful call's latency.
    A refused call (shed under overload) is counted, not timed: the sweep goes on past a server's capacity."""
    latencies_us: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def caller(index: int, call: Call) -> None:
        nonlocal errors
        sent = index
        while time.perf_counter() < deadline:
            text = texts[sent % len(texts)]
            start = time.perf_counter()
            try:
                await call(text)
            except TritonStackError:  # the SDK's errors, and a gateway's non-2xx answer (BenchError)
                errors += 1
            else:
                latencies_us.append((time.perf_counter() - start) * 1e6)
            sent += len(calls)

    start = time.perf_counter()
    await asyncio.gather(*(caller(i, call) for i, call in enumerate(calls)))
    return Round(latencies_us, time.perf_counter() - start, errors=errors)


async def _sdk_round(url: str, model: str, concurrency: int, texts: Sequence[str], duration_s: float) -> Round:
    from tritonstack.client import AsyncClient

    async with AsyncClient(url, model=model) as client:
        await client.embed([texts[0]])  # connect outside the window

        async def call(text: str) -> object:
            return await client.embed([text])

        return await _closed_loop([call] * concurrency, texts, duration_s)


def _post_text(connection: HTTPConnection, bodies: dict[str, bytes], text: str) -> Awaitable[bytes]:
    return connection.post(EMBEDDINGS_PATH, bodies[text])


async def _gateway_round(
    gateway: GatewayServer, model: str, concurrency: int, texts: Sequence[str], duration_s: float, encoding: str
) -> Round:
    connections = [await HTTPConnection.open(gateway.url) for _ in range(concurrency)]
    bodies = {t: json.dumps({"model": model, "input": [t], "encoding_format": encoding}).encode() for t in texts}
    try:
        await connections[0].post(EMBEDDINGS_PATH, bodies[texts[0]])
        calls: list[Call] = [functools.partial(_post_text, c, bodies) for c in connections]
        cpu_start = gateway.cpu_s()
        measured = await _closed_loop(calls, texts, duration_s)
        measured.gateway_cpu_s = gateway.cpu_s() - cpu_start
        return measured
    finally:
        for connection in connections:
            connection.close()


def measure(
    triton_url: str, gateway: GatewayServer, model: str, texts: Sequence[str], *, concurrencies: Sequence[int],
    rounds: int, duration_s: float, encoding: str = "base64", split: str = "not pinned", log: Log = print,
    progress: Progress | None = None,
) -> GatewayBenchResult:  # fmt: skip
    """The sweep against a running Triton and a running gateway in front of it; ``progress`` shows the round
    being measured and the last throughput (``measure.progress``)."""
    progress = progress or Progress.off()
    progress.plan(len(concurrencies) * rounds * 2 * duration_s, pace=1.0)
    points = []
    for concurrency in concurrencies:
        point = Point(concurrency)
        for k in range(1, rounds + 1):  # alternate, so that neither path gets only the cold or the hot server
            progress.start(f"gateway bench: c={concurrency} SDK, round {k}/{rounds}", duration_s)
            point.rounds[SDK].append(asyncio.run(_sdk_round(triton_url, model, concurrency, texts, duration_s)))
            progress.measured(f"SDK {point.rounds[SDK][-1].calls_per_s:.1f} req/s")
            progress.start(f"gateway bench: c={concurrency} gateway, round {k}/{rounds}", duration_s)
            point.rounds[GATEWAY].append(
                asyncio.run(_gateway_round(gateway, model, concurrency, texts, duration_s, encoding))
            )
            progress.measured(f"gateway {point.rounds[GATEWAY][-1].calls_per_s:.1f} req/s")
        log(
            f"    {concurrency:>4} callers: SDK {_fmt(point.throughput(SDK), '.1f')} req/s, "
            f"gateway {_fmt(point.throughput(GATEWAY), '.1f')} req/s"
        )
        points.append(point)
    return GatewayBenchResult(model, split, encoding, points)


def run_gateway_bench(
    repository: Path, model: str, texts: Sequence[str], *, concurrencies: Sequence[int], rounds: int,
    duration_s: float, report_dir: Path, cpu_split: str = "pinned", log: Log = print,
    progress: Progress | None = None,
) -> GatewayBenchResult:  # fmt: skip
    """Start Triton over ``repository`` and a gateway in front of it on the server cores; measure from the
    client cores. ``log`` should step aside for ``progress`` (``Progress.write``)."""
    from tritonstack.bench.served import serving

    progress = progress or Progress.off()
    split = cpus.plan(cpu_split)
    log(f"==> gateway vs SDK: {split.describe()}")
    progress.start("starting Triton and the gateway")
    with serving(repository, split, log_path=report_dir / "triton.log", log=log) as server:
        gateway = GatewayServer(server.grpc_url, log_path=report_dir / "gateway.log")
        with cpus.pinned(split.server):  # the gateway serves: it gets the server's cores, not the load's
            gateway.start()
        try:
            with cpus.pinned(split.client):
                return measure(
                    server.grpc_url, gateway, model, texts, concurrencies=concurrencies, rounds=rounds,
                    duration_s=duration_s, split=split.describe(), log=log, progress=progress,
                )  # fmt: skip
        finally:
            progress.start("stopping the gateway and Triton")
            gateway.stop()
