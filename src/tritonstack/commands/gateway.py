"""Run the OpenAI/Cohere-compatible HTTP gateway in front of Triton (loopback unless given API keys).

One uvicorn process: scale out with replicas (they share the Redis cache), not workers. docs/gateway.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from pathlib import Path
from typing import Any

from tritonstack._exceptions import TritonStackError
from tritonstack._ports import DEFAULT_GATEWAY_PORT, LOCAL_GRPC_URL, LOOPBACK
from tritonstack.commands._args import add_tls, tls_config

REDIS_PASSWORD_ENV = "TRITONSTACK_REDIS_PASSWORD"
GRACEFUL_SHUTDOWN_S = 30  # requests accepted before SIGTERM get this long to finish


class GatewayStartError(TritonStackError):
    """The gateway cannot start as asked."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--triton", action="append", default=None, metavar="HOST:PORT",
        help=f"Triton's gRPC endpoint, host:port or grpcs://host:port (TLS); repeat for failover "
        f"(default: {LOCAL_GRPC_URL})",
    )  # fmt: skip
    add_tls(parser)
    parser.add_argument("--host", default=LOOPBACK, help="address to listen on; anything but loopback needs API keys")
    parser.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT, help="port (0: pick a free one)")
    parser.add_argument("--config", type=Path, default=None, help="gateway config (YAML: prefixes, truncate, releases)")
    parser.add_argument(
        "--api-key-file", type=Path, default=None,
        help="API keys, one a line (default: $TRITONSTACK_GATEWAY_API_KEYS, comma-separated; none: auth off)",
    )  # fmt: skip
    parser.add_argument("--redis-url", default=None, help="Redis for the shared response cache (redis://host:6379/0)")
    parser.add_argument(
        "--redis-password-file", type=Path, default=None, help=f"Redis password (default: ${REDIS_PASSWORD_ENV})"
    )
    parser.add_argument(
        "--cache-ttl-s", type=int, default=None, help="cache entries' lifetime (default: config, else 3600)"
    )
    parser.add_argument("--timeout-s", type=float, default=10.0, help="deadline of each request's Triton calls")
    parser.add_argument("--max-body-bytes", type=int, default=None, help="largest request body (default 8 MiB)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from tritonstack.gateway.app import create_app, record_cache_result
    from tritonstack.gateway.auth import load_api_keys
    from tritonstack.gateway.settings import DEFAULT_MAX_BODY_BYTES, GatewaySettings, load_config
    from tritonstack.server.exposure import is_loopback
    from tritonstack.server.flags import ADMIN_KEY_ENV

    keys = load_api_keys(args.api_key_file)
    if not keys and not is_loopback(args.host):
        raise GatewayStartError(
            f"refusing to listen on {args.host} without API keys: anyone who reaches it could call the models",
            hint="set TRITONSTACK_GATEWAY_API_KEYS or pass --api-key-file (docs/gateway.md, 'Auth')",
        )
    config = load_config(args.config)
    settings = GatewaySettings(
        triton_urls=tuple(args.triton or [LOCAL_GRPC_URL]),
        tls=tls_config(args),
        config=config,
        api_keys=keys,
        timeout_s=args.timeout_s,
        max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        admin_key=os.environ.get(ADMIN_KEY_ENV) or None,
        host=args.host,
    )
    if settings.tls is not None:
        settings.tls.credentials()  # read the PEM files now: a wrong path stops the command, not the app's startup
    cache = None
    if args.redis_url:
        from tritonstack.gateway.cache import ResponseCache

        ttl_s = args.cache_ttl_s or config.cache_ttl_s or 3600
        cache = ResponseCache(
            args.redis_url, password=_redis_password(args.redis_password_file), ttl_s=ttl_s,
            on_result=record_cache_result,
        )  # fmt: skip
    app = create_app(settings, cache=cache)
    listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY (Linux). Without it a response's head and body, two writes, wait
    # on the caller's delayed ACK: measured 44 ms on every request, /metrics included, instead of ~1 ms.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((args.host, args.port))
    except OSError as error:
        raise GatewayStartError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    port = listener.getsockname()[1]
    where = f"http://{args.host}:{port}"
    uv_config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )  # fmt: skip
    tls = "mutual TLS" if settings.tls and settings.tls.client_cert else "TLS" if settings.tls else "plaintext"
    ready = f"ready {where} -> Triton {', '.join(settings.triton_urls)}"
    state = f"auth {'on' if keys else 'off'}, cache {'redis' if cache else 'off'}, gRPC {tls}"
    _serve(uv_config, listener, f"{ready} ({state})")
    return 0


def _redis_password(path: Path | None) -> str | None:
    if path is not None:
        try:
            return path.read_text().strip() or None
        except OSError as error:
            raise GatewayStartError(f"cannot read the Redis password file {path}: {error.strerror}") from None
    return os.environ.get(REDIS_PASSWORD_ENV) or None


def _serve(config: Any, listener: socket.socket, ready_line: str) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, printing one line once it listens (what scripts and tests wait for)."""

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                print(ready_line, flush=True)

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again (restoring the handler it found):
    # with this one in place the command ends with status 0 after a graceful stop, as an orchestrator expects.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        Server(config).run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)
