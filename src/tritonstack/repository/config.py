"""Typed Triton model configs, rendered through Triton's own protobuf.

A :class:`ModelConfig` becomes a dict in ``ModelConfig`` JSON form, is parsed
by ``json_format.ParseDict`` into ``model_config_pb2.ModelConfig`` (so a field
Triton does not know fails here, not at server start), and is written with
``text_format``. Never string templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

ModelConfigProto = model_config_pb2.ModelConfig

# ONNX TensorProto elem_type -> Triton config data type
ONNX_TO_TRITON = {1: "TYPE_FP32", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 8: "TYPE_STRING"}


@dataclass(frozen=True)
class Tensor:
    """One input or output; ``dims`` exclude the batch axis when ``max_batch_size > 0``."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data_type": self.data_type, "dims": list(self.dims)}


@dataclass(frozen=True)
class QueuePolicy:
    """A bounded scheduler queue that sheds load (Triton's ``ModelQueuePolicy``).

    A request arriving at a full queue (``max_queue_size`` requests, not rows) is
    refused at once with UNAVAILABLE; one that waited ``default_timeout_us`` is
    refused (``REJECT``) when the batcher next forms a batch. A client's own
    request ``timeout`` may shorten the wait (``allow_timeout_override``), never
    lengthen it. 0 disables either bound. ``REJECT`` is the protobuf enum's zero
    value, so ``text_format`` leaves ``timeout_action`` out of ``config.pbtxt``.
    """

    max_queue_size: int
    default_timeout_us: int
    allow_timeout_override: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_queue_size": self.max_queue_size,
            "default_timeout_microseconds": self.default_timeout_us,
            "timeout_action": "REJECT",
            "allow_timeout_override": self.allow_timeout_override,
        }


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher. Whatever rewrites a config (``tune``, releases) keeps ``queue_policy``."""

    max_queue_delay_us: int = 2000
    preferred_batch_size: tuple[int, ...] = ()
    queue_policy: QueuePolicy | None = None  # None: Triton's default, an unbounded queue without timeout

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_queue_delay_microseconds": self.max_queue_delay_us}
        if self.preferred_batch_size:
            out["preferred_batch_size"] = list(self.preferred_batch_size)
        if self.queue_policy:
            out["default_queue_policy"] = self.queue_policy.to_dict()
        return out


@dataclass(frozen=True)
class InstanceGroup:
    """``count`` instances of ``kind``; for ``KIND_GPU``, ``count`` on *each* of ``gpus`` (CUDA device ids).
    No ``gpus``: Triton places them on every GPU of the host that loads the model."""

    count: int = 1
    kind: str = "KIND_CPU"
    gpus: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "kind": self.kind}
        if self.gpus:
            out["gpus"] = list(self.gpus)
        return out


@dataclass(frozen=True)
class WarmupInput:
    data_type: str
    dims: tuple[int, ...]
    zero_data: bool = True  # else random_data

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data_type": self.data_type, "dims": list(self.dims)}
        out["zero_data" if self.zero_data else "random_data"] = True
        return out


@dataclass(frozen=True)
class Warmup:
    name: str
    batch_size: int
    inputs: Mapping[str, WarmupInput]
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "batch_size": self.batch_size,
            "count": self.count,
            "inputs": {name: value.to_dict() for name, value in self.inputs.items()},
        }


@dataclass(frozen=True)
class TensorRTAccelerator:
    """ONNX Runtime's TensorRT execution provider, as the NGC image's ORT backend reads it."""

    input_names: tuple[str, ...]
    max_batch_size: int
    max_sequence_length: int
    opt_batch_size: int = 16
    opt_sequence_length: int = 64
    precision_mode: str = "FP16"
    max_workspace_size_bytes: int = 1 << 30
    engine_cache_path: str = "/tmp/tritonstack-trt-cache"

    def _shapes(self, batch: int, seq: int) -> str:
        return ",".join(f"{name}:{batch}x{seq}" for name in self.input_names)

    def to_dict(self) -> dict[str, Any]:
        parameters = {
            "precision_mode": self.precision_mode,
            "max_workspace_size_bytes": str(self.max_workspace_size_bytes),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": self.engine_cache_path,
            "trt_profile_min_shapes": self._shapes(1, 1),
            # an optimum beyond the maximum makes TensorRT refuse the profile (a small --max-batch-size)
            "trt_profile_opt_shapes": self._shapes(
                min(self.opt_batch_size, self.max_batch_size), min(self.opt_sequence_length, self.max_sequence_length)
            ),
            "trt_profile_max_shapes": self._shapes(self.max_batch_size, self.max_sequence_length),
        }
        return {
            "execution_accelerators": {"gpu_execution_accelerator": [{"name": "tensorrt", "parameters": parameters}]}
        }


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: ``input_map``/``output_map`` go model tensor -> ensemble tensor."""

    model_name: str
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]
    model_version: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "input_map": dict(self.input_map),
            "output_map": dict(self.output_map),
        }


@dataclass(frozen=True)
class ModelConfig:
    """What tritonstack writes into a ``config.pbtxt``. Exactly one of platform/backend."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int
    platform: str | None = None
    backend: str | None = None
    dynamic_batching: DynamicBatching | None = None
    instance_groups: tuple[InstanceGroup, ...] = ()
    warmup: tuple[Warmup, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    default_model_filename: str | None = None
    tensorrt: TensorRTAccelerator | None = None
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    # Triton's response cache: a repeated request (same model, version and input tensors) is answered from the
    # server's cache without running the model. Only for models whose outputs are a deterministic function of the
    # request's inputs (docs/cache.md). Whatever rewrites a config (``tune``, releases) keeps it.
    response_cache: bool = False

    def to_dict(self) -> dict[str, Any]:
        if (self.platform is None) == (self.backend is None):
            raise ValueError(f"model {self.name!r}: set exactly one of platform and backend")
        out: dict[str, Any] = {
            "name": self.name,
            "max_batch_size": self.max_batch_size,
            "input": [t.to_dict() for t in self.inputs],
            "output": [t.to_dict() for t in self.outputs],
        }
        if self.platform:
            out["platform"] = self.platform
        if self.backend:
            out["backend"] = self.backend
        if self.default_model_filename:
            out["default_model_filename"] = self.default_model_filename
        if self.dynamic_batching:
            out["dynamic_batching"] = self.dynamic_batching.to_dict()
        if self.instance_groups:
            out["instance_group"] = [g.to_dict() for g in self.instance_groups]
        if self.warmup:
            out["model_warmup"] = [w.to_dict() for w in self.warmup]
        if self.parameters:
            out["parameters"] = {k: {"string_value": v} for k, v in self.parameters.items()}
        if self.tensorrt:
            out["optimization"] = self.tensorrt.to_dict()
        if self.ensemble_steps:
            out["ensemble_scheduling"] = {"step": [step.to_dict() for step in self.ensemble_steps]}
        if self.response_cache:
            out["response_cache"] = {"enable": True}
        return out

    def to_proto(self) -> Any:
        return json_format.ParseDict(self.to_dict(), ModelConfigProto())


def render(config: ModelConfig) -> str:
    """The ``config.pbtxt`` text of ``config``."""
    return render_proto(config.to_proto())


def render_proto(config_proto: Any) -> str:
    """The ``config.pbtxt`` text of a ``ModelConfig`` protobuf (one parsed from a repository and edited)."""
    return str(text_format.MessageToString(config_proto))


def parse(text: str) -> Any:
    """Parse ``config.pbtxt`` text into Triton's ``ModelConfig`` protobuf."""
    return text_format.Parse(text, ModelConfigProto())


def copy_config(config_proto: Any) -> Any:
    """A copy of a ``ModelConfig`` protobuf, to edit without touching the one read."""
    copied = ModelConfigProto()
    copied.CopyFrom(config_proto)
    return copied


def set_response_cache(text: str, *, enable: bool) -> str:
    """``config.pbtxt`` text with the response cache switched on or off, everything else kept.

    Through Triton's protobuf like every other config this package writes; for a config that exists
    already (the benchmark serves one repository with and without the cache).
    """
    config = parse(text)
    config.response_cache.enable = enable
    if not enable:
        config.ClearField("response_cache")
    return str(text_format.MessageToString(config))


def response_cache_enabled(config_proto: Any) -> bool:
    """Whether a parsed config asks for Triton's response cache."""
    return bool(config_proto.HasField("response_cache") and config_proto.response_cache.enable)


def parameter(config_proto: Any, key: str, default: str | None = None) -> str | None:
    """A string parameter of a parsed config, or ``default``."""
    if key in config_proto.parameters:
        return str(config_proto.parameters[key].string_value)
    return default


CONFIG_FILENAME = "config.pbtxt"


def write_config(model_dir: Path, config_proto: Any) -> Path:
    """Write ``config_proto`` as ``model_dir/config.pbtxt`` by an atomic rename (a reader sees the old file or the
    new one, never a part), readable by others as any file the umask allows (``files.py``); its path. The one way
    export, tune and releases write a served config."""
    from tritonstack.repository import files
    from tritonstack.repository.errors import RepositoryError

    path = Path(model_dir) / CONFIG_FILENAME
    try:
        return files.write_text(path, render_proto(config_proto))
    except OSError as error:
        raise RepositoryError(f"cannot write {path}: {error.strerror}") from error
