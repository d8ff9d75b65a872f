"""The two layouts of a text-in model: an ensemble of steps, or one fused Python step on the CPU.

* ``ensemble``: ``NAME`` chains ``NAME_tokenizer`` -> ``NAME_encoder`` [->
  ``NAME_postprocess``]. The GPU layout (the encoder runs in Triton's native
  backend there), and what every export writes first.
* ``fused``: ``NAME`` has one step, ``NAME_fused``, a Python model that
  tokenizes, runs the ONNX file of ``NAME_encoder`` of its own release in its
  own process and post-processes (``in_triton/models/text_model.py``, role
  ``contract.FUSED_ROLE``). One Python process, one hop and one copy of the tensors per
  request fewer. The step models stay: the fused step reads the encoder's file
  and the tokenizer's, releases pin them, the benchmark's in-process limit reads
  them, and a re-export with ``--layout ensemble`` brings that layout back.

Both export (``--layout fused``) and ``tune`` build the fused step here, from
the step configs, so the fused step runs with the encoder's batching,
instances and ONNX Runtime knobs and the steps' queue budget (it sheds by
queueing age; no Triton queue policy: ``queue_policy.py``). ``docs/export.md`` has the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from tritonstack.in_triton import contract
from tritonstack.repository.config import CONFIG_FILENAME, ModelConfigProto, copy_config, parameter, parse

# Parameters of the tokenizer's config that the fused step reads as they are.
TEXT_PARAMETERS = (
    contract.TASK_PARAMETER,
    contract.MAX_SEQUENCE_LENGTH_PARAMETER,
    contract.ENCODER_MODEL_PARAMETER,
    contract.ENCODER_INPUTS_PARAMETER,
    contract.ENCODER_OUTPUT_PARAMETER,
    contract.LABELS_PARAMETER,
    contract.QUEUE_BUDGET_MS_PARAMETER,
)
# Parameters of the encoder's config that the fused step honours as the onnxruntime backend does.
ENCODER_PARAMETERS = (
    contract.PRECISION_PARAMETER,
    contract.RECIPE_PARAMETER,
    contract.MAX_ROWS_PER_CALL_PARAMETER,
    contract.MAX_PADDING_WASTE_PARAMETER,
    contract.INTRA_OP_THREADS_PARAMETER,
)


def layout_problem(layout: str, target: str) -> tuple[str, str] | None:
    """``(message, hint)`` when ``layout`` cannot be written for ``target`` ("cpu"/"gpu"); ``None`` when it can.
    Export asks before any work, the writer before it writes."""
    if layout not in contract.LAYOUTS:
        return f"no layout {layout!r}", f"layouts: {', '.join(contract.LAYOUTS)}"
    if layout == contract.FUSED_LAYOUT and target == "gpu":
        return (
            "the fused layout runs ONNX Runtime on the CPU inside a Python model; a GPU export keeps the ensemble",
            "drop --layout fused, or export with --target cpu",
        )
    return None


def base_name(text_in: Any) -> str:
    """The text-in model a config serves: its own name, or the one a per-release ensemble is a release of."""
    return parameter(text_in, contract.RELEASE_OF_PARAMETER) or text_in.name


def step_models(text_in: Any) -> list[str]:
    """The models the steps of the ensemble ``text_in`` name, in order."""
    return [step.model_name for step in text_in.ensemble_scheduling.step]


def layout_of(text_in: Any) -> str:
    """The layout of the text-in ensemble ``text_in`` (protobuf)."""
    fused = contract.fused_name(base_name(text_in))
    return contract.FUSED_LAYOUT if step_models(text_in) == [fused] else contract.ENSEMBLE_LAYOUT


# The fused step runs what it is handed at once: a batching delay only makes a lone request wait for company
# that does not come, and under load requests queue while the instance computes, so batches form anyway.
# Bundled MiniLM int8, one core of the 2-core AMD EPYC with AVX-512 VNNI, quiet, runs alternated (docs/bench.md):
# 0 against the encoder's 500 us, c=1 p50 10.5-10.7 against 11.2-11.3 ms (floor 0.6-0.7 against 1.3-1.4 ms),
# c=16 and half load alike within the runs' spread. `tritonstack tune` searches it.
FUSED_QUEUE_DELAY_US = 0


def existing_layout(repository: Path, name: str) -> str | None:
    """The layout text-in model ``name`` runs in ``repository``; ``None`` when it has none (or no readable config)."""
    path = Path(repository) / name / CONFIG_FILENAME
    try:
        return layout_of(parse(path.read_text())) if path.is_file() else None
    except (OSError, text_format.ParseError):
        return None


def fused_step(text_in: Any, encoder: Any, tokenizer: Any, other_steps: Sequence[Any] = ()) -> Any:
    """The config (protobuf) of ``NAME_fused`` for the ensemble ``text_in`` whose steps are ``encoder``,
    ``tokenizer`` and ``other_steps`` (a postprocess): the ensemble's inputs (TEXT [, TEXT_PAIR]) in, its
    outputs out; the encoder's batching, instances, versions and knobs, and the tokenizer's queue budget (the
    whole request's: the age runs from the client's send); no batching delay (``FUSED_QUEUE_DELAY_US``). Of the
    encoder's queue policy only an explicit
    ``max_queue_size`` is kept: a queue timeout stalls Triton 2.51's batcher as any policy does, and the fused
    step sheds by age instead (queue_policy.py)."""
    fused = ModelConfigProto()
    fused.name = contract.fused_name(base_name(text_in))
    fused.backend = "python"
    fused.max_batch_size = encoder.max_batch_size
    fused.input.extend(text_in.input)
    fused.output.extend(text_in.output)
    fused.version_policy.CopyFrom(encoder.version_policy)
    fused.instance_group.extend(encoder.instance_group)
    fused.dynamic_batching.CopyFrom(encoder.dynamic_batching)
    fused.dynamic_batching.max_queue_delay_microseconds = FUSED_QUEUE_DELAY_US
    bound = encoder.dynamic_batching.default_queue_policy.max_queue_size
    fused.dynamic_batching.ClearField("default_queue_policy")
    if bound:
        fused.dynamic_batching.default_queue_policy.max_queue_size = bound
    for key in TEXT_PARAMETERS:
        value = parameter(tokenizer, key)
        if value is not None:
            fused.parameters[key].string_value = value
    for key in ENCODER_PARAMETERS:
        value = parameter(encoder, key)
        if value is not None:
            fused.parameters[key].string_value = value
    # each instance runs one (empty) text at load, so the first requests do not pay ONNX Runtime's first run
    warmup = fused.model_warmup.add(name="one_empty_text", batch_size=1)
    for tensor in text_in.input:
        sample = warmup.inputs[tensor.name]
        sample.data_type = tensor.data_type
        sample.dims.extend(tensor.dims)
        sample.zero_data = True
    fused.parameters[contract.ROLE_PARAMETER].string_value = contract.FUSED_ROLE
    fused.parameters[contract.ENCODER_FILE_PARAMETER].string_value = (
        encoder.default_model_filename or contract.DEFAULT_ENCODER_FILE
    )
    # instances that outnumber the server's cores (tune's candidates, a server given fewer cores than exported
    # for) take turns on them (encoder_runner.py)
    fused.parameters[contract.CPU_TURNS_PARAMETER].string_value = "1"
    return fused


def with_fused_step(text_in: Any) -> Any:
    """A copy of the ensemble ``text_in`` whose one step is ``NAME_fused``, at the version its steps ran."""
    fused = copy_config(text_in)
    versions = {step.model_version for step in text_in.ensemble_scheduling.step}
    step_version = versions.pop() if len(versions) == 1 else -1
    del fused.ensemble_scheduling.step[:]
    step = fused.ensemble_scheduling.step.add()
    step.model_name = contract.fused_name(base_name(text_in))
    step.model_version = step_version
    for tensor in text_in.input:  # TEXT, and TEXT_PAIR for a pair task
        step.input_map[tensor.name] = tensor.name
    for output in text_in.output:
        step.output_map[output.name] = output.name
    return fused
