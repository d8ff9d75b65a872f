"""The limit: the served model's own tokenizer and ONNX encoder, called in-process in batches.

Reads the same files Triton serves as ``NAME`` (the stable release's version of
``NAME_encoder`` and ``NAME_tokenizer``, see ``repository/releases.py``) and
tokenizes them with the served tokenizer's own module
(``in_triton/models/tokenization.py``: the same cut, truncation and padding to the
batch's longest text); so the gap to the served figures is the serving path alone.
An encoder whose config caps ``max_rows_per_call`` (a dynamic-int8 one: 1) runs
a batch as the served backend does, in calls of at most that many rows of
similar length, each padded to its own longest row -- so its figures here and
the export's (one text per call) measure the same model the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonstack._gpu import preload_cuda_libraries
from tritonstack.bench.cpus import machine_cpu_s
from tritonstack.bench.errors import BenchError
from tritonstack.bench.results import Round
from tritonstack.in_triton import contract
from tritonstack.in_triton.models.tokenization import TextTokenizer
from tritonstack.repository.config import parameter, parse
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
        raise BenchError(f"{model_dir} holds no model version", hint="export the model first: tritonstack export")
    return model_dir / str(read_releases(repository, name).stable)


def _config(model_dir: Path) -> Any:
    path = model_dir / "config.pbtxt"
    if not path.is_file():
        raise BenchError(f"{path} is missing", hint="export the model first: tritonstack export")
    return parse(path.read_text())


MIN_MEASURED_BATCHES = 3


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


CUDA = "CUDAExecutionProvider"
GPU_DEVICE_ID = 0  # the in-process limit runs on the first visible GPU


def _providers(device: str) -> list[Any]:
    if device == "gpu":
        return [(CUDA, {"device_id": str(GPU_DEVICE_ID)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class InProcessModel:
    """Tokenizer + ONNX Runtime session, as the served models run them; the encoder on ``device``
    (``cpu``, or ``gpu``: ONNX Runtime's CUDA provider, the limit a served GPU encoder is held to)."""

    def __init__(self, files: ServedFiles, threads: int, device: str = "cpu") -> None:
        import onnxruntime as ort

        self.files = files
        self.tokenizer = TextTokenizer(files.tokenizer_dir, files.max_sequence_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        hint = "pip install 'tritonstack[gpu]' (or make GPU=1), or pass --device cpu"
        try:
            if device == "gpu":
                preload_cuda_libraries()
            # enable_fallback=0: a limit measured on the CPU must not pass for the GPU's
            self.session = ort.InferenceSession(
                str(files.encoder_onnx), options, providers=_providers(device), enable_fallback=0
            )
        except Exception as error:  # ORT raises its own types: a missing CUDA library, an old driver
            if device != "gpu":
                raise
            raise BenchError(f"ONNX Runtime's {CUDA} did not start: {error}", hint=hint) from error
        if device == "gpu" and self.session.get_providers()[:1] != [CUDA]:
            raise BenchError(f"the in-process limit asked for {CUDA}, got {self.session.get_providers()}", hint=hint)
        self.output_name = self.session.get_outputs()[0].name

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Real (unpadded) tokens of each text, special tokens included."""
        return [len(e.ids) for e in self.tokenizer.encode(texts)]

    def calls(self, texts: Sequence[str]) -> list[tuple[list[int], dict[str, np.ndarray]]]:
        """The ONNX Runtime calls the served encoder makes for a batch of ``texts``: (rows, inputs) each, the
        inputs exactly as the served tokenizer model returns them.

        Without ``max_rows_per_call``, one call padded to the batch's longest text (the in-process limit).
        With it, rows sorted by length in calls of at most that many, each padded to its own longest.
        """
        encodings = self.tokenizer.encode(texts)
        limit = self.files.max_rows_per_call
        if not limit:
            return [(list(range(len(texts))), self.tokenizer.features(encodings, self.files.input_names))]
        order = sorted(range(len(texts)), key=lambda row: len(encodings[row].ids))
        chunks = [order[start : start + limit] for start in range(0, len(order), limit)]
        return [
            (rows, self.tokenizer.features([encodings[row] for row in rows], self.files.input_names)) for rows in chunks
        ]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The encoder's output for ``texts``, in their order, computed as served (``calls``)."""
        results: list[np.ndarray | None] = [None] * len(texts)
        for rows, inputs in self.calls(texts):
            for row, value in zip(rows, self.session.run([self.output_name], inputs)[0], strict=True):
                results[row] = value
        return np.stack([np.asarray(r) for r in results])


def measure_batch(
    model: InProcessModel,
    texts: Sequence[str],
    token_counts: Sequence[int],
    batch_size: int,
    *,
    warmup_s: float,
    duration_s: float,
) -> tuple[Round, dict[str, float]]:
    """Batches of ``batch_size`` consecutive texts, back to back; latency is per batch.

    The window lasts ``duration_s`` or ``MIN_MEASURED_BATCHES`` batches, whichever is longer.
    """
    latencies: list[float] = []
    completed = tokens = 0
    tokenize_s = encode_s = 0.0
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + duration_s
    measured_from = None
    cpu_from = machine_from = 0.0
    cursor = 0
    # At least MIN_MEASURED_BATCHES batches in the window, however slow one batch is.
    while (now := time.perf_counter()) < window_end or len(latencies) < MIN_MEASURED_BATCHES:
        cpu_now, machine_now = time.process_time(), machine_cpu_s()
        indices = [(cursor + i) % len(texts) for i in range(batch_size)]
        cursor += batch_size
        batch = [texts[i] for i in indices]
        calls = model.calls(batch)
        tokenized = time.perf_counter()
        for _, inputs in calls:
            model.session.run([model.output_name], inputs)
        done = time.perf_counter()
        if now >= window_start:
            if measured_from is None:
                measured_from, cpu_from, machine_from = now, cpu_now, machine_now
            latencies.append(done - now)
            completed += len(batch)
            tokens += sum(token_counts[i] for i in indices)
            tokenize_s += tokenized - now
            encode_s += done - tokenized
    elapsed = time.perf_counter() - (measured_from if measured_from is not None else window_start)
    cpu_s = time.process_time() - cpu_from if measured_from is not None else None
    machine_s = machine_cpu_s() - machine_from if measured_from is not None else None
    details = {
        "tokenize_ms_per_text": 1000 * tokenize_s / completed if completed else float("nan"),
        "encode_ms_per_text": 1000 * encode_s / completed if completed else float("nan"),
    }
    # The model's CPU time is this process's: it counts as the "server" side, as for the served variants.
    return Round(tuple(latencies), elapsed, completed, tokens, server_cpu_s=cpu_s, machine_cpu_s=machine_s), details
