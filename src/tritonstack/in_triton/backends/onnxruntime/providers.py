"""Which ONNX Runtime execution providers an instance of the ``onnxruntime`` backend runs on.

Pure: no ONNX Runtime, no Triton. ``model.py`` loads this file from its own
folder and passes in what only it knows (the instance's kind and device,
ONNX Runtime's available providers, how to create a session).

* ``KIND_CPU`` instances: the CPU provider, as before.
* ``KIND_GPU`` instances (device id from Triton): the CUDA provider on that
  device; first the TensorRT provider when the config's
  ``optimization.execution_accelerators.gpu_execution_accelerator`` names
  ``tensorrt``, with the accelerator's parameters as the NGC image's native
  backend reads them (FP16, engine cache, optimisation-profile shapes).

A GPU instance that cannot get what it asked for falls back one tier at a
time (TensorRT -> CUDA -> CPU), and ``fallback_message`` says so in one line
starting with ``FALLBACK_PREFIX``, with every reason. ONNX Runtime's own
fallback is never relied on: it drops to the CPU quietly (a print, or a
warning for a provider its build lacks), so sessions are made with it off
and each tier is tried here.
"""

import os
import tempfile
from dataclasses import dataclass, field

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
FALLBACK_PREFIX = "onnxruntime backend: GPU fallback:"
PROVIDERS_PREFIX = "onnxruntime backend: providers:"
GPU_EXTRA_HINT = "install the GPU build: pip install 'tritonstack[gpu]' (or make GPU=1), see docs/deploy.md"
# Triton's accelerator parameter -> the TensorRT provider option that means the same
_TENSORRT_OPTIONS = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "trt_engine_cache_enable": "trt_engine_cache_enable",
    "trt_profile_min_shapes": "trt_profile_min_shapes",
    "trt_profile_opt_shapes": "trt_profile_opt_shapes",
    "trt_profile_max_shapes": "trt_profile_max_shapes",
}
_TRUE = {"1", "true", "True", "TRUE"}


@dataclass(frozen=True)
class Tier:
    """One attempt: ``providers`` in ONNX Runtime's (name, options) form, led by ``name``."""

    name: str
    providers: tuple = ()

    def onnxruntime_providers(self):
        return [(provider, dict(options)) for provider, options in self.providers]


@dataclass(frozen=True)
class Plan:
    """The tiers to try, best first (the last is always the CPU), and why better ones were left out."""

    instance: str  # "model 'x' instance 'y' (KIND_GPU, device 0)", for log lines
    tiers: tuple
    skipped: tuple = ()  # reasons, e.g. TensorRT asked for but missing from this ONNX Runtime build
    notes: tuple = ()  # things worth a log line that are not fallbacks (a relocated engine cache)
    wanted: str = CPU  # what the config asked for: TENSORRT, CUDA or CPU

    @property
    def is_gpu(self):
        return self.wanted != CPU


@dataclass
class Opened:
    """The session a plan produced, the tier it runs on, and why each better tier failed."""

    session: object
    tier: Tier
    failures: list = field(default_factory=list)


def tensorrt_parameters(config):
    """The parameters of the config's ``tensorrt`` GPU accelerator; ``None`` when it names none."""
    accelerators = config.get("optimization", {}).get("execution_accelerators", {})
    for accelerator in accelerators.get("gpu_execution_accelerator", []):
        if accelerator.get("name") == "tensorrt":
            return dict(accelerator.get("parameters", {}))
    return None


def writable_folder(path):
    """Whether ``path`` is (or can be made) a folder this process can write."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def default_cache_root():
    """Where engines go when the configured cache folder cannot be written: per user, in the temp folder."""
    return os.path.join(tempfile.gettempdir(), f"tritonstack-trt-cache-{os.getuid()}")


def tensorrt_options(parameters, device_id, cache_root):
    """TensorRT provider options from the accelerator's ``parameters``; notes about what was changed."""
    options = {"device_id": str(device_id)}
    notes = []
    precision = parameters.get("precision_mode", "FP32").upper()
    if precision == "FP16":
        options["trt_fp16_enable"] = "True"
    elif precision != "FP32":
        notes.append(f"TensorRT precision_mode {precision} is not supported here: building FP32 engines")
    for parameter, option in _TENSORRT_OPTIONS.items():
        if parameter in parameters:
            options[option] = parameters[parameter]
    if options.get("trt_engine_cache_enable") in _TRUE:
        options["trt_engine_cache_enable"] = "True"
        configured = parameters.get("trt_engine_cache_path") or cache_root
        path = configured if writable_folder(configured) else cache_root
        if path != configured:
            notes.append(f"TensorRT engine cache {configured} is not writable here: using {path}")
        # Building an engine takes minutes; the timing cache makes the next build of a like engine quick.
        options.update(trt_engine_cache_path=path, trt_timing_cache_enable="True", trt_timing_cache_path=path)
    return options, notes


def plan(config, kind, device_id, available, *, instance="", cache_root=None):
    """The tiers for an instance of ``kind`` (Triton's ``model_instance_kind``: ``GPU`` or ``CPU``) on
    ``device_id``, given ONNX Runtime's ``available`` providers."""
    cpu = Tier(CPU, ((CPU, ()),))
    if kind.upper().removeprefix("KIND_") != "GPU":
        return Plan(instance, (cpu,))
    tiers, skipped, notes = [], [], []
    cuda = ((CUDA, (("device_id", str(device_id)),)),)
    parameters = tensorrt_parameters(config)
    wanted = CUDA if parameters is None else TENSORRT
    if parameters is not None:
        if TENSORRT in available:
            options, notes = tensorrt_options(parameters, device_id, cache_root or default_cache_root())
            tiers.append(Tier(TENSORRT, ((TENSORRT, tuple(options.items())), *cuda, (CPU, ()))))
        else:
            skipped.append(f"the config asks for TensorRT but this ONNX Runtime has no {TENSORRT}")
    if CUDA in available:
        tiers.append(Tier(CUDA, (*cuda, (CPU, ()))))
    else:
        skipped.append(f"this ONNX Runtime has no {CUDA} (the CPU-only onnxruntime wheel?): {GPU_EXTRA_HINT}")
    return Plan(instance, (*tiers, cpu), tuple(skipped), tuple(notes), wanted)


def open_session(session_plan, make):
    """The first tier ``make(providers)`` can open a session on, and why the ones before it failed.

    ``make`` must not fall back by itself (ONNX Runtime: ``enable_fallback=0``). A session that runs on
    something other than its tier's provider counts as a failure of that tier and is dropped. The CPU
    tier's error is raised: the model itself is broken.
    """
    failures = list(session_plan.skipped)
    for tier in session_plan.tiers:
        try:
            session = make(tier.onnxruntime_providers())
        except Exception as error:
            if tier.name == CPU:
                raise
            failures.append(f"{tier.name} failed: {_first_line(error)}")
            continue
        active = list(session.get_providers())
        if active[:1] != [tier.name]:
            failures.append(f"{tier.name} asked for, ONNX Runtime enabled {active}")
            if tier.name != CPU:
                continue
        return Opened(session, tier, failures)
    raise RuntimeError(f"no tier opened a session: {failures}")  # unreachable: the CPU tier returns or raises


def fallback_message(session_plan, opened):
    """One line when the instance runs on less than it asked for (``None`` when it got it)."""
    if opened.tier.name == session_plan.wanted:
        return None
    reasons = "; ".join(opened.failures) or "no reason recorded"
    return (
        f"{FALLBACK_PREFIX} {session_plan.instance} asked for {session_plan.wanted} and runs on "
        f"{opened.tier.name}: {reasons}"
    )


def providers_message(session_plan, opened):
    """The log line naming what the instance runs on (every instance, GPU or not)."""
    asked = session_plan.wanted
    return f"{PROVIDERS_PREFIX} {session_plan.instance} runs on {opened.tier.name} (config asked for {asked})"


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
