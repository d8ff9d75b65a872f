"""The main job end to end: export the bundled MiniLM, serve it, call it (SDK and gateway), load-test it, report.

Runs on the embedded default (CPU, loopback, free ports) and stops everything
it started. Each step is the same code a user runs by hand; the commands are
printed as it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tritonstack.export.bundled import bundled_minilm
from tritonstack.repository.paths import DEFAULT_REPOSITORY
from tritonstack.server import EmbeddedServer

DEMO_SENTENCES = (
    "Triton serves many models on one GPU.",
    "One server can host several models on a single graphics card.",
    "The cat sat on the mat.",
    "Tokenization runs inside the server, so clients send plain text.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument("--name", default="minilm", help="name of the served model")
    parser.add_argument("--slo", type=Path, default=Path("loadtest/slo.yaml"), help="SLO file of the load test")
    parser.add_argument("--run-time", default="20s", help="duration of the load test")
    parser.add_argument("--users", type=int, default=None, help="concurrent load-test users (default: the SLO's)")
    parser.add_argument("--reexport", action="store_true", help="export again even if the model is there")


def _step(title: str, command: str | None = None) -> None:
    print(f"\n==> {title}", flush=True)
    if command:
        print(f"    $ {command}", flush=True)


def _detail(line: str) -> None:
    print(f"    {line}", flush=True)


def _export(args: argparse.Namespace) -> None:
    from tritonstack.export.ensure import ensure_exported  # torch, onnx: what a run imports, not --help

    _step("export all-MiniLM-L6-v2 -> ONNX, optimized/quantized, parity-gated (fastest passing candidate)")
    ensure_exported(bundled_minilm(), args.repository, args.name, reexport=args.reexport, log=_detail)


def _call(server_url: str, name: str) -> Any:
    import numpy as np  # numpy and the SDK (gRPC): what a run imports, not --help

    from tritonstack.client import Client

    _step("embed a few sentences through the text-in model", f"tritonstack infer --url {server_url} --model {name}")
    with Client(server_url, model=name) as client:
        started = time.perf_counter()
        vectors = client.embed(list(DEMO_SENTENCES))
        elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"    {len(vectors)} embeddings of dimension {vectors.shape[1]} in {elapsed_ms:.1f} ms")
    for sentence, vector in zip(DEMO_SENTENCES, vectors, strict=True):
        print(f"    [{', '.join(f'{x:+.3f}' for x in vector[:4])}, ...] |v|={np.linalg.norm(vector):.3f}  {sentence}")
    similarity = vectors @ vectors.T
    print("    cosine similarity:")
    for i, row in enumerate(similarity):
        print("     " + " ".join(f"{x:5.2f}" for x in row) + f"   ({i})")
    return vectors


def _gateway_call(server_url: str, name: str, vectors: Any) -> None:
    """One call through ``tritonstack gateway`` (the OpenAI-compatible HTTP front) started as a user starts it,
    compared with the SDK's vectors."""
    import urllib.request

    import numpy as np

    command = ["gateway", "--triton", server_url, "--port", "0"]
    _step("the same sentences through the OpenAI-compatible gateway", "tritonstack " + " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRITONSTACK_GATEWAY_API_KEYS": ""}  # loopback, no key
    gateway = subprocess.Popen(
        [sys.executable, "-m", "tritonstack", *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert gateway.stdout is not None
        url = next((line.split()[1] for line in gateway.stdout if line.startswith("ready ")), None)
        if url is None:
            raise RuntimeError(f"tritonstack gateway exited with status {gateway.wait()} before it was ready")
        body = {"model": name, "input": list(DEMO_SENTENCES), "encoding_format": "float"}
        _detail(f"$ curl {url}/v1/embeddings -H 'Content-Type: application/json' -d '{json.dumps(body)[:60]}...'")
        request = urllib.request.Request(
            f"{url}/v1/embeddings", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        served = np.array([item["embedding"] for item in answer["data"]], dtype=np.float32)
        cosine = (served * vectors).sum(axis=1) / np.linalg.norm(served, axis=1) / np.linalg.norm(vectors, axis=1)
        _detail(
            f"{answer['object']} of {len(answer['data'])} {answer['data'][0]['object']}s, model {answer['model']}, "
            f"usage {answer['usage']}; cosine to the SDK's vectors: min {cosine.min():.6f}"
        )
    finally:
        gateway.terminate()  # SIGTERM: uvicorn's graceful stop
        try:
            gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()


def _loadtest(args: argparse.Namespace, server: EmbeddedServer) -> int:
    # Its own process: Locust monkey-patches the standard library with gevent, which must
    # happen before gRPC is imported (this process has already used gRPC).
    command = ["loadtest", "--slo", str(args.slo), "--host", server.grpc_url, "--metrics-url", server.metrics_url]
    command += ["--run-time", args.run_time]
    if args.users is not None:
        command += ["--users", str(args.users)]
    _step("load-test against the SLO", "tritonstack " + " ".join(command))
    return subprocess.run([sys.executable, "-m", "tritonstack", *command], check=False).returncode


def run(args: argparse.Namespace) -> int:
    _export(args)
    _step(f"serve {args.repository} on the embedded Triton (CPU, loopback)", "tritonstack serve")
    log = Path(".tritonstack/demo-triton.log")
    with EmbeddedServer(args.repository, log_path=log) as server:
        print(f"    gRPC {server.grpc_url}   HTTP {server.http_url}   metrics {server.metrics_url}")
        print(f"    log {log}")
        vectors = _call(server.grpc_url, args.name)
        _gateway_call(server.grpc_url, args.name, vectors)
        verdict = _loadtest(args, server)
        _step("stop the server (graceful)")
    print(f"\ndemo finished; load-test verdict exit code {verdict} (0: the SLO held)")
    return verdict
