"""The NVIDIA GPUs this process may use, as ``nvidia-smi`` lists them and ``CUDA_VISIBLE_DEVICES`` narrows them.

The one place that answers "is there a GPU here?": export (instance groups,
where parity runs), serve (GPU metrics), bench, ``gpu-check`` and the test
suite's ``gpu`` marker all ask it. ``nvidia-smi`` ships with the driver, so
it works without CUDA libraries or a CUDA build of anything in this
environment; without it (or a driver) there is no GPU. Standard library only.

A GPU's ``device_id`` is its CUDA ordinal, what Triton's instance groups and
ONNX Runtime's ``device_id`` mean: the position in ``CUDA_VISIBLE_DEVICES``
when that is set, else the index ``nvidia-smi`` shows. (CUDA numbers the
fastest GPU first by default and ``nvidia-smi`` by PCI bus; on hosts of one
GPU model, as GPU servers are, the two agree.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
QUERY_FIELDS = ("index", "uuid", "name", "driver_version", "memory.total")
NVIDIA_SMI_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Gpu:
    """One GPU this process may use."""

    device_id: int  # CUDA ordinal in this process (see the module docstring)
    index: int  # nvidia-smi's index, across the whole machine
    uuid: str
    name: str
    driver_version: str
    memory_mib: int

    def describe(self) -> str:
        return f"GPU {self.device_id}: {self.name} ({self.memory_mib / 1024:.0f} GiB, driver {self.driver_version})"

    def to_dict(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "driver_version": self.driver_version,
            "memory_mib": self.memory_mib,
        }


def nvidia_smi_command() -> list[str] | None:
    """The query ``visible_gpus`` runs; ``None`` where no ``nvidia-smi`` is on ``PATH``."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    return [binary, f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"]


def _machine_gpus(csv_text: str) -> list[Gpu]:
    gpus = []
    for line in csv_text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(QUERY_FIELDS) or not fields[0].isdigit():
            continue  # a warning line, or a GPU in a state nvidia-smi cannot query
        index, uuid, name, driver, memory = fields
        memory_mib = int(memory) if memory.isdigit() else 0
        gpus.append(Gpu(int(index), int(index), uuid, name, driver, memory_mib))
    return gpus


def parse_gpus(csv_text: str, visible_devices: str | None) -> tuple[Gpu, ...]:
    """The GPUs of ``nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv,noheader,nounits`` output that a
    process with ``CUDA_VISIBLE_DEVICES=visible_devices`` (``None``: unset) may use, by CUDA ordinal.

    As CUDA reads the variable: entries are indices or UUIDs (a unique UUID prefix will do), and the
    list stops at the first entry that names no GPU; an empty value hides every GPU.
    """
    machine = _machine_gpus(csv_text)
    if visible_devices is None:
        return tuple(machine)
    chosen: list[Gpu] = []
    for entry in (e.strip() for e in visible_devices.split(",")):
        if entry.isdigit():
            matches = [g for g in machine if g.index == int(entry)]
        else:
            matches = [g for g in machine if entry and g.uuid.startswith(entry)]
        if len(matches) != 1 or matches[0] in chosen:
            break
        chosen.append(matches[0])
    return tuple(
        Gpu(ordinal, g.index, g.uuid, g.name, g.driver_version, g.memory_mib) for ordinal, g in enumerate(chosen)
    )


def visible_gpus() -> tuple[Gpu, ...]:
    """The GPUs this process may use; empty without ``nvidia-smi``, a driver, or a visible GPU."""
    command = nvidia_smi_command()
    if command is None:
        return ()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:  # e.g. "NVIDIA-SMI has failed because it couldn't communicate with the driver"
        return ()
    return parse_gpus(done.stdout, os.environ.get(VISIBLE_DEVICES_ENV))


def no_gpu_reason() -> str:
    """Why ``visible_gpus`` found none, for a skip reason or a report."""
    if nvidia_smi_command() is None:
        return "no GPU visible: no nvidia-smi on PATH (no NVIDIA driver here)"
    hidden = os.environ.get(VISIBLE_DEVICES_ENV)
    if hidden is not None:
        return f"no GPU visible: nvidia-smi lists none that {VISIBLE_DEVICES_ENV}={hidden!r} leaves visible"
    return "no GPU visible: nvidia-smi lists none (or cannot reach the driver)"


def preload_cuda_libraries() -> None:
    """Before the first CUDA session of this process: load CUDA and cuDNN from the ``nvidia-*`` wheels that
    ``tritonstack[gpu]`` installs. ``onnxruntime-gpu`` looks there only when asked (``onnxruntime.preload_dlls``,
    ONNX Runtime >= 1.21); without it a host without a system-wide CUDA cannot start the CUDA provider."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        preload()
