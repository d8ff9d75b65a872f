"""Triton's command-line flags: the one source of truth.

The embedded server, ``docker-compose.yml`` and the Kubernetes manifests all
run Triton with these flags and ports; ``tests/deploy/test_deploy_consistency.py``
fails when one of them drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

# Triton binds loopback unless told otherwise; the ports and addresses live in the ground-floor _ports.py, which
# the SDK's command reads without importing the server.
from tritonstack._ports import GRPC_PORT as GRPC_PORT
from tritonstack._ports import HTTP_PORT as HTTP_PORT
from tritonstack._ports import LOCAL_GRPC_URL as LOCAL_GRPC_URL
from tritonstack._ports import LOOPBACK as LOOPBACK
from tritonstack._ports import METRICS_PORT as METRICS_PORT

# Admin APIs that need the admin key header. Health, metadata, inference,
# model-config and statistics stay open so that clients, probes and the load
# test work without it.
RESTRICTED_APIS = ("model-repository", "logging", "trace", "shared-memory")
ADMIN_KEY_HEADER = "tritonstack-admin-key"
# Triton prefixes the header of a restricted gRPC protocol: gRPC clients send this name.
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"
ADMIN_KEY_ENV = "TRITONSTACK_ADMIN_KEY"

# Every model in the repository loads at start-up, as with "none"; "explicit" also lets the holder of the
# admin key reload a model (the embedded server does when a model's Python stub died, see supervisor.py).
MODEL_CONTROL_MODE = "explicit"
EXIT_TIMEOUT_S = 30

# Behind an L4 balancer (a Kubernetes Service) a gRPC client keeps one connection
# for its lifetime, so replicas added by the autoscaler get no traffic from
# existing clients. A maximum connection age makes Triton send GOAWAY (gRPC adds
# +/-10% jitter); clients reconnect transparently and spread over the replicas.
# Only containers set it: the embedded server is a single loopback process.
GRPC_MAX_CONNECTION_AGE_MS = 60_000
GRPC_MAX_CONNECTION_AGE_GRACE_MS = 30_000

# Where compose and Kubernetes mount the gRPC TLS secret (docker-compose.tls.yml,
# deploy/k8s/components/grpc-tls), under the names of a kubernetes.io/tls Secret.
TLS_DIR = "/etc/tritonstack/tls"

# Triton's response cache (models opt in with response_cache in their config; docs/cache.md). The embedded
# server runs the in-process `local` cache the nvidia-pytriton wheel ships; compose and Kubernetes run the
# NGC image's `redis` cache against one Redis that every replica shares. The redis cache reads its password
# from this environment variable (redis_cache >= 23.06), which keeps it off the command line.
DEFAULT_LOCAL_CACHE_BYTES = 256 * 2**20
REDIS_HOST = "redis"  # the compose service and the Kubernetes Service
REDIS_PORT = 6379
REDIS_PASSWORD_ENV = "TRITONCACHE_REDIS_PASSWORD"
# A Redis that stalls must not stall inference: the redis cache's timeouts default to "wait forever". A lookup
# that fails counts as a miss and the request is computed (Triton core: CacheLookUpUtil).
REDIS_CONNECT_TIMEOUT_MS = 2000
REDIS_SOCKET_TIMEOUT_MS = 100
REDIS_POOL_SIZE = 8  # connections per Triton replica; a lookup waits for a free one

METRICS_CONFIG = ("summary_latencies=true", "summary_quantiles=0.5:0.05,0.9:0.01,0.95:0.005,0.99:0.001")


@dataclass(frozen=True)
class GrpcTLS:
    """TLS on Triton's gRPC endpoint; PEM file paths as the server sees them.

    With ``client_ca`` the TLS is mutual: a client must present a certificate that
    CA issued, so only holders of one can call the server at all. Triton's HTTP
    endpoint has no TLS of its own and stays plaintext.
    """

    server_cert: str
    server_key: str
    client_ca: str | None = None

    def args(self) -> list[str]:
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.server_cert}", f"--grpc-server-key={self.server_key}"]
        if self.client_ca is not None:
            # Triton reads --grpc-root-cert only to verify client certificates.
            args += [f"--grpc-root-cert={self.client_ca}", "--grpc-use-ssl-mutual=true"]
        return args


# Mutual TLS from the mounted secret, as the compose override and the Kubernetes
# component enable it.
DEPLOYMENT_TLS = GrpcTLS(
    server_cert=f"{TLS_DIR}/tls.crt", server_key=f"{TLS_DIR}/tls.key", client_ca=f"{TLS_DIR}/ca.crt"
)


@dataclass(frozen=True)
class LocalCache:
    """Triton's ``local`` response cache: ``size_bytes`` of memory inside the server process, least recently
    used entries evicted first. Each server (replica) has its own."""

    size_bytes: int = DEFAULT_LOCAL_CACHE_BYTES

    def __post_init__(self) -> None:
        if self.size_bytes < 1:
            raise ValueError(f"a local cache needs a positive size in bytes, got {self.size_bytes}")

    def args(self) -> list[str]:
        return [f"--cache-config=local,size={self.size_bytes}"]


@dataclass(frozen=True)
class RedisCache:
    """Triton's ``redis`` response cache: one Redis shared by every replica, so a text computed by one is a hit
    on all. The password comes from ``$TRITONCACHE_REDIS_PASSWORD`` in Triton's environment, never a flag;
    memory limit and eviction are Redis's own settings (docker-compose.yml, deploy/k8s/redis)."""

    host: str = REDIS_HOST
    port: int = REDIS_PORT
    connect_timeout_ms: int = REDIS_CONNECT_TIMEOUT_MS
    socket_timeout_ms: int = REDIS_SOCKET_TIMEOUT_MS
    pool_size: int = REDIS_POOL_SIZE

    def args(self) -> list[str]:
        settings = {
            "host": self.host,
            "port": self.port,
            "connect_timeout": self.connect_timeout_ms,
            "socket_timeout": self.socket_timeout_ms,
            "pool_size": self.pool_size,
        }
        return [f"--cache-config=redis,{key}={value}" for key, value in settings.items()]


ResponseCache = LocalCache | RedisCache


# The flags (without their dashes) of TritonFlags.args that EmbeddedServer's extra_args may not set again:
# where it listens, on which ports, and the key that guards the restricted APIs (embedded.checked_extra_args).
RESERVED_FLAGS = (
    "http-address",
    "grpc-address",
    "metrics-address",
    "http-port",
    "grpc-port",
    "metrics-port",
    "http-restricted-api",
    "grpc-restricted-protocol",
)


@dataclass(frozen=True)
class TritonFlags:
    """The server's flags, rendered by :meth:`args`.

    ``admin_key`` of ``None`` renders as the placeholder ``$(ADMIN_KEY)`` only in
    :func:`deployment_args`; the embedded server always has a real key.
    """

    model_repository: str
    admin_key: str
    bind_address: str = LOOPBACK
    http_port: int = HTTP_PORT
    grpc_port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    exit_timeout_s: int = EXIT_TIMEOUT_S
    log_verbose: int = 0
    grpc_max_connection_age_ms: int | None = None  # None: the flag is not passed (gRPC: unlimited)
    grpc_max_connection_age_grace_ms: int | None = None
    grpc_tls: GrpcTLS | None = None  # None: plaintext gRPC
    # Triton's nv_gpu_* metrics (DCGM, bundled with Triton). None: the flag is not passed, Triton's default
    # (on where it finds a GPU: the containers); the embedded server decides from the GPUs it sees.
    gpu_metrics: bool | None = None
    cache: ResponseCache | None = None  # None: no response cache (a model that enables one never hits)

    def args(self) -> list[str]:
        restricted = ",".join(RESTRICTED_APIS) + f":{ADMIN_KEY_HEADER}={self.admin_key}"
        args = [
            f"--model-repository={self.model_repository}",
            f"--model-control-mode={MODEL_CONTROL_MODE}",
            "--load-model=*",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={self.bind_address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.bind_address}",
            f"--grpc-port={self.grpc_port}",
            *self._connection_age_args(),
            f"--metrics-address={self.bind_address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            *([] if self.gpu_metrics is None else [f"--allow-gpu-metrics={str(self.gpu_metrics).lower()}"]),
            *(f"--metrics-config={setting}" for setting in METRICS_CONFIG),
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            *(self.cache.args() if self.cache else []),
            f"--log-verbose={self.log_verbose}",
            # Last, so that the Kubernetes component can append them to the Deployment's args.
            *(self.grpc_tls.args() if self.grpc_tls else []),
        ]
        return args

    def _connection_age_args(self) -> list[str]:
        args: list[str] = []
        if self.grpc_max_connection_age_ms is not None:
            args.append(f"--grpc-max-connection-age={self.grpc_max_connection_age_ms}")
        if self.grpc_max_connection_age_grace_ms is not None:
            args.append(f"--grpc-max-connection-age-grace={self.grpc_max_connection_age_grace_ms}")
        return args


# The cache of compose and Kubernetes: their Redis, reached by its service name.
DEPLOYMENT_CACHE = RedisCache()


def deployment_args(
    model_repository: str = "/models", admin_key: str = "$(ADMIN_KEY)", grpc_tls: GrpcTLS | None = None
) -> list[str]:
    """Flags for a container (compose, Kubernetes): bind all interfaces inside the
    container, standard ports; the container runtime decides what is published.
    ``grpc_tls`` is :data:`DEPLOYMENT_TLS` where the TLS secret is mounted. The
    response cache is the shared Redis (:data:`DEPLOYMENT_CACHE`)."""
    return TritonFlags(
        model_repository=model_repository,
        admin_key=admin_key,
        bind_address="0.0.0.0",
        grpc_max_connection_age_ms=GRPC_MAX_CONNECTION_AGE_MS,
        grpc_max_connection_age_grace_ms=GRPC_MAX_CONNECTION_AGE_GRACE_MS,
        grpc_tls=grpc_tls,
        cache=DEPLOYMENT_CACHE,
    ).args()
