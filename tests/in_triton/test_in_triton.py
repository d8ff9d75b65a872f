"""The code that runs inside Triton (in_triton/): what it may import, the manifest of its copies, the one loader.

No server: the copied files are loaded here as Triton's Python stub loads them,
with a stand-in for Triton's ``triton_python_backend_utils``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tritonstack.in_triton
from tritonstack.in_triton import contract, manifest

IN_TRITON = Path(tritonstack.in_triton.__file__).parent
# What Triton's Python stub has, in the embedded server and the NGC image alike (deploy/triton/requirements.txt)
ALLOWED = {"numpy", "tokenizers", "onnxruntime", "triton_python_backend_utils"}
# The package's own modules of in_triton/, which the copiers read and never copy
NOT_COPIED = {"manifest.py"}


def modules() -> list[Path]:
    return sorted(p for p in IN_TRITON.rglob("*.py") if "__pycache__" not in p.parts)


def forbidden_imports(path: Path) -> list[str]:
    """The imports of ``path`` outside the standard library, ``ALLOWED`` and the files of in_triton/."""
    siblings = {p.stem for p in modules()}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # resolves in the package only: beside model.py there is no package
                found.append(f"line {node.lineno}: relative import from {'.' * node.level}{node.module or ''}")
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ALLOWED and top not in siblings:
                found.append(f"line {node.lineno}: import {name}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(IN_TRITON)))
def test_code_that_runs_inside_triton_imports_only_what_the_stub_has(path: Path) -> None:
    assert forbidden_imports(path) == [], f"{path.relative_to(IN_TRITON)} imports what Triton's stub lacks"


def test_the_import_check_names_tritonstack_a_third_party_module_and_a_relative_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import json\nimport numpy as np\nfrom tritonstack.in_triton import contract\nimport torch\nfrom . import x\n"
    )
    assert forbidden_imports(bad) == [
        "line 3: import tritonstack.in_triton",
        "line 4: import torch",
        "line 5: relative import from .",
    ]


def test_the_manifest_copies_every_module_of_in_triton() -> None:
    copied = {*manifest.PYTHON_MODEL_FILES.values(), *manifest.ONNXRUNTIME_BACKEND_FILES.values()}
    present = {str(p.relative_to(IN_TRITON)) for p in modules() if p.name != "__init__.py"}
    assert present - NOT_COPIED == copied, "a module of in_triton/ is missing from manifest.py (or gone from disk)"
    # what a copied file loads beside it is copied with it, and the contract goes everywhere
    for files in (manifest.PYTHON_MODEL_FILES, manifest.ONNXRUNTIME_BACKEND_FILES):
        assert {"model.py", manifest.BESIDE_FILE, "contract.py"} <= set(files)
        for source in files.values():
            assert (IN_TRITON / source).is_file(), source
            for loaded in _loaded_beside(IN_TRITON / source):
                assert loaded in files, f"{source} loads {loaded}, which is not copied beside it"
    assert set(manifest.FUSED_ONLY_FILES + manifest.CONTRACT_FILES) <= set(manifest.PYTHON_MODEL_FILES)


def _loaded_beside(path: Path) -> list[str]:
    """The files ``path`` loads with the loader: the string arguments of its ``load_beside(HERE, "x.py")`` calls."""
    return [
        node.args[1].value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "load_beside"
        and isinstance(node.args[1], ast.Constant)
    ]


@pytest.fixture()
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Triton's stub as far as loading goes: ``triton_python_backend_utils`` is importable; the siblings
    loaded meanwhile (``beside.py`` names them) are dropped afterwards."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    yield
    for name in [n for n in sys.modules if n.startswith("tritonstack_in_triton_")]:
        del sys.modules[name]


def _load_model_py(folder: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_copied_python_model_loads_its_own_contract_and_has_a_step_per_role(stub: None, tmp_path: Path) -> None:
    folders = [tmp_path / "tokenizer" / "1", tmp_path / "postprocess" / "1"]
    loaded = []
    for number, folder in enumerate(folders):
        folder.mkdir(parents=True)
        manifest.write(manifest.PYTHON_MODEL_FILES, folder)
        assert (folder / "contract.py").read_text() == Path(contract.__file__).read_text()
        loaded.append(_load_model_py(folder, f"model_{number}"))
    for folder, model in zip(folders, loaded, strict=True):
        # the copy beside it, not the package's module nor the other folder's copy
        assert model.contract is not contract and Path(model.contract.__file__).parent == folder
        assert Path(model.tokenization.__file__).parent == folder
        assert set(model.STEPS) == set(contract.TEXT_ROLES) == set(model.contract.TEXT_ROLES)
        assert model.contract.FUSED_ROLE == contract.FUSED_ROLE
    assert loaded[0].contract.__name__ != loaded[1].contract.__name__  # two folders never share a module


def test_the_embedded_backend_folder_loads_its_siblings(stub: None, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    manifest.write(manifest.ONNXRUNTIME_BACKEND_FILES, tmp_path)
    backend = _load_model_py(tmp_path, "onnxruntime_model")
    for sibling in (backend.contract, backend.providers, backend.error_responses, backend.encoder_runner):
        assert Path(sibling.__file__).parent == tmp_path


def test_a_missing_sibling_names_its_path(stub: None, tmp_path: Path) -> None:
    manifest.write(manifest.PYTHON_MODEL_FILES, tmp_path)
    (tmp_path / "tokenization.py").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenization\.py is missing"):
        _load_model_py(tmp_path, "model_missing")


def test_the_encoder_knobs_read_the_parameters_with_their_defaults() -> None:
    assert contract.EncoderKnobs.from_parameters({}) == contract.EncoderKnobs(
        max_rows_per_call=0, max_padding_waste=0.25, cpu_turns=False, intra_op_threads=0, inter_op_threads=0
    )
    params = {
        contract.MAX_ROWS_PER_CALL_PARAMETER: "1",
        contract.MAX_PADDING_WASTE_PARAMETER: "0.5",
        contract.CPU_TURNS_PARAMETER: "1",
        contract.INTRA_OP_THREADS_PARAMETER: "2",
        contract.INTER_OP_THREADS_PARAMETER: "3",
    }
    assert contract.EncoderKnobs.from_parameters(params) == contract.EncoderKnobs(1, 0.5, True, 2, 3)
    config = {"parameters": {name: {"string_value": value} for name, value in params.items()}}
    assert contract.parameters(config) == params and contract.parameters({}) == {}


class _Tensor:
    def __init__(self, name: str, array: Any) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> Any:
        return self.array


class _Response:
    def __init__(self, output_tensors: Any = None, error: Any = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


class _Error:
    UNAVAILABLE, CANCELLED, INVALID_ARG, INTERNAL = "UNAVAILABLE", "CANCELLED", "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self.message, self.code = message, code


class _Request:
    def __init__(self, parameters: str = "{}", **inputs: Any) -> None:
        self.inputs, self._parameters = inputs, parameters

    def is_cancelled(self) -> bool:
        return False

    def parameters(self) -> str:
        return self._parameters


@pytest.fixture()
def text_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[types.ModuleType]:
    """A copied ``model.py`` loaded over a stand-in for Triton's ``triton_python_backend_utils`` that can run a
    step's ``execute``."""
    utils = types.ModuleType("triton_python_backend_utils")
    utils.Tensor = _Tensor  # type: ignore[attr-defined]
    utils.InferenceResponse = _Response  # type: ignore[attr-defined]
    utils.TritonError = _Error  # type: ignore[attr-defined]
    utils.get_input_tensor_by_name = lambda request, name: (  # type: ignore[attr-defined]
        _Tensor(name, request.inputs[name]) if name in request.inputs else None
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    manifest.write(manifest.PYTHON_MODEL_FILES, tmp_path)
    yield _load_model_py(tmp_path, "text_model_under_test")
    for name in [n for n in sys.modules if n.startswith("tritonstack_in_triton_")]:
        del sys.modules[name]


@pytest.mark.parametrize("task", [contract.FEATURE_EXTRACTION, contract.TEXT_RANKING])
def test_the_serving_floor_answers_every_task_without_a_tokenizer(text_model: Any, task: contract.Task) -> None:
    # The floor step reads the text-in step's inputs (TEXT_PAIR too for a pair task) and answers constants; it
    # has no tokenizer, so a pair task's query check must not need one (it answered INTERNAL to every request).
    import numpy as np

    output = task.outputs[0]
    config = {"output": [{"name": output, "dims": ["4" if task.embedding else "1"], "data_type": "TYPE_FP32"}]}
    step = text_model.FloorStep({}, config, {contract.TASK_PARAMETER: task.name})
    inputs = {contract.TEXT_INPUT: np.array([[b"query"], [b"query"]], dtype=np.object_)}
    if task.pair:
        inputs[contract.TEXT_PAIR_INPUT] = np.array([[b"first document"], [b"second"]], dtype=np.object_)
    (response,) = step.execute([_Request(**inputs)])
    assert response.error is None, response.error.message
    assert response.outputs[output].shape == ((2, 4) if task.embedding else (2, 1))


def test_the_postprocess_step_never_sheds_work_the_encoder_has_done(text_model: Any) -> None:
    import json
    import time

    import numpy as np

    params = {
        contract.TASK_PARAMETER: contract.TEXT_CLASSIFICATION.name,
        contract.MAX_SEQUENCE_LENGTH_PARAMETER: "16",
        contract.ENCODER_INPUTS_PARAMETER: "input_ids,attention_mask",
        contract.ENCODER_OUTPUT_PARAMETER: "logits",
        contract.LABELS_PARAMETER: json.dumps(["no", "yes"]),
        contract.QUEUE_BUDGET_MS_PARAMETER: "500",  # what export writes on every Python step
    }
    step = text_model.PostprocessStep({}, {}, params)
    stale = json.dumps({contract.SENT_AT_PARAMETER: time.time_ns() // 1000 - 5_000_000})  # sent 5 s ago
    (response,) = step.execute([_Request(stale, logits=np.array([[0.1, 2.0]], dtype=np.float32))])
    assert response.error is None, response.error.message
    assert response.outputs[contract.LABEL_OUTPUT].reshape(-1).tolist() == [b"yes"]


def _tokenizer_step(text_model: Any, tmp_path: Path, outputs: list[str]) -> Any:
    import tinymodels

    (tmp_path / "1").mkdir(parents=True)
    tinymodels._bert_tokenizer(tmp_path / "1", 16)
    params = {
        contract.TASK_PARAMETER: contract.FEATURE_EXTRACTION.name,
        contract.MAX_SEQUENCE_LENGTH_PARAMETER: "16",
        contract.ENCODER_INPUTS_PARAMETER: "input_ids,attention_mask",
        contract.ENCODER_OUTPUT_PARAMETER: "sentence_embedding",
    }
    config = {"output": [{"name": name} for name in outputs]}
    args = {"model_repository": str(tmp_path), "model_version": "1"}
    return text_model.TokenizerStep(args, config, params)


def test_the_tokenizer_answers_each_requests_token_counts_where_its_config_lists_them(
    text_model: Any, tmp_path: Path
) -> None:
    import numpy as np

    step = _tokenizer_step(text_model, tmp_path, ["input_ids", "attention_mask", contract.TOKENS_OUTPUT])
    two = _Request(TEXT=np.array([[b"hello world"], [b"rain"]], dtype=np.object_))
    cut = _Request(TEXT=np.array([[b"word " * 40]], dtype=np.object_))
    first, second = step.execute([two, cut])  # one batch, padded to its longest row, answered per request
    assert first.outputs[contract.TOKENS_OUTPUT].tolist() == [[4, 0], [3, 0]]
    assert first.outputs[contract.TOKENS_OUTPUT].dtype == np.int32
    assert second.outputs[contract.TOKENS_OUTPUT].tolist() == [[16, 1]]
    assert first.outputs["attention_mask"].sum(axis=1).tolist() == [4, 3]
    # a config from before token counts: the step answers as it did
    older = _tokenizer_step(text_model, tmp_path / "older", ["input_ids", "attention_mask"])
    (response,) = older.execute([two])
    assert sorted(response.outputs) == ["attention_mask", "input_ids"]


def test_the_serving_floor_answers_token_counts_as_int32_zeros(text_model: Any) -> None:
    import numpy as np

    config = {
        "output": [
            {"name": contract.EMBEDDING_OUTPUT, "dims": ["4"], "data_type": "TYPE_FP32"},
            {"name": contract.TOKENS_OUTPUT, "dims": ["2"], "data_type": "TYPE_INT32"},
        ]
    }
    step = text_model.FloorStep({}, config, {contract.TASK_PARAMETER: contract.FEATURE_EXTRACTION.name})
    (response,) = step.execute([_Request(TEXT=np.array([[b"a"], [b"b"]], dtype=np.object_))])
    tokens = response.outputs[contract.TOKENS_OUTPUT]
    assert tokens.dtype == np.int32 and tokens.tolist() == [[0, 0], [0, 0]]


class _CountingRequest(_Request):
    """A request that counts how often the step asks whether its client gave up (a round trip to the server
    process in Triton: about 25 us of wall time and 30 us of server CPU each, docs/bench.md)."""

    def __init__(self, cancelled: bool = False, **inputs: Any) -> None:
        super().__init__(**inputs)
        self.cancelled, self.asked = cancelled, 0

    def is_cancelled(self) -> bool:
        self.asked += 1
        return self.cancelled


def test_the_fused_step_asks_each_request_once_whether_it_was_cancelled(text_model: Any, tmp_path: Path) -> None:
    """Right before computing, in the CPU turn, and not also when the batch arrives; a cancelled request is
    answered CANCELLED and not computed."""
    import numpy as np

    tokenizer_step = _tokenizer_step(text_model, tmp_path, [contract.EMBEDDING_OUTPUT])
    computed: list[int] = []

    class Encoder:  # the ONNX session's stand-in: one zero vector per row
        turns = text_model.load_beside(text_model.HERE, "encoder_runner.py").NoTurns()

        def run(self, features: dict[str, Any]) -> Any:
            computed.append(len(features["input_ids"]))
            return np.zeros((len(features["input_ids"]), 4), dtype=np.float32)

    step = text_model.TextInStep.__new__(text_model.TextInStep)
    vars(step).update(vars(tokenizer_step))
    step.encoder, step.row_us, step.computed = Encoder(), 0.0, 0
    step.trace = text_model.error_responses.StepTrace("under_test")
    live = _CountingRequest(TEXT=np.array([[b"hello world"], [b"rain"]], dtype=np.object_))
    gone = _CountingRequest(cancelled=True, TEXT=np.array([[b"nobody waits"]], dtype=np.object_))
    answered, cancelled = step.execute([live, gone])
    assert (live.asked, gone.asked) == (1, 1)
    assert answered.error is None and answered.outputs[contract.EMBEDDING_OUTPUT].shape == (2, 4)
    assert cancelled.error is not None and cancelled.error.code == _Error.CANCELLED
    assert computed == [2]  # only the live request's rows
