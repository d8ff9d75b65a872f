"""Run the embedded Triton server (loopback unless --expose) over a model repository until interrupted.

On a GPU host it serves ``KIND_GPU`` encoders on the GPU and exports Triton's ``nv_gpu_*`` metrics.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tritonstack.repository import staging
from tritonstack.repository.paths import DEFAULT_REPOSITORY
from tritonstack.server import flags
from tritonstack.server.admin_key import AdminKey, write_key_file
from tritonstack.server.embedded import EmbeddedServer
from tritonstack.server.exposure import (
    admin_key_visible_locally,
    exposure_warning,
    is_loopback,
    require_explicit_exposure,
    visible_key_note,
)
from tritonstack.server.response_cache import format_size, models_with_cache, parse_size_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository")
    parser.add_argument(
        "--bind", default=flags.LOOPBACK, help="address to listen on; anything but loopback needs --expose"
    )
    parser.add_argument(
        "--expose",
        action="store_true",
        help="allow a --bind address other hosts can reach (needs an admin key you chose; see docs/deploy.md)",
    )
    parser.add_argument(
        "--allow-local-key-exposure",
        action="store_true",
        help="with --expose: accept that local users can read the admin key on Triton's command line, on a "
        "host whose /proc has no hidepid (Triton 2.51 takes it no other way; see docs/deploy.md)",
    )
    parser.add_argument("--http-port", type=int, default=flags.HTTP_PORT, help="HTTP port (0: pick a free one)")
    parser.add_argument("--grpc-port", type=int, default=flags.GRPC_PORT, help="gRPC port (0: pick a free one)")
    parser.add_argument("--metrics-port", type=int, default=flags.METRICS_PORT, help="metrics port (0: free one)")
    parser.add_argument(
        "--admin-key",
        default=None,
        help=f"key for the restricted admin APIs ({', '.join(flags.RESTRICTED_APIS)}), sent in the "
        f"'{flags.ADMIN_KEY_HEADER}' header; default ${flags.ADMIN_KEY_ENV} (keeps it out of tritonstack's "
        "command line; Triton's own still carries it, see docs/deploy.md), else a random key written to "
        "--admin-key-file",
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        default=None,
        help="where a generated admin key is written, readable only by you (default: admin-key next to --log-file)",
    )
    parser.add_argument(
        "--cache-size",
        type=_size_bytes,
        default=None,
        metavar="SIZE",
        help="memory of Triton's local response cache (256MiB, 1GiB, bytes); default "
        f"{format_size(flags.DEFAULT_LOCAL_CACHE_BYTES)} when a model enables the cache (export --cache), else none",
    )
    parser.add_argument("--log-file", type=Path, default=Path(".tritonstack/triton.log"), help="Triton's log")
    parser.add_argument("--ready-timeout-s", type=float, default=300.0, help="how long to wait for the models to load")
    parser.add_argument("--no-validate", action="store_true", help="skip `tritonstack validate` before starting")


def _size_bytes(text: str) -> int:
    try:
        return parse_size_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cache_line(cache: flags.LocalCache | None, cached_models: list[str]) -> str:
    if cache is None:
        return "none (no model enables response_cache)"
    size = f"local, {format_size(cache.size_bytes)}"
    return f"{size} for {', '.join(cached_models)}" if cached_models else f"{size}; no model enables response_cache"


def run(args: argparse.Namespace) -> int:
    from tritonstack.repository.validate import check_repository  # tritonclient's protobufs: not on --help

    admin_key = AdminKey.resolve(args.admin_key)
    key_visible = admin_key_visible_locally()
    if not is_loopback(args.bind):
        require_explicit_exposure(
            args.bind,
            expose=args.expose,
            key=admin_key,
            allow_local_key_exposure=args.allow_local_key_exposure,
            key_visible=key_visible,
        )
        print(exposure_warning(args.bind), file=sys.stderr, flush=True)
    if key_visible:
        print(visible_key_note(), file=sys.stderr, flush=True)
    for stale in staging.sweep_before_serving(args.repository):  # before validate: a killed export's staging folder
        print(f"removed {stale} (left by a writer that was killed)", file=sys.stderr, flush=True)
    if not args.no_validate:
        check_repository(args.repository)
    if admin_key.chosen:
        key_note = f"key from {admin_key.source.value}"
    else:
        key_file = write_key_file(admin_key, args.admin_key_file or args.log_file.parent / "admin-key")
        key_note = f"key in {key_file} (generated for this run, readable only by you)"
    server = EmbeddedServer(
        args.repository,
        bind_address=args.bind,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        admin_key=admin_key.value,
        log_path=args.log_file,
        ready_timeout_s=args.ready_timeout_s,
        cache_size_bytes=args.cache_size,
        expose=args.expose,
        allow_local_key_exposure=args.allow_local_key_exposure,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_signal_starting(signum: int, frame: FrameType | None) -> None:
        raise _StartInterrupted(signum)  # out of the wait for ready: start() stops Triton on its way out

    # Installed before the start, raising: while the models load (up to --ready-timeout-s) Ctrl-C stops it
    # at once. Once ready, a signal only asks the loop below to stop gracefully.
    previous = {sig: signal.signal(sig, on_signal_starting) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"starting Triton over {args.repository} (log: {args.log_file}) ...", flush=True)
        try:
            server.start()
            for sig in previous:
                signal.signal(sig, on_signal)
        except _StartInterrupted as interrupted:
            server.stop()
            print("interrupted during start-up: Triton stopped", file=sys.stderr, flush=True)
            return 128 + interrupted.signum
        try:
            print(f"gRPC     {server.grpc_url}")
            print(f"HTTP     {server.http_url}")
            print(f"metrics  {server.metrics_url}")
            for gpu in server.gpus:  # KIND_GPU instances run here; Triton exports nv_gpu_* for each
                print(f"gpu      {gpu.describe()}")
            if not server.gpus:
                print("gpu      none visible: KIND_GPU models cannot load, GPU metrics off")
            for model in server.models():
                print(f"model    {model['name']} v{model.get('version', '?')} {model.get('state', '')}")
            print(f"cache    {_cache_line(server.cache, models_with_cache(args.repository))}")
            print(f"admin    {key_note}")
            print(f"         sent as header {flags.ADMIN_KEY_HEADER} (gRPC: {flags.GRPC_ADMIN_KEY_HEADER})")
            print("ready; Ctrl-C stops gracefully (in-flight requests finish)", flush=True)
            while not stop.wait(0.5):
                if server.process is None or server.process.poll() is not None:
                    print("error: Triton exited unexpectedly; see the log", file=sys.stderr)
                    return 1
            print("stopping ...", flush=True)
        finally:
            server.stop()
        print("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StartInterrupted(BaseException):
    """SIGINT or SIGTERM while Triton starts (a BaseException, like KeyboardInterrupt: nothing catches it
    on its way out of the start but the cleanup)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
