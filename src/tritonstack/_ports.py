"""Where the stack's servers listen by default: a ground-floor module the SDK's command, the CLI and
``server/flags.py`` read, so the client never imports the server to learn a port."""

from __future__ import annotations

LOOPBACK = "127.0.0.1"  # the stack's local processes bind loopback unless told otherwise

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

LOCAL_GRPC_URL = f"{LOOPBACK}:{GRPC_PORT}"  # the embedded server's gRPC endpoint at the default port
