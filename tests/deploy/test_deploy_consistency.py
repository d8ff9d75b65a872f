"""One source of truth for Triton's flags and ports: src/tritonstack/server/flags.py.

The embedded server renders ``TritonFlags.args()``; docker-compose.yml and the
Kubernetes Deployment must carry exactly ``deployment_args()``, differing only in
how the admin key is filled in (compose: ``${TRITONSTACK_ADMIN_KEY:?...}``
interpolation; Kubernetes: ``$(ADMIN_KEY)`` from a Secret-backed env var). Their
gRPC TLS variants (docker-compose.tls.yml, the Kubernetes overlay
deploy/k8s/overlays/grpc-tls) carry ``deployment_args(grpc_tls=DEPLOYMENT_TLS)``. Ports,
shutdown timing, the model repository path, the TensorRT engine cache path and
the server user are cross-checked the same way. The flags are also checked
against a real ``tritonserver --help`` (the 2.51.0 binary of nvidia-pytriton).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import kustomize
from tritonstack.repository.config import TensorRTAccelerator
from tritonstack.server import flags

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_TLS = ROOT / "docker-compose.tls.yml"
TLS_OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "grpc-tls"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "triton" / "deployment.yaml"
SERVICE = ROOT / "deploy" / "k8s" / "triton" / "service.yaml"
TRITON_DOCKERFILE = ROOT / "deploy" / "triton" / "Dockerfile"
K8S_ADMIN_KEY = "$(ADMIN_KEY)"


@pytest.fixture(scope="module")
def triton_service() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["triton"]


@pytest.fixture(scope="module")
def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec["containers"]
    return container


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"cannot parse {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _compose_admin_key(command: list[str]) -> str:
    restricted = next(arg for arg in command if arg.startswith("--http-restricted-api="))
    key = restricted.rsplit(f"{flags.ADMIN_KEY_HEADER}=", 1)[1]
    # Compose fails to start when the key is unset or empty (the `:?` form).
    assert re.fullmatch(rf"\$\{{{flags.ADMIN_KEY_ENV}:\?[^}}]+\}}", key), key
    return key


def test_compose_runs_triton_with_deployment_args(triton_service) -> None:
    command = triton_service["command"]
    assert command == ["tritonserver", *flags.deployment_args(admin_key=_compose_admin_key(command))]


def test_compose_tls_override_runs_triton_with_the_tls_deployment_args() -> None:
    command = yaml.safe_load(COMPOSE_TLS.read_text())["services"]["triton"]["command"]
    key = _compose_admin_key(command)
    assert command == ["tritonserver", *flags.deployment_args(admin_key=key, grpc_tls=flags.DEPLOYMENT_TLS)]


def test_kubernetes_tls_overlay_runs_triton_with_the_tls_deployment_args() -> None:
    (deployment,) = (
        o for o in kustomize.build(TLS_OVERLAY) if o["kind"] == "Deployment" and o["metadata"]["name"] == "triton"
    )
    (container,) = kustomize.pod_spec(deployment)["containers"]
    expected = flags.deployment_args(admin_key=K8S_ADMIN_KEY, grpc_tls=flags.DEPLOYMENT_TLS)
    # One change: plaintext HTTP on loopback only, so that clients have mutual-TLS gRPC alone
    # (deploy/k8s/components/grpc-tls; tests/deploy/test_deploy_k8s.py checks who reaches which port).
    everywhere = "--http-address=0.0.0.0"
    assert expected.count(everywhere) == 1
    expected[expected.index(everywhere)] = f"--http-address={flags.LOOPBACK}"
    assert container["args"] == ["tritonserver", *expected]


def test_grpc_tls_is_mutual_exactly_when_a_client_ca_is_given() -> None:
    server_only = flags.GrpcTLS(server_cert="/c.crt", server_key="/c.key").args()
    assert server_only == ["--grpc-use-ssl=true", "--grpc-server-cert=/c.crt", "--grpc-server-key=/c.key"]
    mutual = flags.GrpcTLS(server_cert="/c.crt", server_key="/c.key", client_ca="/ca.crt").args()
    assert mutual == [*server_only, "--grpc-root-cert=/ca.crt", "--grpc-use-ssl-mutual=true"]
    assert not [a for a in flags.deployment_args() if a.startswith("--grpc-use-ssl")], "TLS is opt-in"


def test_kubernetes_runs_triton_with_deployment_args(container) -> None:
    assert "command" not in container, "keep the NGC entrypoint: pass tritonserver in args"
    assert container["args"] == ["tritonserver", *flags.deployment_args(admin_key=K8S_ADMIN_KEY)]
    env = {e["name"]: e for e in container["env"]}
    placeholder = K8S_ADMIN_KEY[2:-1]
    assert set(env[placeholder]["valueFrom"]) == {"secretKeyRef"}, "the admin key comes from a Secret"


def test_the_deployment_restricts_the_admin_apis(container) -> None:
    restricted = [a for a in container["args"] if "restricted" in a]
    assert len(restricted) == 2
    for arg in restricted:
        apis = arg.split("=", 1)[1].split(":", 1)[0].split(",")
        assert tuple(apis) == flags.RESTRICTED_APIS


def test_ports_agree(triton_service, container) -> None:
    expected = {"http": flags.HTTP_PORT, "grpc": flags.GRPC_PORT, "metrics": flags.METRICS_PORT}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected
    service = yaml.safe_load(SERVICE.read_text())
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == expected
    assert {p["target"] for p in triton_service["ports"]} == {flags.HTTP_PORT, flags.GRPC_PORT}
    assert f":{flags.HTTP_PORT}/v2/health/ready" in " ".join(triton_service["healthcheck"]["test"])
    exposed = re.search(r"^EXPOSE (.+)$", TRITON_DOCKERFILE.read_text(), re.M)
    assert exposed and {int(p) for p in exposed.group(1).split()} == set(expected.values())
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    (job,) = (j for j in prometheus["scrape_configs"] if j["job_name"] == "triton")
    assert job["static_configs"][0]["targets"] == [f"triton:{flags.METRICS_PORT}"]


def test_shutdown_outlasts_the_exit_timeout(triton_service, pod_spec, container) -> None:
    assert _seconds(triton_service["stop_grace_period"]) > flags.EXIT_TIMEOUT_S
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod_spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + flags.EXIT_TIMEOUT_S


def test_model_repository_path_agrees(triton_service) -> None:
    repository = flags.deployment_args()[0].split("=", 1)[1]
    assert {m["target"] for m in triton_service["volumes"] if m["type"] == "bind"} == {repository}
    # Kubernetes serves the `bundle` image, which carries the repository there.
    assert re.search(rf"^COPY model_repository/ {repository}/$", TRITON_DOCKERFILE.read_text(), re.M)


def test_tensorrt_engine_cache_is_writable(triton_service, container) -> None:
    cache = TensorRTAccelerator(input_names=("input_ids",), max_batch_size=1, max_sequence_length=8).engine_cache_path
    assert cache in {m["target"] for m in triton_service["volumes"] if m["type"] == "volume"}
    mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert any(cache == path or cache.startswith(path.rstrip("/") + "/") for path in mounts)


def test_the_server_user_agrees(pod_spec) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", TRITON_DOCKERFILE.read_text(), re.M)
    assert user
    context = pod_spec["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))


def _tritonserver() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton (the serve extra) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver" / "bin" / "tritonserver"


def test_tritonserver_knows_every_deployment_flag() -> None:
    # --help exits 1 after printing the usage; the binary finds its libraries by RPATH.
    usage = subprocess.run([str(_tritonserver()), "--help"], capture_output=True, text=True, timeout=60)
    known = set(re.findall(r"^\s+(--[a-z0-9-]+)", usage.stdout + usage.stderr, re.M))
    assert "--model-repository" in known, usage.stdout[-2000:] + usage.stderr[-2000:]
    used = {arg.split("=", 1)[0] for arg in flags.deployment_args(grpc_tls=flags.DEPLOYMENT_TLS)}
    assert {"--grpc-use-ssl", "--grpc-use-ssl-mutual", "--grpc-root-cert"} <= used
    assert used - known == set()


def test_tritonserver_knows_the_embedded_servers_gpu_metrics_flag() -> None:
    usage = subprocess.run([str(_tritonserver()), "--help"], capture_output=True, text=True, timeout=60)
    known = set(re.findall(r"^\s+(--[a-z0-9-]+)", usage.stdout + usage.stderr, re.M))
    for on in (True, False):
        used = {
            a.split("=", 1)[0] for a in flags.TritonFlags(model_repository="/m", admin_key="k", gpu_metrics=on).args()
        }
        assert "--allow-gpu-metrics" in used and used - known == set()


def test_only_containers_set_a_grpc_max_connection_age() -> None:
    embedded = flags.TritonFlags(model_repository="/m", admin_key="k").args()
    assert not [arg for arg in embedded if arg.startswith("--grpc-max-connection-age")]
    deployed = flags.deployment_args()
    assert f"--grpc-max-connection-age={flags.GRPC_MAX_CONNECTION_AGE_MS}" in deployed
    assert f"--grpc-max-connection-age-grace={flags.GRPC_MAX_CONNECTION_AGE_GRACE_MS}" in deployed


# A repository path cited in a comment or a doc ("tests/test_x.py checks this"); not one inside a
# container path such as /opt/tritonstack/loadtest/....
_CITED_PATH = re.compile(r"(?<![\w/.-])(?:tests|monitoring|deploy|src|loadtest|docs|benchmarks)/[\w./*-]*[\w*]")
_CITING_FILES = [
    *sorted((ROOT / "deploy").rglob("*")),
    *sorted((ROOT / "monitoring").rglob("*")),
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    COMPOSE,
    ROOT / "loadtest" / "slo.yaml",
]


def test_every_repository_path_the_deploy_files_and_docs_cite_exists() -> None:
    missing = []
    for path in _CITING_FILES:
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for cited in _CITED_PATH.findall(line):
                if not any(ROOT.glob(cited.rstrip("."))):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, missing


# -- the shared response cache: Redis ------------------------------------------------------

REDIS_DEPLOYMENT = ROOT / "deploy" / "k8s" / "redis" / "deployment.yaml"
REDIS_SERVICE = ROOT / "deploy" / "k8s" / "redis" / "service.yaml"
_BYTES = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "ki": 2**10, "m": 2**20, "mb": 2**20, "mi": 2**20,
          "g": 2**30, "gb": 2**30, "gi": 2**30}  # fmt: skip


def _bytes(size: str) -> int:
    """Redis (``1gb``), compose (``1536m``) and Kubernetes (``1536Mi``) sizes: all binary multiples."""
    match = re.fullmatch(r"(\d+)([a-z]*)", size.lower())
    assert match and match.group(2) in _BYTES, size
    return int(match.group(1)) * _BYTES[match.group(2)]


# Where both deployments' redis-server reads its config file: the password, nothing else.
REDIS_CONFIG_FILE = "/usr/local/etc/redis/redis.conf"


def redis_settings(command: list[str]) -> dict[str, str]:
    """``redis-server CONFIG_FILE --name value ...``: the options as a mapping."""
    assert command[:2] == ["redis-server", REDIS_CONFIG_FILE] and len(command) % 2 == 0, command
    return {name.removeprefix("--"): value for name, value in zip(command[2::2], command[3::2], strict=True)}


@pytest.fixture(scope="module")
def compose_redis() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["redis"]


@pytest.fixture(scope="module")
def k8s_redis_pod() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(REDIS_DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def k8s_redis(k8s_redis_pod) -> dict[str, Any]:
    (container,) = k8s_redis_pod["containers"]
    return container


REDIS_DEFAULT_PORT = "6379"  # redis-server's, when no --port is given


def test_deployments_cache_in_the_redis_flags_py_names(compose_redis, k8s_redis) -> None:
    assert flags.RedisCache(host=flags.REDIS_HOST, port=flags.REDIS_PORT) == flags.DEPLOYMENT_CACHE
    assert flags.REDIS_HOST in yaml.safe_load(COMPOSE.read_text())["services"]
    assert redis_settings(compose_redis["command"]).get("port", REDIS_DEFAULT_PORT) == str(flags.REDIS_PORT)
    service = yaml.safe_load(REDIS_SERVICE.read_text())
    assert service["metadata"]["name"] == flags.REDIS_HOST
    assert [p["port"] for p in service["spec"]["ports"]] == [flags.REDIS_PORT]
    assert redis_settings(k8s_redis["args"]).get("port", REDIS_DEFAULT_PORT) == str(flags.REDIS_PORT)
    assert [p["containerPort"] for p in k8s_redis["ports"]] == [flags.REDIS_PORT]
    assert not [a for a in flags.deployment_args() if "password" in a], "the password is never a flag"


def test_triton_and_redis_share_one_password_from_a_secret(
    triton_service, container, compose_redis, k8s_redis_pod, k8s_redis
) -> None:
    # compose: one .env variable, required, in Triton's environment and in Redis's config file
    variable = triton_service["environment"][flags.REDIS_PASSWORD_ENV]
    assert re.fullmatch(r"\$\{TRITONSTACK_REDIS_PASSWORD:\?[^}]+\}", variable), variable
    compose = yaml.safe_load(COMPOSE.read_text())
    (mounted,) = compose_redis["configs"]
    assert mounted["target"] == REDIS_CONFIG_FILE
    assert compose["configs"][mounted["source"]]["content"] == f"requirepass {variable}\n"
    # Kubernetes: one Secret key, in Triton's environment and, as a file, in the init container that
    # writes Redis's config file into the volume redis-server reads it from
    env = {e["name"]: e for e in container["env"]}
    assert env[flags.REDIS_PASSWORD_ENV]["valueFrom"] == {
        "secretKeyRef": {"name": "tritonstack-redis", "key": "password"}
    }
    volumes = {v["name"]: v for v in k8s_redis_pod["volumes"]}
    (init,) = k8s_redis_pod["initContainers"]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    secrets = [name for name in mounts if "secret" in volumes[name]]
    assert [volumes[name]["secret"]["secretName"] for name in secrets] == ["tritonstack-redis"]
    (item,) = volumes[secrets[0]]["secret"]["items"]
    assert item["key"] == "password"
    script = init["command"][-1]
    assert f"{mounts[secrets[0]]}/{item['path']}" in script
    (config_dir,) = {m["mountPath"] for m in k8s_redis["volumeMounts"]} & set(mounts.values())
    assert f"{config_dir}/redis.conf" == REDIS_CONFIG_FILE
    assert f'requirepass %s\\n\' "$password" > {REDIS_CONFIG_FILE}' in script


def test_redis_is_bounded_evicts_and_keeps_nothing_on_disk(compose_redis, k8s_redis) -> None:
    deployed = {
        "compose": (redis_settings(compose_redis["command"]), compose_redis["deploy"]["resources"]["limits"]["memory"]),
        "kubernetes": (redis_settings(k8s_redis["args"]), k8s_redis["resources"]["limits"]["memory"]),
    }
    for where, (settings, limit) in deployed.items():
        assert settings["maxmemory-policy"] == "allkeys-lru", where
        # the container limit leaves room for Redis's own overhead above its data
        assert _bytes(settings["maxmemory"]) * 1.2 <= _bytes(limit), where
        assert (settings["save"], settings["appendonly"]) == ("", "no"), where
    assert deployed["compose"][0] == deployed["kubernetes"][0]
