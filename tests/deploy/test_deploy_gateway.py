"""The gateway's deployment (docker-compose.yml `gateway`, deploy/k8s/gateway), checked offline.

Rendered by tests/kustomize.py and validated like the rest of deploy/k8s by
tests/deploy/test_deploy_k8s.py (every object, both Kubernetes versions); here:
the command line against the real `tritonstack gateway` parser, the secrets as
files only, hardening, probes, the autoscaler, and who the NetworkPolicies let
in and out. What a cluster or Docker does at run time is not checked.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_compose import (
    COMPOSE,
    COMPOSE_TLS,
    GATEWAY_TLS_DIR_VARIABLE,
    LOCUST_DOCKERFILE,
    InterpolationError,
    filled_env,
    interpolate,
    merge,
    tls_env,
)
from test_deploy_k8s import (
    CLIENT_NAMESPACE_LABEL,
    K8S,
    REDIS_SECRET,
    _find,
    _pod_labels,
    _selects,
    admits,
    kustomize_build,
)

from tritonstack.server import flags

ROOT = Path(__file__).resolve().parents[2]
NAME = "tritonstack-gateway"
API_KEY_SECRET = "tritonstack-gateway"
TLS_SECRET = "tritonstack-gateway-grpc-tls"  # its gRPC client identity in overlays/grpc-tls
PORT = 8080

HOME = {"kubernetes.io/metadata.name": "tritonstack"}
GRANTED = {"kubernetes.io/metadata.name": "shop", CLIENT_NAMESPACE_LABEL: "true"}
ELSEWHERE = {"kubernetes.io/metadata.name": "shop"}
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
KUBE_SYSTEM = {"kubernetes.io/metadata.name": "kube-system"}
CLIENT = {"app": "shop-frontend", "tritonstack.io/client": "true"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "kube-prometheus-stack"}
DNS = {"k8s-app": "kube-dns"}


@pytest.fixture(scope="module")
def stack() -> list[dict[str, Any]]:
    return kustomize_build(K8S)


@pytest.fixture(scope="module")
def tls_stack() -> list[dict[str, Any]]:
    return kustomize_build(K8S / "overlays" / "grpc-tls")


@pytest.fixture(scope="module")
def gateway(stack) -> dict[str, Any]:
    return _find(stack, "Deployment", NAME)


def _spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _parse(argv: list[str]) -> argparse.Namespace:
    """The real `tritonstack gateway` parser: a flag it does not know fails here, not in the pod."""
    from tritonstack.commands import gateway

    parser = argparse.ArgumentParser(exit_on_error=False)
    gateway.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_stack_and_the_tls_overlay_apply_the_gateway(stack, tls_stack) -> None:
    for objects in (stack, tls_stack):
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objects if o["metadata"]["name"] == NAME}
        assert kinds == {
            ("Deployment", NAME), ("Service", NAME), ("HorizontalPodAutoscaler", NAME),
            ("PodDisruptionBudget", NAME), ("ServiceMonitor", NAME), ("NetworkPolicy", NAME),
        }  # fmt: skip
        assert all(o["metadata"]["namespace"] == "tritonstack" for o in objects if o["metadata"]["name"] == NAME)


def test_with_grpc_tls_the_gateway_presents_a_client_certificate_from_a_secret(gateway, tls_stack) -> None:
    """overlays/grpc-tls: Triton takes gRPC with mutual TLS only, so the gateway gets the CA that signed Triton's
    certificate and a client certificate, as files of a Secret, through its TLS options; nothing else changes."""
    tls_gateway = _find(tls_stack, "Deployment", NAME)
    spec, plain_spec = _spec(tls_gateway), _spec(gateway)
    (container,), (plain_container,) = spec["containers"], plain_spec["containers"]
    args, plain_args = _parse(container["args"][1:]), _parse(plain_container["args"][1:])
    tls_options = {"root_cert", "client_cert", "client_key"}
    assert {k: v for k, v in vars(args).items() if k not in tls_options} == {
        k: v for k, v in vars(plain_args).items() if k not in tls_options
    }
    assert all(getattr(plain_args, option) is None for option in tls_options)
    (triton,) = args.triton
    assert triton.split(":")[0] == "triton" and args.server_hostname is None, "Triton's certificate names `triton`"
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret and secret["secretName"] == TLS_SECRET:
            assert mount["readOnly"] is True and secret["defaultMode"] == 0o440
            files |= {f"{mount['mountPath']}/{item['path']}": item["key"] for item in secret["items"]}
    assert files == {str(args.root_cert): "ca.crt", str(args.client_cert): "tls.crt", str(args.client_key): "tls.key"}
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"], "the group may read it"
    # the rest of the pod as in the plaintext stack
    assert [
        m for m in container["volumeMounts"] if volumes[m["name"]].get("secret", {}).get("secretName") != TLS_SECRET
    ] == plain_container["volumeMounts"]
    assert {k: v for k, v in container.items() if k not in {"args", "volumeMounts"}} == {
        k: v for k, v in plain_container.items() if k not in {"args", "volumeMounts"}
    }


def test_the_gateway_runs_the_gateway_command_against_the_triton_and_redis_services(stack, gateway) -> None:
    (container,) = _spec(gateway)["containers"]
    assert container["command"] == ["tritonstack"] and container["args"][0] == "gateway"
    args = _parse(container["args"][1:])
    assert args.host == "0.0.0.0" and args.port == PORT
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [PORT]
    (triton,) = args.triton
    host, port = triton.split(":")
    service = _find(stack, "Service", host)
    assert int(port) == flags.GRPC_PORT
    assert {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"} == {flags.GRPC_PORT}
    redis = re.fullmatch(r"redis://([a-z-]+):(\d+)/(\d+)", args.redis_url)
    assert redis, args.redis_url
    redis_service = _find(stack, "Service", redis.group(1))
    assert int(redis.group(2)) in {p["port"] for p in redis_service["spec"]["ports"]}
    assert redis.group(3) != "0", "Triton's own cache keeps database 0"
    # The same image the load test runs: the Python image with the gateway extra.
    assert container["image"].split(":")[0] == "tritonstack-locust"
    assert '".[loadtest,gateway]"' in LOCUST_DOCKERFILE.read_text()


def test_the_api_keys_and_the_redis_password_are_files_from_secrets(gateway) -> None:
    spec = _spec(gateway)
    (container,) = spec["containers"]
    args = _parse(container["args"][1:])
    volumes = {v["name"]: v for v in spec["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret:
            assert mount["readOnly"] is True and secret["defaultMode"] == 0o440
            for item in secret["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    assert files == {
        str(args.api_key_file): (API_KEY_SECRET, "api-keys"),
        str(args.redis_password_file): (REDIS_SECRET, "password"),
    }
    # Nothing secret in the environment, where `kubectl get pod -o yaml` shows it.
    assert "envFrom" not in container
    assert not [e for e in container.get("env", []) if "valueFrom" in e]


def test_the_gateway_pod_is_hardened_probed_and_sized(gateway) -> None:
    spec = _spec(gateway)
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    # A Triton restart (minutes) must not restart every gateway: liveness waits far longer than readiness.
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > 4 * ready["periodSeconds"] * ready["failureThreshold"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    # preStop and the gateway's graceful shutdown (30 s) fit in the grace period.
    from tritonstack.commands.gateway import GRACEFUL_SHUTDOWN_S

    sleep_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > sleep_s + GRACEFUL_SHUTDOWN_S


def test_the_autoscaler_scales_the_gateway_on_cpu_apart_from_triton(stack, gateway) -> None:
    hpa = _find(stack, "HorizontalPodAutoscaler", NAME)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert "replicas" not in gateway["spec"], "the autoscaler owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    (container,) = _spec(gateway)["containers"]
    assert "cpu" in container["resources"]["requests"], "CPU utilization is of the request"
    pdb = _find(stack, "PodDisruptionBudget", NAME)
    assert _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(gateway))
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


def test_prometheus_scrapes_the_gateway_under_the_job_the_rules_use(stack) -> None:
    monitor = _find(stack, "ServiceMonitor", NAME)
    service = _find(stack, "Service", NAME)
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ((endpoint),) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    assert service["metadata"]["name"] in {job["job_name"] for job in prometheus["scrape_configs"]}
    rules = (ROOT / "monitoring" / "prometheus" / "rules" / "tritonstack-alerts.yml").read_text()
    assert f'up{{job="{NAME}"}}' in rules


# -- who reaches what -----------------------------------------------------------


def egress_allows(policy: dict[str, Any], namespace: dict[str, str], pod: dict[str, str], port: int) -> bool:
    """Whether ``policy``'s egress rules let its pods reach a pod (labels, namespace labels) on a numbered port."""
    for rule in policy["spec"]["egress"]:
        assert set(rule) == {"to", "ports"}, "a rule without `to` or `ports` allows everywhere or every port"
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["to"]:
            assert set(peer) <= {"podSelector", "namespaceSelector"} and peer, f"implement {peer} first"
            if "namespaceSelector" in peer:
                in_namespace = _selects(peer["namespaceSelector"]["matchLabels"], namespace)
            else:
                in_namespace = namespace == HOME
            if in_namespace and _selects(peer.get("podSelector", {}).get("matchLabels", {}), pod):
                return True
    return False


def test_the_gateway_admits_applications_and_prometheus_only(stack) -> None:
    policy = _find(stack, "NetworkPolicy", NAME)
    assert policy["spec"]["podSelector"]["matchLabels"] == _pod_labels(_find(stack, "Deployment", NAME))
    expected = {
        "a labelled client beside it": (HOME, CLIENT, True),
        "a labelled client in a granted namespace": (GRANTED, CLIENT, True),
        "Prometheus": (MONITORING, PROMETHEUS, True),
        "a labelled client in a namespace nobody granted": (ELSEWHERE, CLIENT, False),
        "an unlabelled pod beside it": (HOME, {"app": "debug-shell"}, False),
        "a pod named like Prometheus elsewhere": (ELSEWHERE, PROMETHEUS, False),
    }
    for who, (namespace, pod, allowed) in expected.items():
        assert admits(policy, namespace, pod, "http") is allowed, who


def test_the_gateway_reaches_triton_grpc_redis_and_dns_only(stack) -> None:
    policy = _find(stack, "NetworkPolicy", NAME)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    triton = _pod_labels(_find(stack, "Deployment", "triton"))
    redis = _pod_labels(_find(stack, "Deployment", "redis"))
    redis_port = _find(stack, "Service", "redis")["spec"]["ports"][0]["port"]
    assert egress_allows(policy, HOME, triton, flags.GRPC_PORT)
    assert egress_allows(policy, HOME, redis, redis_port)
    assert egress_allows(policy, KUBE_SYSTEM, DNS, 53)
    for pod, port in ((triton, flags.HTTP_PORT), (triton, flags.METRICS_PORT), (redis, flags.GRPC_PORT)):
        assert not egress_allows(policy, HOME, pod, port), (pod, port)
    assert not egress_allows(policy, ELSEWHERE, triton, flags.GRPC_PORT), "Triton's labels elsewhere"
    assert not egress_allows(policy, HOME, DNS, 53), "DNS in kube-system only"
    assert not egress_allows(policy, ELSEWHERE, {"app": "anything"}, 443), "nothing beyond the stack"


def test_triton_and_redis_admit_the_gateway(stack) -> None:
    labels = _pod_labels(_find(stack, "Deployment", NAME))
    triton = _find(stack, "NetworkPolicy", "triton")
    ports = {port for port in ("grpc", "http", "metrics") if admits(triton, HOME, labels, port)}
    assert ports == {"grpc"}, "gRPC only: the gateway neither uses HTTP nor scrapes metrics"
    assert not admits(triton, ELSEWHERE, labels, "grpc"), "the gateway's labels in another namespace"
    redis = _find(stack, "NetworkPolicy", "redis")
    assert admits(redis, HOME, labels, "redis")
    assert not admits(redis, ELSEWHERE, labels, "redis")


# -- docker compose ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_gateway() -> dict[str, Any]:
    compose = interpolate(yaml.safe_load(COMPOSE.read_text()), filled_env())
    service: dict[str, Any] = compose["services"]["gateway"]
    service["_configs"] = compose["configs"]
    return service


def test_compose_runs_the_same_command_as_kubernetes(compose_gateway, gateway) -> None:
    (container,) = _spec(gateway)["containers"]
    assert compose_gateway["entrypoint"] == container["command"]
    ours, theirs = _parse(compose_gateway["command"][1:]), _parse(container["args"][1:])
    assert compose_gateway["command"][0] == "gateway"
    # The same service names on both (compose service = Kubernetes Service); only the secret paths differ.
    differ = {"api_key_file", "redis_password_file"}
    assert {k: v for k, v in vars(ours).items() if k not in differ} == {
        k: v for k, v in vars(theirs).items() if k not in differ
    }
    compose = interpolate(yaml.safe_load(COMPOSE.read_text()), filled_env())
    assert compose_gateway["image"] == compose["services"]["locust-master"]["image"], "one Python image"
    assert compose_gateway["build"] == compose["services"]["locust-master"]["build"]


def test_compose_gives_the_secrets_as_files_the_gateway_user_alone_reads(compose_gateway) -> None:
    args = _parse(compose_gateway["command"][1:])
    configs = {c["target"]: c for c in compose_gateway["configs"]}
    assert set(configs) == {str(args.api_key_file), str(args.redis_password_file)}
    user = compose_gateway["user"].split(":")[0]
    assert all((c["uid"], c["mode"]) == (user, 0o400) for c in configs.values())
    env = filled_env()
    contents = {target: compose_gateway["_configs"][c["source"]]["content"] for target, c in configs.items()}
    assert contents == {
        str(args.api_key_file): env["TRITONSTACK_GATEWAY_API_KEY"],
        str(args.redis_password_file): env["TRITONSTACK_REDIS_PASSWORD"],
    }
    assert "environment" not in compose_gateway and "env_file" not in compose_gateway


def test_compose_runs_the_gateway_unprivileged_with_a_health_check(compose_gateway) -> None:
    assert compose_gateway["user"] == "10001:10001"
    assert compose_gateway["read_only"] is True and compose_gateway["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in compose_gateway["security_opt"]
    health = " ".join(compose_gateway["healthcheck"]["test"])
    assert f"http://127.0.0.1:{PORT}/health" in health
    assert compose_gateway["depends_on"]["triton"] == {"condition": "service_healthy"}
    assert set(compose_gateway["networks"]) == {"default", "cache"}, "Triton and Prometheus; Redis"
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    (job,) = (j for j in prometheus["scrape_configs"] if j["job_name"] == NAME)
    assert job["static_configs"] == [{"targets": [f"gateway:{PORT}"]}]


def test_compose_tls_gives_the_gateway_a_client_certificate_as_files(compose_gateway) -> None:
    """docker-compose.tls.yml: the main file's gateway command plus its TLS options, pointing at files of
    TRITONSTACK_GATEWAY_TLS_DIR mounted as secrets; nothing else of the service changes."""
    override = yaml.safe_load(COMPOSE_TLS.read_text())
    with pytest.raises(InterpolationError, match=GATEWAY_TLS_DIR_VARIABLE):
        interpolate(override, {k: v for k, v in tls_env().items() if k != GATEWAY_TLS_DIR_VARIABLE})
    merged = interpolate(merge(yaml.safe_load(COMPOSE.read_text()), override), tls_env())
    service = merged["services"]["gateway"]
    tls_options = ["--root-cert", "--client-cert", "--client-key"]
    assert service["command"][: len(compose_gateway["command"])] == compose_gateway["command"]
    assert [a.split("=")[0] for a in service["command"][len(compose_gateway["command"]) :]] == tls_options
    args = _parse(service["command"][1:])
    mounted = {}
    for secret in service["secrets"]:
        mounted[secret["target"]] = merged["secrets"][secret["source"]]["file"]
    directory = tls_env()[GATEWAY_TLS_DIR_VARIABLE]
    assert mounted == {
        str(args.root_cert): f"{directory}/ca.crt",
        str(args.client_cert): f"{directory}/tls.crt",
        str(args.client_key): f"{directory}/tls.key",
    }
    assert {k: v for k, v in service.items() if k not in {"command", "secrets"}} == {
        k: v for k, v in compose_gateway.items() if k not in {"command", "_configs"}
    }
