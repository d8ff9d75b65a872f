"""Where the stack's servers listen by default: a ground-floor module the SDK's command, the CLI,
``server/flags.py`` and the load test's exporter read, so no command imports a server (or the SDK) to learn a
port."""

from __future__ import annotations

LOOPBACK = "127.0.0.1"  # the stack's local processes bind loopback unless told otherwise

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
# The load test's client-latency exporter (monitoring/prometheus/prometheus.yml scrapes loadtest at this port;
# `tritonstack monitor` reads it too).
LOADTEST_EXPORTER_PORT = 9646
DEFAULT_GATEWAY_PORT = 8080  # tritonstack gateway's HTTP port (OpenAI/Cohere routes)

LOCAL_GRPC_URL = f"{LOOPBACK}:{GRPC_PORT}"  # the embedded server's gRPC endpoint at the default port
