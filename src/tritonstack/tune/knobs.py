"""The serving knobs ``tune`` searches, read from and written into the step configs of a text-in model.

Only the settings that change how requests are batched and computed move; every
other field of a config -- its queue policy in particular -- is carried over
as it was read (``repository.reader`` refuses a config it could not carry over).
A knob at the value the model runs with when the setting is absent is written
by leaving the setting out, so a config tune did not change stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from tritonstack.repository import contract
from tritonstack.repository.config import InstanceGroup, ModelConfig
from tritonstack.repository.reader import read_config
from tritonstack.tune.errors import TuneError

# Parameters of the encoder read by the embedded onnxruntime backend (server/backends/onnxruntime/model.py),
# with the values it takes when they are absent. The NGC image's native backend reads the thread count too
# and ignores the other two.
ROWS_PER_CALL = "max_rows_per_call"  # 0: the whole Triton batch, in length groups
PADDING_WASTE = "max_padding_waste"
DEFAULT_PADDING_WASTE = 0.25
THREADS = "intra_op_thread_count"  # 0: one thread per core the model process may run on


@dataclass(frozen=True)
class Knobs:
    """One serving config of a text-in model; hashable, so a search measures each config once."""

    rows_per_call: int = 0  # encoder: most rows per ONNX Runtime call; 0: no limit
    preferred_batch: tuple[int, ...] = ()  # encoder: preferred_batch_size; (): form the largest batch it can
    encoder_delay_us: int = 500  # encoder: max_queue_delay_microseconds
    tokenizer_delay_us: int = 2000  # tokenizer: max_queue_delay_microseconds
    encoder_instances: int = 1
    encoder_threads: int = 0  # intra-op threads per encoder instance; 0: one per server core
    tokenizer_instances: int = 1
    max_padding_waste: float = DEFAULT_PADDING_WASTE  # padding a length group may carry, x its real tokens

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
    """The two configs ``tune`` rewrites; the text-in ensemble and a postprocess step stay as they are."""

    encoder: ModelConfig
    tokenizer: ModelConfig

    def all(self) -> tuple[ModelConfig, ModelConfig]:
        return self.encoder, self.tokenizer


def _single_group(config: ModelConfig) -> InstanceGroup:
    if len(config.instance_groups) != 1:
        raise TuneError(
            f"{config.name} has {len(config.instance_groups)} instance groups; tune handles exactly one",
            hint="merge them into one instance_group, or tune this model by hand",
        )
    return config.instance_groups[0]


def load_steps(repository: Path, name: str) -> StepConfigs:
    """The encoder and tokenizer configs of text-in model ``name``, checked to be tunable."""
    steps = StepConfigs(
        encoder=read_config(repository / contract.encoder_name(name)),
        tokenizer=read_config(repository / contract.tokenizer_name(name)),
    )
    for config in steps.all():
        if config.dynamic_batching is None:
            raise TuneError(
                f"{config.name} has no dynamic_batching: there is no batching to tune",
                hint="re-export the model with `tritonstack export`",
            )
        _single_group(config)
    if _single_group(steps.encoder).kind == "KIND_GPU":
        raise TuneError(
            f"{steps.encoder.name} targets a GPU (KIND_GPU): the embedded server runs ONNX Runtime on the CPU, "
            "so what tune measured there would not hold on the GPU",
            hint="tune a CPU export (`tritonstack export --target cpu`); size GPU batching on the GPU deployment",
        )
    return steps


def read_knobs(steps: StepConfigs) -> Knobs:
    """The knobs ``steps`` run with now."""
    encoder, tokenizer = steps.encoder, steps.tokenizer
    assert encoder.dynamic_batching is not None and tokenizer.dynamic_batching is not None  # load_steps checked
    parameters = encoder.parameters
    return Knobs(
        rows_per_call=int(parameters.get(ROWS_PER_CALL, "0") or 0),
        preferred_batch=encoder.dynamic_batching.preferred_batch_size,
        encoder_delay_us=encoder.dynamic_batching.max_queue_delay_us,
        tokenizer_delay_us=tokenizer.dynamic_batching.max_queue_delay_us,
        encoder_instances=_single_group(encoder).count,
        encoder_threads=int(parameters.get(THREADS, "0") or 0),
        tokenizer_instances=_single_group(tokenizer).count,
        max_padding_waste=float(parameters.get(PADDING_WASTE, DEFAULT_PADDING_WASTE)),
    )


def _set_parameter(parameters: dict[str, str], key: str, value: float, absent: float) -> None:
    if value == absent:
        parameters.pop(key, None)
    else:
        parameters[key] = f"{value:g}"


def apply_knobs(steps: StepConfigs, knobs: Knobs) -> StepConfigs:
    """``steps`` running with ``knobs``; every other setting (queue policy, warm-up, ...) as it was."""
    encoder, tokenizer = steps.encoder, steps.tokenizer
    assert encoder.dynamic_batching is not None and tokenizer.dynamic_batching is not None  # load_steps checked
    parameters = dict(encoder.parameters)
    _set_parameter(parameters, ROWS_PER_CALL, knobs.rows_per_call, 0)
    _set_parameter(parameters, THREADS, knobs.encoder_threads, 0)
    _set_parameter(parameters, PADDING_WASTE, knobs.max_padding_waste, DEFAULT_PADDING_WASTE)
    encoder = replace(
        encoder,
        dynamic_batching=replace(
            encoder.dynamic_batching,
            max_queue_delay_us=knobs.encoder_delay_us,
            preferred_batch_size=knobs.preferred_batch,
        ),
        instance_groups=(replace(_single_group(encoder), count=knobs.encoder_instances),),
        parameters=parameters,
    )
    tokenizer = replace(
        tokenizer,
        dynamic_batching=replace(tokenizer.dynamic_batching, max_queue_delay_us=knobs.tokenizer_delay_us),
        instance_groups=(replace(_single_group(tokenizer), count=knobs.tokenizer_instances),),
    )
    return StepConfigs(encoder=encoder, tokenizer=tokenizer)
