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
