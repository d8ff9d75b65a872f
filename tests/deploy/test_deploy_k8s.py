"""Kubernetes manifests under deploy/k8s, checked offline.

What is checked: every kustomization's resources exist and every manifest is
listed; a small ``kustomize build`` equivalent (tests/kustomize.py: resources,
components, namespace, labels, images, inline JSON patches: the only fields these
kustomizations use, and a test fails if one appears that it does not implement)
renders each overlay; every rendered object
validates with kubernetes-validate in strict mode (unknown fields rejected)
against the Kubernetes versions in K8S_VERSIONS, except the ServiceMonitor CRD,
which validates against tests/schemas/servicemonitor-*.subset.json (a strict
subset of the prometheus-operator CRD schema: see its $comment). Then the
references between objects: selectors, port names, the autoscaler's metric and
the prometheus-adapter rule that serves it (evaluated by promtool on synthetic
series where promtool is installed), who the NetworkPolicy admits to which port,
the gRPC TLS component, and images pinned by digest.

What is not: the real ``kustomize`` binary, admission by a real API server, and
anything a cluster does at run time.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import image_reference
import kustomize
from tritonstack.server import flags

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
OVERLAYS = ("", "triton", "redis", "gateway", "prometheus-adapter", "loadtest", "overlays/grpc-tls")
# The Namespace label that grants its pods labelled tritonstack.io/client: "true" inference (networkpolicy.yaml).
CLIENT_NAMESPACE_LABEL = "tritonstack.io/client-namespace"
REDIS_SECRET = "tritonstack-redis"
# The oldest Kubernetes these manifests target and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.33.0", "1.37.0")
SERVICEMONITOR_SCHEMA = Path(__file__).parents[1] / "schemas" / "servicemonitor-monitoring.coreos.com-v1.subset.json"
kustomize_build = kustomize.build
_pod_spec = kustomize.pod_spec


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {overlay or "all": kustomize_build(K8S / overlay) for overlay in OVERLAYS}


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise unless ``obj`` is valid: kubernetes-validate (strict), or the vendored CRD subset schema."""
    if obj["apiVersion"] == "monitoring.coreos.com/v1":
        schema = json.loads(SERVICEMONITOR_SCHEMA.read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_manifest_is_listed_in_a_kustomization() -> None:
    listed = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text()).get("resources", []):
            path = (kustomization.parent / resource).resolve()
            assert path.exists(), f"{kustomization}: {resource} does not exist"
            listed.add(path)
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests - listed == set(), "manifests no kustomization lists"


def test_the_top_level_kustomization_excludes_the_load_test(built) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in built["all"]}
    assert ("Deployment", "triton") in kinds and ("ConfigMap", "tritonstack-prometheus-adapter") in kinds
    assert not any(name.startswith("locust") for _, name in kinds), "applying the stack must not start a load test"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates(built, version: str) -> None:
    objects = built["all"] + built["loadtest"] + built["overlays/grpc-tls"]
    assert {o["kind"] for o in objects} >= {
        "Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "ServiceMonitor", "ConfigMap", "Job", "NetworkPolicy",
    }  # fmt: skip
    for obj in objects:
        validate(obj, version)  # SchemaNotFoundError for a kind without a schema fails too


def test_validation_rejects_a_misspelt_field(built) -> None:
    deployment = copy.deepcopy(_find(built["triton"], "Deployment", "triton"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, K8S_VERSIONS[0])
    monitor = copy.deepcopy(_find(built["triton"], "ServiceMonitor", "triton"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, K8S_VERSIONS[0])


def test_every_service_selects_pods_and_named_ports(built) -> None:
    for objects in built.values():
        workloads = [o for o in objects if _pod_spec(o)]
        for service in (o for o in objects if o["kind"] == "Service"):
            pods = [w for w in workloads if _selects(service["spec"]["selector"], _pod_labels(w))]
            assert pods, f"Service {service['metadata']['name']} selects no pods"
            for pod in pods:
                names = {p["name"] for c in _pod_spec(pod)["containers"] for p in c.get("ports", [])}
                for port in service["spec"]["ports"]:
                    assert port["targetPort"] in names, f"{service['metadata']['name']}: {port['targetPort']}"


def test_autoscaler_and_disruption_budget_cover_triton(built) -> None:
    objects = built["triton"]
    deployment = _find(objects, "Deployment", "triton")
    hpa = _find(objects, "HorizontalPodAutoscaler", "triton")
    pdb = _find(objects, "PodDisruptionBudget", "triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(deployment))
    # A drain may take maxUnavailable pods: at least one keeps serving.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


def test_servicemonitors_scrape_one_service_under_the_job_names_the_rules_use(built) -> None:
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    rule_jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    jobs = set()
    for overlay in ("triton", "loadtest", "gateway"):
        objects = built[overlay]
        for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
            selector = monitor["spec"]["selector"]["matchLabels"]
            services = [s for s in objects if s["kind"] == "Service" and _selects(selector, s["metadata"]["labels"])]
            assert len(services) == 1, f"{monitor['metadata']['name']} selects {len(services)} Services"
            (service,) = services
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
            # Prometheus Operator: job = the Service's jobLabel label, else the Service's name.
            job_label = monitor["spec"].get("jobLabel")
            jobs.add(service["metadata"]["labels"][job_label] if job_label else service["metadata"]["name"])
    assert jobs == rule_jobs


def test_triton_pod_is_hardened_and_probed(built) -> None:
    spec = _pod_spec(_find(built["triton"], "Deployment", "triton"))
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert {p["port"] for p in probes.values()} == {"http"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"


# -- who reaches Triton: the NetworkPolicy -----------------------------------------


def _match_labels(selector: dict[str, Any]) -> dict[str, str]:
    assert set(selector) <= {"matchLabels"}, f"implement {sorted(selector)} in this evaluator first"
    return selector.get("matchLabels", {})


def admits(policy: dict[str, Any], namespace: dict[str, str], pod: dict[str, str], port: str) -> bool:
    """Whether ``policy``'s ingress rules let a pod (its labels, its namespace's labels) reach a named port.

    NetworkPolicy semantics for the fields the policy uses: a peer with only a
    podSelector means the policy's own namespace; with a namespaceSelector too,
    both must match; ``{}`` matches everything. Anything else fails the test.
    """
    for rule in policy["spec"]["ingress"]:
        assert set(rule) == {"from", "ports"}
        assert all(set(p) == {"port", "protocol"} and p["protocol"] == "TCP" for p in rule["ports"])
        if port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule["from"]:
            assert set(peer) <= {"podSelector", "namespaceSelector"} and peer, f"implement {peer} first"
            if "namespaceSelector" in peer:
                in_namespace = _selects(_match_labels(peer["namespaceSelector"]), namespace)
            else:
                in_namespace = namespace["kubernetes.io/metadata.name"] == policy["metadata"]["namespace"]
            if in_namespace and _selects(_match_labels(peer.get("podSelector", {})), pod):
                return True
    return False


@pytest.mark.parametrize(
    ("overlay", "ports"), [("triton", {"grpc", "http", "metrics"}), ("overlays/grpc-tls", {"grpc", "metrics"})]
)
def test_the_network_policy_guards_every_triton_port(built, overlay: str, ports: set[str]) -> None:
    policy = _find(built[overlay], "NetworkPolicy", "triton")
    deployment = _find(built[overlay], "Deployment", "triton")
    assert policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (container,) = _pod_spec(deployment)["containers"]
    named = {p["name"] for p in container["ports"]}
    assert named == ports
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == named


def _peers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (policy["metadata"]["name"], peer)
        for policy in objects
        if policy["kind"] == "NetworkPolicy"
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
    ]


@pytest.mark.parametrize("overlay", ["all", "overlays/grpc-tls", "loadtest"])
def test_no_network_policy_peer_selects_every_namespace(built, overlay: str) -> None:
    """A pod label is anyone's to set who may create a pod; which namespaces count is the grant.

    A peer without a namespaceSelector means the policy's own namespace; one with a namespaceSelector
    must name label values (``{}``, or expressions alone, would let any namespace's pods in).
    """
    peers = _peers(built[overlay])
    assert peers or overlay == "loadtest"
    for name, peer in peers:
        if "namespaceSelector" in peer:
            assert set(peer["namespaceSelector"]) == {"matchLabels"}, f"{name}: {peer}"
            assert peer["namespaceSelector"]["matchLabels"], f"{name}: a namespaceSelector that selects every namespace"


def test_the_network_policy_admits_clients_and_prometheus_only(built) -> None:
    policy = _find(built["triton"], "NetworkPolicy", "triton")
    home = {"kubernetes.io/metadata.name": policy["metadata"]["namespace"]}
    # Prometheus runs where the prometheus-adapter rule goes (kube-prometheus-stack's namespace).
    adapter = _find(built["prometheus-adapter"], "ConfigMap", "tritonstack-prometheus-adapter")
    monitoring = {"kubernetes.io/metadata.name": adapter["metadata"]["namespace"]}
    elsewhere = {"kubernetes.io/metadata.name": "shop"}
    worker = _pod_labels(_find(built["loadtest"], "Deployment", "locust-worker"))
    master = _pod_labels(_find(built["loadtest"], "Job", "locust-master"))
    prometheus = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "kube-prometheus-stack"}
    client = {"app": "shop-frontend", "tritonstack.io/client": "true"}
    # A namespace an administrator granted (docs/deploy.md: kubectl label namespace ...).
    granted = {"kubernetes.io/metadata.name": "shop", CLIENT_NAMESPACE_LABEL: "true"}
    expected = {
        "the load test's workers": (home, worker, {"grpc", "http"}),
        "the load test's master": (home, master, {"metrics"}),
        "Prometheus": (monitoring, prometheus, {"metrics"}),
        "a labelled client in a granted namespace": (granted, client, {"grpc", "http"}),
        "a labelled client beside Triton": (home, client, {"grpc", "http"}),
        "a labelled client in a namespace nobody granted": (elsewhere, client, set()),
        "a labelled client in a namespace granted false": (granted | {CLIENT_NAMESPACE_LABEL: "false"}, client, set()),
        "an unlabelled pod in a granted namespace": (granted, {"app": "shop-frontend"}, set()),
        "an unlabelled pod beside Triton": (home, {"app": "debug-shell"}, set()),
        "a client labelled false": (home, {"tritonstack.io/client": "false"}, set()),
        "a pod named like Prometheus elsewhere": (elsewhere, prometheus, set()),
        "a pod named like the master elsewhere": (elsewhere, master, set()),
    }
    for who, (namespace, pod, ports) in expected.items():
        admitted = {port for port in ("grpc", "http", "metrics") if admits(policy, namespace, pod, port)}
        assert admitted == ports, who


@pytest.mark.parametrize("overlay", ["triton", "overlays/grpc-tls"])
def test_the_network_policy_documented_grant_is_the_one_it_checks(built, overlay: str) -> None:
    policy = _find(built[overlay], "NetworkPolicy", "triton")
    labels = [
        label
        for _, peer in _peers([policy])
        for label in peer.get("namespaceSelector", {}).get("matchLabels", {})
        if label != "kubernetes.io/metadata.name"
    ]
    assert labels == [CLIENT_NAMESPACE_LABEL]
    assert f"kubectl label namespace shop {CLIENT_NAMESPACE_LABEL}=true" in DEPLOY_DOC.read_text()


def test_redis_admits_triton_alone_and_is_hardened(built) -> None:
    policy = _find(built["redis"], "NetworkPolicy", "redis")
    deployment = _find(built["redis"], "Deployment", "redis")
    assert policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    home = {"kubernetes.io/metadata.name": policy["metadata"]["namespace"]}
    triton = _pod_labels(_find(built["triton"], "Deployment", "triton"))
    worker = _pod_labels(_find(built["loadtest"], "Deployment", "locust-worker"))
    client = {"app": "shop-frontend", "tritonstack.io/client": "true"}
    assert admits(policy, home, triton, "redis")
    assert not admits(policy, {"kubernetes.io/metadata.name": "shop"}, triton, "redis"), "Triton's labels elsewhere"
    for pod in (worker, client, {"app": "debug-shell"}):
        assert not admits(policy, home, pod, "redis"), pod
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = _pod_spec(deployment)
    (container,) = spec["containers"]
    (init,) = spec["initContainers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for each in (container, init):
        assert each["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        }, each["name"]  # fmt: skip
    assert {p["name"] for p in container["ports"]} == {"redis"}
    assert _find(built["redis"], "Service", "redis")["spec"]["type"] == "ClusterIP"


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return spec.get("initContainers", []) + spec.get("containers", [])


def _commands(container: dict[str, Any]) -> list[str]:
    """Everything a container runs with: command, args, and its probes' and hooks' commands."""
    words = [*container.get("command", []), *container.get("args", [])]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        words += container.get(probe, {}).get("exec", {}).get("command", [])
    for hook in container.get("lifecycle", {}).values():
        words += hook.get("exec", {}).get("command", [])
    return words


@pytest.mark.parametrize("overlay", ["all", "overlays/grpc-tls", "loadtest"])
def test_the_redis_password_is_on_no_command_line(built, overlay: str) -> None:
    """Command lines show in `kubectl get pod -o yaml`, `crictl inspect` and the node's ``ps``.

    The password is in no container's command or args, directly (``--requirepass``) or through
    the kubelet's ``$(VAR)`` expansion of a Secret-backed variable; the only variable that holds it
    is Triton's TRITONCACHE_REDIS_PASSWORD, the one way its redis cache takes a password.
    """
    holders = []
    for obj in built[overlay]:
        for container in _containers(obj):
            from_secret = {
                e["name"]
                for e in container.get("env", [])
                if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == REDIS_SECRET
            }
            assert not any(
                source.get("secretRef", {}).get("name") == REDIS_SECRET for source in container.get("envFrom", [])
            )
            holders += [(obj["metadata"]["name"], container["name"], name) for name in from_secret]
            for word in _commands(container):
                assert "--requirepass" not in word and not re.search(r"(?:^|\s)-a\s", word), word
                for name in from_secret:
                    assert f"$({name})" not in word, f"{container['name']}: {word}"
    assert set(holders) <= {("triton", "triton", flags.REDIS_PASSWORD_ENV)}


def test_redis_reads_its_password_from_a_file_the_init_container_writes_from_the_secret(built) -> None:
    spec = _pod_spec(_find(built["redis"], "Deployment", "redis"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    (init,) = spec["initContainers"]
    (redis,) = spec["containers"]
    assert "env" not in init and "env" not in redis and "envFrom" not in redis
    # The init container reads the Secret as a file, and only it mounts the Secret.
    (secret_mount,) = (m for m in init["volumeMounts"] if "secret" in volumes[m["name"]])
    assert secret_mount["readOnly"] is True
    secret = volumes[secret_mount["name"]]["secret"]
    assert secret["secretName"] == REDIS_SECRET and secret["items"] == [{"key": "password", "path": "password"}]
    assert secret["defaultMode"] == 0o440, "group fsGroup (the redis user) reads it, nobody else"
    assert not [m for m in redis["volumeMounts"] if "secret" in volumes[m["name"]]]
    # It writes redis-server's config file (the first argument) into memory shared with redis, read-only there.
    (written,) = (m for m in init["volumeMounts"] if m["name"] != secret_mount["name"])
    assert volumes[written["name"]]["emptyDir"]["medium"] == "Memory"
    (read,) = (m for m in redis["volumeMounts"] if m["name"] == written["name"])
    assert read["readOnly"] is True and read["mountPath"] == written["mountPath"]
    config_file = f"{read['mountPath']}/redis.conf"
    assert redis["args"][:2] == ["redis-server", config_file]
    script = init["command"][-1]
    assert f"{secret_mount['mountPath']}/password" in script and f"> {config_file}" in script
    assert "umask 077" in script, "the config file is the redis user's alone"
    # The probes authenticate from the same file, through redis-cli's variable, not an argument.
    for probe in ("readinessProbe", "livenessProbe"):
        command = redis[probe]["exec"]["command"]
        assert f"REDISCLI_AUTH < {config_file}" in command[-1] and "redis-cli ping" in command[-1]


# -- gRPC over mutual TLS: components/grpc-tls ------------------------------------


def _by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_the_tls_overlay_is_the_stack_with_tls_mounted_from_a_secret(built) -> None:
    plain, tls = _by_key(built["all"]), _by_key(built["overlays/grpc-tls"])
    assert plain.keys() == tls.keys(), "a drop-in replacement for deploy/k8s"
    changed = {
        ("Deployment", "triton"),
        ("Service", "triton"),
        ("Service", "triton-headless"),
        ("NetworkPolicy", "triton"),
        # its gRPC client certificate (tests/deploy/test_deploy_gateway.py)
        ("Deployment", "tritonstack-gateway"),
    }
    assert {key for key in plain if plain[key] != tls[key]} == changed
    spec = _pod_spec(tls[("Deployment", "triton")])
    (container,) = spec["containers"]
    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == flags.TLS_DIR)
    assert mount["readOnly"] is True
    (volume,) = (v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "tritonstack-triton-tls", "defaultMode": 0o440}
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"], "the group may read it"
    tls_files = {flags.DEPLOYMENT_TLS.server_cert, flags.DEPLOYMENT_TLS.server_key, flags.DEPLOYMENT_TLS.client_ca}
    assert {str(Path(flags.TLS_DIR) / name) for name in ("tls.crt", "tls.key", "ca.crt")} == tls_files
    for name in ("triton", "triton-headless"):
        before = {p["name"]: p for p in plain[("Service", name)]["spec"]["ports"]}
        after = {p["name"]: p for p in tls[("Service", name)]["spec"]["ports"]}
        assert "appProtocol" not in after["grpc"], f"{name}: gRPC is no longer cleartext HTTP/2"
        assert after["grpc"] == {k: v for k, v in before["grpc"].items() if k != "appProtocol"}
        # HTTP is not served off the pod (test_with_grpc_tls_plaintext_http_serves_the_probes_alone)
        unchanged = {k: v for k, v in before.items() if k not in {"grpc", "http"}}
        assert {k: v for k, v in after.items() if k != "grpc"} == unchanged


# Namespaces a pod may come from, and pods, for who-reaches-what checks.
_GRANTED = {"kubernetes.io/metadata.name": "shop", CLIENT_NAMESPACE_LABEL: "true"}
_MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
_CLIENT = {"app": "shop-frontend", "tritonstack.io/client": "true"}
_PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "kube-prometheus-stack"}


def test_with_grpc_tls_plaintext_http_serves_the_probes_alone(built) -> None:
    """Triton's HTTP endpoint has no TLS and serves inference: with the gRPC TLS component no client
    may reach it, or mutual TLS would be optional. It listens on loopback; the probes run in the pod."""
    objects = built["overlays/grpc-tls"]
    policy = _find(objects, "NetworkPolicy", "triton")
    home = {"kubernetes.io/metadata.name": policy["metadata"]["namespace"]}
    worker = _pod_labels(_find(built["loadtest"], "Deployment", "locust-worker"))
    master = _pod_labels(_find(built["loadtest"], "Job", "locust-master"))
    sources = [(home, worker), (home, master), (home, _CLIENT), (_GRANTED, _CLIENT), (_MONITORING, _PROMETHEUS)]
    for namespace, pod in sources:
        assert not admits(policy, namespace, pod, "http"), pod
    assert admits(policy, _GRANTED, _CLIENT, "grpc"), "clients keep gRPC, over mutual TLS"
    (container,) = _pod_spec(_find(objects, "Deployment", "triton"))["containers"]
    addresses = [a for a in container["args"] if a.startswith("--http-address=")]
    assert addresses == ["--http-address=127.0.0.1"]
    assert "http" not in {p["name"] for p in container["ports"]}
    for service in (_find(objects, "Service", name) for name in ("triton", "triton-headless")):  # not the gateway's
        assert [p for p in service["spec"]["ports"] if p["targetPort"] == "http" or p["port"] == flags.HTTP_PORT] == []
    paths = {"startupProbe": "ready", "readinessProbe": "ready", "livenessProbe": "live"}
    for probe, path in paths.items():
        assert set(container[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"exec"}, probe
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["python3", "-c"]
        assert f"http://127.0.0.1:{flags.HTTP_PORT}/v2/health/{path}'" in command[2], probe


def test_a_resource_that_contains_its_kustomization_is_refused(tmp_path: Path) -> None:
    overlay = tmp_path / "overlays" / "x"
    overlay.mkdir(parents=True)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": []}))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["../.."]}))
    with pytest.raises(AssertionError, match="cycle"):
        kustomize_build(overlay)


def test_a_json_patch_test_that_fails_fails_the_build(tmp_path: Path) -> None:
    """The grpc-tls component guards each item it replaces or removes by index with a `test`."""
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"args": "x"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))

    def build(expected: str) -> list[dict[str, Any]]:
        operations = [
            {"op": "test", "path": "/data/args", "value": expected},
            {"op": "replace", "path": "/data/args", "value": "y"},
        ]
        patch = {"target": {"kind": "ConfigMap", "name": "c"}, "patch": yaml.safe_dump(operations)}
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["c.yaml"], "patches": [patch]}))
        return kustomize_build(tmp_path)

    assert build("x")[0]["data"] == {"args": "y"}
    with pytest.raises(AssertionError, match="JSON patch test failed at /data/args"):
        build("z")


# -- images pinned by digest ---------------------------------------------------------


def documented_image_pins() -> dict[str, dict[str, str]]:
    """Image name -> the ``images:`` entry ``kustomize edit set image NAME=NEW@sha256:<digest>`` writes,
    for each such command docs/deploy.md shows, with a digest and a registry filled in."""
    pins = {}
    for argument in re.findall(r"kustomize edit set image (\S+@sha256:<digest>)", DEPLOY_DOC.read_text()):
        argument = argument.replace("sha256:<digest>", image_reference.EXAMPLE_DIGEST)
        name, reference = argument.replace("REGISTRY", "registry.example.com").split("=", 1)
        new_name, digest = reference.split("@", 1)
        pins[name] = {"name": name, "newName": new_name, "digest": digest}
    return pins


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", ["triton", "redis", "loadtest"])
def test_images_pinned_by_digest_as_documented_render_and_validate(overlay: str, version: str, tmp_path: Path) -> None:
    pins = documented_image_pins()
    base = kustomize.load(K8S / overlay)
    (image,) = base["images"]
    pin = pins[image["name"]]
    # The overlay's kustomization as `kustomize edit set image` leaves it.
    pinned = {**base, "images": [pin], "resources": [str(K8S / overlay / r) for r in base["resources"]]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(pinned))
    workloads = [o for o in kustomize_build(tmp_path) if _pod_spec(o)]
    assert workloads
    for obj in workloads:
        validate(obj, version)
        for container in _containers(obj):  # init containers too (redis)
            assert container["image"] == f"{pin['newName']}@{image_reference.EXAMPLE_DIGEST}"
            assert image_reference.is_pinned(container["image"])


def _adapter_rules(built) -> list[dict[str, Any]]:
    config = _find(built["prometheus-adapter"], "ConfigMap", "tritonstack-prometheus-adapter")
    return yaml.safe_load(config["data"]["config.yaml"])["rules"]


def test_the_autoscaler_metric_is_served_by_the_adapter_rule(built) -> None:
    hpa = _find(built["triton"], "HorizontalPodAutoscaler", "triton")
    (metric,) = hpa["spec"]["metrics"]
    rules = {rule["name"]["as"]: rule for rule in _adapter_rules(built)}
    rule = rules[metric["pods"]["metric"]["name"]]
    # A Pods metric is looked up per namespace and pod.
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert rule["seriesQuery"].split("{")[0] in rule["metricsQuery"]


def _render(query: str, matchers: str, group_by: str) -> str:
    return query.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", group_by)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) is not installed")
def test_adapter_query_is_the_queue_time_of_the_most_queued_model(built, tmp_path: Path) -> None:
    (rule,) = _adapter_rules(built)
    expr = _render(rule["metricsQuery"], 'namespace="tritonstack"', "pod")
    rules = {"groups": [{"name": "adapter", "rules": [{"record": "queue_us_per_request", "expr": expr}]}]}
    ours = 'namespace="tritonstack",version="1"'
    series = {
        # pod a, per minute: encoder 60 requests queued 600 ms in total (10 ms each), text-in 60 requests 120 ms
        f'nv_inference_queue_duration_us{{{ours},pod="a",model="m_encoder"}}': "0+600000x10",
        f'nv_inference_request_success{{{ours},pod="a",model="m_encoder"}}': "0+60x10",
        f'nv_inference_queue_duration_us{{{ours},pod="a",model="m"}}': "0+120000x10",
        f'nv_inference_request_success{{{ours},pod="a",model="m"}}': "0+60x10",
        # pod b: idle, must read 0, not NaN
        f'nv_inference_queue_duration_us{{{ours},pod="b",model="m_encoder"}}': "0x10",
        f'nv_inference_request_success{{{ours},pod="b",model="m_encoder"}}': "0x10",
        # another namespace: outside the label matchers
        'nv_inference_queue_duration_us{namespace="other",pod="c",model="m_encoder",version="1"}': "0+6000000x10",
        'nv_inference_request_success{namespace="other",pod="c",model="m_encoder",version="1"}': "0+60x10",
    }
    input_series = [{"series": name, "values": values} for name, values in series.items()]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": input_series,
                        "promql_expr_test": [
                            {
                                "expr": "queue_us_per_request",
                                "eval_time": "6m",
                                "exp_samples": [
                                    {"labels": 'queue_us_per_request{pod="a"}', "value": 10000},
                                    {"labels": 'queue_us_per_request{pod="b"}', "value": 0},
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        ["promtool", "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_locust_workers_and_master_agree(built) -> None:
    objects = built["loadtest"]
    master = _pod_spec(_find(objects, "Job", "locust-master"))["containers"][0]
    worker_deployment = _find(objects, "Deployment", "locust-worker")
    worker = _pod_spec(worker_deployment)["containers"][0]
    args = dict(a.lstrip("-").split("=", 1) for a in master["args"] if "=" in a)
    assert int(args["expect-workers"]) == worker_deployment["spec"]["replicas"]
    master_service = _find(objects, "Service", "locust-master")
    assert f"--master-host={master_service['metadata']['name']}" in worker["args"]
    host, port = args["host"].split(":")
    triton_service = _find(built["triton"], "Service", host)
    assert int(port) in {p["port"] for p in triton_service["spec"]["ports"] if p["name"] == "grpc"}
    assert worker["args"][0] == f"--locustfile={args['locustfile']}"


@pytest.mark.integration
def test_the_adapter_rule_reads_series_the_real_triton_exports(built, triton: Any) -> None:
    """Triton 2.51 (embedded) exports both counters of the rule, per model, with equal label sets."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from prometheus_client.parser import text_string_to_metric_families

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        for text in ("queue time", "per request, per model"):
            tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            client.infer("tiny", [tensor])
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    (rule,) = _adapter_rules(built)
    numerator = rule["seriesQuery"].split("{")[0]
    denominator = "nv_inference_request_success"
    assert denominator in rule["metricsQuery"]
    # prometheus_client strips a counter's _total/_created suffixes only; these names have none.
    queued = {frozenset(s.labels.items()): s.value for s in families[numerator].samples}
    served = {frozenset(s.labels.items()): s.value for s in families[denominator].samples}
    assert queued.keys() == served.keys(), "the rule divides series with equal label sets"
    models = {dict(labels)["model"] for labels, value in served.items() if value > 0}
    assert {"tiny", "tiny_tokenizer", "tiny_encoder"} <= models
