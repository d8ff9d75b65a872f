"""The fused layout served by the real embedded Triton, beside the ensemble layout of the same models.

Each tiny model is exported twice into one repository: as ``tiny``/``tiny_cls``/``tiny_ner`` in the
ensemble layout and as ``tiny_f``/``tiny_cls_f``/``tiny_ner_f`` in the fused one (one Python step that
tokenizes, runs the encoder's ONNX file and post-processes). Same weights, so the answers must agree.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import tinymodels
from tritonstack.client import AsyncClient, Client, InvalidInputError
from tritonstack.in_triton import contract
from tritonstack.repository import layouts
from tritonstack.repository.config import parse

pytestmark = pytest.mark.integration

# ensemble layout -> fused layout, for each task
PAIRS = {"tiny": "tiny_f", "tiny_cls": "tiny_cls_f", "tiny_ner": "tiny_ner_f"}
TASKS = {"tiny": "feature-extraction", "tiny_cls": "text-classification", "tiny_ner": "token-classification"}
# mixed lengths: none, one token, a few, dozens, past max_sequence_length (64: truncated), non-ASCII
TEXTS = [
    "",
    "rain",
    "hello world",
    "😀🚀 emoji and 中文字符",
    "the quick brown fox jumps over the lazy dog and the cat sat on the mat",
    "model triton server text embedding batch latency token queue compute fast slow " * 3,
    "word " * 300,
]
CONCURRENT = 32


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Path:
    repository = tmp_path_factory.mktemp("both-layouts") / "model_repository"
    for ensemble, fused in PAIRS.items():  # as exported for a 2-core server: two instances
        tinymodels.export_fp32(tiny_model_dirs[ensemble], repository, ensemble, cpu_instances=2)
        tinymodels.export_fp32(tiny_model_dirs[ensemble], repository, fused, layout="fused", cpu_instances=2)
    return repository


@pytest.fixture(scope="module")
def server(both_layouts: Path) -> Iterator[Any]:
    from tritonstack.server import EmbeddedServer

    with EmbeddedServer(both_layouts, log_path=both_layouts.parent / "triton.log") as running:
        yield running


def text_input(texts: list[Any]) -> grpcclient.InferInput:
    rows = [t.encode() if isinstance(t, str) else t for t in texts]
    array = np.array(rows, dtype=np.object_).reshape(len(rows), 1)
    tensor = grpcclient.InferInput(contract.TEXT_INPUT, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def raw_infer(url: str, model: str, texts: list[Any]) -> dict[str, np.ndarray]:
    """Every output of ``model`` for ``texts``, through plain tritonclient (no client-side checks)."""
    with grpcclient.InferenceServerClient(url) as raw:
        result = raw.infer(model, [text_input(texts)])
    return {name: result.as_numpy(name) for name in contract.OUTPUTS_BY_TASK[TASKS[base(model)]]}


def base(model: str) -> str:
    return model.removesuffix("_f")


def assert_same_answers(task: str, ensemble: dict[str, np.ndarray], fused: dict[str, np.ndarray]) -> None:
    assert ensemble.keys() == fused.keys()
    if task == "feature-extraction":
        assert fused["EMBEDDING"].shape == ensemble["EMBEDDING"].shape
        np.testing.assert_allclose(fused["EMBEDDING"], ensemble["EMBEDDING"], atol=1e-5)
    elif task == "text-classification":
        assert fused["LABEL"].tolist() == ensemble["LABEL"].tolist()
        np.testing.assert_allclose(fused["SCORE"], ensemble["SCORE"], atol=1e-6)
    else:
        assert fused["ENTITIES"].shape == ensemble["ENTITIES"].shape
        for fused_row, ensemble_row in zip(fused["ENTITIES"][:, 0], ensemble["ENTITIES"][:, 0], strict=True):
            fused_items, ensemble_items = json.loads(fused_row), json.loads(ensemble_row)
            without_score = [{k: v for k, v in item.items() if k != "score"} for item in fused_items]
            assert without_score == [{k: v for k, v in item.items() if k != "score"} for item in ensemble_items]
            np.testing.assert_allclose(
                [item["score"] for item in fused_items], [item["score"] for item in ensemble_items], atol=1e-5
            )


def statistics(url: str, model: str) -> tuple[int, int]:
    """Triton's counts for ``model``: (rows inferred, executions)."""
    with grpcclient.InferenceServerClient(url) as raw:
        stats = raw.get_inference_statistics(model).model_stats
    return sum(int(s.inference_count) for s in stats), sum(int(s.execution_count) for s in stats)


def settled(url: str, model: str, rows: int) -> tuple[int, int]:
    """``model``'s counts once they show ``rows`` rows (a step counts a request after its response has gone)."""
    deadline = time.monotonic() + 5.0
    counts = statistics(url, model)
    while counts[0] < rows and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = statistics(url, model)
    return counts


def test_the_fused_models_are_served_in_their_layout(server: Any, both_layouts: Path) -> None:
    ready = set(server.ready_models())
    for ensemble, fused in PAIRS.items():
        assert {ensemble, fused, contract.fused_name(fused), contract.encoder_name(fused)} <= ready
        assert layouts.layout_of(parse((both_layouts / fused / "config.pbtxt").read_text())) == "fused"
        assert layouts.layout_of(parse((both_layouts / ensemble / "config.pbtxt").read_text())) == "ensemble"
        assert contract.fused_name(ensemble) not in ready


@pytest.mark.parametrize("ensemble", list(PAIRS))
def test_both_layouts_give_the_same_answers_text_by_text_and_batched(server: Any, ensemble: str) -> None:
    fused, task = PAIRS[ensemble], TASKS[ensemble]
    for text in TEXTS:
        assert_same_answers(
            task, raw_infer(server.grpc_url, ensemble, [text]), raw_infer(server.grpc_url, fused, [text])
        )
    batched = raw_infer(server.grpc_url, fused, TEXTS)
    assert_same_answers(task, raw_infer(server.grpc_url, ensemble, TEXTS), batched)
    # a row's answer does not depend on the rows it was batched with (the fused step regroups them by length)
    alone = [raw_infer(server.grpc_url, fused, [text]) for text in TEXTS]
    assert_same_answers(task, {k: np.concatenate([a[k] for a in alone]) for k in batched}, batched)


def test_a_fused_embedding_is_a_real_embedding(server: Any) -> None:
    """Guards the comparisons above against two layouts that agree on nothing useful."""
    embeddings = raw_infer(server.grpc_url, "tiny_f", TEXTS)["EMBEDDING"]
    assert embeddings.shape == (len(TEXTS), 32) and np.all(np.isfinite(embeddings))
    assert len({row.tobytes() for row in embeddings}) == len(TEXTS)
    assert np.abs(embeddings).max() > 1e-2


@pytest.mark.parametrize("ensemble", list(PAIRS))
def test_concurrent_requests_are_batched_by_the_fused_step_with_the_same_answers(server: Any, ensemble: str) -> None:
    fused, task = PAIRS[ensemble], TASKS[ensemble]
    texts = [TEXTS[i % len(TEXTS)] + f" number {i}" for i in range(CONCURRENT)]
    expected = raw_infer(server.grpc_url, ensemble, texts)
    step = contract.fused_name(fused)
    rows_before, executions_before = statistics(server.grpc_url, step)

    async def send_all() -> list[dict[str, np.ndarray]]:
        async with AsyncClient(server.grpc_url, model=fused) as client:
            rows = [np.array([[text.encode()]], dtype=np.object_) for text in texts]
            return await asyncio.gather(*(client.infer({contract.TEXT_INPUT: row}) for row in rows))

    answers = asyncio.run(send_all())
    got = {name: np.concatenate([answer[name] for answer in answers]) for name in expected}
    assert_same_answers(task, expected, got)
    rows, executions = settled(server.grpc_url, step, rows_before + CONCURRENT)
    assert rows - rows_before == CONCURRENT
    assert executions - executions_before < CONCURRENT, f"{executions - executions_before} executions: no batch"


def test_the_fused_layout_runs_no_tokenizer_or_encoder_model(server: Any) -> None:
    url = server.grpc_url
    before = {m: statistics(url, m)[0] for m in ("tiny_f_fused", "tiny_f_encoder", "tiny_f_tokenizer", "tiny_encoder")}
    raw_infer(url, "tiny_f", TEXTS)
    raw_infer(url, "tiny", TEXTS)  # the control: the ensemble's encoder model does count its rows
    assert settled(url, "tiny_f_fused", before["tiny_f_fused"] + len(TEXTS))[0] == before["tiny_f_fused"] + len(TEXTS)
    assert settled(url, "tiny_encoder", before["tiny_encoder"] + len(TEXTS))[0] == before["tiny_encoder"] + len(TEXTS)
    assert statistics(url, "tiny_f_encoder")[0] == before["tiny_f_encoder"]
    assert statistics(url, "tiny_f_tokenizer")[0] == before["tiny_f_tokenizer"]


# --- bad input through the fused layout ------------------------------------------------------


@pytest.mark.parametrize("fused", list(PAIRS.values()))
def test_bytes_that_are_not_utf8_get_a_typed_error_and_the_server_stays_up(server: Any, fused: str) -> None:
    with Client(server.grpc_url, model=fused) as client:
        with pytest.raises(InvalidInputError, match="UTF-8") as caught:
            client.infer({contract.TEXT_INPUT: np.array([[b"\xff\xfe broken"]], dtype=np.object_)})
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.model == fused and caught.value.request_id
        after = client.infer({contract.TEXT_INPUT: np.array([[b"still serving"]], dtype=np.object_)})
    assert {name: value.shape[0] for name, value in after.items()} == dict.fromkeys(after, 1)


def test_a_bad_request_batched_with_good_ones_fails_alone(server: Any) -> None:
    texts: list[Any] = ["good text", b"\xff\xfe", "another good one"] * 4

    def send(text: Any) -> str:
        with grpcclient.InferenceServerClient(server.grpc_url) as raw:
            try:
                raw.infer("tiny_cls_f", [text_input([text])])
                return "ok"
            except InferenceServerException as error:
                return str(error.status())

    with ThreadPoolExecutor(len(texts)) as pool:
        outcomes = list(pool.map(send, texts))
    assert outcomes == ["ok", "StatusCode.INVALID_ARGUMENT", "ok"] * 4


@pytest.mark.parametrize(
    ("case", "tensor"),
    [
        ("no rows", lambda: text_input([])),
        ("more rows than max_batch_size", lambda: text_input(["x"] * 65)),
    ],
)
def test_requests_the_sdk_refuses_are_refused_by_the_server_too(server: Any, case: str, tensor: Any) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        with pytest.raises(InferenceServerException) as caught:
            raw.infer("tiny_f", [tensor()])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", (case, caught.value)
        assert raw.is_server_live() and raw.is_model_ready("tiny_f")
    assert raw_infer(server.grpc_url, "tiny_f", ["still serving"])["EMBEDDING"].shape == (1, 32)


def _turn_files(pid: int) -> set[str]:
    import glob
    import os

    # in the serving user's private folder (encoder_runner.private_dir)
    return {os.path.basename(p) for p in glob.glob(f"/dev/shm/tritonstack-turns-{os.geteuid()}/{pid}-*.lock")}


def test_two_fused_instances_on_one_core_take_turns_and_on_two_cores_do_not(both_layouts: Path) -> None:
    """The turn file is named after tritonserver, the stubs' parent: one per fused model of the server (were the
    name another process's, each instance would take its own turn and both would run at once). Instances take
    turns only where they outnumber the cores their process may use."""
    import os

    from tritonstack.measure import cpus
    from tritonstack.server import EmbeddedServer

    one_core = sorted(os.sched_getaffinity(0))[:1]
    with cpus.pinned(one_core), EmbeddedServer(both_layouts, log_path=both_layouts.parent / "one-core.log") as pinned:
        assert _turn_files(pinned.pid) == {f"{pinned.pid}-{f}_fused.lock" for f in PAIRS.values()}
        with grpcclient.InferenceServerClient(pinned.grpc_url) as client:  # and they serve
            answer = client.infer("tiny_f", [text_input(["one core"])]).as_numpy(contract.EMBEDDING_OUTPUT)
        assert answer.shape == (1, 32)
    if len(os.sched_getaffinity(0)) >= 2:  # the module's server: two instances, a core each
        with EmbeddedServer(both_layouts, log_path=both_layouts.parent / "all-cores.log") as spread:
            assert _turn_files(spread.pid) == set()
