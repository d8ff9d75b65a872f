"""Kubernetes manifests under deploy/k8s, checked offline.

What is checked: every kustomization's resources exist and every manifest is
listed; a small ``kustomize build`` equivalent (resources, namespace, labels,
images: the only fields these kustomizations use, and a test fails if one
appears that it does not implement) renders each overlay; every rendered object
validates with kubernetes-validate in strict mode (unknown fields rejected)
against the Kubernetes versions in K8S_VERSIONS, except the ServiceMonitor CRD,
which validates against tests/schemas/servicemonitor-*.subset.json (a strict
subset of the prometheus-operator CRD schema: see its $comment). Then the
references between objects: selectors, port names, the autoscaler's metric and
the prometheus-adapter rule that serves it (evaluated by promtool on synthetic
series where promtool is installed).

What is not: the real ``kustomize`` binary, admission by a real API server, and
anything a cluster does at run time.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("", "triton", "prometheus-adapter", "loadtest")
# The oldest Kubernetes these manifests target and the newest kubernetes-validate ships.
K8S_VERSIONS = ("1.33.0", "1.37.0")
SERVICEMONITOR_SCHEMA = Path(__file__).parent / "schemas" / "servicemonitor-monitoring.coreos.com-v1.subset.json"
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "labels", "images"}
CLUSTER_SCOPED = {"Namespace"}


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization the way ``kustomize build`` does, for the fields in SUPPORTED_FIELDS."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    assert not unsupported, f"{directory}: {sorted(unsupported)}: extend kustomize_build before using them"
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.exists(), f"{directory / 'kustomization.yaml'}: resource {resource} does not exist"
        if path.is_dir():
            objects.extend(kustomize_build(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for obj in objects:
        if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for label_set in kustomization.get("labels", []):
            assert not label_set.get("includeSelectors") and not label_set.get("includeTemplates")
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
        for container in _pod_spec(obj).get("containers", []):
            for image in kustomization.get("images", []):
                if container["image"].split(":")[0] == image["name"]:
                    name = image.get("newName", image["name"])
                    container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"{directory}: duplicate objects"
    return objects


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] in {"Deployment", "Job"}:
        return obj["spec"]["template"]["spec"]
    return {}


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
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
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
    objects = built["all"] + built["loadtest"]
    assert {o["kind"] for o in objects} >= {
        "Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "ServiceMonitor", "ConfigMap", "Job",
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
    for overlay in ("triton", "loadtest"):
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
