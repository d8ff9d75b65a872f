"""Check a model repository before Triton sees it.

The most reported Triton load failures are a config that disagrees with its
model file (INT64 vs INT32 token tensors, dims vs. ONNX dynamic axes, names) and
broken wiring between models. Each problem names the model and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from tritonstack.in_triton import contract, manifest
from tritonstack.repository import paths
from tritonstack.repository.config import ONNX_TO_TRITON, parameter, parse
from tritonstack.repository.errors import ConfigValidationError, RepositoryError
from tritonstack.repository.releases import served_versions


@dataclass
class Report:
    models: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, model: str, message: str) -> None:
        self.problems.append(f"{model}: {message}")


def _onnx_signature(
    path: Path,
) -> tuple[dict[str, tuple[str, list[int | str]]], dict[str, tuple[str, list[int | str]]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def describe(values: Any) -> dict[str, tuple[str, list[int | str]]]:
        out = {}
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            dims: list[int | str] = [d.dim_param or d.dim_value or -1 for d in tensor.shape.dim]
            out[value.name] = (ONNX_TO_TRITON.get(tensor.elem_type, f"onnx type {tensor.elem_type}"), dims)
        return out

    return describe(graph.input), describe(graph.output)


def _check_tensors(
    report: Report, name: str, kind: str, configured: Any, actual: dict[str, Any], batched: bool
) -> None:
    configured_names = {t.name for t in configured}
    for missing in sorted(set(actual) - configured_names):
        if kind == "input":
            report.add(name, f"the model file has {kind} {missing!r}, the config does not")
    for tensor in configured:
        if tensor.name not in actual:
            report.add(name, f"config {kind} {tensor.name!r} is not in the model file (it has {sorted(actual)})")
            continue
        data_type = model_config_type(tensor.data_type)
        file_type, file_dims = actual[tensor.name]
        if data_type != file_type:
            report.add(name, f"{kind} {tensor.name!r}: config data_type {data_type}, model file {file_type}")
        dims = ([-1] if batched else []) + list(tensor.dims)
        if len(dims) != len(file_dims):
            report.add(
                name,
                f"{kind} {tensor.name!r}: config rank {len(dims)} (dims {list(tensor.dims)}"
                f"{', plus the batch axis' if batched else ''}), model file rank {len(file_dims)} {file_dims}",
            )
            continue
        for axis, (want, have) in enumerate(zip(dims, file_dims, strict=True)):
            if isinstance(have, int) and have > 0 and want != -1 and want != have:
                report.add(name, f"{kind} {tensor.name!r} axis {axis}: config {want}, model file {have}")
            if isinstance(have, int) and have > 0 and want == -1 and not (batched and axis == 0):
                report.add(name, f"{kind} {tensor.name!r} axis {axis}: config -1, model file fixes it at {have}")


def model_config_type(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return str(model_config_pb2.DataType.Name(value))


def _check_onnx(report: Report, name: str, config: Any, version: Path) -> None:
    filename = config.default_model_filename or "model.onnx"
    path = version / filename
    if not path.is_file():
        report.add(name, f"version {version.name} has no {filename}")
        return
    try:
        inputs, outputs = _onnx_signature(path)
    except Exception as error:  # onnx raises DecodeError and friends
        report.add(name, f"{path.name} of version {version.name} is not a readable ONNX model: {error}")
        return
    batched = config.max_batch_size > 0
    _check_tensors(report, name, "input", config.input, inputs, batched)
    _check_tensors(report, name, "output", config.output, outputs, batched)


def _check_python_text_model(
    report: Report, name: str, config: Any, versions: list[Path], configs: dict[str, Any]
) -> None:
    role = parameter(config, contract.ROLE_PARAMETER)
    if role not in contract.TEXT_ROLES:
        return
    task = contract.TASKS_BY_NAME.get(parameter(config, contract.TASK_PARAMETER, "") or "")
    # the roles that tokenize, and a postprocess that maps a token-level output back to the text's tokens
    needs_tokenizer = role in (contract.TOKENIZER_ROLE, contract.FUSED_ROLE) or (task is not None and task.token_level)
    for version in versions:
        for filename in _required_files(version, role, needs_tokenizer):
            if not (version / filename).is_file():
                report.add(name, f"version {version.name} has no {filename}")
    encoder_name = parameter(config, contract.ENCODER_MODEL_PARAMETER, "") or ""
    encoder = configs.get(encoder_name)
    if encoder is None:
        report.add(
            name,
            f"parameter {contract.ENCODER_MODEL_PARAMETER} names {encoder_name!r}, which is not in the repository",
        )
        return
    encoder_inputs = (parameter(config, contract.ENCODER_INPUTS_PARAMETER) or "").split(",")
    if encoder_inputs != [t.name for t in encoder.input]:
        report.add(
            name, f"parameter {contract.ENCODER_INPUTS_PARAMETER} {encoder_inputs} differ from {encoder_name}'s inputs"
        )
    if role == contract.TOKENIZER_ROLE and _without_tokens(config.output) != encoder_inputs:
        report.add(name, f"outputs must be {encoder_name}'s inputs {encoder_inputs} [and {contract.TOKENS_OUTPUT}]")
    if parameter(config, contract.ENCODER_OUTPUT_PARAMETER) not in [t.name for t in encoder.output]:
        report.add(name, f"parameter {contract.ENCODER_OUTPUT_PARAMETER} is not an output of {encoder_name}")
    if role == contract.FUSED_ROLE:
        _check_fused(report, name, config, versions, encoder_name, encoder)


def _required_files(version: Path, role: str, needs_tokenizer: bool) -> list[str]:
    """The files version folder ``version`` of a Python model in ``role`` needs. A folder written by an earlier
    tritonstack carries its own model.py, which loads fewer siblings (``manifest.FUSED_ONLY_FILES``,
    ``manifest.CONTRACT_FILES``): it is not asked for the files its model.py does not load."""
    model_py = version / "model.py"
    loads_contract = model_py.is_file() and manifest.BESIDE_FILE in model_py.read_text(encoding="utf-8")
    required = [
        f
        for f in manifest.PYTHON_MODEL_FILES
        if (role == contract.FUSED_ROLE or f not in manifest.FUSED_ONLY_FILES)
        and (loads_contract or f not in manifest.CONTRACT_FILES)
    ]
    if needs_tokenizer:
        required.append("tokenizer.json")
    return required


def _check_fused(report: Report, name: str, config: Any, versions: list[Path], encoder_name: str, encoder: Any) -> None:
    """The fused step runs the encoder's ONNX file of its own release, in a Python process, on the CPU."""
    filename = (
        parameter(config, contract.ENCODER_FILE_PARAMETER, contract.DEFAULT_ENCODER_FILE)
        or contract.DEFAULT_ENCODER_FILE
    )
    for version in versions:
        onnx_file = version.parent.parent / encoder_name / version.name / filename
        if not onnx_file.is_file():
            report.add(name, f"version {version.name} runs {encoder_name}/{version.name}/{filename}, which is missing")
    if any(group.kind == group.KIND_GPU for group in config.instance_group):
        report.add(name, "a fused step runs ONNX Runtime on the CPU: its instance_group must be KIND_CPU")
    if encoder.max_batch_size < config.max_batch_size:
        report.add(name, f"max_batch_size {config.max_batch_size} > {encoder_name}'s {encoder.max_batch_size}")


def _check_ensemble(report: Report, name: str, config: Any, configs: dict[str, Any]) -> None:
    available = {t.name: t.data_type for t in config.input}
    for number, step in enumerate(config.ensemble_scheduling.step, 1):
        where = f"ensemble step {number} ({step.model_name})"
        model = configs.get(step.model_name)
        if model is None:
            report.add(name, f"{where}: no model {step.model_name!r} in the repository")
            continue
        if model.max_batch_size < config.max_batch_size:
            report.add(name, f"{where}: max_batch_size {model.max_batch_size} < the ensemble's {config.max_batch_size}")
        model_inputs = {t.name: t.data_type for t in model.input}
        if set(step.input_map) != set(model_inputs):
            report.add(
                name, f"{where}: input_map keys {sorted(step.input_map)} != the model's inputs {sorted(model_inputs)}"
            )
        for model_tensor, ensemble_tensor in step.input_map.items():
            if ensemble_tensor not in available:
                report.add(name, f"{where}: input {ensemble_tensor!r} is produced by no earlier step")
            elif model_tensor in model_inputs and available[ensemble_tensor] != model_inputs[model_tensor]:
                report.add(
                    name,
                    f"{where}: {ensemble_tensor!r} is {model_config_type(available[ensemble_tensor])}, "
                    f"the model's {model_tensor!r} wants {model_config_type(model_inputs[model_tensor])}",
                )
        model_outputs = {t.name: t.data_type for t in model.output}
        for model_tensor, ensemble_tensor in step.output_map.items():
            if model_tensor not in model_outputs:
                report.add(name, f"{where}: output_map key {model_tensor!r} is not an output of the model")
            else:
                available[ensemble_tensor] = model_outputs[model_tensor]
    for output in config.output:
        if output.name not in available:
            report.add(name, f"ensemble output {output.name!r} is produced by no step")
        elif available[output.name] != output.data_type:
            report.add(
                name,
                f"ensemble output {output.name!r}: declared {model_config_type(output.data_type)}, "
                f"produced {model_config_type(available[output.name])}",
            )
    task = contract.OUTPUTS_BY_TASK.get(parameter(config, contract.TASK_PARAMETER, "") or "")
    if task is not None and tuple(_without_tokens(config.output)) != task:
        report.add(name, f"outputs must be {list(task)} [and {contract.TOKENS_OUTPUT}]")


def _without_tokens(tensors: Any) -> list[str]:
    """The names of ``tensors`` less a last ``TOKENS``: an export from before token counts has none, a later one
    lists it after the task's outputs (a text-in model) or after the encoder's inputs (its tokenizer)."""
    names = [t.name for t in tensors]
    return names[:-1] if names and names[-1] == contract.TOKENS_OUTPUT else names


def _served(repository: Path, name: str, config: Any) -> tuple[int, ...]:
    return served_versions(config, [int(v.name) for v in paths.versions(repository / name)])


def _check_release_consistency(
    report: Report, repository: Path, name: str, config: Any, configs: dict[str, Any]
) -> None:
    """Every served version of an ensemble must run the steps of one release (see repository/releases.py)."""
    steps = list(config.ensemble_scheduling.step)
    pinned = sorted({step.model_version for step in steps if step.model_version != -1})
    for step in steps:
        model = configs.get(step.model_name)
        if model is None:
            continue  # _check_ensemble names it
        step_served = _served(repository, step.model_name, model)
        if step.model_version == -1 and len(step_served) > 1:
            report.add(
                name,
                f"step {step.model_name} serves versions {list(step_served)} but the step names none: "
                "it would run the newest whichever release was asked for (pin model_version)",
            )
        elif step.model_version != -1 and step.model_version not in step_served:
            report.add(name, f"step {step.model_name} version {step.model_version} is not served by it")
    if len(pinned) > 1:
        report.add(name, f"steps run different releases {pinned}: each release must run its own steps")
        return
    served = _served(repository, name, config)
    if pinned and list(served) != pinned:
        report.add(
            name,
            f"serves versions {list(served)} but its steps run release {pinned[0]}: "
            f"a text-in model serves exactly the release its steps run",
        )
    release = parameter(config, contract.RELEASE_PARAMETER)
    if release is not None and [int(release)] != pinned:
        report.add(name, f"parameter release {release} differs from the release its steps run {pinned}")


def validate_repository(repository: Path) -> Report:
    """Every problem found in ``repository``; raises only when it cannot be read at all."""
    repository = Path(repository)
    if not repository.is_dir():
        raise RepositoryError(f"model repository {repository} does not exist", hint="run `tritonstack export` first")
    report = Report()
    configs: dict[str, Any] = {}
    dirs = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    for hidden in sorted(p for p in repository.iterdir() if p.is_dir() and p.name.startswith(".")):
        # Triton loads every folder as a model, hidden ones too (a staging folder a killed writer left)
        report.add(hidden.name, "a hidden folder: Triton would load it as a model and fail; remove it")
    for model_dir in dirs:
        config_path = model_dir / "config.pbtxt"
        if not config_path.is_file():
            report.add(model_dir.name, "no config.pbtxt")
            continue
        try:
            config = parse(config_path.read_text())
        except text_format.ParseError as error:
            report.add(model_dir.name, f"config.pbtxt does not parse: {error}")
            continue
        if config.name and config.name != model_dir.name:
            report.add(model_dir.name, f"config name {config.name!r} differs from its folder name")
        configs[model_dir.name] = config
        report.models.append(model_dir.name)
    for name, config in configs.items():
        on_disk = {int(v.name) for v in paths.versions(repository / name)}
        for missing in sorted(set(_served(repository, name, config)) - on_disk):
            report.add(name, f"version_policy serves version {missing}, which has no folder {missing}/")
        if config.platform == "ensemble":
            _check_ensemble(report, name, config, configs)
            _check_release_consistency(report, repository, name, config, configs)
            continue
        served = _served(repository, name, config)
        # only served versions load: a retired release may predate today's config
        versions = [v for v in paths.versions(repository / name) if int(v.name) in served]
        if not versions:
            report.add(name, f"no served numeric version folder (e.g. 1/); serves {list(served)}")
            continue
        if config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
            for version in versions:
                _check_onnx(report, name, config, version)
        _check_python_text_model(report, name, config, versions, configs)
    return report


def check_repository(repository: Path) -> Report:
    """Like :func:`validate_repository`, raising :class:`ConfigValidationError` on any problem."""
    report = validate_repository(repository)
    if not report.models:
        raise ConfigValidationError(
            [f"{repository} holds no models"], hint="run `tritonstack export MODEL --repository ...`"
        )
    if report.problems:
        raise ConfigValidationError(report.problems, hint="re-export the model, or fix the named config fields")
    return report
