"""A small ``kustomize build`` for the fields deploy/k8s uses, so the tests can render it offline.

Implemented: ``resources`` (files and kustomization directories), ``components``
(``kind: Component``), ``namespace``, ``labels`` (metadata only), ``images``
(``newName``, ``newTag``, ``digest``; on containers and init containers) and
``patches`` given inline as JSON 6902 operations (``add``, ``remove``,
``replace``, ``test``) on a target of kind and name. A kustomization
using any other field, or a patch using anything else, fails: extend this
before using it. Like kustomize, a resource directory that contains the
kustomization referring to it is refused (kustomize reports a cycle).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "components", "namespace", "labels", "images", "patches"}
COMPONENT_FIELDS = {"apiVersion", "kind", "patches"}
CLUSTER_SCOPED = {"Namespace"}
POD_TEMPLATE_KINDS = {"Deployment", "Job"}


def load(directory: Path) -> dict[str, Any]:
    kustomization: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return kustomization


def build(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization the way ``kustomize build`` does, for the fields in SUPPORTED_FIELDS."""
    directory = directory.resolve()
    kustomization = load(directory)
    assert kustomization.get("kind", "Kustomization") == "Kustomization", f"{directory}: not a Kustomization"
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    assert not unsupported, f"{directory}: {sorted(unsupported)}: extend tests/kustomize.py before using them"
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory / 'kustomization.yaml'}: resource {resource} does not exist"
        if path.is_dir():
            assert not directory.is_relative_to(path), f"{directory}: {resource} contains it (kustomize: cycle)"
            objects.extend(build(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for component in kustomization.get("components", []):
        objects = apply_component(objects, (directory / component).resolve())
    for patch in kustomization.get("patches", []):
        apply_patch(objects, patch)
    for obj in objects:
        if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for label_set in kustomization.get("labels", []):
            assert not label_set.get("includeSelectors") and not label_set.get("includeTemplates")
            obj["metadata"].setdefault("labels", {}).update(label_set["pairs"])
        spec = pod_spec(obj)
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            for image in kustomization.get("images", []):
                if image_name(container["image"]) == image["name"]:
                    container["image"] = set_image(container["image"], image)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"{directory}: duplicate objects"
    return objects


def apply_component(objects: list[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    component = load(directory)
    assert component.get("kind") == "Component", f"{directory}: a component must say kind: Component"
    unsupported = set(component) - COMPONENT_FIELDS
    assert not unsupported, f"{directory}: {sorted(unsupported)}: extend tests/kustomize.py before using them"
    for patch in component.get("patches", []):
        apply_patch(objects, patch)
    return objects


def apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    """An inline JSON 6902 patch on the one object its target names (kustomize anchors the name)."""
    assert set(patch) == {"target", "patch"}, f"only inline patches with a target: {sorted(patch)}"
    target = patch["target"]
    assert set(target) == {"kind", "name"}, f"target by kind and name only: {target}"
    matches = [
        o for o in objects if o["kind"] == target["kind"] and re.fullmatch(target["name"], o["metadata"]["name"])
    ]
    assert len(matches) == 1, f"patch target {target} matches {len(matches)} objects"
    for operation in yaml.safe_load(patch["patch"]):
        _apply_operation(matches[0], operation)


def _apply_operation(obj: dict[str, Any], operation: dict[str, Any]) -> None:
    op, path = operation["op"], operation["path"]
    assert op in {"add", "remove", "replace", "test"}, f"JSON patch op {op} is not implemented"
    *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]  # KeyError: a path that does not exist
    if op == "add" and isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), operation["value"])
        return
    key = int(last) if isinstance(node, list) else last
    if op == "test":  # kustomize fails the build when the value differs
        assert node[key] == operation["value"], f"JSON patch test failed at {path}: {node[key]!r}"
    elif op == "remove":
        del node[key]
    else:
        if op == "replace" and isinstance(node, dict):
            assert key in node, f"JSON patch replace of {path}, which does not exist"  # RFC 6902
        node[key] = operation["value"]  # a list index that does not exist: IndexError


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] in POD_TEMPLATE_KINDS:
        spec: dict[str, Any] = obj["spec"]["template"]["spec"]
        return spec
    return {}


def image_name(reference: str) -> str:
    """``registry:5000/name:tag@sha256:...`` -> ``registry:5000/name``."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def set_image(reference: str, image: dict[str, str]) -> str:
    """``reference`` after kustomize's ``images`` entry: a digest wins over a tag; neither keeps the old one."""
    name = image.get("newName", image["name"])
    if "digest" in image:
        return f"{name}@{image['digest']}"
    if "newTag" in image:
        return f"{name}:{image['newTag']}"
    return name + reference[len(image_name(reference)) :]
