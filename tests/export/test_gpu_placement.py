"""Which GPUs are visible, where an export's encoder instances go, and where its parity check runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import tinymodels
from tritonstack._gpu import no_gpu_reason, parse_gpus, visible_gpus
from tritonstack.export import device
from tritonstack.export.errors import ExportError

# nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total --format=csv,noheader,nounits
TWO_H200 = """\
0, GPU-5f1c2a7e-0000-1111-2222-333344445555, NVIDIA H200, 570.124.06, 143771
1, GPU-9a8b7c6d-0000-1111-2222-333344445555, NVIDIA H200, 570.124.06, 143771
"""


def test_every_gpu_nvidia_smi_lists_is_visible_without_cuda_visible_devices() -> None:
    gpus = parse_gpus(TWO_H200, None)
    assert [(g.device_id, g.index, g.name, g.memory_mib) for g in gpus] == [
        (0, 0, "NVIDIA H200", 143771),
        (1, 1, "NVIDIA H200", 143771),
    ]
    assert gpus[1].describe() == "GPU 1: NVIDIA H200 (140 GiB, driver 570.124.06)"


def test_cuda_visible_devices_picks_and_renumbers_gpus_as_cuda_does() -> None:
    only_second = parse_gpus(TWO_H200, "1")
    assert [(g.device_id, g.index) for g in only_second] == [(0, 1)]  # CUDA ordinal 0 is the machine's GPU 1
    by_uuid = parse_gpus(TWO_H200, "GPU-9a8b,GPU-5f1c")
    assert [(g.device_id, g.index) for g in by_uuid] == [(0, 1), (1, 0)]
    assert parse_gpus(TWO_H200, "") == ()
    assert [g.index for g in parse_gpus(TWO_H200, "0,7,1")] == [0]  # CUDA stops at the first unknown entry
    assert parse_gpus(TWO_H200, "-1") == ()


def test_lines_nvidia_smi_cannot_fill_are_not_gpus() -> None:
    text = TWO_H200 + "2, GPU-ab, NVIDIA H200, [Unknown Error], [N/A]\nNo devices were found\n"
    assert [g.index for g in parse_gpus(text, None)] == [0, 1, 2]
    assert parse_gpus(text, None)[2].memory_mib == 0
    assert parse_gpus("No devices were found\n", None) == ()


H200 = parse_gpus(TWO_H200, None)


def test_a_gpu_export_places_an_instance_on_every_visible_gpu_unless_told() -> None:
    assert device.resolve_gpus("gpu", None, H200) == (0, 1)
    assert device.resolve_gpus("gpu", (1,), H200) == (1,)
    assert device.resolve_gpus("gpu", (), H200) == ()  # --gpus all: Triton's every GPU of the serving host
    assert device.resolve_gpus("gpu", None, ()) == ()  # exported on a CPU machine for a GPU host
    assert device.resolve_gpus("gpu", (3, 4), ()) == (3, 4)  # nothing here to check them against
    assert device.resolve_gpus("cpu", None, H200) == ()


def test_gpus_that_are_not_there_or_not_for_a_gpu_target_are_refused() -> None:
    with pytest.raises(ExportError, match="GPU 2, which is not visible here") as missing:
        device.resolve_gpus("gpu", (0, 2), H200)
    assert missing.value.hint is not None and "--gpus all" in missing.value.hint
    with pytest.raises(ExportError, match="twice"):
        device.resolve_gpus("gpu", (1, 1), H200)
    with pytest.raises(ExportError, match="--gpus places GPU instances"):
        device.resolve_gpus("cpu", (0,), H200)


def test_parity_runs_on_the_first_instance_gpu_when_onnxruntime_has_cuda() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = device.choose("gpu", (1,), H200, available)
    assert chosen.gpu == H200[1] and chosen.providers()[0] == ("CUDAExecutionProvider", {"device_id": "1"})
    assert chosen.describe() == f"{H200[1].describe()} via CUDAExecutionProvider"
    assert device.choose("gpu", (), H200, available).gpu == H200[0]


def test_parity_runs_on_the_cpu_and_says_why() -> None:
    cpu_wheel = ["CPUExecutionProvider"]
    assert device.choose("cpu", (), H200, cpu_wheel).describe() == "CPU via CPUExecutionProvider"
    no_gpu = device.choose("gpu", (), (), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert no_gpu.describe() == "CPU via CPUExecutionProvider (no GPU visible here)"
    no_cuda = device.choose("gpu", (0,), H200, cpu_wheel)
    assert no_cuda.gpu is None and no_cuda.providers() == ["CPUExecutionProvider"]
    assert "no CUDAExecutionProvider" in no_cuda.reason and "tritonstack[gpu]" in no_cuda.reason


def test_a_cuda_provider_that_does_not_start_moves_the_check_to_the_cpu(tmp_path: Path) -> None:
    # This machine's real ONNX Runtime (the CPU wheel) asked for CUDA anyway: it enables only the CPU,
    # with a warning (printed in `tritonstack export`, silenced here as the suite raises warnings).
    model = tinymodels.build_slow_onnx(tmp_path / "model.onnx", squarings=0)
    asked = device.ParityDevice(H200[0], "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confirmed = device.confirm(asked, model)
    assert confirmed.gpu is None and confirmed.providers() == ["CPUExecutionProvider"]
    assert confirmed.reason == "ONNX Runtime enabled ['CPUExecutionProvider'], not CUDAExecutionProvider"
    on_cpu = device.ParityDevice(None, "no GPU visible here")
    assert device.confirm(on_cpu, model) is on_cpu


def fake_nvidia_smi(folder: Path, output: str, exit_code: int = 0) -> None:
    """An ``nvidia-smi`` on PATH that prints ``output`` (a machine's GPUs) and exits with ``exit_code``."""
    script = folder / "nvidia-smi"
    lines = " ".join(f"'{line}'" for line in output.splitlines())
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' {lines}\nexit {exit_code}\n")  # builtins only: PATH is bare
    script.chmod(0o755)


def test_visible_gpus_asks_nvidia_smi_and_honours_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvidia_smi(tmp_path, TWO_H200)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == H200
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [(g.device_id, g.index) for g in visible_gpus()] == [(0, 1)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == ()
    assert no_gpu_reason() == "no GPU visible: nvidia-smi lists none that CUDA_VISIBLE_DEVICES='' leaves visible"


def test_no_driver_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", 9)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ()
    assert no_gpu_reason() == "no GPU visible: nvidia-smi lists none (or cannot reach the driver)"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert visible_gpus() == ()
    assert no_gpu_reason() == "no GPU visible: no nvidia-smi on PATH (no NVIDIA driver here)"
