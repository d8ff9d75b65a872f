"""config.pbtxt generation through Triton's protobuf: golden files and round trips."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import json_format

from tritonstack.in_triton import contract
from tritonstack.repository.config import (
    DynamicBatching,
    EnsembleStep,
    ModelConfig,
    QueuePolicy,
    Tensor,
    parameter,
    parse,
    render,
)
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.queue_policy import DEFAULT_QUEUE_BUDGET_MS, queue_budget_ms, queue_policy
from tritonstack.repository.validate import model_config_type
from tritonstack.repository.writer import MAX_CPU_INSTANCES, ExportedModel, cpu_instances_for, model_configs

GOLDEN = Path(__file__).parents[1] / "golden"
# Regenerate with TRITONSTACK_UPDATE_GOLDEN=1 after an intended change, and review the diff.
UPDATE = os.environ.get("TRITONSTACK_UPDATE_GOLDEN") == "1"


def exported(task: str, target: str = "cpu") -> ExportedModel:
    classification = task != "feature-extraction"
    return ExportedModel(
        name="demo",
        task=task,
        onnx_path=Path("unused.onnx"),
        tokenizer_dir=Path("unused"),
        input_names=("input_ids", "attention_mask", "token_type_ids"),
        output_name="logits" if classification else "sentence_embedding",
        output_dim=2 if classification else 384,
        labels=("NEGATIVE", "POSITIVE") if classification else (),
        max_batch_size=64,
        max_sequence_length=256,
        target=target,
        precision="fp16" if target == "gpu" else "int8",
        recipe="fp16_optimized" if target == "gpu" else "blockwise32_optimized",
    )


CASES = [
    ("feature-extraction", "cpu"),
    ("feature-extraction", "gpu"),
    ("text-classification", "cpu"),
    ("token-classification", "cpu"),
]


@pytest.mark.parametrize(("task", "target"), CASES)
def test_generated_configs_match_golden_files(task: str, target: str) -> None:
    for config in model_configs(exported(task, target)):
        golden = GOLDEN / f"{task}-{target}-{config.name}.pbtxt"
        text = render(config)
        if UPDATE:
            golden.write_text(text)
        assert golden.is_file(), f"missing golden file {golden.name}; run with TRITONSTACK_UPDATE_GOLDEN=1"
        assert text == golden.read_text(), golden.name


@pytest.mark.parametrize(("task", "target"), CASES)
def test_configs_round_trip_through_the_protobuf(task: str, target: str) -> None:
    for config in model_configs(exported(task, target)):
        text = render(config)
        parsed = parse(text)
        assert parsed.name == config.name
        assert render_proto(parsed) == text


def render_proto(proto: object) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(proto))


def test_feature_extraction_text_in_is_a_two_step_ensemble() -> None:
    text_in = model_configs(exported("feature-extraction"))[-1]
    proto = text_in.to_proto()
    assert proto.platform == "ensemble"
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in proto.ensemble_scheduling.step]
    features = {n: n for n in exported("feature-extraction").input_names}
    assert steps[0] == ("demo_tokenizer", {"TEXT": "TEXT"}, {**features, "TOKENS": "TOKENS"})
    assert steps[1][0] == "demo_encoder" and steps[1][2] == {"sentence_embedding": "EMBEDDING"}
    assert [t.name for t in proto.output] == ["EMBEDDING", "TOKENS"] and list(proto.output[0].dims) == [384]
    assert model_config_type(proto.output[1].data_type) == "TYPE_INT32" and list(proto.output[1].dims) == [2]


def test_encoder_config_has_batching_instances_warmup_and_gpu_tensorrt() -> None:
    cpu = model_configs(exported("feature-extraction"))[0].to_proto()
    assert cpu.platform == "onnxruntime_onnx" and cpu.max_batch_size == 64
    assert cpu.dynamic_batching.max_queue_delay_microseconds > 0
    assert cpu.instance_group[0].kind == cpu.instance_group[0].KIND_CPU
    assert cpu.model_warmup[0].batch_size == 1
    assert all(list(i.dims) == [-1] for i in cpu.input)
    assert not cpu.optimization.execution_accelerators.gpu_execution_accelerator
    gpu = model_configs(exported("feature-extraction", "gpu"))[0].to_proto()
    assert gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU
    (trt,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_profile_max_shapes"].startswith("input_ids:64x256")


def test_gpu_encoder_has_one_instance_on_each_chosen_gpu_or_on_every_gpu_of_the_host() -> None:
    encoder, tokenizer = model_configs(replace(exported("feature-extraction", "gpu"), gpus=(0, 1)))[:2]
    (group,) = encoder.to_proto().instance_group
    assert (group.count, group.kind, list(group.gpus)) == (1, group.KIND_GPU, [0, 1])
    assert "gpus: 0\n  gpus: 1" in render(encoder)
    (anywhere,) = model_configs(exported("feature-extraction", "gpu"))[0].to_proto().instance_group
    assert list(anywhere.gpus) == []  # Triton: every GPU of the host that loads it
    assert [g.kind for g in tokenizer.to_proto().instance_group] == [group.KIND_CPU]  # tokenizing stays on the CPU


def test_encoder_config_records_precision_and_recipe() -> None:
    cpu = model_configs(exported("feature-extraction"))[0].to_proto()
    assert parameter(cpu, contract.PRECISION_PARAMETER) == "int8"
    assert parameter(cpu, contract.RECIPE_PARAMETER) == "blockwise32_optimized"
    hand_made = replace(exported("feature-extraction"), precision="fp32", recipe=None)
    fp32 = model_configs(hand_made)[0].to_proto()
    assert parameter(fp32, contract.PRECISION_PARAMETER) == "fp32"
    assert parameter(fp32, contract.RECIPE_PARAMETER) is None


def test_encoder_config_caps_rows_per_call_only_when_asked() -> None:
    # blockwise int8 quantizes activations per row: any batch is fine, no parameter (the backend's "no limit")
    assert parameter(model_configs(exported("feature-extraction"))[0].to_proto(), "max_rows_per_call") is None
    dynamic = replace(exported("feature-extraction"), recipe="smoothed_a0.75_fp32x2", max_rows_per_call=1)
    encoder, *others = model_configs(dynamic)
    assert parameter(encoder.to_proto(), contract.MAX_ROWS_PER_CALL_PARAMETER) == "1"
    assert contract.MAX_ROWS_PER_CALL_PARAMETER == "max_rows_per_call"  # the name the backend and tune read
    assert all(parameter(c.to_proto(), contract.MAX_ROWS_PER_CALL_PARAMETER) is None for c in others)


def test_unknown_fields_are_rejected_by_tritons_own_schema() -> None:
    config = ModelConfig(name="x", platform="onnxruntime_onnx", max_batch_size=1, inputs=(), outputs=())
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict({**config.to_dict(), "max_batch": 3}, type(config.to_proto())())


def test_bad_data_type_is_rejected() -> None:
    config = ModelConfig(
        name="x", platform="onnxruntime_onnx", max_batch_size=1, inputs=(Tensor("a", "TYPE_INT65", (-1,)),), outputs=()
    )
    with pytest.raises(json_format.ParseError):
        config.to_proto()


def test_platform_xor_backend() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ModelConfig(name="x", max_batch_size=1, inputs=(), outputs=()).to_dict()


@pytest.mark.parametrize(("task", "target"), CASES)
def test_every_python_step_sheds_by_its_queue_budget_and_no_step_has_a_queue_policy(task: str, target: str) -> None:
    """Any Triton queue policy stalls Triton 2.51's batcher (queue_policy.py): the Python steps shed by age."""
    *steps, text_in = (config.to_proto() for config in model_configs(exported(task, target)))
    assert len(steps) == (2 if task == "feature-extraction" else 3)
    for step in steps:
        assert step.HasField("dynamic_batching"), step.name
        assert not step.dynamic_batching.HasField("default_queue_policy"), step.name
        if step.backend == "python":
            assert parameter(step, contract.QUEUE_BUDGET_MS_PARAMETER) == str(DEFAULT_QUEUE_BUDGET_MS), step.name
    assert text_in.WhichOneof("scheduling_choice") == "ensemble_scheduling"


def test_queue_bounds_follow_the_flags_and_zero_disables_each() -> None:
    assert queue_policy() is None and queue_policy(0) is None  # no Triton bound unless asked for
    assert queue_policy(3) == QueuePolicy(max_queue_size=3, default_timeout_us=0)
    assert queue_budget_ms() == DEFAULT_QUEUE_BUDGET_MS == 500
    assert (queue_budget_ms(250), queue_budget_ms(0)) == (250, 0)
    with pytest.raises(RepositoryError, match=">= 0"):
        queue_policy(-1)
    with pytest.raises(RepositoryError, match=">= 0"):
        queue_budget_ms(-1)
    unbounded = dataclasses.replace(exported("text-classification"), max_queue_size=0, queue_timeout_ms=0)
    for config in model_configs(unbounded)[:-1]:
        proto = config.to_proto()
        assert proto.HasField("dynamic_batching") and not proto.dynamic_batching.HasField("default_queue_policy")
        if proto.backend == "python":
            assert parameter(proto, contract.QUEUE_BUDGET_MS_PARAMETER) == "0"
    custom = dataclasses.replace(exported("feature-extraction"), max_queue_size=5, queue_timeout_ms=20)
    protos = {c.name: c.to_proto() for c in model_configs(custom)[:-1]}
    tokenizer, encoder = (protos[n].dynamic_batching.default_queue_policy for n in ("demo_tokenizer", "demo_encoder"))
    assert (tokenizer.max_queue_size, tokenizer.default_timeout_microseconds) == (5, 0)
    assert (encoder.max_queue_size, encoder.default_timeout_microseconds) == (5, 0)
    assert parameter(protos["demo_tokenizer"], contract.QUEUE_BUDGET_MS_PARAMETER) == "20"


def test_an_ensemble_cannot_have_a_queue_of_its_own() -> None:
    config = ModelConfig(
        name="x",
        platform="ensemble",
        max_batch_size=1,
        inputs=(),
        outputs=(),
        dynamic_batching=DynamicBatching(queue_policy=QueuePolicy(4, 1000)),
        ensemble_steps=(EnsembleStep("y", {}, {}),),
    )
    with pytest.raises(json_format.ParseError, match="scheduling_choice"):
        config.to_proto()


def test_export_help_names_the_queue_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """The flags' help spells the defaults out (importing them would slow `--help`): keep them in step."""
    from tritonstack.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "none when omitted or 0" in text
    assert f"{DEFAULT_QUEUE_BUDGET_MS} when omitted" in text


@pytest.mark.parametrize(("cores", "instances"), [(1, 1), (2, 2), (8, 8), (64, MAX_CPU_INSTANCES)])
def test_a_cpu_export_runs_one_encoder_instance_per_server_core_up_to_the_cap(cores: int, instances: int) -> None:
    model = replace(exported("feature-extraction"), cpu_instances=cpu_instances_for(cores))
    encoder = next(c for c in model_configs(model) if c.name == "demo_encoder")
    assert [(g.count, g.kind) for g in encoder.instance_groups] == [(instances, "KIND_CPU")]
