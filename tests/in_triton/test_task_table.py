"""The task table (``contract.Task``) is what every side reads: each row is complete for each reader.

A new task is a new row; these tests fail when a reader has nothing for one of the row's values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonstack.client import AsyncClient, Client
from tritonstack.commands import infer
from tritonstack.export.gates import Gate, GateMetric, default_metric
from tritonstack.in_triton import contract
from tritonstack.measure import slo
from tritonstack.repository.writer import ExportedModel, model_configs


def _exported(task: contract.Task) -> ExportedModel:
    return ExportedModel(
        name="m",
        task=task.name,
        onnx_path=Path("unused.onnx"),
        tokenizer_dir=Path("unused"),
        input_names=("input_ids", "attention_mask"),
        output_name=task.encoder_output,
        output_dim=8,
        labels=() if task.embedding else ("A", "B"),
        max_batch_size=8,
        max_sequence_length=32,
        precision="fp32",
    )


@pytest.mark.parametrize("task", contract.TASKS_BY_NAME.values(), ids=contract.TASKS)
def test_every_task_has_a_default_gate_that_fits_it(task: contract.Task) -> None:
    metric = default_metric(task.name)
    assert metric is GateMetric(task.gate_metric)
    assert metric.for_embeddings == task.embedding
    assert Gate().for_task(task.name).metric is metric


@pytest.mark.parametrize("task", contract.TASKS_BY_NAME.values(), ids=contract.TASKS)
def test_the_writer_serves_every_task_with_its_outputs_and_steps(task: contract.Task) -> None:
    *steps, text_in = model_configs(_exported(task))
    # the task's outputs, then each row's token count (contract.TOKENS_OUTPUT, not a task output)
    assert tuple(t.name for t in text_in.outputs) == (*task.outputs, contract.TOKENS_OUTPUT)
    assert contract.TOKENS_OUTPUT not in task.outputs
    assert tuple(t.name for t in text_in.inputs) == contract.text_inputs(task)  # TEXT [, TEXT_PAIR]
    tokenizer = next(s for s in steps if s.name == contract.tokenizer_name("m"))
    assert tokenizer.inputs == text_in.inputs
    assert tokenizer.outputs[-1] == text_in.outputs[-1]  # the tokenizer counts the tokens
    encoder = steps[0]
    assert encoder.outputs[0].name == task.encoder_output
    assert len(encoder.outputs[0].dims) == (2 if task.token_level else 1)
    assert any(s.name == contract.postprocess_name("m") for s in steps) == task.postprocess


def test_every_sdk_task_has_its_calls_on_both_clients_and_in_every_driver() -> None:
    assert set(contract.SDK_TASKS) == {n for n, t in contract.TASKS_BY_NAME.items() if t.sdk_method}
    for name in contract.SDK_TASKS:
        method = contract.task(name).sdk_method
        assert method is not None
        for client in (Client, AsyncClient):
            assert callable(getattr(client, method)), (client, method)
            assert callable(getattr(client, f"{method}_release")), (client, method)  # loadtest/users.py
        assert method in infer._PRINTS
    assert slo.TASKS == contract.SDK_TASKS


def test_an_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown task 'rerank'; tasks: feature-extraction, "):
        contract.task("rerank")
