"""Where tokenization happens: the text-in model (Triton) vs the gateway (``tokenize_at: gateway``), measured.

``python -m tritonstack.bench.tokenize_location --repository R --fused F --ensemble E`` starts one embedded Triton
over ``R`` and two real ``tritonstack gateway`` processes in front of it: one as shipped (texts to the text-in
models ``F``, fused layout, and ``E``, ensemble layout) and one with ``models: E: {tokenize_at: gateway}`` (token
ids to ``E_encoder``). It drives /v1/embeddings, one text per request, in closed loops at each concurrency with the
bench's texts and with short queries, the three paths alternating in every round, and prints throughput, p50 and
the CPU per request of the gateway process and of Triton's process group (both from /proc). docs/gateway.md,
"Where tokenization happens", has a run and what it decided.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack.bench.gateway import EMBEDDINGS_PATH, GatewayServer, HTTPConnection
from tritonstack.bench.texts import make_texts
from tritonstack.measure import cpus
from tritonstack.measure.load import closed_loop
from tritonstack.measure.samples import percentile_ms

QUERIES = ("what is the capital of france", "cheap flights to tokyo", "how do i reset my password",
           "best pizza near me", "symptoms of the flu", "python sort a list", "weather tomorrow",
           "who wrote hamlet")  # fmt: skip


@dataclass
class Figures:
    """One path, one text set, one concurrency: a value per alternation."""

    throughput: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    gateway_cpu_us: list[float] = field(default_factory=list)
    triton_cpu_us: list[float] = field(default_factory=list)


class _GatewayCpu:
    """The load's probe: the gateway process's CPU seconds over the window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    async def snapshot(self) -> float:
        return cpus.process_cpu_s(self.pid)

    def diff(self, first: float, last: float, elapsed_s: float) -> dict[str, Any]:
        return {"gateway_cpu_s": last - first}


async def _round(url: str, model: str, texts: Sequence[str], concurrency: int, pgid: int, pid: int,
                 args: argparse.Namespace) -> tuple[float, float, float, float]:  # fmt: skip
    connections = [await HTTPConnection.open(url) for _ in range(concurrency)]
    idle = list(connections)
    bodies = [json.dumps({"model": model, "input": text, "encoding_format": "base64"}).encode() for text in texts]

    async def send(index: int) -> None:
        connection = idle.pop()
        try:
            await connection.post(EMBEDDINGS_PATH, bodies[index])
        finally:
            idle.append(connection)

    try:
        found, probe = await closed_loop(
            send, [1] * len(texts), concurrency, warmup_s=args.warmup_s, duration_s=args.duration_s,
            server_cpu_s=lambda: cpus.group_cpu_s(pgid), probe=_GatewayCpu(pid),
        )  # fmt: skip
    finally:
        for connection in connections:
            connection.close()
    if found.errors:
        raise RuntimeError(f"{found.errors} failed calls: {found.first_error}")
    done = max(found.completed, 1)
    gateway_cpu_s = (probe or {}).get("gateway_cpu_s", 0.0)
    return (found.throughput_per_s, percentile_ms(found.latencies_us, 50) or 0.0, gateway_cpu_s / done * 1e6,
            (found.server_cpu_s or 0.0) / done * 1e6)  # fmt: skip


def tokenize_cost(repository: Path, name: str) -> list[tuple[int, float]]:
    """Milliseconds to tokenize (count and pad) n bench texts in one call, as the gateway does: what an event
    loop would be held for without a thread."""
    from tritonstack.gateway.tokenize import GatewayTokenizer, read_target

    tokenizer = GatewayTokenizer(read_target(repository, name))
    costs = []
    for rows in (1, 16, 64, 256, 2048):
        texts = make_texts(rows, seed=1)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            tokenizer.batches(tokenizer.tokenize(texts), 64)
            best = min(best, time.perf_counter() - start)
        costs.append((rows, best * 1e3))
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonstack.bench.tokenize_location", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--fused", required=True, help="a text-in model of the fused layout")
    parser.add_argument("--ensemble", required=True, help="a text-in model of the ensemble layout")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--alternations", type=int, default=3)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args(argv)
    from tritonstack.server import EmbeddedServer

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    text_sets = {"bench texts": make_texts(256, seed=0), "short queries": list(QUERIES)}
    print("tokenize n bench texts in the gateway (ms, best of 5):",
          ", ".join(f"{n}: {ms:.2f}" for n, ms in tokenize_cost(args.repository, args.ensemble)))  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="tokenize-location-"))
    paths = {"text-in fused": ("shipped", args.fused), "text-in ensemble": ("shipped", args.ensemble),
             "gateway tokenizes": ("gateway", args.ensemble)}  # fmt: skip
    figures: dict[tuple[str, str, int], Figures] = {}
    with EmbeddedServer(args.repository, log_path=workdir / "triton.log") as server:
        configs = {
            "shipped": "{}",
            "gateway": f"models:\n  {args.ensemble}: {{tokenize_at: gateway, repository: {args.repository}}}\n",
        }
        gateways: dict[str, GatewayServer] = {}
        try:
            for which, config in configs.items():
                config_path = workdir / f"{which}.yaml"
                config_path.write_text(config)
                gateway = GatewayServer(
                    server.grpc_url, log_path=workdir / f"{which}.log", extra=["--config", str(config_path)]
                )
                gateways[which] = gateway.start()
            for alternation in range(args.alternations):
                for concurrency in concurrencies:
                    for set_name, texts in text_sets.items():
                        for path, (which, model) in paths.items():
                            gateway = gateways[which]
                            found = asyncio.run(
                                _round(gateway.url, model, texts, concurrency, server.pid, gateway.pid, args)
                            )
                            entry = figures.setdefault((set_name, path, concurrency), Figures())
                            for values, value in zip(
                                (entry.throughput, entry.p50_ms, entry.gateway_cpu_us, entry.triton_cpu_us), found,
                                strict=True,
                            ):  # fmt: skip
                                values.append(value)
                print(f"  alternation {alternation + 1}/{args.alternations} done", flush=True)
        finally:
            for gateway in gateways.values():
                gateway.stop()
    print(table(figures, concurrencies, list(text_sets), list(paths)))
    print(f"(machine: {os.cpu_count()} cores; medians of {args.alternations} alternations; "
          f"ratios to 'text-in fused' of the same alternation)")  # fmt: skip
    return 0


def table(figures: dict[tuple[str, str, int], Figures], concurrencies: list[int], sets: list[str],
          paths: list[str]) -> str:  # fmt: skip
    """The figures side by side: medians, and each path's throughput ratio to the first path's (per alternation)."""
    lines = [f"{'texts':<14}{'c':>3}  {'path':<18}{'req/s':>8}{'x fused':>8}{'p50 ms':>8}"
             f"{'gw CPU us/req':>14}{'Triton CPU us/req':>18}"]  # fmt: skip
    for set_name in sets:
        for concurrency in concurrencies:
            base = figures[(set_name, paths[0], concurrency)]
            for path in paths:
                f = figures[(set_name, path, concurrency)]
                ratio = statistics.median(a / b for a, b in zip(f.throughput, base.throughput, strict=True) if b)
                lines.append(
                    f"{set_name:<14}{concurrency:>3}  {path:<18}{statistics.median(f.throughput):>8.1f}"
                    f"{ratio:>8.2f}{statistics.median(f.p50_ms):>8.2f}{statistics.median(f.gateway_cpu_us):>14.0f}"
                    f"{statistics.median(f.triton_cpu_us):>18.0f}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
