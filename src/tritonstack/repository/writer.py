"""Write an exported text model into a Triton model repository, atomically.

``write_text_model`` lays out the models of ``contract.py``: the ONNX encoder,
the tokenizer, for classification tasks a postprocessor, and the text-in
ensemble that chains them. An ensemble rather than a BLS model, because
Triton's graceful shutdown knows an ensemble's steps: a BLS model's accepted
requests can fail when the encoder is unloaded under them
(triton-inference-server/server#6287). Everything is staged beside the
repository (``staging.py``) and moved into place at the end, so a failure
leaves nothing half-written, and a kill leaves nothing Triton would load.
Exporting a name that exists adds a new version: a candidate release, served
beside the stable one (``releases.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonstack import _faults
from tritonstack.in_triton import contract
from tritonstack.repository import files, layouts, lock, staging
from tritonstack.repository.config import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    Tensor,
    TensorRTAccelerator,
    Warmup,
    WarmupInput,
    write_config,
)
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.model_spec import ModelSpec
from tritonstack.repository.paths import versions
from tritonstack.repository.python_models import add_versions, write_version
from tritonstack.repository.queue_policy import queue_budget_ms, queue_policy
from tritonstack.repository.releases import install_releases, read_releases, release_configs, write_releases

ENCODER_FILENAME = "model.onnx"
# On a CPU an execution's every request waits for the whole batch, and a batch costs about its rows times one
# text (a CPU gains little from batching): under a backlog, batches of 64 made each admitted request wait up to
# a second. Preferring batches of 4 keeps executions short; measured on the bundled MiniLM at 4x capacity
# (2-core VNNI, server on one core): goodput 78 -> 84 % of capacity, back to normal latency 1.1 s after the
# burst instead of over 3 s, capacity unchanged (64.6 -> 64.8 calls/s). `tritonstack tune` searches it per
# machine. A GPU wants the biggest batches: no preference there.
CPU_ENCODER_BATCH = (4,)
# CPU encoder instances (and fused-step instances): one per core of the server, each with its share of the
# cores (the backend divides them unless the config sets intra_op_thread_count). Two were written while every
# step had a queue policy, under which Triton 2.51's batcher stalled unless an instance sat idle (docs/export.md);
# without the policy, two instances on one server core cost throughput and tail: bundled MiniLM int8 on one core
# of the 2-core VNNI machine, quiet, runs alternated, served / in-process 0.95 and 0.91 with one instance, 0.87
# and 0.86 with two, c=16 p99 168-174 against 255-282 ms (docs/bench.md). More instances than cores take turns
# (cpu_turns). Each instance holds a copy of the weights, hence the cap; `tritonstack tune` searches the split.
MAX_CPU_INSTANCES = 8


def cpu_instances_for(cores: int) -> int:
    """CPU instances of the encoder (or fused step) for a server with ``cores`` cores: one per core, 1 to
    ``MAX_CPU_INSTANCES``."""
    return max(1, min(cores, MAX_CPU_INSTANCES))


REPORT_FILENAME = "export_report.json"


@dataclass(frozen=True, kw_only=True)
class ExportedModel(ModelSpec):
    """An exported, parity-checked model ready to be written: the export's ``ModelSpec`` and how to serve it.

    From an export: ``ExportedModel(**export.spec(onnx_path=chosen), name=..., ...)``.
    """

    name: str
    max_batch_size: int
    precision: str  # fp32 | fp16 | int8: recorded on the encoder, for readers such as the benchmark
    recipe: str | None = None  # the export candidate that won, recorded beside the precision
    max_rows_per_call: int = 0  # rows per ONNX Runtime call of the encoder; 0: no limit (contract.py)
    target: str = "cpu"
    gpus: tuple[int, ...] = ()  # gpu target: an encoder instance on each of these CUDA devices; (): every GPU
    report: Mapping[str, Any] = field(default_factory=dict)  # export_report.json, in its JSON form
    cpu_instances: int = 1  # the encoder's on a CPU target (cpu_instances_for the serving machine's cores)
    tokenizer_instances: int = 1
    encoder_threads: int = 0  # per instance; 0: the embedded backend shares the server's CPUs among the instances
    max_queue_delay_us: int = 2000
    max_queue_size: int | None = None  # Triton's bound per step queue, only where asked (> 0): it stalls the batcher
    queue_timeout_ms: int | None = None  # the steps' queue budget (shed by age); None: the default, 0: none
    # Triton's response cache on the text-in ensemble only (see _text_in_config); outputs must be deterministic.
    response_cache: bool = False
    layout: str = contract.ENSEMBLE_LAYOUT  # contract.LAYOUTS; fused: CPU only


def _batching(
    model: ExportedModel, max_queue_delay_us: int, preferred_batch_size: tuple[int, ...] = ()
) -> DynamicBatching:
    """Dynamic batching for one step: no queue policy unless one was asked for (the Python steps shed by age:
    queue_policy.py)."""
    policy = queue_policy(model.max_queue_size)
    return DynamicBatching(
        max_queue_delay_us=max_queue_delay_us, preferred_batch_size=preferred_batch_size, queue_policy=policy
    )


def _encoder_config(model: ExportedModel) -> ModelConfig:
    name = contract.encoder_name(model.name)
    inputs = tuple(Tensor(n, "TYPE_INT64", (-1,)) for n in model.input_names)
    sequence_axis = (-1,) if _task(model).token_level else ()
    output = Tensor(model.output_name, "TYPE_FP32", (*sequence_axis, model.output_dim))
    gpu = model.target == "gpu"
    # the backend refuses longer inputs: a direct call with a huge sequence would otherwise run out of memory
    parameters = {
        contract.PRECISION_PARAMETER: model.precision,
        contract.MAX_SEQUENCE_LENGTH_PARAMETER: str(model.max_sequence_length),
    }
    if model.recipe:
        parameters[contract.RECIPE_PARAMETER] = model.recipe
    if model.max_rows_per_call:
        parameters[contract.MAX_ROWS_PER_CALL_PARAMETER] = str(model.max_rows_per_call)
    if model.encoder_threads:
        parameters[contract.INTRA_OP_THREADS_PARAMETER] = str(model.encoder_threads)
    return ModelConfig(
        name=name,
        platform="onnxruntime_onnx",
        default_model_filename=ENCODER_FILENAME,
        max_batch_size=model.max_batch_size,
        inputs=inputs,
        outputs=(output,),
        dynamic_batching=_batching(
            model, max_queue_delay_us=500, preferred_batch_size=() if gpu else CPU_ENCODER_BATCH
        ),
        instance_groups=(
            InstanceGroup(1, "KIND_GPU", model.gpus) if gpu else InstanceGroup(model.cpu_instances, "KIND_CPU"),
        ),
        warmup=(
            Warmup(
                name="zeros_batch1_seq16",
                batch_size=1,
                inputs={n: WarmupInput("TYPE_INT64", (16,)) for n in model.input_names},
            ),
        ),
        parameters=parameters,
        tensorrt=(
            TensorRTAccelerator(
                input_names=model.input_names,
                max_batch_size=model.max_batch_size,
                max_sequence_length=model.max_sequence_length,
            )
            if gpu
            else None
        ),
    )


def _text_parameters(model: ExportedModel, role: str) -> dict[str, str]:
    return {
        contract.ROLE_PARAMETER: role,
        contract.TASK_PARAMETER: model.task,
        contract.MAX_SEQUENCE_LENGTH_PARAMETER: str(model.max_sequence_length),
        contract.ENCODER_MODEL_PARAMETER: contract.encoder_name(model.name),
        contract.ENCODER_INPUTS_PARAMETER: ",".join(model.input_names),
        contract.ENCODER_OUTPUT_PARAMETER: model.output_name,
        contract.LABELS_PARAMETER: json.dumps(list(model.labels)),
        contract.QUEUE_BUDGET_MS_PARAMETER: str(queue_budget_ms(model.queue_timeout_ms)),
    }


def _text_tensor(name: str = contract.TEXT_INPUT) -> Tensor:
    return Tensor(name, "TYPE_STRING", (1,))


def _text_inputs(model: ExportedModel) -> tuple[Tensor, ...]:
    """What the text-in model and the step that tokenizes take: ``TEXT`` [and ``TEXT_PAIR``, a pair task]."""
    return tuple(_text_tensor(name) for name in contract.text_inputs(_task(model)))


# Each text-in output's type and shape per text; () stands for the encoder output's width (the embedding's size).
_OUTPUT_TYPES: dict[str, tuple[str, tuple[int, ...]]] = {
    contract.EMBEDDING_OUTPUT: ("TYPE_FP32", ()),
    contract.LABEL_OUTPUT: ("TYPE_STRING", (1,)),
    contract.SCORE_OUTPUT: ("TYPE_FP32", (1,)),
    contract.ENTITIES_OUTPUT: ("TYPE_STRING", (1,)),
}


def _task(model: ExportedModel) -> contract.Task:
    try:
        return contract.task(model.task)
    except ValueError as error:
        raise RepositoryError(f"no text-in model for {error}") from None  # the message lists the known tasks


# Each row's token count and whether it was cut (contract.TOKENS_OUTPUT): produced by the step that tokenizes,
# an output of the text-in model beside the task's.
_TOKENS = Tensor(contract.TOKENS_OUTPUT, "TYPE_INT32", (2,))


def _tokenizer_config(model: ExportedModel) -> ModelConfig:
    return ModelConfig(
        name=contract.tokenizer_name(model.name),
        backend="python",
        max_batch_size=model.max_batch_size,
        inputs=_text_inputs(model),
        outputs=(*(Tensor(n, "TYPE_INT64", (-1,)) for n in model.input_names), _TOKENS),
        dynamic_batching=_batching(model, max_queue_delay_us=model.max_queue_delay_us),
        instance_groups=(InstanceGroup(model.tokenizer_instances, "KIND_CPU"),),
        parameters=_text_parameters(model, contract.TOKENIZER_ROLE),
    )


def _task_outputs(model: ExportedModel) -> tuple[Tensor, ...]:
    """The text-in model's outputs (``contract.Task.outputs``), each of its type and shape per text."""
    tensors = []
    for name in _task(model).outputs:
        data_type, dims = _OUTPUT_TYPES[name]
        tensors.append(Tensor(name, data_type, dims or (model.output_dim,)))
    return tuple(tensors)


def _postprocess_config(model: ExportedModel, encoder: ModelConfig) -> ModelConfig:
    inputs = encoder.outputs
    if _task(model).token_level:  # a token's entity span is found in the text itself
        inputs = (_text_tensor(), *inputs)
    return ModelConfig(
        name=contract.postprocess_name(model.name),
        backend="python",
        max_batch_size=model.max_batch_size,
        inputs=inputs,
        outputs=_task_outputs(model),
        dynamic_batching=_batching(model, max_queue_delay_us=0),
        instance_groups=(InstanceGroup(1, "KIND_CPU"),),
        parameters=_text_parameters(model, contract.POSTPROCESS_ROLE),
    )


def _text_in_config(model: ExportedModel, postprocess: ModelConfig | None) -> ModelConfig:
    """The text-in ensemble. It alone carries the response cache: Triton 2.51 looks up an ensemble's request
    before running any step, so a hit skips tokenizer and encoder alike, while a cache on the steps as well
    would store the token ids and the encoder's output of every miss next to the answer, to be hit only when
    two different texts tokenize alike (measured: docs/cache.md)."""
    features = {n: n for n in model.input_names}
    texts = {t.name: t.name for t in _text_inputs(model)}
    tokenized = {**features, _TOKENS.name: _TOKENS.name}
    steps = [EnsembleStep(contract.tokenizer_name(model.name), texts, tokenized)]
    if postprocess is None:  # the encoder's output (feature-extraction: pooled) is the answer, the task's one output
        (answer,) = _task(model).outputs
        steps.append(EnsembleStep(contract.encoder_name(model.name), features, {model.output_name: answer}))
    else:
        steps.append(EnsembleStep(contract.encoder_name(model.name), features, {model.output_name: model.output_name}))
        steps.append(
            EnsembleStep(
                postprocess.name,
                {t.name: t.name for t in postprocess.inputs},
                {t.name: t.name for t in postprocess.outputs},
            )
        )
    return ModelConfig(
        name=model.name,
        platform="ensemble",
        max_batch_size=model.max_batch_size,
        inputs=_text_inputs(model),
        outputs=(*_task_outputs(model), _TOKENS),
        ensemble_steps=tuple(steps),
        parameters={contract.TASK_PARAMETER: model.task},
        response_cache=model.response_cache,
    )


def model_configs(model: ExportedModel) -> list[ModelConfig]:
    """The ensemble layout's configs: encoder, tokenizer, [postprocess,] text-in ensemble."""
    encoder = _encoder_config(model)
    postprocess = _postprocess_config(model, encoder) if _task(model).postprocess else None
    steps = [encoder, _tokenizer_config(model), *([postprocess] if postprocess else [])]
    return [*steps, _text_in_config(model, postprocess)]


def layout_configs(model: ExportedModel) -> list[Any]:
    """The configs (protobuf) ``write_text_model`` writes for ``model.layout``: the steps, then the text-in
    ensemble. The fused layout keeps every step model and adds ``NAME_fused`` (``layouts.py`` says why)."""
    problem = layouts.layout_problem(model.layout, model.target)
    if problem is not None:
        message, hint = problem
        raise RepositoryError(message, hint=hint)
    configs = [c.to_proto() for c in model_configs(model)]
    if model.layout == contract.ENSEMBLE_LAYOUT:
        return configs
    encoder, tokenizer, *others, text_in = configs
    fused = layouts.fused_step(text_in, encoder, tokenizer, others)
    return [encoder, tokenizer, *others, fused, layouts.with_fused_step(text_in)]


def _next_version(repository: Path, names: list[str]) -> int:
    taken = [int(version.name) for name in names for version in versions(repository / name)]
    return max(taken, default=0) + 1


def _stage(model: ExportedModel, folder: Path, version: int, stable: int) -> list[Any]:
    """Stage release ``version`` of ``model`` beside ``stable`` (itself for a first export); return the configs
    (protobuf) to install once the version folders are in place."""
    configs = layout_configs(model)
    candidate = None if stable == version else version
    release_protos = release_configs(configs[-1], configs[:-1], stable, candidate)
    for config in configs:
        (folder / config.name / str(version)).mkdir(parents=True)
    encoder, text_in = configs[0], configs[-1]
    files.copy_file(model.onnx_path, folder / encoder.name / str(version) / ENCODER_FILENAME)
    for config in configs:
        if config.backend == "python":
            write_version(folder / config.name / str(version), model.tokenizer_dir)
    report = {**model.report, "name": model.name, "version": version}
    (folder / text_in.name / str(version) / REPORT_FILENAME).write_text(json.dumps(report, indent=2))
    return release_protos


def _move_into_place(repository: Path, staged: Path, name: str, version: int, configs: list[Any]) -> None:
    """Move staged model ``name`` into the repository: a model already there gets its new version folder (not
    served until its config names it), a new one its whole folder with its config, in one rename -- a
    reader never sees a model folder without its config."""
    target = repository / name
    if target.is_dir():
        os.replace(staged / name / str(version), target / str(version))
        return
    (config,) = [c for c in configs if c.name == name]
    write_config(staged / name, config)
    os.replace(staged / name, target)


def write_text_model(repository: Path, model: ExportedModel) -> Path:
    """Write ``model`` into ``repository``; return the text-in model's new version folder."""
    repository = Path(repository)
    names = [c.name for c in layout_configs(model)]
    try:
        repository.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RepositoryError(
            f"cannot write to model repository {repository}: {error.strerror}",
            hint="pass --repository with a folder you can write to",
        ) from error
    try:
        with lock.locked(repository, f"export {model.name}"):
            staging.sweep(repository)  # what a killed writer left
            with staging.staging_dir(repository) as staged:
                version = _next_version(repository, names)
                # a second export of a name is a candidate release, served beside the stable one (releases.py)
                previous = read_releases(repository, model.name) if (repository / model.name).is_dir() else None
                stable = previous.stable if previous else version
                configs = _stage(model, staged, version, stable)
                _faults.point("export-staged")
                for name in names:  # steps first, the text-in ensemble last
                    _move_into_place(repository, staged, name, version, configs)
                    _faults.point(f"export-moved-{name}")
                if model.layout == contract.FUSED_LAYOUT:  # a stable release exported in the ensemble layout
                    add_versions(repository, model.name, contract.fused_name(model.name), (stable,))
                # configs last: a reader never sees a config naming a version that is not there yet; an earlier
                # candidate that was never judged is retired: the new one replaces it
                install_releases(repository, model.name, configs, (stable, version))
                _faults.point("export-configs")
                # the step models of the other layout an earlier export left (idle) follow the served releases
                write_releases(repository, model.name, stable, None if stable == version else version)
    except OSError as error:
        raise RepositoryError(f"writing {model.name!r} into {repository} failed: {error}") from error
    return repository / model.name / str(version)
