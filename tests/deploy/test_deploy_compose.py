"""docker-compose.yml, its TLS override, .env.example and the two images' build files, checked offline.

The compose files are validated against the Compose Specification's JSON schema:
the copy that check-jsonschema vendors (``compose-spec.json``, from the
compose-spec/compose-spec repository, Apache-2.0). Each is validated as written and
after interpolating ``.env.example`` the way ``docker compose`` does, the TLS
override also merged over the main file. Images pinned by digest, in the form
docs/deploy.md documents, are checked to land where compose pulls or builds from.
No Docker engine is involved: what these tests cannot see is whether the images
build and the containers start (docs/deploy.md).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import image_reference
from tritonstack.server import flags

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_TLS = ROOT / "docker-compose.tls.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
ENV_EXAMPLE = ROOT / ".env.example"
TRITON_DOCKERFILE = ROOT / "deploy" / "triton" / "Dockerfile"
LOCUST_DOCKERFILE = ROOT / "deploy" / "locust" / "Dockerfile"
TRITON_REQUIREMENTS = ROOT / "deploy" / "triton" / "requirements.txt"
SECRETS = (
    "TRITONSTACK_ADMIN_KEY", "TRITONSTACK_REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "TRITONSTACK_GATEWAY_API_KEY",
)  # fmt: skip
TLS_DIR_VARIABLE = "TRITONSTACK_TLS_DIR"
GATEWAY_TLS_DIR_VARIABLE = "TRITONSTACK_GATEWAY_TLS_DIR"  # the gateway's gRPC client identity
# One per image compose pulls or builds FROM: each can be pinned by digest in .env.
IMAGE_VARIABLES = ("TRITON_IMAGE", "REDIS_IMAGE", "PROMETHEUS_IMAGE", "GRAFANA_IMAGE", "PYTHON_IMAGE")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME, $$ (a literal $).
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(Exception):
    pass


def _interpolate_string(value: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        # The colon forms treat an empty value like an unset one.
        missing = not current if op and op.startswith(":") else current is None
        if op and op.endswith("?"):
            if missing:
                raise InterpolationError(f"{name}: {arg}")
            return str(current)
        if op and op.endswith("-"):
            return arg if missing else str(current)
        return current or ""

    return _VARIABLE.sub(substitute, value)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation: values only, never keys."""
    if isinstance(node, str):
        return _interpolate_string(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def variables(node: Any) -> set[str]:
    if isinstance(node, str):
        return {m.group("name") or m.group("bare") for m in _VARIABLE.finditer(node) if not m.group("escaped")}
    if isinstance(node, list):
        return set().union(*(variables(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(variables(value) for value in node.values())) if node else set()
    return set()


def env_example() -> dict[str, str]:
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def filled_env() -> dict[str, str]:
    return {**env_example(), **{name: "not-a-real-secret" for name in SECRETS}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_tls() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_TLS.read_text())


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``docker compose -f base -f override`` for what docker-compose.tls.yml overrides: a service's
    command (replaced as a whole) and secrets (added), and top-level secrets."""
    merged = copy.deepcopy(base)
    assert set(override) <= {"services", "secrets"}, "extend merge() before overriding more"
    for name, service in override["services"].items():
        assert set(service) <= {"command", "secrets"}, f"{name}: extend merge() before overriding more"
        into = merged["services"][name]
        if "command" in service:
            into["command"] = service["command"]
        into["secrets"] = into.get("secrets", []) + service.get("secrets", [])
    merged.setdefault("secrets", {}).update(override.get("secrets", {}))
    return merged


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_spec_schema(compose, validator) -> None:
    assert _errors(validator, compose) == []


def test_compose_file_after_interpolation_matches_the_schema(compose, validator) -> None:
    assert _errors(validator, interpolate(compose, filled_env())) == []


def test_schema_validation_catches_a_misspelt_field(compose, validator) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["triton"]["shm_sise"] = "2gb"
    assert any("shm_sise" in error for error in _errors(validator, broken))


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_run_without_each_secret(compose, secret) -> None:
    env = {**filled_env(), secret: ""}  # as .env.example ships it
    with pytest.raises(InterpolationError, match=secret):
        interpolate(compose, env)


def test_no_secret_has_a_default(compose) -> None:
    grafana_password = compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", grafana_password)
    for name in SECRETS:
        assert env_example()[name] == "", f".env.example must not carry a value for {name}"
    secrets = "|".join(SECRETS)
    assert not re.search(rf"\$\{{(?:{secrets}):?-", COMPOSE.read_text())


def test_every_variable_compose_reads_is_documented_in_env_example(compose, compose_tls) -> None:
    assert variables(compose) | variables(compose_tls) == set(env_example())


def test_published_ports_bind_to_loopback_by_default(compose) -> None:
    defaults = interpolate(compose, {name: "x" for name in SECRETS})
    published: dict[str, set[int]] = {}
    for name, service in defaults["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, dict), f"{name}: use the long port syntax, with host_ip"
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
            published.setdefault(name, set()).add(int(port["target"]))
    assert published == {
        "triton": {flags.GRPC_PORT, flags.HTTP_PORT},  # metrics: only Prometheus, on the compose network
        "prometheus": {9090},
        "grafana": {3000},
        "gateway": {8080},
    }


def test_triton_gets_a_gpu_shared_memory_and_a_read_only_repository(compose) -> None:
    triton = compose["services"]["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    size = re.fullmatch(r"(\d+)([kmg])b?", triton["shm_size"].lower())
    assert size and int(size.group(1)) * {"k": 2**10, "m": 2**20, "g": 2**30}[size.group(2)] >= 2**30
    mounts = {m["target"]: m for m in triton["volumes"]}
    assert mounts["/models"]["read_only"] is True
    health = " ".join(triton["healthcheck"]["test"])
    assert f"127.0.0.1:{flags.HTTP_PORT}/v2/health/ready" in health


def test_redis_is_reachable_by_triton_alone_and_triton_waits_for_it(compose) -> None:
    redis, triton = compose["services"]["redis"], compose["services"]["triton"]
    assert "ports" not in redis and "expose" not in redis
    assert set(redis["networks"]) == {"cache"} and compose["networks"]["cache"] == {"internal": True}
    on_cache = {name for name, service in compose["services"].items() if "cache" in (service.get("networks") or {})}
    assert on_cache == {"redis", "triton", "gateway"}
    assert set(triton["networks"]) == {"default", "cache"}, "Triton stays on the network Prometheus and clients use"
    assert triton["depends_on"] == {"redis": {"condition": "service_healthy"}}
    kind, check = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and check.endswith("redis-cli ping | grep -q PONG")


def _places(node: Any, value: str, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The paths of the strings in a document that contain ``value``."""
    if isinstance(node, str):
        return {path} if value in node else set()
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return set().union(set(), *(_places(child, value, (*path, str(key))) for key, child in items))


def test_the_redis_password_is_in_tritons_environment_and_redis_config_file_only(compose) -> None:
    """Not on a command line, nor in Redis's environment: both show in `docker inspect` and the
    host's process list. Triton's cache takes it from TRITONCACHE_REDIS_PASSWORD alone."""
    password = "0123456789abcdef-redis-password"
    merged = interpolate(merge(compose, yaml.safe_load(COMPOSE_TLS.read_text())), {**tls_env(), SECRETS[1]: password})
    assert SECRETS[1] == "TRITONSTACK_REDIS_PASSWORD"
    for document in (interpolate(compose, {**filled_env(), SECRETS[1]: password}), merged):
        assert _places(document, password) == {
            ("services", "triton", "environment", flags.REDIS_PASSWORD_ENV),
            ("configs", "redis-auth", "content"),
            ("configs", "gateway-redis-password", "content"),  # --redis-password-file
        }
        assert not _places(document, "--requirepass")
        assert document["configs"]["redis-auth"]["content"] == f"requirepass {password}\n"


def test_redis_reads_the_password_from_its_config_file_and_so_does_its_healthcheck(compose) -> None:
    redis = compose["services"]["redis"]
    assert "environment" not in redis and "env_file" not in redis
    (config,) = redis["configs"]
    assert config["source"] == "redis-auth"
    # Copied into the container (not bind-mounted), the redis user's (UID 999 in the image) alone.
    assert (config["uid"], config["mode"]) == ("999", 0o400)
    assert redis["command"][:2] == ["redis-server", config["target"]]
    assert f"REDISCLI_AUTH < {config['target']}" in redis["healthcheck"]["test"][1]


def test_every_bind_mount_source_exists(compose) -> None:
    defaults = interpolate(compose, {name: "x" for name in SECRETS})
    for name, service in defaults["services"].items():
        for mount in service.get("volumes", []):
            if mount["type"] == "bind":
                assert (ROOT / mount["source"]).exists(), f"{name}: {mount['source']} does not exist"
                assert mount.get("read_only") is True, f"{name}: {mount['source']} should be read-only"


def test_grafana_mounts_dashboards_where_provisioning_loads_them(compose) -> None:
    mounts = {m["source"]: m["target"] for m in compose["services"]["grafana"]["volumes"] if m["type"] == "bind"}
    providers = ROOT / "monitoring" / "grafana" / "provisioning" / "dashboards"
    paths = {
        provider["options"]["path"]
        for file in providers.glob("*.y*ml")
        for provider in yaml.safe_load(file.read_text())["providers"]
    }
    assert paths == {mounts["./monitoring/grafana/dashboards"]}


def test_prometheus_scrapes_compose_service_names(compose) -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    aliases = {
        alias
        for service in compose["services"].values()
        for network in (service.get("networks") or {}).values()
        for alias in (network or {}).get("aliases", [])
    }
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host in compose["services"] or host in aliases, f"{target}: no such compose service or alias"


def test_the_load_test_exporter_is_reachable_where_prometheus_scrapes_it(compose) -> None:
    from tritonstack.loadtest.exporter import DEFAULT_PORT

    config = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "tritonstack-loadtest")
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.rsplit(":", 1)
    assert int(port) == DEFAULT_PORT
    # The master exports what the workers report; it carries the alias Prometheus scrapes.
    master = compose["services"]["locust-master"]
    assert host in master["networks"]["default"]["aliases"]
    assert master["environment"]["TRITONSTACK_EXPORTER_ADDR"] == "0.0.0.0"


def test_load_test_runs_only_under_its_profile(compose) -> None:
    for name, service in compose["services"].items():
        if name.startswith("locust"):
            assert service["profiles"] == ["loadtest"]
        else:
            assert "profiles" not in service, f"{name} must start with a plain `docker compose up`"


def test_locust_runs_the_repository_locustfile(compose) -> None:
    # The Locust image copies loadtest/ to /opt/tritonstack/loadtest (deploy/locust/Dockerfile).
    assert "COPY loadtest/ loadtest/" in LOCUST_DOCKERFILE.read_text()
    assert re.search(r"^WORKDIR /opt/tritonstack$", LOCUST_DOCKERFILE.read_text(), re.M)
    commands = [s["command"] for n, s in compose["services"].items() if n.startswith("locust")]
    for manifest in ("master-job.yaml", "worker-deployment.yaml"):
        pod = yaml.safe_load((ROOT / "deploy" / "k8s" / "loadtest" / manifest).read_text())["spec"]["template"]
        commands.append(pod["spec"]["containers"][0]["args"])
    paths = {arg.split("=", 1)[1] for command in commands for arg in command if arg.startswith("--locustfile=")}
    assert paths == {"/opt/tritonstack/loadtest/locustfile.py"}
    assert (ROOT / "loadtest" / "locustfile.py").is_file(), "loadtest/locustfile.py (the load-test issue) is missing"


# -- gRPC over TLS (docker-compose.tls.yml) -------------------------------------


def tls_env() -> dict[str, str]:
    return {**filled_env(), TLS_DIR_VARIABLE: "/etc/ssl/tritonstack", GATEWAY_TLS_DIR_VARIABLE: "/etc/ssl/gateway"}


def test_tls_override_matches_the_schema_alone_and_merged(compose, compose_tls, validator) -> None:
    assert _errors(validator, compose_tls) == []
    assert _errors(validator, interpolate(compose_tls, tls_env())) == []
    assert _errors(validator, interpolate(merge(compose, compose_tls), tls_env())) == []


def test_tls_override_refuses_to_run_without_the_certificate_directory(compose_tls) -> None:
    with pytest.raises(InterpolationError, match=TLS_DIR_VARIABLE):
        interpolate(compose_tls, filled_env())  # as .env.example ships it: empty


def test_tls_secrets_are_mounted_where_the_flags_point(compose, compose_tls) -> None:
    merged = interpolate(merge(compose, compose_tls), tls_env())
    triton = merged["services"]["triton"]
    tls = flags.DEPLOYMENT_TLS
    assert tls.client_ca is not None, "the deployments run mutual TLS"
    mounted = {}
    for secret in triton["secrets"]:
        source = merged["secrets"][secret["source"]]["file"]
        assert source == f"{tls_env()[TLS_DIR_VARIABLE]}/{Path(secret['target']).name}"
        mounted[secret["target"]] = source
    assert set(mounted) == {tls.server_cert, tls.server_key, tls.client_ca}
    assert all(Path(target).parent == Path(flags.TLS_DIR) for target in mounted)
    # Everything else is the main file's.
    assert {k: v for k, v in triton.items() if k not in {"command", "secrets"}} == {
        k: v for k, v in interpolate(compose, tls_env())["services"]["triton"].items() if k != "command"
    }


# -- images pinned by digest -----------------------------------------------------


def _build_from_argument(dockerfile: Path) -> str:
    """The ARG a Dockerfile builds FROM (``FROM ${NAME}``)."""
    match = re.search(r"^FROM \$\{(\w+)\}", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile}: build FROM an ARG, so compose can pin the base image"
    return match.group(1)


def _argument_default(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile}: ARG {name} has no default"
    return match.group(1)


def pulled_images(document: dict[str, Any]) -> dict[str, str]:
    """Service -> the image compose pulls for it: its ``image``, or for a build, the base image it builds FROM."""
    images = {}
    for name, service in document["services"].items():
        if "build" in service:
            dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            images[name] = service["build"]["args"][_build_from_argument(dockerfile)]
        else:
            images[name] = service["image"]
    return images


def documented_pins() -> dict[str, str]:
    """The ``VARIABLE=image@sha256:<digest>`` lines of docs/deploy.md, with a digest filled in."""
    lines = re.findall(r"^\s*([A-Z_]+_IMAGE)=(\S+@sha256:<digest>)\s*$", DEPLOY_DOC.read_text(), re.M)
    return {name: value.replace("sha256:<digest>", image_reference.EXAMPLE_DIGEST) for name, value in lines}


def test_compose_builds_from_the_dockerfiles_own_pins_by_default(compose) -> None:
    defaults = interpolate(compose, filled_env())
    for name, service in defaults["services"].items():
        if "build" in service:
            dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            default = _argument_default(dockerfile, _build_from_argument(dockerfile))
            assert pulled_images(defaults)[name] == default, f"{name}: one pin, in the Dockerfile and compose alike"


def test_every_image_compose_pulls_can_be_pinned_by_digest_as_documented(compose, validator) -> None:
    pins = documented_pins()
    assert set(pins) == set(IMAGE_VARIABLES), "docs/deploy.md shows the digest form for each image variable"
    assert set(pins) <= set(env_example())
    assert all(image_reference.is_pinned(reference) for reference in pins.values())
    pinned = interpolate(compose, {**filled_env(), **pins})
    assert _errors(validator, pinned) == []
    assert set(pulled_images(pinned).values()) == set(pins.values())
    # The tag stays for readers and must still be the tag compose uses unpinned (the digest decides).
    unpinned = set(pulled_images(interpolate(compose, filled_env())).values())
    assert {reference.split("@")[0] for reference in pins.values()} == unpinned


# -- the images' build files ---------------------------------------------------


def _constraint(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.split("==")[0].strip() == name:
            return line.split("==")[1].strip()
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def _requirements() -> dict[str, str]:
    out = {}
    for line in TRITON_REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[=<>!~]", line)[0]
            out[name] = line[len(name) :]
    return out


def _ngc_release(reference: str) -> tuple[int, int]:
    match = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3(?:@sha256:[0-9a-f]{64})?", reference)
    assert match, f"{reference}: pin the NGC image as nvcr.io/nvidia/tritonserver:YY.MM-py3[@sha256:...]"
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("source", ["Dockerfile", "docs/deploy.md digest pin"])
def test_triton_image_is_a_pinned_ngc_release_with_the_2025_2026_security_fixes(source: str) -> None:
    if source == "Dockerfile":
        reference = _argument_default(TRITON_DOCKERFILE, "TRITON_IMAGE")
    else:
        reference = documented_pins()["TRITON_IMAGE"]
    # 25.07 fixed the August 2025 bulletin (CVE-2025-23319/23320/23334 ...);
    # 26.07 the August 2026 one (CVE-2026-16497, CVE-2026-47625): docs/deploy.md.
    assert _ngc_release(reference) >= (26, 7)


def test_image_requirements_agree_with_constraints() -> None:
    from packaging.specifiers import SpecifierSet

    requirements = _requirements()
    assert requirements["tokenizers"] == "==" + _constraint("tokenizers")
    assert requirements["onnxruntime"] == "==" + _constraint("onnxruntime")  # the fused step's
    assert _constraint("numpy") in SpecifierSet(requirements["numpy"])


def test_python_backend_models_import_only_what_the_image_has() -> None:
    # the image runs the files export copies beside a Python model's model.py (tests/in_triton/test_in_triton.py checks
    # every file of in_triton/ against the fixed list; this one, against what the image installs)
    from tritonstack.in_triton import manifest

    available = set(sys.stdlib_module_names) | set(_requirements()) | {"triton_python_backend_utils"}
    in_triton = ROOT / "src" / "tritonstack" / "in_triton"
    models = sorted(in_triton / source for source in manifest.PYTHON_MODEL_FILES.values())
    assert {in_triton / "models" / "text_model.py", in_triton / "contract.py"} <= set(models)
    for model in models:
        for node in ast.walk(ast.parse(model.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in available, f"{model.name} imports {name}, not in the image"


def _dockerignore_includes(ignore_file: Path, path: str) -> bool:
    """Docker's rule: patterns apply in order, the last match wins, `!` re-includes."""
    import fnmatch

    included = True
    for line in ignore_file.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            included = negate
    return included


@pytest.mark.parametrize("dockerfile", [TRITON_DOCKERFILE, LOCUST_DOCKERFILE], ids=["triton", "locust"])
def test_every_copied_path_is_in_the_build_context(dockerfile: Path) -> None:
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    sources = [
        source.rstrip("/")
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
        if not source.startswith("--")
    ]
    assert sources
    for source in sources:
        assert _dockerignore_includes(ignore_file, source), f"{source} is excluded by {ignore_file.name}"
    assert not _dockerignore_includes(ignore_file, ".venv"), "the virtualenv must stay out of the context"
