"""Where an export gates (and times) its candidates, and on which GPUs the encoder will be served.

A gpu-target export runs its parity check on a GPU through ONNX Runtime's
CUDA provider when this machine has one and the CUDA build of ONNX Runtime
(``tritonstack[gpu]``), and on the CPU otherwise -- and says which, and why,
in the report. The choice is confirmed by opening a real session before the
search: a CUDA provider that cannot start (driver, CUDA libraries) moves the
check to the CPU with its error as the reason, rather than every candidate
failing with it or ONNX Runtime quietly running them on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tritonstack._gpu import Gpu
from tritonstack.export._errors import ExportError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
GPU_EXTRA_HINT = "pip install 'tritonstack[gpu]' (or make GPU=1) for ONNX Runtime's CUDA build"


@dataclass(frozen=True)
class ParityDevice:
    """What runs the candidates: the CUDA provider on ``gpu``, or the CPU provider (``gpu`` is ``None``)."""

    gpu: Gpu | None
    reason: str  # why this device, for the report: always set when a gpu target is checked on the CPU

    @property
    def provider(self) -> str:
        return CPU if self.gpu is None else CUDA

    def providers(self) -> list[Any]:
        """ONNX Runtime's ``providers`` argument."""
        if self.gpu is None:
            return [CPU]
        return [(CUDA, {"device_id": str(self.gpu.device_id)}), CPU]

    def describe(self) -> str:
        where = "CPU" if self.gpu is None else self.gpu.describe()
        return f"{where} via {self.provider}" + (f" ({self.reason})" if self.reason else "")


def resolve_gpus(target: str, requested: tuple[int, ...] | None, visible: Sequence[Gpu]) -> tuple[int, ...]:
    """The CUDA device ids the encoder's instance group lists.

    ``requested`` ``None``: every GPU visible now; none visible gives ``()``, which Triton reads as every GPU
    of the host that loads the model (an export on a CPU machine for a GPU host). ``()``: that, asked for.
    """
    if target != "gpu":
        if requested is not None:
            raise ExportError("--gpus places GPU instances", hint="pass --target gpu, or drop --gpus")
        return ()
    if requested is None:
        return tuple(gpu.device_id for gpu in visible)
    if len(set(requested)) != len(requested):
        raise ExportError(f"--gpus lists a GPU twice: {','.join(map(str, requested))}")
    unknown = [device for device in requested if visible and device not in {gpu.device_id for gpu in visible}]
    if unknown:
        seen = ", ".join(str(gpu.device_id) for gpu in visible)
        raise ExportError(
            f"--gpus names GPU {', '.join(map(str, unknown))}, which is not visible here (visible: {seen})",
            hint="pick among the visible GPUs, or pass --gpus all to let Triton use every GPU of the serving host",
        )
    return requested


def choose(target: str, gpus: tuple[int, ...], visible: Sequence[Gpu], available: Sequence[str]) -> ParityDevice:
    """The device for a ``target`` export whose encoder goes on ``gpus``, before any session exists."""
    if target != "gpu":
        return ParityDevice(None, "")
    if not visible:
        return ParityDevice(None, "no GPU visible here")
    if CUDA not in available:
        return ParityDevice(None, f"this ONNX Runtime has no {CUDA}: {GPU_EXTRA_HINT}")
    first = gpus[0] if gpus else visible[0].device_id
    gpu = next(g for g in visible if g.device_id == first)
    return ParityDevice(gpu, "")


def confirm(device: ParityDevice, onnx_path: Path) -> ParityDevice:
    """``device`` if ONNX Runtime opens ``onnx_path`` on it, else the CPU with ONNX Runtime's error as reason."""
    if device.gpu is None:
        return device
    import onnxruntime as ort

    from tritonstack._gpu import preload_cuda_libraries

    try:
        preload_cuda_libraries()
        # enable_fallback=0: its own fallback would run the check on the CPU without telling
        session = ort.InferenceSession(str(onnx_path), providers=device.providers(), enable_fallback=0)
    except Exception as error:  # ORT raises its own types: a missing library, an old driver
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        return replace(device, gpu=None, reason=f"{CUDA} failed on {device.gpu.describe()}: {first_line}")
    if session.get_providers()[:1] != [CUDA]:
        return replace(device, gpu=None, reason=f"ONNX Runtime enabled {session.get_providers()}, not {CUDA}")
    return device
