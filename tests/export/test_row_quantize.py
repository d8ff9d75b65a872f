"""Per-token dynamic int8 (export/row_quantize.py): a text's output no longer depends on its batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tinymodels
from tritonstack.export.parity import compute_reference, run_onnx, tokenize_batches
from tritonstack.export.row_quantize import count_ops, per_call_nodes, rewrite_per_token
from tritonstack.export.smoothing import SmoothableGraph
from tritonstack.export.texts import CALIBRATION, GATE, builtin_split


def _session(model: Any) -> Any:
    from tritonstack.export.benchmark import make_session

    return make_session(model, threads=1)


def _cosines(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (values * reference).sum(1) / np.linalg.norm(values, axis=1) / np.linalg.norm(reference, axis=1)


@pytest.fixture(scope="module")
def smoothed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny bert's all-int8 smoothed mix (per-call activation scales), and the feeds of held-out texts."""
    from tritonstack.export.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("rowq-tiny")
    model_dir = tinymodels.build(root / "bert", "bert", "feature-extraction", seed=0)
    export = export_onnx(model_dir, None, root / "onnx")

    def feeds(texts: tuple[str, ...], rows: int) -> list[dict[str, np.ndarray]]:
        return tokenize_batches(
            export.tokenizer_dir, texts, export.max_sequence_length, export.input_names, rows_per_call=rows
        )

    graph = SmoothableGraph(export.onnx_path)
    calibration = builtin_split(CALIBRATION).texts
    scales = graph.scales(graph.activation_maxima(_session, feeds(calibration, 1)), alpha=0.75)
    held_out = builtin_split(GATE).texts  # mixed kinds and lengths: batches pad
    return export, graph, graph.build(scales), held_out, feeds


def test_a_texts_vector_is_the_same_alone_and_in_any_batch(smoothed: Any) -> None:
    export, _, per_call, texts, feeds = smoothed
    per_token = rewrite_per_token(per_call)
    alone = run_onnx(_session(per_token), feeds(texts, 1), False)
    for rows in (3, 8, 32):
        batched = run_onnx(_session(per_token), feeds(texts, rows), False)
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
    # the per-call model is what this fixes: batched, its vectors move by a quantization step
    per_call_session = _session(per_call)
    moved = run_onnx(per_call_session, feeds(texts, 8), False) - run_onnx(per_call_session, feeds(texts, 1), False)
    assert np.abs(moved).max() > 1e-4
    # and per-token keeps (here: improves on) the accuracy of the per-call model run one text per call
    reference = compute_reference(export, texts).values
    per_call_alone = run_onnx(per_call_session, feeds(texts, 1), False)
    assert _cosines(alone, reference).min() >= _cosines(per_call_alone, reference).min() - 1e-3


def test_the_rewrite_replaces_every_per_call_quantizer_and_quantizes_each_activation_once(smoothed: Any) -> None:
    _, graph, per_call, _, _ = smoothed
    matmuls = count_ops(per_call, ["DynamicQuantizeMatMul"])
    assert matmuls == len(graph.nodes)
    per_token = rewrite_per_token(per_call)
    assert per_call_nodes(per_token) == []
    assert count_ops(per_token, ["MatMulIntegerToFloat"]) == matmuls
    assert count_ops(per_token, ["QuantizeLinear"]) == len(graph.groups)  # q, k and v share theirs
    assert count_ops(per_call, ["MatMulIntegerToFloat"]) == 0  # a new model: the input is untouched


def test_what_the_rewrite_cannot_make_batch_invariant_is_refused(smoothed: Any, tmp_path: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    export, _, per_call, _, _ = smoothed
    with pytest.raises(ValueError, match="already quantized per token"):
        rewrite_per_token(rewrite_per_token(per_call))
    with pytest.raises(ValueError, match="no DynamicQuantizeMatMul"):
        rewrite_per_token(onnx.load(str(export.onnx_path)))
    # ORT's quantize_dynamic writes DynamicQuantizeLinear -> MatMulInteger: per call, and not rewritten here
    ort_int8 = tmp_path / "ort_int8.onnx"
    quantize_dynamic(str(export.onnx_path), str(ort_int8), weight_type=QuantType.QInt8)
    with pytest.raises(ValueError, match="does not handle"):
        rewrite_per_token(onnx.load(str(ort_int8)))
