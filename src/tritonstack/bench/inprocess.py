"""The limit: the served model's own tokenizer and ONNX encoder, called in-process in batches.

Reads the same files Triton serves as ``NAME`` (the stable release's version of
``NAME_encoder`` and ``NAME_tokenizer``, see ``repository/releases.py``) and
tokenizes them with the served tokenizer's own module
(``in_triton/models/tokenization.py``: the same cut, truncation and padding to the
batch's longest text, and for a pair task -- a reranker -- the pair template and
the truncation of the document only); so the gap to the served figures is the
serving path alone.
An encoder whose config caps ``max_rows_per_call`` (a dynamic-int8 one: 1) runs
a batch as the served backend does, in calls of at most that many rows of
similar length, each padded to its own longest row -- so its figures here and
the export's (one text per call) measure the same model the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tritonstack._gpu import preload_cuda_libraries
from tritonstack.bench.errors import BenchError
from tritonstack.bench.workload import Row
from tritonstack.in_triton.models.tokenization import TextTokenizer
from tritonstack.measure.cpus import machine_cpu_s
from tritonstack.measure.samples import Round
from tritonstack.measure.served_files import ServedFiles

MIN_MEASURED_BATCHES = 3


CUDA = "CUDAExecutionProvider"
GPU_DEVICE_ID = 0  # the in-process limit runs on the first visible GPU


def _providers(device: str) -> list[Any]:
    if device == "gpu":
        return [(CUDA, {"device_id": str(GPU_DEVICE_ID)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class InProcessModel:
    """Tokenizer + ONNX Runtime session, as the served models run them; the encoder on ``device``
    (``cpu``, or ``gpu``: ONNX Runtime's CUDA provider, the limit a served GPU encoder is held to).

    ``pair`` (a pair task's model, ``contract.Task.pair``): a row is a (query, document) pair, tokenized as the
    served tokenizer tokenizes ``TEXT`` and ``TEXT_PAIR``.
    """

    def __init__(self, files: ServedFiles, threads: int, device: str = "cpu", *, pair: bool = False) -> None:
        import onnxruntime as ort

        self.files = files
        self.tokenizer = TextTokenizer(files.tokenizer_dir, files.max_sequence_length, pair=pair)
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

    def token_counts(self, texts: Sequence[Row]) -> list[int]:
        """Real (unpadded) tokens of each text (each pair), special tokens included."""
        return [len(e.ids) for e in self.tokenizer.encode(texts)]  # type: ignore[arg-type]

    def calls(self, texts: Sequence[Row]) -> list[tuple[list[int], dict[str, np.ndarray]]]:
        """The ONNX Runtime calls the served encoder makes for a batch of ``texts``: (rows, inputs) each, the
        inputs exactly as the served tokenizer model returns them.

        Without ``max_rows_per_call``, one call padded to the batch's longest text (the in-process limit).
        With it, rows sorted by length in calls of at most that many, each padded to its own longest.
        """
        encodings = self.tokenizer.encode(texts)  # type: ignore[arg-type]  # texts, or pairs with pair=True
        limit = self.files.max_rows_per_call
        if not limit:
            return [(list(range(len(texts))), self.tokenizer.features(encodings, self.files.input_names))]
        order = sorted(range(len(texts)), key=lambda row: len(encodings[row].ids))
        chunks = [order[start : start + limit] for start in range(0, len(order), limit)]
        return [
            (rows, self.tokenizer.features([encodings[row] for row in rows], self.files.input_names)) for rows in chunks
        ]

    def encode(self, texts: Sequence[Row]) -> np.ndarray:
        """The encoder's output for ``texts``, in their order, computed as served (``calls``)."""
        results: list[np.ndarray | None] = [None] * len(texts)
        for rows, inputs in self.calls(texts):
            for row, value in zip(rows, self.session.run([self.output_name], inputs)[0], strict=True):
                results[row] = value
        return np.stack([np.asarray(r) for r in results])


def measure_batch(
    model: InProcessModel,
    texts: Sequence[Row],
    token_counts: Sequence[int],
    batch_size: int,
    *,
    warmup_s: float,
    duration_s: float,
) -> tuple[Round, dict[str, float]]:
    """Batches of ``batch_size`` consecutive texts, back to back; latency is per batch.

    The window lasts ``duration_s`` or ``MIN_MEASURED_BATCHES`` batches, whichever is longer.
    """
    latencies_us: list[float] = []
    completed = tokens = 0
    tokenize_s = encode_s = 0.0
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + duration_s
    measured_from = None
    cpu_from = machine_from = 0.0
    cursor = 0
    # At least MIN_MEASURED_BATCHES batches in the window, however slow one batch is.
    while (now := time.perf_counter()) < window_end or len(latencies_us) < MIN_MEASURED_BATCHES:
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
            latencies_us.append((done - now) * 1e6)
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
    return Round(tuple(latencies_us), elapsed, completed, tokens, server_cpu_s=cpu_s, machine_cpu_s=machine_s), details
