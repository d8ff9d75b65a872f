"""The serving floor: the served layout with a step that does no model work, measured beside the real model.

``NAME_floor`` is a one-step text-in ensemble like ``NAME`` in the fused
layout; its step ``NAME_floor_step`` has the config the fused step has (or
would have, in the ensemble layout: ``layouts.fused_step``) -- the same
inputs, outputs, batching, queue settings and instances -- with the role
``contract.FLOOR_ROLE``: text_model.py's ``FloorStep`` decodes the texts,
sheds and answers as the fused step does, with constant outputs of the right
type and shape, and runs no tokenizer and no ONNX Runtime. Its throughput and
latency are the floor of the serving path itself (SDK, gRPC, Triton, the
ensemble hop, the Python stub's IPC, request decode, response build), so every
run shows model time against serving time.

The floor models live in an overlay repository that bench serves instead of
the user's (links to every model of it, plus the two floor models): the
user's repository is never written, and the real model and its floor run on
one server, one after the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tritonstack.in_triton import contract
from tritonstack.repository import layouts
from tritonstack.repository.config import CONFIG_FILENAME, copy_config, parse, render_proto
from tritonstack.repository.releases import read_releases

FLOOR_SUFFIX = "_floor"
FLOOR_STEP_SUFFIX = "_floor_step"


def floor_name(name: str) -> str:
    return name + FLOOR_SUFFIX


def _read(model_dir: Path) -> Any:
    return parse((model_dir / CONFIG_FILENAME).read_text())


def floor_configs(repository: Path, name: str) -> tuple[Any, Any]:
    """(the floor step's config, the floor ensemble's config) for text-in model ``name`` of ``repository``."""
    text_in = _read(repository / name)
    if layouts.layout_of(text_in) == contract.FUSED_LAYOUT:
        fused = _read(repository / contract.fused_name(name))
    else:
        models = layouts.step_models(text_in)
        encoder = _read(repository / contract.encoder_name(name))
        tokenizer = _read(repository / contract.tokenizer_name(name))
        others = [_read(repository / m) for m in models if m not in (encoder.name, tokenizer.name)]
        fused = layouts.fused_step(text_in, encoder, tokenizer, others)
    step = copy_config(fused)
    step.name = name + FLOOR_STEP_SUFFIX
    step.ClearField("version_policy")  # one version folder: 1
    step.parameters[contract.ROLE_PARAMETER].string_value = contract.FLOOR_ROLE
    for group in step.instance_group:  # a GPU export's encoder group: the floor step runs no model, on the CPU
        if group.kind == group.KIND_GPU:
            group.kind = group.KIND_CPU
            del group.gpus[:]
    ensemble = layouts.with_fused_step(text_in)
    ensemble.name = floor_name(name)
    ensemble.ClearField("version_policy")
    ensemble.ensemble_scheduling.step[0].model_name = step.name
    ensemble.ensemble_scheduling.step[0].model_version = -1
    return step, ensemble


def overlay(repository: Path, name: str, destination: Path) -> Path:
    """A repository at ``destination`` serving every model of ``repository`` (links) and ``name``'s floor."""
    repository = Path(repository).resolve()
    destination.mkdir(parents=True, exist_ok=True)
    for entry in repository.iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            os.symlink(entry, destination / entry.name)
    step, ensemble = floor_configs(repository, name)
    # the Python model files of the stable release (model.py and its siblings, which FloorStep needs)
    stable = read_releases(repository, name).stable
    source = repository / contract.tokenizer_name(name) / str(stable)
    (destination / step.name).mkdir()
    os.symlink(source, destination / step.name / "1")
    (destination / step.name / CONFIG_FILENAME).write_text(render_proto(step))
    (destination / ensemble.name / "1").mkdir(parents=True)
    (destination / ensemble.name / CONFIG_FILENAME).write_text(render_proto(ensemble))
    return destination
