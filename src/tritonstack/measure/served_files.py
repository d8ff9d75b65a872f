"""What a repository serves as text-in model ``NAME``: the encoder and tokenizer files and their knobs.

Reads the stable release's version of ``NAME_encoder`` and ``NAME_tokenizer``
(``repository/releases.py``): the files ``bench`` runs in-process and ``tune``
tokenizes its workload with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack.in_triton import contract
from tritonstack.repository.config import parameter, parse
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.paths import versions


@dataclass(frozen=True)
class ServedFiles:
    """The files and knobs of a text-in model in a repository."""

    name: str
    encoder_onnx: Path
    tokenizer_dir: Path
    input_names: tuple[str, ...]
    max_sequence_length: int
    precision: str
    knobs: dict[str, Any]
    max_rows_per_call: int = 0  # the encoder's cap on rows per ONNX Runtime call; 0: none


def _stable_version(repository: Path, name: str, model_dir: Path) -> Path:
    """The folder of ``model_dir`` that the text-in model ``name`` runs: its stable release."""
    from tritonstack.repository.releases import read_releases

    if not versions(model_dir):
        raise RepositoryError(f"{model_dir} holds no model version", hint="export the model first: tritonstack export")
    return model_dir / str(read_releases(repository, name).stable)


def _config(model_dir: Path) -> Any:
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise RepositoryError(f"{path} is missing", hint="export the model first: tritonstack export")
    return parse(path.read_text())


def _precision(encoder: Any) -> str:
    """What the encoder's config records of its ONNX file: ``int8 blockwise32_optimized``, ``fp32``, ...

    ``unknown`` for an encoder written before tritonstack recorded it (or by hand).
    """
    precision = parameter(encoder, contract.PRECISION_PARAMETER)
    recipe = parameter(encoder, contract.RECIPE_PARAMETER)
    if not precision:
        return "unknown"
    return f"{precision} {recipe}" if recipe else precision


def _encoder_kind(encoder: Any) -> str:
    """``KIND_GPU`` when any of the encoder's instance groups is a GPU one, else ``KIND_CPU``."""
    from tritonclient.grpc import model_config_pb2

    kinds = {model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in encoder.instance_group}
    return "KIND_GPU" if "KIND_GPU" in kinds else "KIND_CPU"


def locate(repository: Path, name: str) -> ServedFiles:
    """The encoder and tokenizer Triton would serve for text-in model ``name``; in the fused layout the knobs
    are the fused step's, which runs the same files (``repository/layouts.py``)."""
    from tritonstack.repository.layouts import layout_of

    encoder_dir = repository / contract.encoder_name(name)
    tokenizer_dir = repository / contract.tokenizer_name(name)
    encoder, tokenizer = _config(encoder_dir), _config(tokenizer_dir)
    layout = layout_of(_config(repository / name))
    runs_encoder = _config(repository / contract.fused_name(name)) if layout == contract.FUSED_LAYOUT else encoder
    onnx = _stable_version(repository, name, encoder_dir) / (encoder.default_model_filename or "model.onnx")
    knobs = {
        "layout": layout,
        "encoder_kind": _encoder_kind(encoder),
        # a GPU group's count is per listed GPU (a group that lists none counts once here)
        "encoder_instances": sum(g.count * max(len(g.gpus), 1) for g in runs_encoder.instance_group) or 1,
        "encoder_intra_op_threads": int(parameter(runs_encoder, contract.INTRA_OP_THREADS_PARAMETER, "0") or 0),
        "encoder_max_queue_delay_us": runs_encoder.dynamic_batching.max_queue_delay_microseconds,
        "tokenizer_instances": sum(g.count for g in tokenizer.instance_group) or 1,
        "tokenizer_max_queue_delay_us": tokenizer.dynamic_batching.max_queue_delay_microseconds,
        "max_batch_size": encoder.max_batch_size,
    }
    if layout == contract.FUSED_LAYOUT:  # instances that outnumber the cores take turns (encoder_runner.CpuTurns)
        knobs["cpu_turns"] = parameter(runs_encoder, contract.CPU_TURNS_PARAMETER, "0") == "1"
    max_rows_per_call = int(parameter(runs_encoder, contract.MAX_ROWS_PER_CALL_PARAMETER, "0") or 0)
    if max_rows_per_call:
        knobs["encoder_max_rows_per_call"] = max_rows_per_call
    return ServedFiles(
        name=name,
        encoder_onnx=onnx,
        tokenizer_dir=_stable_version(repository, name, tokenizer_dir),
        input_names=tuple(t.name for t in encoder.input),
        max_sequence_length=int(parameter(tokenizer, contract.MAX_SEQUENCE_LENGTH_PARAMETER, "512") or 512),
        precision=_precision(encoder),
        knobs=knobs,
        max_rows_per_call=max_rows_per_call,
    )
