"""The embedded server on a GPU host: GPU instances on the GPU, GPU metrics, and what a CPU host says instead.

The ``gpu`` tests need an NVIDIA GPU and ``tritonstack[gpu]``; elsewhere they are skipped with the reason
(conftest.py). The others run everywhere and pin down what a CPU-only host does.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tinymodels
from tritonstack._gpu import visible_gpus
from tritonstack.server import flags
from tritonstack.server.embedded import BACKENDS_SOURCE

TEXTS = ["a GPU serves this text", "and this longer one, padded and batched with the first", "short"]
PROVIDERS_PREFIX = "onnxruntime backend: providers:"  # backends/onnxruntime/providers.py
FALLBACK_PREFIX = "onnxruntime backend: GPU fallback:"


def test_the_backend_prefixes_are_the_ones_this_suite_reads() -> None:
    source = (BACKENDS_SOURCE / "onnxruntime" / "providers.py").read_text()
    assert f'PROVIDERS_PREFIX = "{PROVIDERS_PREFIX}"' in source and f'FALLBACK_PREFIX = "{FALLBACK_PREFIX}"' in source


def test_gpu_metrics_are_a_flag_only_where_asked() -> None:
    def args(gpu_metrics: bool | None) -> list[str]:
        return flags.TritonFlags(model_repository="/m", admin_key="k", gpu_metrics=gpu_metrics).args()

    assert "--allow-gpu-metrics=true" in args(True) and "--allow-gpu-metrics=false" in args(False)
    assert not [a for a in args(None) if a.startswith("--allow-gpu-metrics")]
    # Containers run on GPUs and keep Triton's default, which is on where it finds one.
    assert not [a for a in flags.deployment_args() if a.startswith("--allow-gpu-metrics")]


def _metrics_text(server: Any) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return str(response.read().decode())


@pytest.mark.integration
def test_the_embedded_server_exports_gpu_metrics_exactly_where_it_sees_a_gpu(triton: Any) -> None:
    command_line = Path(f"/proc/{triton.pid}/cmdline").read_bytes().split(b"\0")
    on = bool(visible_gpus())
    assert triton.gpu_metrics is on and (triton.gpus != ()) is on
    assert f"--allow-gpu-metrics={str(on).lower()}".encode() in command_line
    if not on:
        assert "nv_gpu_" not in _metrics_text(triton)


# -- on a GPU ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_triton(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The tiny model exported as ``export --target gpu`` writes it (KIND_GPU on every GPU, TensorRT), served."""
    from tritonstack.server import EmbeddedServer

    repository = tmp_path_factory.mktemp("gpu-repo") / "model_repository"
    gpus = tuple(gpu.device_id for gpu in visible_gpus())
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny", target="gpu", gpus=gpus)
    # the first TensorRT engine build takes minutes
    with EmbeddedServer(repository, ready_timeout_s=900) as server:
        yield server


def _embed(grpc_url: str, texts: list[str]) -> np.ndarray:
    from tritonstack.client import Client

    with Client(grpc_url, model="tiny") as client:
        return np.asarray(client.embed(texts))


@pytest.mark.gpu
@pytest.mark.integration
def test_gpu_instances_run_on_the_gpu_and_say_so(gpu_triton: Any) -> None:
    log = Path(gpu_triton.log_path).read_text()
    lines = [line for line in log.splitlines() if PROVIDERS_PREFIX in line and "tiny_encoder" in line]
    assert len(lines) == len(gpu_triton.gpus), lines  # one instance on each GPU
    for gpu in gpu_triton.gpus:
        [line] = [line for line in lines if f"(KIND_GPU, device {gpu.device_id})" in line]
        assert "runs on TensorrtExecutionProvider" in line or "runs on CUDAExecutionProvider" in line, line
    falls = [line for line in log.splitlines() if FALLBACK_PREFIX in line]
    assert not [line for line in falls if "runs on CPUExecutionProvider" in line], falls
    print("\n".join(lines + falls))  # TensorRT -> CUDA is allowed where TensorRT's libraries are missing


@pytest.mark.gpu
@pytest.mark.integration
def test_gpu_served_embeddings_match_the_cpu_served_ones(gpu_triton: Any, triton: Any) -> None:
    on_gpu, on_cpu = _embed(gpu_triton.grpc_url, TEXTS), _embed(triton.grpc_url, TEXTS)
    assert on_gpu.shape == on_cpu.shape and on_gpu.dtype == np.float32
    cosine = np.sum(on_gpu * on_cpu, axis=1) / (np.linalg.norm(on_gpu, axis=1) * np.linalg.norm(on_cpu, axis=1))
    assert cosine.min() >= 0.99, cosine  # TensorRT builds fp16 engines from the fp32 model


@pytest.mark.gpu
@pytest.mark.integration
def test_a_gpu_server_exports_the_metrics_the_gpu_panels_show(gpu_triton: Any) -> None:
    from tritonstack.monitoring import find_monitoring_dir, gpu_panel_metrics, load_dashboards

    needed = gpu_panel_metrics(load_dashboards(find_monitoring_dir()))

    deadline = time.monotonic() + 15  # DCGM samples every couple of seconds
    while "nv_gpu_utilization{" not in (text := _metrics_text(gpu_triton)) and time.monotonic() < deadline:
        time.sleep(1)
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert needed <= exported, sorted(needed - exported)
    for gpu in gpu_triton.gpus:
        assert f'uuid="{gpu.uuid}"' in text
