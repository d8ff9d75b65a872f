"""Shedding by queueing age in the served Python steps (in_triton/models/error_responses.py), without Triton:
a request the SDK stamped longer ago than the step's budget is answered UNAVAILABLE with the contract's text."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import tritonstack.in_triton
from tritonstack.client import OverloadedError
from tritonstack.client._core import request_parameters
from tritonstack.client._exceptions import translate
from tritonstack.in_triton import contract

SOURCE = Path(tritonstack.in_triton.__file__).parent / "models" / "error_responses.py"


class FakeError:
    UNAVAILABLE, CANCELLED, INVALID_ARG, INTERNAL = "UNAVAILABLE", "CANCELLED", "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str) -> None:
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, error: FakeError) -> None:
        self.error = error


class FakeRequest:
    def __init__(self, parameters: dict[str, Any] | str) -> None:
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters)

    def parameters(self) -> str:
        return self._parameters


@pytest.fixture()
def responses(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.TritonError = FakeError  # type: ignore[attr-defined]
    stub.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
    spec = importlib.util.spec_from_file_location("error_responses_under_test", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOW_US = 1_800_000_000_000_000


def stamped(age_us: int) -> FakeRequest:
    return FakeRequest({contract.SENT_AT_PARAMETER: NOW_US - age_us, "other": "x"})


def test_a_request_queued_past_the_budget_is_shed_with_the_contracts_text(responses: types.ModuleType) -> None:
    budget = responses.queue_budget_us({contract.QUEUE_BUDGET_MS_PARAMETER: "500"}, contract)
    assert budget == 500_000
    assert responses.shed(stamped(499_000), contract, budget, NOW_US) is None
    refused = responses.shed(stamped(612_000), contract, budget, NOW_US)
    assert refused.error.code == FakeError.UNAVAILABLE
    assert refused.error.message.startswith(contract.SHED_MESSAGE) and "612 ms > 500 ms" in refused.error.message


@pytest.mark.parametrize(
    "request_",
    [
        FakeRequest({}),  # a raw tritonclient caller: no stamp, never shed by age (its deadline still cancels it)
        FakeRequest(""),
        FakeRequest("not json"),
        FakeRequest({contract.SENT_AT_PARAMETER: "12"}),
        FakeRequest({contract.SENT_AT_PARAMETER: True}),
        stamped(-5_000_000),  # a client clock ahead of the server's: no wait
        stamped(3_600_000_000),  # an hour: a clock set wrong, not a queue
    ],
)
def test_without_a_usable_stamp_nothing_is_shed(responses: types.ModuleType, request_: FakeRequest) -> None:
    assert responses.shed(request_, contract, 500_000, NOW_US) is None


def test_no_budget_sheds_nothing(responses: types.ModuleType) -> None:
    assert responses.queue_budget_us({}, contract) == 0
    assert responses.queue_budget_us({contract.QUEUE_BUDGET_MS_PARAMETER: "0"}, contract) == 0
    assert responses.shed(stamped(10_000_000), contract, 0, NOW_US) is None


def test_the_sdk_stamps_its_send_time_and_maps_a_shed_to_overload() -> None:
    import time

    before = time.time_ns() // 1000
    stamp = request_parameters()[contract.SENT_AT_PARAMETER]
    assert isinstance(stamp, int) and before <= stamp <= time.time_ns() // 1000

    class Unavailable(Exception):
        def status(self) -> str:
            return "StatusCode.UNAVAILABLE"

        def message(self) -> str:
            return f"in ensemble 'minilm', {contract.SHED_MESSAGE} (612 ms > 500 ms): send less or add capacity"

    error = translate(Unavailable(), model="minilm", version=None, request_id="r", url="u")
    assert type(error) is OverloadedError


def test_in_its_turn_a_batch_sheds_its_oldest_until_the_rest_are_answered_within_the_budget(
    responses: types.ModuleType,
) -> None:
    # a batch's answers all leave when it is computed: each at its age now + the whole batch's compute
    ages = [450_000, 100_000, 300_000, 20_000]  # µs, one row each
    assert responses.over_budget(ages, [1, 1, 1, 1], 0.0, 500_000) == set()  # no estimate yet: the ages alone
    # 40 ms a row: 450 + 160 ms is past 500 ms; without it, 300 + 120 fits
    assert responses.over_budget(ages, [1, 1, 1, 1], 40_000.0, 500_000) == {0}
    # 80 ms a row: 450 + 320 and 300 + 240 are past it; without both, 100 + 160 fits
    assert responses.over_budget(ages, [1, 1, 1, 1], 80_000.0, 500_000) == {0, 2}
    # every row counts: 9 rows take 360 ms, past 500 ms for 200; without its row, 150 + 320 fits
    assert responses.over_budget([200_000, 150_000], [1, 8], 40_000.0, 500_000) == {0}
    assert responses.over_budget([None, 490_000], [1, 1], 40_000.0, 500_000) == {1}  # no stamp: never shed
    assert responses.over_budget(ages, [1, 1, 1, 1], 40_000.0, 0) == set()  # no budget
    refused = responses.shed_response(640_000, 500_000, contract)
    assert refused.error.code == FakeError.UNAVAILABLE and refused.error.message.startswith(contract.SHED_MESSAGE)


def test_the_step_trace_writes_a_line_per_execution_only_where_asked(
    responses: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(responses.TRACE_ENV, raising=False)
    assert not responses.StepTrace("m")
    monkeypatch.setenv(responses.TRACE_ENV, str(tmp_path))
    trace = responses.StepTrace("m")
    trace.write(requests=3, rows=2)
    trace.close()
    (path,) = tmp_path.glob("m-*.jsonl")
    assert json.loads(path.read_text()) == {"requests": 3, "rows": 2}
    monkeypatch.setenv(responses.TRACE_ENV, str(tmp_path / "missing"))
    assert not responses.StepTrace("m")  # an unusable folder: no trace, the model still loads


def test_a_batch_waits_for_its_cpu_turn_only_while_its_youngest_is_within_the_budget(
    responses: types.ModuleType,
) -> None:
    assert responses.turn_wait_s([300_000, 100_000], 500_000) == pytest.approx(0.4)
    assert responses.turn_wait_s([700_000], 500_000) == pytest.approx(0.001)  # past it already: a poll, then shed
    assert responses.turn_wait_s([100_000, None], 500_000) is None  # an unstamped request: the turn's own bound
    assert responses.turn_wait_s([100_000], 0) is None
