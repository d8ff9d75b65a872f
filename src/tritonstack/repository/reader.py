"""A ``config.pbtxt`` read back into the typed :class:`ModelConfig`, for whatever rewrites one (``tune``).

A rewrite must not drop what it does not understand: a field the typed config
does not carry (a response cache, priority levels, a hand-added ``name`` on an
instance group) would silently vanish when the config is rendered again. So
:func:`from_proto` renders what it read and compares it with the protobuf it
read, and refuses the config, naming the fields, when they differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format

from tritonstack.repository.config import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ModelConfig,
    QueuePolicy,
    Tensor,
    TensorRTAccelerator,
    Warmup,
    WarmupInput,
    parse,
)
from tritonstack.repository.errors import RepositoryError


def _data_type(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return str(model_config_pb2.DataType.Name(value))


def _tensor(tensor: Any) -> Tensor:
    return Tensor(tensor.name, _data_type(tensor.data_type), tuple(tensor.dims))


def _dynamic_batching(batching: Any) -> DynamicBatching:
    policy = None
    if batching.HasField("default_queue_policy"):
        queue = batching.default_queue_policy
        policy = QueuePolicy(
            max_queue_size=queue.max_queue_size,
            default_timeout_us=queue.default_timeout_microseconds,
            allow_timeout_override=queue.allow_timeout_override,
        )
    return DynamicBatching(
        max_queue_delay_us=batching.max_queue_delay_microseconds,
        preferred_batch_size=tuple(batching.preferred_batch_size),
        queue_policy=policy,
    )


def _instance_group(group: Any) -> InstanceGroup:
    from tritonclient.grpc import model_config_pb2

    return InstanceGroup(group.count, model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind))


def _warmup(warmup: Any) -> Warmup:
    inputs = {
        name: WarmupInput(_data_type(value.data_type), tuple(value.dims), zero_data=value.zero_data)
        for name, value in warmup.inputs.items()
    }
    return Warmup(name=warmup.name, batch_size=warmup.batch_size, inputs=inputs, count=warmup.count)


def _shapes(text: str) -> tuple[tuple[str, ...], int, int]:
    """``"input_ids:8x128,attention_mask:8x128"`` -> (names, batch, sequence)."""
    entries = [entry.split(":") for entry in text.split(",")]
    batch, sequence = (int(n) for n in entries[0][1].split("x"))
    return tuple(name for name, _ in entries), batch, sequence


def _tensorrt(optimization: Any) -> TensorRTAccelerator | None:
    accelerators = optimization.execution_accelerators.gpu_execution_accelerator
    if len(accelerators) != 1 or accelerators[0].name != "tensorrt":
        return None  # anything else is caught by the round-trip check
    parameters = accelerators[0].parameters
    try:
        names, max_batch, max_sequence = _shapes(parameters["trt_profile_max_shapes"])
        _, opt_batch, opt_sequence = _shapes(parameters["trt_profile_opt_shapes"])
        return TensorRTAccelerator(
            input_names=names,
            max_batch_size=max_batch,
            max_sequence_length=max_sequence,
            opt_batch_size=opt_batch,
            opt_sequence_length=opt_sequence,
            precision_mode=parameters["precision_mode"],
            max_workspace_size_bytes=int(parameters["max_workspace_size_bytes"]),
            engine_cache_path=parameters["trt_engine_cache_path"],
        )
    except (KeyError, ValueError, IndexError):
        return None


def _step(step: Any) -> EnsembleStep:
    return EnsembleStep(
        model_name=step.model_name,
        input_map=dict(step.input_map),
        output_map=dict(step.output_map),
        model_version=step.model_version,
    )


def from_proto(proto: Any) -> ModelConfig:
    """The typed config of a parsed ``ModelConfig``; :class:`RepositoryError` when that would lose a field."""
    config = ModelConfig(
        name=proto.name,
        inputs=tuple(_tensor(t) for t in proto.input),
        outputs=tuple(_tensor(t) for t in proto.output),
        max_batch_size=proto.max_batch_size,
        platform=proto.platform or None,
        backend=proto.backend or None,
        dynamic_batching=_dynamic_batching(proto.dynamic_batching) if proto.HasField("dynamic_batching") else None,
        instance_groups=tuple(_instance_group(g) for g in proto.instance_group),
        warmup=tuple(_warmup(w) for w in proto.model_warmup),
        parameters={key: value.string_value for key, value in proto.parameters.items()},
        default_model_filename=proto.default_model_filename or None,
        tensorrt=_tensorrt(proto.optimization) if proto.HasField("optimization") else None,
        ensemble_steps=tuple(_step(s) for s in proto.ensemble_scheduling.step),
    )
    try:
        same = config.to_proto() == proto
    except (ValueError, json_format.ParseError):
        same = False
    if not same:
        raise RepositoryError(
            f"the config of {proto.name!r} holds settings tritonstack's typed config does not carry "
            f"({', '.join(_lost_fields(config, proto)) or 'unknown'}): rewriting it would drop them",
            hint="remove or move those settings by hand, or leave this model's config as it is",
        )
    return config


def _lost_fields(config: ModelConfig, proto: Any) -> list[str]:
    """Top-level fields of ``proto`` that ``config`` renders differently."""
    original = json_format.MessageToDict(proto, preserving_proto_field_name=True)
    try:
        rendered = json_format.MessageToDict(config.to_proto(), preserving_proto_field_name=True)
    except (ValueError, json_format.ParseError):
        rendered = {}
    return sorted(key for key in original.keys() | rendered.keys() if original.get(key) != rendered.get(key))


def read_config(model_dir: Path) -> ModelConfig:
    """The typed config of ``model_dir/config.pbtxt``."""
    path = Path(model_dir) / "config.pbtxt"
    try:
        text = path.read_text()
    except OSError as error:
        raise RepositoryError(f"cannot read {path}: {error.strerror}", hint="export the model first") from error
    try:
        proto = parse(text)
    except text_format.ParseError as error:
        raise RepositoryError(f"{path} does not parse: {error}", hint="run `tritonstack validate`") from error
    return from_proto(proto)
