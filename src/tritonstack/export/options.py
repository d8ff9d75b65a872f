"""What ``tritonstack export`` is asked to do, and the checks that run before any work.

``tritonstack export --help`` reads the choices and defaults from here, so
this module imports no protobuf (see :func:`validate`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from tritonstack.export._errors import ExportError
from tritonstack.export.cache import cache_root
from tritonstack.export.gates import DEFAULT_THRESHOLD, Gate
from tritonstack.in_triton.contract import ENSEMBLE_LAYOUT, FUSED_LAYOUT
from tritonstack.repository.paths import DEFAULT_REPOSITORY

if TYPE_CHECKING:
    from tritonstack.export.quantize import Recipe


class Precision(str, Enum):
    """Weights/compute precision of an export; ``AUTO`` asks for a race, the others are what a model has."""

    AUTO = "auto"  # the fastest of fp32 and the int8 recipes that passes the gate
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:  # "int8", not "Precision.INT8", in messages and f-strings
        return self.value


TARGETS = ("cpu", "gpu")
# auto on cpu: int8 pays off only where the CPU has VNNI/AMX; on plain AVX2 the int8 recipes that pass the
# gate are slower than fp32, so the export races them instead of assuming.
DEFAULT_PRECISION = {"cpu": Precision.AUTO, "gpu": Precision.FP16}
# On a CPU the fused step (tokenizer and encoder in one Python process) served the bundled MiniLM at 0.77-0.92
# of the in-process limit against 0.76-0.80 for the ensemble over four side-by-side runs, with p99 at half load
# 5.6-12.1x a single text's time against 8.8-173x (the ensemble stalled in two), and 1.24x the ensemble in
# `tune` (2-core VNNI, docs/bench.md); a GPU encoder runs in Triton's native backend.
DEFAULT_LAYOUT = {"cpu": FUSED_LAYOUT, "gpu": ENSEMBLE_LAYOUT}
# min cosine (feature-extraction) or label agreement (classification) every candidate must reach;
# ``--gate`` may name another metric (gates.py)
DEFAULT_GATE = DEFAULT_THRESHOLD
_GENERIC_DIR_NAMES = {"model", "models", "snapshot", "snapshots", "onnx", "hf", "checkpoint"}


@dataclass(frozen=True)
class ExportOptions:
    """What ``tritonstack export`` was asked to do (the CLI flags, typed)."""

    model: str
    revision: str | None = None  # of a hub id: a branch, tag or commit; None: the default branch
    task: str | None = None
    name: str | None = None
    repository: Path = DEFAULT_REPOSITORY
    target: str = "cpu"
    # gpu target: CUDA device ids of the encoder's instances. None: every GPU visible now; (): none listed,
    # which Triton reads as every GPU of the host that loads the model (see export/device.py)
    gpus: tuple[int, ...] | None = None
    precision: Precision | None = None  # None: DEFAULT_PRECISION of the target
    max_batch_size: int = 64
    max_sequence_length: int | None = None  # tokens; None: the model's own limit
    max_queue_size: int | None = None  # requests per step queue; None: derived from max_batch_size, 0: unbounded
    queue_timeout_ms: int | None = None  # queueing budget, split over the steps; None: 500, 0: none (queue_policy.py)
    gate: Gate = field(default_factory=Gate)  # the task's default metric at DEFAULT_GATE
    parity_texts: Path | None = None  # added to the gate split
    response_cache: bool = False  # Triton's response cache on the text-in model (docs/cache.md)
    layout: str | None = None  # repository.contract.LAYOUTS; None: DEFAULT_LAYOUT of the target
    # cpu target: encoder (or fused step) instances, one per core of the server; None: this machine's cores
    # (the CPUs this process may run on), at most repository.writer.MAX_CPU_INSTANCES
    cpu_instances: int | None = None
    recipes: tuple[Recipe, ...] | None = None  # int8 presets in the race; None: every preset
    mixes: bool = True  # int8/auto on cpu: also search smoothed mixes with fp32 islands (sensitivity.py)
    threads: int = 2  # ORT intra-op threads while gating and timing candidates
    reps: int = 3  # timed rounds per candidate
    progress: bool = True
    cache_dir: Path | None = field(default_factory=cache_root)  # what the int8 search measured; None: no cache


def resolve_layout(target: str, layout: str | None, existing: str | None = None) -> str:
    """The layout to write: the requested one; else the layout ``existing`` releases of the name run (a new
    release must not switch the stable one's layout unasked: their ensembles share one config); else the
    target's default (``DEFAULT_LAYOUT``)."""
    return layout or existing or DEFAULT_LAYOUT[target]


def resolve_cpu_instances(target: str, requested: int | None) -> int:
    """The encoder's (or fused step's) CPU instances to write: ``requested``; else one per CPU this process may
    run on (the export runs on the machine that serves, by default), at most ``MAX_CPU_INSTANCES``; 0 for a
    gpu target (an instance per GPU)."""
    if target != "cpu":
        return 0
    if requested is not None:
        return requested
    from tritonstack.repository.writer import cpu_instances_for

    return cpu_instances_for(len(os.sched_getaffinity(0)))


def sanitize_name(raw: str) -> str:
    """A Triton-friendly model name: lower-case letters, digits and underscores."""
    name = re.sub(r"[^a-z0-9]+", "_", raw.lower()).strip("_")
    if name and name[0].isdigit():
        name = "m_" + name
    return name


def default_name(model: str) -> str:
    """``--name`` when omitted: the model directory's (or hub id's) name, sanitized.

    Generic folder names (``model``, a hub snapshot hash) fall back to the parent's name.
    """
    parts = [p for p in re.split(r"[\\/]+", model.rstrip("/\\")) if p not in ("", ".", "..")]
    for part in reversed(parts):
        if part.lower() in _GENERIC_DIR_NAMES or re.fullmatch(r"[0-9a-f]{40}", part):
            continue
        name = sanitize_name(part)
        if name:
            return name
    raise ExportError(f"cannot derive a model name from {model!r}", hint="pass --name")


def resolve_precision(target: str, precision: Precision | str | None) -> Precision:
    """The precision to search for ``target``: the requested one, or the target's default; refuses misfits."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}", hint=f"use one of: {', '.join(TARGETS)}")
    try:
        resolved = Precision(precision or DEFAULT_PRECISION[target])
    except ValueError:
        raise ExportError(
            f"unknown precision {precision!r}", hint=f"use one of: {', '.join(p.value for p in Precision)}"
        ) from None
    if target == "gpu" and resolved in (Precision.INT8, Precision.AUTO):
        raise ExportError(
            "dynamic int8 is a CPU optimization; on GPU it is several times slower than fp16",
            hint=f"use --precision {DEFAULT_PRECISION['gpu']} (the gpu default) or --target cpu",
        )
    if target == "cpu" and resolved == Precision.FP16:
        raise ExportError(
            "fp16 on the CPU execution provider is slower than fp32",
            hint=f"use --precision {DEFAULT_PRECISION['cpu']} (the cpu default), int8 or fp32, or --target gpu",
        )
    return resolved


def check_repository_writable(repository: Path) -> None:
    """Fail before minutes of export if the repository cannot be written (creates nothing)."""
    existing = repository.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ExportError(
            f"cannot write model repository {repository}: {existing} is not a directory",
            hint="pass --repository with a folder you can write to",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(
            f"cannot write model repository {repository}: no write permission on {existing}",
            hint="pass --repository with a folder you can write to",
        )


def validate(options: ExportOptions) -> tuple[Precision, str]:
    """Check ``options`` before any work; return the precision to search and the model's name."""
    precision = resolve_precision(options.target, options.precision)
    # layouts.py parses configs with tritonclient's protobufs: imported at module level they would cost
    # `export --help` 0.1-0.3 s (2-core machine, -X importtime), more than the rest of its imports together
    from tritonstack.repository.layouts import layout_problem

    problem = None if options.layout is None else layout_problem(options.layout, options.target)
    if problem is not None:
        message, hint = problem
        raise ExportError(message, hint=hint)
    if options.cpu_instances is not None and options.target != "cpu":
        raise ExportError(
            "--cpu-instances sets a CPU target's instances", hint="a gpu target runs one encoder instance per GPU"
        )
    if options.cpu_instances is not None and options.cpu_instances < 1:
        raise ExportError(f"--cpu-instances must be >= 1, got {options.cpu_instances}")
    if options.max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be >= 1, got {options.max_batch_size}")
    if options.max_sequence_length is not None and options.max_sequence_length < 2:
        raise ExportError(f"--max-sequence-length must be >= 2, got {options.max_sequence_length}")
    name = sanitize_name(options.name) if options.name else default_name(str(options.model))
    if not name:
        raise ExportError(f"--name {options.name!r} has no usable characters", hint="use letters, digits, _")
    check_repository_writable(options.repository)
    return precision, name
