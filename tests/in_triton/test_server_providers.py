"""Which execution providers the embedded ONNX Runtime backend runs an instance on, and the fallback line.

``providers.py`` is pure, so the choice is tested here for every kind of instance and ONNX Runtime build;
sessions are real ONNX Runtime sessions wherever this machine can make one (the CPU provider, and the
CPU-only wheel's real behaviour when asked for CUDA). A CUDA or TensorRT session cannot exist without a
GPU, so their failures are the errors ONNX Runtime raises, and the one session that "runs on CUDA" is a
stand-in: the GPU-marked tests at the end check the real thing on a GPU host.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import onnxruntime as ort
import pytest
from google.protobuf import json_format

import tinymodels
from tritonstack.repository.config import InstanceGroup, ModelConfig, Tensor, TensorRTAccelerator
from tritonstack.server.embedded import BACKENDS_SOURCE

LIBNVINFER_ERROR = (
    "[ONNXRuntimeError] : 1 : FAIL : TensorRT EP failed to create: libnvinfer.so.10: cannot open shared object file"
)
NO_CUDA_DEVICE_ERROR = "CUDA failure 100: no CUDA-capable device is detected ; GPU=0 ; hostname=h"
ALL_GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]  # onnxruntime-gpu's


@pytest.fixture(scope="module")
def providers() -> ModuleType:
    path = BACKENDS_SOURCE / "onnxruntime" / "providers.py"
    spec = importlib.util.spec_from_file_location("onnxruntime_backend_providers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinymodels.build_slow_onnx(tmp_path_factory.mktemp("providers") / "model.onnx", squarings=0)


def encoder_config(*, gpu: bool, tensorrt: bool, cache: Path | None = None) -> dict[str, Any]:
    """An encoder config as Triton hands it to the backend: ``ModelConfig`` JSON with field names."""
    accelerator = None
    if tensorrt:
        accelerator = TensorRTAccelerator(("input_ids", "attention_mask"), max_batch_size=8, max_sequence_length=32)
        if cache is not None:
            accelerator = TensorRTAccelerator(
                ("input_ids", "attention_mask"), max_batch_size=8, max_sequence_length=32, engine_cache_path=str(cache)
            )
    config = ModelConfig(
        name="m_encoder",
        platform="onnxruntime_onnx",
        max_batch_size=8,
        inputs=(Tensor("input_ids", "TYPE_INT64", (-1,)), Tensor("attention_mask", "TYPE_INT64", (-1,))),
        outputs=(Tensor("embedding", "TYPE_FP32", (4,)),),
        instance_groups=(InstanceGroup(1, "KIND_GPU" if gpu else "KIND_CPU"),),
        tensorrt=accelerator,
    )
    text = json_format.MessageToJson(config.to_proto(), preserving_proto_field_name=True)
    return dict(json.loads(text))


def real_session(onnx_path: Path) -> Callable[[list[Any]], Any]:
    """How model.py makes a session, minus the GPU: ONNX Runtime's own fallback off; its warnings (a provider
    missing from this build) printed as in the stub, not raised as the test suite's filter would."""

    def make(chosen: list[Any]) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ort.InferenceSession(str(onnx_path), providers=chosen, enable_fallback=0)

    return make


def failing_gpu(make_cpu: Callable[[list[Any]], Any], errors: dict[str, str]) -> Callable[[list[Any]], Any]:
    """A session factory whose GPU providers fail with the errors ONNX Runtime raises for them."""

    def make(chosen: list[Any]) -> Any:
        leader = chosen[0][0]
        if leader in errors:
            raise RuntimeError(errors[leader])
        return make_cpu(chosen)

    return make


class OnCuda:
    """Stands in for a session ONNX Runtime opened on the CUDA provider (none can exist without a GPU)."""

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


# -- the plan ------------------------------------------------------------------------------------


def test_a_cpu_instance_runs_on_the_cpu_provider_alone(providers: ModuleType, onnx_path: Path) -> None:
    config = encoder_config(gpu=False, tensorrt=False)
    plan = providers.plan(config, "CPU", 0, ort.get_available_providers(), instance="m")
    assert [tier.name for tier in plan.tiers] == [providers.CPU] and not plan.skipped and not plan.is_gpu
    opened = providers.open_session(plan, real_session(onnx_path))
    assert opened.session.get_providers() == [providers.CPU]
    assert providers.fallback_message(plan, opened) is None
    assert providers.providers_message(plan, opened) == (
        f"{providers.PROVIDERS_PREFIX} m runs on CPUExecutionProvider (config asked for CPUExecutionProvider)"
    )


def test_a_gpu_instance_asks_for_cuda_on_its_device(providers: ModuleType) -> None:
    plan = providers.plan(encoder_config(gpu=True, tensorrt=False), "GPU", 3, [providers.CUDA, providers.CPU])
    assert plan.wanted == providers.CUDA and not plan.skipped
    cuda, cpu = plan.tiers
    assert cuda.onnxruntime_providers() == [(providers.CUDA, {"device_id": "3"}), (providers.CPU, {})]
    assert cpu.onnxruntime_providers() == [(providers.CPU, {})]


def test_tensorrt_gets_the_accelerators_settings_then_cuda_then_cpu(providers: ModuleType, tmp_path: Path) -> None:
    config = encoder_config(gpu=True, tensorrt=True, cache=tmp_path / "engines")
    plan = providers.plan(config, "KIND_GPU", 1, ALL_GPU)
    assert plan.wanted == providers.TENSORRT and [t.name for t in plan.tiers] == [
        providers.TENSORRT,
        providers.CUDA,
        providers.CPU,
    ]
    (name, options), *rest = plan.tiers[0].onnxruntime_providers()
    assert name == providers.TENSORRT
    assert rest == [(providers.CUDA, {"device_id": "1"}), (providers.CPU, {})]
    shapes = "input_ids:{0},attention_mask:{0}"
    assert options == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_max_workspace_size": str(1 << 30),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(tmp_path / "engines"),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(tmp_path / "engines"),
        "trt_profile_min_shapes": shapes.format("1x1"),
        "trt_profile_opt_shapes": shapes.format("8x32"),  # the accelerator's 16x64, within the maximum
        "trt_profile_max_shapes": shapes.format("8x32"),
    }
    assert (tmp_path / "engines").is_dir() and not plan.notes


def test_an_engine_cache_that_cannot_be_written_moves_to_a_writable_folder(
    providers: ModuleType, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = encoder_config(gpu=True, tensorrt=True, cache=blocker / "engines")
    plan = providers.plan(config, "GPU", 0, ALL_GPU, cache_root=str(tmp_path))
    options = dict(plan.tiers[0].providers[0][1])
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert plan.notes == (f"TensorRT engine cache {blocker / 'engines'} is not writable here: using {tmp_path}",)


# -- falling back ---------------------------------------------------------------------------------


def test_a_gpu_instance_on_the_cpu_only_wheel_falls_back_to_cpu_and_says_why(
    providers: ModuleType, onnx_path: Path
) -> None:
    # What this machine really does with a KIND_GPU encoder: the CPU wheel has neither GPU provider.
    assert providers.CUDA not in ort.get_available_providers(), "this test is for the CPU-only wheel"
    config = encoder_config(gpu=True, tensorrt=True)
    plan = providers.plan(config, "GPU", 0, ort.get_available_providers(), instance="model 'm' instance 'm_0'")
    assert [tier.name for tier in plan.tiers] == [providers.CPU]
    opened = providers.open_session(plan, real_session(onnx_path))
    assert opened.session.get_providers() == [providers.CPU]
    message = providers.fallback_message(plan, opened)
    assert message == (
        f"{providers.FALLBACK_PREFIX} model 'm' instance 'm_0' asked for TensorrtExecutionProvider and runs on "
        "CPUExecutionProvider: the config asks for TensorRT but this ONNX Runtime has no TensorrtExecutionProvider; "
        "this ONNX Runtime has no CUDAExecutionProvider (the CPU-only onnxruntime wheel?): install the GPU build: "
        "pip install 'tritonstack[gpu]' (or make GPU=1), see docs/deploy.md"
    )


def test_a_provider_onnxruntime_enables_quietly_elsewhere_counts_as_failed(
    providers: ModuleType, onnx_path: Path
) -> None:
    # Told (wrongly) that CUDA is there, the plan tries it; the real CPU wheel drops it with a warning and
    # opens the session on the CPU. That session is not taken for a CUDA one.
    plan = providers.plan(encoder_config(gpu=True, tensorrt=False), "GPU", 0, [providers.CUDA, providers.CPU])
    opened = providers.open_session(plan, real_session(onnx_path))
    assert opened.tier.name == providers.CPU
    assert opened.failures == ["CUDAExecutionProvider asked for, ONNX Runtime enabled ['CPUExecutionProvider']"]
    assert "asked for CUDAExecutionProvider and runs on CPUExecutionProvider" in providers.fallback_message(
        plan, opened
    )


def test_every_gpu_tier_failing_falls_back_to_cpu_with_each_reason(providers: ModuleType, onnx_path: Path) -> None:
    plan = providers.plan(encoder_config(gpu=True, tensorrt=True), "GPU", 0, ALL_GPU)
    errors = {providers.TENSORRT: LIBNVINFER_ERROR, providers.CUDA: NO_CUDA_DEVICE_ERROR}
    opened = providers.open_session(plan, failing_gpu(real_session(onnx_path), errors))
    assert opened.tier.name == providers.CPU
    assert opened.failures == [
        f"TensorrtExecutionProvider failed: RuntimeError: {LIBNVINFER_ERROR}",
        f"CUDAExecutionProvider failed: RuntimeError: {NO_CUDA_DEVICE_ERROR}",
    ]
    message = providers.fallback_message(plan, opened)
    assert message.startswith(providers.FALLBACK_PREFIX) and "runs on CPUExecutionProvider" in message
    assert "libnvinfer.so.10" in message and "no CUDA-capable device" in message


def test_tensorrt_failing_falls_back_to_cuda_not_to_the_cpu(providers: ModuleType, onnx_path: Path) -> None:
    plan = providers.plan(encoder_config(gpu=True, tensorrt=True), "GPU", 0, ALL_GPU, instance="m")

    def make(chosen: list[Any]) -> Any:
        if chosen[0][0] == providers.TENSORRT:
            raise RuntimeError(LIBNVINFER_ERROR)
        assert chosen[0] == (providers.CUDA, {"device_id": "0"})
        return OnCuda()

    opened = providers.open_session(plan, make)
    assert opened.tier.name == providers.CUDA
    assert providers.fallback_message(plan, opened) == (
        f"{providers.FALLBACK_PREFIX} m asked for TensorrtExecutionProvider and runs on CUDAExecutionProvider: "
        f"TensorrtExecutionProvider failed: RuntimeError: {LIBNVINFER_ERROR}"
    )


def test_a_model_the_cpu_cannot_open_fails_the_load(providers: ModuleType, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    plan = providers.plan(encoder_config(gpu=False, tensorrt=False), "CPU", 0, ort.get_available_providers())
    with pytest.raises(Exception, match=r"(?i)protobuf|invalid|load"):
        providers.open_session(plan, real_session(broken))


# -- in the real embedded Triton ------------------------------------------------------------------


@pytest.mark.integration
def test_the_served_backend_logs_what_each_instance_runs_on(triton: Any, providers: ModuleType) -> None:
    log = Path(triton.log_path).read_text()
    lines = [line for line in log.splitlines() if providers.PROVIDERS_PREFIX in line]
    assert any(
        "model 'tiny_encoder' instance 'tiny_encoder_0_0' (KIND_CPU, device 0) runs on CPUExecutionProvider" in line
        for line in lines
    ), lines
    assert providers.FALLBACK_PREFIX not in log
