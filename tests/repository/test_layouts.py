"""The fused layout of a text-in model, built from the step configs (repository/layouts.py): pure, no server.

``NAME`` gets one step, ``NAME_fused``, which must run with the encoder's batching, instances and ONNX
Runtime knobs and the whole queueing budget of the steps it replaces. Also: ``export --layout fused
--target gpu`` is refused before any work.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_repository_config import exported

from tritonstack.cli import main
from tritonstack.export.errors import ExportError
from tritonstack.export.options import ExportOptions, validate
from tritonstack.in_triton import contract
from tritonstack.repository import layouts, releases
from tritonstack.repository.config import parameter
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.validate import model_config_type
from tritonstack.repository.writer import layout_configs

TASKS = contract.TASKS


def fused(task: str, **changes: Any) -> dict[str, Any]:
    """The configs (protobuf) a fused export of the demo model writes, by name."""
    return {c.name: c for c in layout_configs(replace(exported(task), layout="fused", **changes))}


def steps(text_in: Any) -> list[tuple[str, int, dict[str, str], dict[str, str]]]:
    return [
        (s.model_name, s.model_version, dict(s.input_map), dict(s.output_map)) for s in text_in.ensemble_scheduling.step
    ]


@pytest.mark.parametrize("task", TASKS)
def test_the_text_in_model_has_one_step_that_maps_text_to_every_task_output(task: str) -> None:
    configs = fused(task)
    outputs = (*contract.OUTPUTS_BY_TASK[task], contract.TOKENS_OUTPUT)  # the task's, then each row's tokens
    texts = list(contract.text_inputs(contract.task(task)))  # TEXT, and TEXT_PAIR for text-ranking
    assert texts == (["TEXT", "TEXT_PAIR"] if task == "text-ranking" else ["TEXT"])
    assert steps(configs["demo"]) == [("demo_fused", -1, {t: t for t in texts}, {o: o for o in outputs})]
    assert configs["demo"].platform == "ensemble"
    assert [t.name for t in configs["demo_fused"].output] == list(outputs)
    assert [t.name for t in configs["demo_fused"].input] == texts


@pytest.mark.parametrize("task", TASKS)
def test_the_step_models_stay_beside_the_fused_step(task: str) -> None:
    names = ["demo_encoder", "demo_tokenizer", "demo_fused", "demo"]
    if contract.task(task).postprocess:
        names.insert(2, "demo_postprocess")
    assert list(fused(task)) == names


@pytest.mark.parametrize("task", TASKS)
def test_the_fused_step_batches_queues_and_runs_as_the_encoder_does(task: str) -> None:
    configs = fused(task, cpu_instances=3)
    step, encoder = configs["demo_fused"], configs["demo_encoder"]
    assert (step.backend, step.platform) == ("python", "")
    assert step.max_batch_size == encoder.max_batch_size == 64
    assert [(g.count, g.kind) for g in step.instance_group] == [(3, encoder.instance_group[0].KIND_CPU)]
    assert list(step.instance_group) == list(encoder.instance_group)
    batching = step.dynamic_batching
    assert list(batching.preferred_batch_size) == list(encoder.dynamic_batching.preferred_batch_size) == [4]
    # no delay: a lone request does not wait for company (layouts.FUSED_QUEUE_DELAY_US)
    assert (batching.max_queue_delay_microseconds, encoder.dynamic_batching.max_queue_delay_microseconds) == (0, 500)
    # no Triton queue policy (it stalls Triton 2.51's batcher): the step sheds by the request's queue budget
    assert not batching.HasField("default_queue_policy")
    assert parameter(step, contract.QUEUE_BUDGET_MS_PARAMETER) == "500"


def test_without_queue_bounds_the_fused_step_has_none_either() -> None:
    step = fused("text-classification", max_queue_size=0, queue_timeout_ms=0)["demo_fused"]
    assert not step.dynamic_batching.HasField("default_queue_policy")
    assert step.dynamic_batching.max_queue_delay_microseconds == 0
    assert parameter(step, contract.QUEUE_BUDGET_MS_PARAMETER) == "0"


@pytest.mark.parametrize("task", TASKS)
def test_the_fused_step_reads_the_tokenizer_and_encoder_parameters(task: str) -> None:
    configs = fused(task)
    step, tokenizer = configs["demo_fused"], configs["demo_tokenizer"]
    assert parameter(step, "role") == "text-in" == contract.FUSED_ROLE
    assert parameter(step, "cpu_turns") == "1"
    assert parameter(step, "encoder_file") == "model.onnx"
    assert parameter(step, "encoder_model") == "demo_encoder"
    assert parameter(step, "task") == task
    for key in ("max_sequence_length", "encoder_inputs", "encoder_output", "labels"):
        assert parameter(step, key) == parameter(tokenizer, key), key
    assert parameter(step, "encoder_inputs") == "input_ids,attention_mask,token_type_ids"
    assert parameter(step, "precision") == "int8" and parameter(step, "recipe") == "blockwise32_optimized"
    # export writes these to the encoder only when set; the fused step copies them when they are there
    assert parameter(step, "max_rows_per_call") is None
    assert parameter(step, "intra_op_thread_count") is None


def test_each_fused_instance_warms_up_on_one_empty_text() -> None:
    (warmup,) = fused("text-classification")["demo_fused"].model_warmup
    assert (warmup.batch_size, list(warmup.inputs)) == (1, ["TEXT"])
    sample = warmup.inputs["TEXT"]
    assert sample.zero_data and list(sample.dims) == [1]
    assert model_config_type(sample.data_type) == "TYPE_STRING"


def test_the_fused_step_copies_rows_per_call_and_threads_when_the_encoder_has_them() -> None:
    step = fused("feature-extraction", max_rows_per_call=1, encoder_threads=3)["demo_fused"]
    assert parameter(step, "max_rows_per_call") == "1"
    assert parameter(step, "intra_op_thread_count") == "3"


def test_layout_of_tells_the_two_layouts_apart() -> None:
    ensemble = layout_configs(exported("text-classification"))
    assert layouts.layout_of(ensemble[-1]) == contract.ENSEMBLE_LAYOUT
    assert layouts.layout_of(fused("text-classification")["demo"]) == contract.FUSED_LAYOUT


def test_a_per_release_ensemble_has_the_layout_of_its_model() -> None:
    configs = list(fused("text-classification").values())
    *_, stable, release = releases.release_configs(configs[-1], configs[:-1], 3, None)
    assert (stable.name, release.name) == ("demo", "demo_v3")
    assert layouts.base_name(release) == "demo" and layouts.base_name(stable) == "demo"
    assert layouts.layout_of(release) == contract.FUSED_LAYOUT
    assert [(s.model_name, s.model_version) for s in release.ensemble_scheduling.step] == [("demo_fused", 3)]


def test_with_fused_step_keeps_the_release_the_steps_were_pinned_to() -> None:
    configs = layout_configs(exported("token-classification"))
    *_, release = releases.release_configs(configs[-1], configs[:-1], 2, None)  # demo_v2, steps pinned to 2
    rewritten = layouts.with_fused_step(release)
    assert rewritten.name == "demo_v2"
    assert steps(rewritten) == [("demo_fused", 2, {"TEXT": "TEXT"}, {"ENTITIES": "ENTITIES", "TOKENS": "TOKENS"})]
    assert parameter(rewritten, contract.RELEASE_PARAMETER) == "2"
    assert len(release.ensemble_scheduling.step) == 3  # a copy: the ensemble it was made from is unchanged


def test_with_fused_step_leaves_steps_of_different_versions_unpinned() -> None:
    text_in = layout_configs(exported("text-classification"))[-1]
    for version, step in enumerate(text_in.ensemble_scheduling.step, 1):
        step.model_version = version
    assert [s.model_version for s in layouts.with_fused_step(text_in).ensemble_scheduling.step] == [-1]


def test_a_gpu_target_has_no_fused_layout() -> None:
    with pytest.raises(RepositoryError, match="on the CPU") as caught:
        fused("feature-extraction", target="gpu")
    assert "--target cpu" in (caught.value.hint or "")


def test_an_unknown_layout_is_refused_and_the_layouts_listed() -> None:
    with pytest.raises(RepositoryError, match="no layout 'pipeline'") as caught:
        layout_configs(replace(exported("feature-extraction"), layout="pipeline"))
    assert caught.value.hint == "layouts: ensemble, fused"


@pytest.mark.parametrize("task", TASKS)
def test_a_fused_release_pins_the_encoder_and_tokenizer_whose_files_it_reads(task: str) -> None:
    assert releases.step_names(fused(task)["demo"]) == ["demo_fused", "demo_encoder", "demo_tokenizer"]
    expected = ["demo_tokenizer", "demo_encoder", *(["demo_postprocess"] if contract.task(task).postprocess else [])]
    assert releases.step_names(layout_configs(exported(task))[-1]) == expected


# --- export refuses a fused GPU export before any work ---------------------------------------


def test_export_with_the_fused_layout_on_a_gpu_target_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no model there: an export that got past checking its options would fail on the model instead
    repository = tmp_path / "model_repository"
    argv = ["export", str(tmp_path / "no-model"), "--repository", str(repository), "--target", "gpu"]
    assert main([*argv, "--layout", "fused"]) == ExportError.exit_code
    err = capsys.readouterr().err
    assert "error: the fused layout runs ONNX Runtime on the CPU inside a Python model" in err
    assert "hint: drop --layout fused, or export with --target cpu" in err
    assert not repository.exists()


def test_the_export_options_refuse_an_unknown_layout_before_any_work(tmp_path: Path) -> None:
    options = ExportOptions(model=str(tmp_path / "model"), name="demo", repository=tmp_path / "repo", layout="fused")
    assert validate(options)[1] == "demo"  # fused on the cpu target: fine
    with pytest.raises(ExportError, match="layout"):
        validate(replace(options, layout="pipeline"))


def test_the_served_model_and_the_builder_name_the_fused_role_alike() -> None:
    import ast

    import tritonstack.in_triton.models as models

    # one name, in the contract: the builder writes it, model.py (text_model.py) reads the copy beside it
    tree = ast.parse((Path(models.__file__).parent / "text_model.py").read_text())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not literals & set(contract.TEXT_ROLES), "text_model.py spells a role instead of naming contract's"
    (steps,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "STEPS"
    ]
    assert isinstance(steps, ast.Dict)
    assert [ast.unparse(key) for key in steps.keys if key is not None] == [
        "contract.TOKENIZER_ROLE",
        "contract.POSTPROCESS_ROLE",
        "contract.FUSED_ROLE",
        "contract.FLOOR_ROLE",  # bench's serving floor (bench/floor.py)
    ]
    step = fused("feature-extraction")["demo_fused"]
    assert parameter(step, contract.ROLE_PARAMETER) == contract.FUSED_ROLE


def test_a_new_release_keeps_the_layout_the_name_runs_unless_asked(tmp_path: Path) -> None:
    from tritonstack.export.options import resolve_layout
    from tritonstack.repository.config import write_config

    assert layouts.existing_layout(tmp_path, "demo") is None
    assert resolve_layout("cpu", None) == "fused" and resolve_layout("gpu", None) == "ensemble"
    configs = layout_configs(replace(exported("feature-extraction"), layout="ensemble"))
    (tmp_path / "demo").mkdir()
    write_config(tmp_path / "demo", configs[-1])
    existing = layouts.existing_layout(tmp_path, "demo")
    assert existing == "ensemble"
    assert resolve_layout("cpu", None, existing) == "ensemble"  # the cpu default does not switch it
    assert resolve_layout("cpu", "fused", existing) == "fused"  # asked for


def test_the_fused_step_keeps_only_an_asked_for_queue_bound_of_the_encoder() -> None:
    """A queue timeout on a step (an export from before the steps shed by age) is not carried over: it stalls
    Triton 2.51's batcher as any policy does; a max_queue_size asked for (export --max-queue-size) is."""
    encoder, tokenizer, postprocess, text_in = layout_configs(
        replace(exported("text-classification"), max_queue_size=7)
    )
    encoder.dynamic_batching.default_queue_policy.default_timeout_microseconds = 350_000
    fused = layouts.fused_step(text_in, encoder, tokenizer, [postprocess])
    policy = fused.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (7, 0)
    encoder.dynamic_batching.default_queue_policy.max_queue_size = 0
    fused = layouts.fused_step(text_in, encoder, tokenizer, [postprocess])
    assert not fused.dynamic_batching.HasField("default_queue_policy")
