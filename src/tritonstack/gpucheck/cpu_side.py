"""The checks ``gpu-check`` runs on every machine, GPU or not: what a GPU host needs that a CPU can verify.

* ``onnxruntime_build``: exactly one of ``onnxruntime`` / ``onnxruntime-gpu`` is installed (both install the
  same ``onnxruntime`` package, so the one installed last silently wins), and which providers it has.
* ``gpu_configs``: the encoder config ``export --target gpu`` writes parses through Triton's protobuf, with
  KIND_GPU on the chosen GPUs and the TensorRT accelerator, and the embedded backend plans TensorRT ->
  CUDA -> CPU for it with the accelerator's settings.
* ``gpu_extra_resolves``: pip resolves the gpu extra's requirement against ``constraints.txt`` (metadata
  only, nothing installed); an unreachable registry is reported as unchecked, not as a failure.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from google.protobuf import json_format, text_format

from tritonstack._gpu import Gpu
from tritonstack.gpucheck.result import Check
from tritonstack.in_triton import contract
from tritonstack.repository.config import parse, render
from tritonstack.repository.writer import ExportedModel, model_configs
from tritonstack.server.embedded import BACKENDS_SOURCE

CHECKOUT = Path(__file__).resolve().parents[3]  # src/tritonstack/gpucheck -> the checkout, where there is one
ONNXRUNTIME_WHEELS = ("onnxruntime", "onnxruntime-gpu")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PIP_TIMEOUT_S = 180


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def onnxruntime_build() -> Check:
    installed = {name: version for name in ONNXRUNTIME_WHEELS if (version := installed_version(name))}
    if len(installed) > 1:
        return Check(
            "onnxruntime_build",
            False,
            f"both {' and '.join(f'{n} {v}' for n, v in installed.items())} are installed: they share the "
            "onnxruntime package, so the one installed last won; make GPU=1 (or GPU=0) reinstalls exactly one",
            {"installed": installed},
        )
    if not installed:
        return Check("onnxruntime_build", False, "no ONNX Runtime installed: pip install 'tritonstack[serve]'")
    import onnxruntime as ort

    providers = ort.get_available_providers()
    ((name, version),) = installed.items()
    return Check(
        "onnxruntime_build",
        True,
        f"{name} {version}: {', '.join(providers)}",
        {"installed": installed, "providers": providers},
    )


def _backend_providers() -> ModuleType:
    """The embedded backend's ``providers.py``, loaded by path as its ``model.py`` loads it."""
    spec = importlib.util.spec_from_file_location(
        "tritonstack_gpucheck_providers", BACKENDS_SOURCE / "onnxruntime" / "providers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpu_configs(gpus: Sequence[Gpu]) -> Check:
    """The configs of a MiniLM-shaped gpu export on ``gpus`` (GPU 0 where none is visible)."""
    device_ids = tuple(gpu.device_id for gpu in gpus) or (0,)
    model = ExportedModel(
        name="minilm",
        task=contract.FEATURE_EXTRACTION.name,
        onnx_path=Path("model.onnx"),
        tokenizer_dir=Path("tokenizer"),
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        output_name="sentence_embedding",
        output_dim=384,
        labels=(),
        max_batch_size=64,
        max_sequence_length=256,
        precision="fp16",
        recipe="fp16_optimized",
        target="gpu",
        gpus=device_ids,
    )
    problems = []
    configs = model_configs(model)
    for config in configs:
        text = render(config)  # json_format.ParseDict inside: a field Triton does not know fails here
        if text_format.MessageToString(parse(text)) != text:
            problems.append(f"{config.name}: config.pbtxt does not read back as written")
    encoder = parse(render(configs[0]))
    groups = [(group.kind, tuple(group.gpus)) for group in encoder.instance_group]
    if groups != [(encoder.instance_group[0].KIND_GPU, device_ids)]:
        problems.append(f"encoder instance groups {groups}, expected KIND_GPU on {device_ids}")
    triton_json = json_format.MessageToDict(encoder, preserving_proto_field_name=True)
    providers = _backend_providers()
    plan = providers.plan(triton_json, "GPU", device_ids[0], list(GPU_PROVIDERS))
    tiers = [tier.name for tier in plan.tiers]
    if tiers != list(GPU_PROVIDERS):
        problems.append(f"the backend plans {tiers} for it, expected {list(GPU_PROVIDERS)}")
    tensorrt = dict(plan.tiers[0].providers[0][1]) if plan.tiers else {}
    if tensorrt.get("trt_fp16_enable") != "True" or tensorrt.get("trt_engine_cache_enable") != "True":
        problems.append(f"TensorRT options {tensorrt} lack fp16 or the engine cache")
    detail = "; ".join(problems) or (
        f"{len(configs)} configs render and parse; encoder KIND_GPU on GPU {', '.join(map(str, device_ids))}, "
        f"backend tiers {' -> '.join(tiers)}, TensorRT fp16 with engine cache {tensorrt.get('trt_engine_cache_path')}"
    )
    return Check("gpu_configs", not problems, detail, {"tiers": tiers, "tensorrt_options": tensorrt})


def gpu_requirement() -> str:
    """The gpu extra's requirement: from the checkout's pyproject.toml where there is one, else the metadata."""
    pyproject = CHECKOUT / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
        return str(extras["gpu"][0])
    for requirement in importlib.metadata.requires("tritonstack") or []:
        name, _, marker = requirement.partition(";")
        if re.search(r"""extra\s*==\s*["']gpu["']""", marker):
            return name.strip()
    return "onnxruntime-gpu"


def classify_resolution(returncode: int, stderr: str) -> tuple[bool | None, str]:
    """pip's verdict on a dry run: resolved (True), not resolvable (False), or registry unreachable (None).

    A package the registry lists, asked for alone, shows ``(from versions: none)`` only when the registry was
    not reached (pip --quiet hides the connection errors themselves)."""
    if returncode == 0:
        return True, "resolves"
    lines = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    message = " ".join(lines)[-400:] or stderr.strip()[-400:]
    if "(from versions: none)" in message:
        return None, f"not checked: the package registry was not reached ({message})"
    return False, message


def _pip_dry_run(requirement: str, *options: str, report: Path | None = None) -> tuple[bool | None, str]:
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--retries", "0", "--timeout", "15", *options, *(["--report", str(report)] if report else []), requirement,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"not checked: pip did not answer within {PIP_TIMEOUT_S} s"
    return classify_resolution(done.returncode, done.stderr)


def gpu_extra_resolves(index_url: str | None = None) -> Check:
    """The gpu extra resolves with constraints.txt: first whether the registry answers for onnxruntime-gpu
    at all (a constrained resolution that finds nothing reads as a conflict), then the whole tree."""
    requirement = gpu_requirement()
    index = ["--index-url", index_url] if index_url else []
    reachable, detail = _pip_dry_run("onnxruntime-gpu", "--no-deps", *index)
    resolved: dict[str, str] = {}
    if reachable:
        constraints = CHECKOUT / "constraints.txt"
        pins = ["-c", str(constraints)] if constraints.is_file() else []
        with tempfile.TemporaryDirectory(prefix="tritonstack-gpucheck-") as tmp:
            report = Path(tmp) / "report.json"
            reachable, detail = _pip_dry_run(requirement, *pins, *index, report=report)
            if reachable:
                install = json.loads(report.read_text())["install"]
                resolved = {item["metadata"]["name"]: item["metadata"]["version"] for item in install}
                packages = ", ".join(f"{name} {version}" for name, version in sorted(resolved.items()))
                detail = f"{requirement} resolves{' with constraints.txt' if pins else ''}: {packages}"
    return Check("gpu_extra_resolves", reachable, detail, {"requirement": requirement, "resolved": resolved})


def cpu_side_checks(gpus: Sequence[Gpu]) -> list[Check]:
    return [onnxruntime_build(), gpu_configs(gpus), gpu_extra_resolves()]
