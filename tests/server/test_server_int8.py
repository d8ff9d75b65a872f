"""A dynamic-int8 encoder served by the real embedded Triton: a text's vector does not depend on its batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import tinymodels
from tritonstack.export.gates import Gate
from tritonstack.export.options import ExportOptions, Precision
from tritonstack.export.pipeline import export_model
from tritonstack.in_triton import contract
from tritonstack.repository.config import parameter, parse
from tritonstack.server import EmbeddedServer

pytestmark = pytest.mark.integration

TEXT = "the quick brown fox jumps over the lazy dog"
# Two of the same length as TEXT: the backend's length regrouping puts them in one call with it unless
# max_rows_per_call says otherwise; one much shorter, which it would run apart anyway.
NEIGHBOURS = (
    "model server latency token queue compute fast slow good",
    "hello",
    "rain cloud river mountain sun data test export serve",
)


def _embed(client: grpcclient.InferenceServerClient, texts: list[str]) -> np.ndarray:
    array = np.array([[t.encode()] for t in texts], dtype=np.object_)
    tensor = grpcclient.InferInput(contract.TEXT_INPUT, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return np.asarray(client.infer("tiny_int8", [tensor]).as_numpy(contract.EMBEDDING_OUTPUT))


def _in_process(encoder: Path, tokenizer_dir: Path, texts: list[str]) -> np.ndarray:
    """The encoder file run as one padded ONNX Runtime call, as a server without max_rows_per_call would."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    encoded = AutoTokenizer.from_pretrained(str(tokenizer_dir))(texts, padding="longest", return_tensors="np")
    feeds = {i.name: np.asarray(encoded[i.name], dtype=np.int64) for i in session.get_inputs()}
    return np.asarray(session.run(None, feeds)[0])


def test_a_text_gets_the_same_vector_alone_and_inside_a_mixed_batch(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    result = export_model(
        ExportOptions(
            str(tiny_model_dirs["tiny"]),
            name="tiny_int8",
            repository=repository,
            precision=Precision.INT8,
            recipes=(),  # the smoothed mixes only: dynamic int8
            gate=Gate(0.5),
            queue_timeout_ms=tinymodels.QUEUE_TIMEOUT_MS,
            progress=False,
            reps=1,
            cache_dir=None,
        )
    )
    chosen = result.report.chosen
    assert chosen is not None and chosen.recipe is not None
    encoder_dir = repository / contract.encoder_name("tiny_int8")
    config = parse((encoder_dir / "config.pbtxt").read_text())
    tokenizer_dir = repository / contract.tokenizer_name("tiny_int8") / "1"
    alone = _in_process(encoder_dir / "1" / "model.onnx", tokenizer_dir, [TEXT])
    batched = _in_process(encoder_dir / "1" / "model.onnx", tokenizer_dir, [NEIGHBOURS[0], TEXT, *NEIGHBOURS[1:]])
    # The race picks the faster passing mix: one with an activation scale per call, or its per-token twin
    # (export/row_quantize.py), equally fast on a tiny model. Either way a text keeps its vector when batched.
    if chosen.recipe.per_token:
        assert chosen.max_rows_per_call == 0 and parameter(config, contract.MAX_ROWS_PER_CALL_PARAMETER) is None
        np.testing.assert_allclose(batched[1], alone[0], atol=1e-6)  # the graph's doing: scales per token
    else:
        assert chosen.max_rows_per_call == 1 and parameter(config, contract.MAX_ROWS_PER_CALL_PARAMETER) == "1"
        # The control: one call over the padded batch gives the text another vector (its activation scale
        # spans the call), so the equality below is the backend's doing, not a model that cannot differ.
        assert not np.array_equal(alone[0], batched[1])

    with EmbeddedServer(repository) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        served_alone = _embed(client, [TEXT])
        served_mixed = _embed(client, [NEIGHBOURS[0], TEXT, *NEIGHBOURS[1:]])
    if chosen.recipe.per_token:  # batched rows: equal up to float summation order
        np.testing.assert_allclose(served_mixed[1], served_alone[0], atol=1e-6)
        np.testing.assert_allclose(served_alone[0], alone[0], atol=1e-6)
    else:
        np.testing.assert_array_equal(served_mixed[1], served_alone[0])
        np.testing.assert_array_equal(served_alone[0], alone[0])  # and it is the text's own one-call vector
