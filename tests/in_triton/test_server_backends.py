"""The Triton-free parts of the embedded ONNX Runtime backend, without a server.

The backend's ``model.py`` imports ``triton_python_backend_utils``; the copy shipped in the nvidia-pytriton
wheel is plain Python, so the module imports here. What needs the stub (responses, tensors) is tested
against the real server in test_server.py and test_server_overload.py.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from tritonstack.server.embedded import prepare_backends, pytriton_dir


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    # the backend folder as the embedded server lays it out (model.py loads its siblings from there)
    backends = prepare_backends(tmp_path_factory.mktemp("backends"))
    sys.path.insert(0, str(pytriton_dir() / "backends" / "python"))
    try:
        path = backends / "onnxruntime" / "model.py"
        spec = importlib.util.spec_from_file_location("onnxruntime_backend", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


class Runner:
    """Doubles each member; fails any call that includes a member in ``bad``. Records every call."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: list[list[int]] = []

    def __call__(self, members: list[int]) -> list[int]:
        self.calls.append(list(members))
        broken = self.bad.intersection(members)
        if broken:
            raise ValueError(f"member {min(broken)} breaks the call")
        return [2 * m for m in members]


def test_a_group_that_runs_is_one_call(backend: Any) -> None:
    run = Runner(bad=set())
    assert backend.run_isolating_failures(run, [1, 2, 3]) == [(1, 2), (2, 4), (3, 6)]
    assert run.calls == [[1, 2, 3]]


def test_a_failing_group_is_rerun_member_by_member_and_only_the_bad_one_fails(backend: Any) -> None:
    run = Runner(bad={2})
    outcomes = backend.run_isolating_failures(run, [1, 2, 3])
    assert [member for member, _ in outcomes] == [1, 2, 3]
    assert outcomes[0][1] == 2 and outcomes[2][1] == 6
    assert isinstance(outcomes[1][1], ValueError) and "member 2" in str(outcomes[1][1])
    assert run.calls == [[1, 2, 3], [1], [2], [3]]


def test_a_failing_single_member_is_not_run_twice(backend: Any) -> None:
    run = Runner(bad={7})
    ((member, outcome),) = backend.run_isolating_failures(run, [7])
    assert member == 7 and isinstance(outcome, ValueError)
    assert run.calls == [[7]]


class RecordingSession:
    """A real ONNX Runtime session that records the rows and width of every call."""

    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.calls: list[tuple[int, int]] = []

    def run(self, output_names: list[str], feeds: dict[str, Any]) -> Any:
        ids = feeds["input_ids"]
        self.calls.append((ids.shape[0], ids.shape[1]))
        return self.session.run(output_names, feeds)


def _sum_model(path: Any, *, masked: bool = True) -> str:
    """``total`` FP32 [batch, 1] = the sum of ``input_ids`` (under ``attention_mask`` when ``masked``):
    trimming the padding cannot change it."""
    import onnx
    from onnx import TensorProto, helper

    names = ("input_ids", "attention_mask") if masked else ("input_ids",)
    nodes = [
        *([helper.make_node("Mul", list(names), ["summed"])] if masked else []),
        helper.make_node("Cast", ["summed" if masked else "input_ids"], ["summed_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["summed_f", "axis"], ["total"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "sum",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _model(backend: Any, session: RecordingSession, max_rows_per_call: int) -> Any:
    model = backend.TritonPythonModel()
    model.session, model.output_names, model.sequence_outputs = session, ["total"], set()
    model.knobs = backend.contract.EncoderKnobs(max_padding_waste=0.25, max_rows_per_call=max_rows_per_call)
    model.turns = backend.encoder_runner.NoTurns()
    return model


@pytest.mark.parametrize("max_rows_per_call", [0, 1, 2, 5])
def test_max_rows_per_call_caps_every_onnx_runtime_call_and_keeps_each_rows_result(
    backend: Any, tmp_path: Any, max_rows_per_call: int
) -> None:
    import numpy as np

    lengths = [3, 8, 2, 8, 7, 3, 1]
    ids = np.zeros((len(lengths), 8), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) * (row + 1)
        mask[row, :length] = 1
    session = RecordingSession(_sum_model(tmp_path / "sum.onnx"))
    (total,) = _model(backend, session, max_rows_per_call)._run({"input_ids": ids, "attention_mask": mask})

    np.testing.assert_array_equal(total[:, 0], (ids * mask).sum(axis=1))
    assert sum(rows for rows, _ in session.calls) == len(lengths)
    if max_rows_per_call:
        assert all(rows <= max_rows_per_call for rows, _ in session.calls)
    if max_rows_per_call == 1:
        assert sorted(width for _, width in session.calls) == sorted(lengths)  # each row trimmed to itself


def test_max_rows_per_call_chunks_rows_without_a_mask_in_arrival_order(backend: Any, tmp_path: Any) -> None:
    import numpy as np

    ids = np.arange(1, 19, dtype=np.int64).reshape(6, 3)
    session = RecordingSession(_sum_model(tmp_path / "sum.onnx", masked=False))
    (total,) = _model(backend, session, max_rows_per_call=4)._run({"input_ids": ids})
    np.testing.assert_array_equal(total[:, 0], ids.sum(axis=1))
    assert session.calls == [(4, 3), (2, 3)]


def test_without_a_thread_count_the_instances_of_a_cpu_group_share_its_cores(backend: ModuleType) -> None:
    config = {"instance_group": [{"kind": "KIND_CPU", "count": 2}]}
    runner = backend.encoder_runner
    instances = runner.instances_of_kind(config, "CPU")
    assert instances == 2
    assert runner.default_threads(8, instances) == 4
    assert runner.default_threads(1, instances) == 1  # never fewer than one thread
    assert runner.default_threads(8, runner.instances_of_kind({}, "KIND_CPU")) == 8  # no group: Triton's one
    # a GPU instance has its own device: the CPU threads are not split among the GPU instances
    gpu = {"instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}]}
    assert runner.instances_of_kind(gpu, "GPU") == 1


def test_only_the_cpu_instances_of_a_mixed_config_share_the_cores(backend: ModuleType) -> None:
    config = {"instance_group": [{"kind": "KIND_CPU", "count": 3}, {"kind": "KIND_GPU", "count": 2, "gpus": [0]}]}
    runner = backend.encoder_runner
    assert runner.instances_of_kind(config, "KIND_CPU") == 3
    assert runner.default_threads(8, runner.instances_of_kind(config, "CPU")) == 2  # 8 // 3, rounded down


class _Input:
    def __init__(self, shape: list[Any]) -> None:
        self.shape = shape


class _Session:
    def __init__(self, *shapes: list[Any]) -> None:
        self.shapes = shapes

    def get_inputs(self) -> list[_Input]:
        return [_Input(shape) for shape in self.shapes]


def test_the_longest_sequence_comes_from_the_config_then_the_graph_then_a_default(backend: ModuleType) -> None:
    written = {"parameters": {"max_sequence_length": {"string_value": "128"}}}
    assert backend.max_sequence_length(written, _Session(["batch_size", "sequence_length"])) == 128
    assert backend.max_sequence_length({}, _Session(["batch_size", 256], ["batch_size", 256])) == 256
    assert backend.max_sequence_length({}, _Session(["batch_size", "sequence_length"])) == (
        backend.DEFAULT_MAX_SEQUENCE_LENGTH
    )


class _Tensor:
    def __init__(self, array: Any) -> None:
        self.array = array

    def as_numpy(self) -> Any:
        return self.array


def test_a_sequence_longer_than_the_models_maximum_is_refused_before_it_runs(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    model = backend.TritonPythonModel()
    model.inputs = [("input_ids", np.int64, 1)]
    model.max_sequence_length = 16
    tensors = {}
    monkeypatch.setattr(backend.pb_utils, "get_input_tensor_by_name", lambda request, name: tensors[name])
    tensors["input_ids"] = _Tensor(np.zeros((2, 16), dtype=np.int64))
    assert model._features(object())["input_ids"].shape == (2, 16)
    tensors["input_ids"] = _Tensor(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(backend.RequestError, match="17 positions, more than this model's max_sequence_length 16"):
        model._features(object())


def test_a_failure_tells_the_client_an_id_and_the_log_the_details(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    class TritonError:
        INTERNAL = 13

        def __init__(self, message: str, code: int) -> None:
            self.message, self.code = message, code

    logged: list[str] = []
    fake = SimpleNamespace(
        TritonError=TritonError,
        InferenceResponse=lambda error: error,
        Logger=SimpleNamespace(log_error=logged.append),
    )
    monkeypatch.setattr(backend.error_responses, "pb_utils", fake)
    secret = "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : /srv/private/model.onnx Gather idx=9999"
    answer = backend.error_responses.failed("onnxruntime", RuntimeError(secret))
    assert answer.code == TritonError.INTERNAL
    assert "onnxruntime failed on this request" in answer.message
    assert "/srv/private" not in answer.message and "9999" not in answer.message
    error_id = answer.message.split("(error ")[1].split(";")[0]
    (line,) = logged
    assert error_id in line and secret in line
    unexpected = backend.error_responses.unexpected(FileNotFoundError("/srv/private/tokenizer.json"))
    assert "/srv/private" not in unexpected.message and "/srv/private" in logged[-1]


def test_cancellation_is_checked_after_the_wait_for_the_turn(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose client gave up while the instance waited for its CPU turn is not computed."""
    import numpy as np

    class Request:
        cancelled = False

        def is_cancelled(self) -> bool:
            return self.cancelled

        def timeout(self) -> int:
            return 0

    request = Request()

    class Turns:  # the other instance holds the turn until after the client gave up
        def hold(self, wait_s: float) -> Turns:
            request.cancelled = True
            return self

        def __enter__(self) -> Turns:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    model = backend.TritonPythonModel()
    model.inputs = [("input_ids", np.int64, 1)]
    model.max_sequence_length = 16
    model.turns = Turns()
    ran: list[object] = []
    monkeypatch.setattr(model, "_run_members", lambda members: ran.append(members) or [])
    monkeypatch.setattr(model, "_features", lambda r: {"input_ids": np.zeros((1, 4), dtype=np.int64)})
    monkeypatch.setattr(backend.error_responses, "cancelled", lambda: "cancelled")
    responses: list[object] = [None]
    model._execute([request], responses)
    assert responses == ["cancelled"] and ran == []
