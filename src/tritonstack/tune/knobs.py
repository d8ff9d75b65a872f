"""The serving knobs ``tune`` searches, read from and written into the step configs of a text-in model.

The layout is a knob too (``repository/layouts.py``): in the ensemble layout
the encoder knobs go to ``NAME_encoder``, in the fused layout to ``NAME_fused``
(which runs the encoder's file in its own process); the tokenizer knobs matter
in the ensemble layout only.

The configs are edited as Triton's parsed ``ModelConfig`` protobuf, as
releases edit them: tune sets the fields it owns and nothing else, so every
other field -- the queue budget, the version policy releases pin, warm-up,
precision -- stays exactly as it was read, whoever wrote it. One exception:
tune removes a Triton queue policy from every config it writes (an export from
before the steps shed by age had one on each step). Any policy stalls Triton
2.51's dynamic batcher up to 500 ms (``repository/queue_policy.py``), so a
config measured with one would be judged by the stall; a step that had no
queue budget gets the default one, so that it still sheds. A knob at the
value the model runs with when the setting is absent is written by leaving
the setting out, so a config tune did not change renders as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonstack.in_triton import contract
from tritonstack.repository import layouts
from tritonstack.repository.config import copy_config, parse
from tritonstack.tune.errors import TuneError

# Parameters of the encoder read by the embedded onnxruntime backend (in_triton/backends/onnxruntime/model.py),
# with the values it takes when they are absent. The NGC image's native backend reads the thread count too
# and ignores the other two.
ROWS_PER_CALL = contract.MAX_ROWS_PER_CALL_PARAMETER  # 0: the whole Triton batch, in length groups
PADDING_WASTE = contract.MAX_PADDING_WASTE_PARAMETER
DEFAULT_PADDING_WASTE = contract.DEFAULT_MAX_PADDING_WASTE
THREADS = contract.INTRA_OP_THREADS_PARAMETER  # 0: the cores the model process may run on, shared among the instances


@dataclass(frozen=True)
class Knobs:
    """One serving config of a text-in model; hashable, so a search measures each config once."""

    rows_per_call: int = 0  # encoder: most rows per ONNX Runtime call; 0: no limit
    preferred_batch: tuple[int, ...] = ()  # encoder: preferred_batch_size; (): form the largest batch it can
    encoder_delay_us: int = 500  # encoder: max_queue_delay_microseconds
    tokenizer_delay_us: int = 2000  # tokenizer: max_queue_delay_microseconds
    encoder_instances: int = 1
    encoder_threads: int = 0  # intra-op threads per encoder instance; 0: the server cores shared equally
    tokenizer_instances: int = 1
    max_padding_waste: float = DEFAULT_PADDING_WASTE  # padding a length group may carry, x its real tokens
    layout: str = contract.ENSEMBLE_LAYOUT  # contract.LAYOUTS

    def changes_from(self, other: Knobs) -> dict[str, tuple[object, object]]:
        """Knob name -> (other's value, this value), for every knob that differs."""
        return {
            f.name: (getattr(other, f.name), getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class StepConfigs:
    """The configs ``tune`` rewrites (``ModelConfig`` protobufs); a postprocess step stays as it is.

    ``fused`` is ``NAME_fused``'s config: the repository's in the fused layout, else built from the steps
    (``layouts.fused_step``); ``text_in`` is the ensemble ``NAME``, whose steps are the layout."""

    encoder: Any
    tokenizer: Any
    fused: Any
    text_in: Any

    def all(self) -> tuple[Any, Any, Any, Any]:
        """In load order: a step before the ensemble that runs it."""
        return self.encoder, self.tokenizer, self.fused, self.text_in

    @property
    def layout(self) -> str:
        return layouts.layout_of(self.text_in)


def _read(model_dir: Path) -> Any:
    path = model_dir / "config.pbtxt"
    try:
        return parse(path.read_text())
    except OSError as error:
        raise TuneError(f"cannot read {path}: {error.strerror}", hint="export the model first") from error
    except text_format.ParseError as error:
        raise TuneError(f"{path} does not parse: {error}", hint="run `tritonstack validate`") from error


def load_steps(repository: Path, name: str) -> StepConfigs:
    """The configs of text-in model ``name`` that tune rewrites, checked to be tunable."""
    text_in = _read(repository / name)
    encoder = _read(repository / contract.encoder_name(name))
    tokenizer = _read(repository / contract.tokenizer_name(name))
    if layouts.layout_of(text_in) == contract.FUSED_LAYOUT:
        fused = _read(repository / contract.fused_name(name))
    else:  # built from the steps as they are now: an idle NAME_fused on disk may predate them
        models = layouts.step_models(text_in)
        others = [_read(repository / m) for m in models if m not in (encoder.name, tokenizer.name)]
        fused = layouts.fused_step(text_in, encoder, tokenizer, others)
    steps = StepConfigs(encoder=encoder, tokenizer=tokenizer, fused=fused, text_in=text_in)
    for config in (steps.encoder, steps.tokenizer, steps.fused):
        if not config.HasField("dynamic_batching"):
            raise TuneError(
                f"{config.name} has no dynamic_batching: there is no batching to tune",
                hint="re-export the model with `tritonstack export`",
            )
        if len(config.instance_group) != 1:
            raise TuneError(
                f"{config.name} has {len(config.instance_group)} instance groups; tune handles exactly one",
                hint="merge them into one instance_group, or tune this model by hand",
            )
    if steps.encoder.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
        raise TuneError(
            f"{steps.encoder.name} targets a GPU (KIND_GPU): the embedded server runs ONNX Runtime on the CPU, "
            "so what tune measured there would not hold on the GPU",
            hint="tune a CPU export (`tritonstack export --target cpu`); size GPU batching on the GPU deployment",
        )
    return steps


def _parameter(config: Any, key: str, default: str) -> str:
    return str(config.parameters[key].string_value) if key in config.parameters else default


def read_knobs(steps: StepConfigs) -> Knobs:
    """The knobs ``steps`` run with now (in the fused layout, the encoder knobs are the fused step's)."""
    layout = steps.layout
    encoder = steps.fused if layout == contract.FUSED_LAYOUT else steps.encoder
    tokenizer = steps.tokenizer
    return Knobs(
        rows_per_call=int(_parameter(encoder, ROWS_PER_CALL, "0") or 0),
        preferred_batch=tuple(encoder.dynamic_batching.preferred_batch_size),
        encoder_delay_us=encoder.dynamic_batching.max_queue_delay_microseconds,
        tokenizer_delay_us=tokenizer.dynamic_batching.max_queue_delay_microseconds,
        encoder_instances=encoder.instance_group[0].count,
        encoder_threads=int(_parameter(encoder, THREADS, "0") or 0),
        tokenizer_instances=tokenizer.instance_group[0].count,
        max_padding_waste=float(_parameter(encoder, PADDING_WASTE, str(DEFAULT_PADDING_WASTE))),
        layout=layout,
    )


def _set_parameter(config: Any, key: str, value: float, absent: float) -> None:
    if value == absent:
        if key in config.parameters:
            del config.parameters[key]
    else:
        config.parameters[key].string_value = f"{value:g}"


def apply_knobs(steps: StepConfigs, knobs: Knobs) -> StepConfigs:
    """Copies of ``steps`` running with ``knobs``; every field tune does not own as it was. The configs of the
    layout not chosen stay as they were read."""
    if knobs.layout == contract.FUSED_LAYOUT:
        fused = copy_config(steps.fused)
        _set_encoder_knobs(fused, knobs)
        text_in = steps.text_in if steps.layout == contract.FUSED_LAYOUT else layouts.with_fused_step(steps.text_in)
        return StepConfigs(encoder=steps.encoder, tokenizer=steps.tokenizer, fused=fused, text_in=text_in)
    if steps.layout != contract.ENSEMBLE_LAYOUT:
        raise TuneError(
            f"{steps.text_in.name} runs the fused layout; tune searches its knobs, not a way back to the ensemble",
            hint="re-export with --layout ensemble to tune the ensemble layout",
        )
    encoder, tokenizer = copy_config(steps.encoder), copy_config(steps.tokenizer)
    _set_encoder_knobs(encoder, knobs)
    _shed_without_queue_policy(tokenizer)
    tokenizer.dynamic_batching.max_queue_delay_microseconds = knobs.tokenizer_delay_us
    tokenizer.instance_group[0].count = knobs.tokenizer_instances
    return StepConfigs(encoder=encoder, tokenizer=tokenizer, fused=steps.fused, text_in=steps.text_in)


def _shed_without_queue_policy(config: Any) -> None:
    """Drop ``config``'s queue policy; a Python step without a queue budget gets the default one."""
    config.dynamic_batching.ClearField("default_queue_policy")
    if config.backend == "python" and contract.QUEUE_BUDGET_MS_PARAMETER not in config.parameters:
        config.parameters[contract.QUEUE_BUDGET_MS_PARAMETER].string_value = str(contract.DEFAULT_QUEUE_BUDGET_MS)


def _set_encoder_knobs(encoder: Any, knobs: Knobs) -> None:
    """Set the encoder knobs on ``encoder``: ``NAME_encoder``'s config or the fused step's."""
    _shed_without_queue_policy(encoder)
    _set_parameter(encoder, ROWS_PER_CALL, knobs.rows_per_call, 0)
    _set_parameter(encoder, THREADS, knobs.encoder_threads, 0)
    _set_parameter(encoder, PADDING_WASTE, knobs.max_padding_waste, DEFAULT_PADDING_WASTE)
    encoder.dynamic_batching.max_queue_delay_microseconds = knobs.encoder_delay_us
    encoder.dynamic_batching.preferred_batch_size[:] = list(knobs.preferred_batch)
    encoder.instance_group[0].count = knobs.encoder_instances
