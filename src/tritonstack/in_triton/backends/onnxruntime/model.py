"""A Python-based Triton backend named ``onnxruntime``.

The embedded server has no native ONNX Runtime backend; Triton runs a backend
folder that holds ``model.py`` through its Python backend instead. So a
``platform: "onnxruntime_onnx"`` model written by ``tritonstack export`` loads
unchanged here and in the NGC image's native backend.

Honours ``default_model_filename``, ``intra_op_thread_count`` (0, the
default, shares the CPUs this process may run on among the CPU instances of its
config: one instance gets them all, two get half each, rounded down, at least
one -- never one thread per CPU of the machine, which oversubscribes a pinned
server), ``inter_op_thread_count`` and
the instance groups of the config: a ``KIND_GPU`` instance runs on the CUDA (or
TensorRT) execution provider of its device, see ``providers.py`` beside this file.

Every request gets its own response, and no exception escapes ``execute``
(one would fail every request of the batch): a malformed or empty request
gets INVALID_ARG, and so does one longer than the model's
``max_sequence_length`` (its memory would grow with it); a request whose client
gave up (deadline, disconnect) while it waited for its turn or before its rows
ran gets CANCELLED and is not computed; when ONNX Runtime fails on a group of
requests, each is run alone, so only the one that breaks it fails, and its
client is told so with an error id, ONNX Runtime's text going to the log.

Rows are regrouped by their true length and run with the padding trimmed, at
most ``max_rows_per_call`` rows per ONNX Runtime call (0 or absent: no limit);
``max_padding_waste`` bounds the padding of a group; ``cpu_turns: "1"`` makes
CPU instances that outnumber the process's CPUs take turns on them. All three are
``encoder_runner.py``'s, which this folder holds beside this file; the
parameter names are ``contract.py``'s. The embedded server copies this folder's
files from ``in_triton/manifest.py``'s ``ONNXRUNTIME_BACKEND_FILES``.
"""

import json
import os
import runpy

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

TRITON_TO_NUMPY = {
    "TYPE_INT64": np.int64,
    "TYPE_INT32": np.int32,
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_BOOL": np.bool_,
}


# The siblings copied beside this file (manifest.ONNXRUNTIME_BACKEND_FILES), loaded by path: the stub runs
# without the tritonstack package.
HERE = os.path.dirname(os.path.abspath(__file__))
load_beside = runpy.run_path(os.path.join(HERE, "beside.py"))["load"]
contract = load_beside(HERE, "contract.py")
providers = load_beside(HERE, "providers.py")
error_responses = load_beside(HERE, "error_responses.py")
encoder_runner = load_beside(HERE, "encoder_runner.py")


# The longest sequence a model whose config and graph name none accepts (exports before the bound): long
# enough for the long-context encoders, short of what runs a stub out of memory in one call.
DEFAULT_MAX_SEQUENCE_LENGTH = 8192


class RequestError(Exception):
    pass


def max_sequence_length(config, session):
    """The most positions (axis 1) an input may have: the config's ``max_sequence_length`` parameter (export
    writes it), else a fixed length of the graph's inputs, else :data:`DEFAULT_MAX_SEQUENCE_LENGTH`."""
    written = contract.parameters(config).get(contract.MAX_SEQUENCE_LENGTH_PARAMETER)
    if written and written.isdigit() and int(written) > 0:
        return int(written)
    fixed = [i.shape[1] for i in session.get_inputs() if len(i.shape) > 1 and isinstance(i.shape[1], int)]
    return max(fixed) if fixed else DEFAULT_MAX_SEQUENCE_LENGTH


def run_isolating_failures(run, members):
    """``run(members)`` as one call, which returns one result per member. If it raises, each member
    runs alone, so one bad member fails only itself. Returns ``(member, result or exception)`` pairs."""
    try:
        return list(zip(members, run(members), strict=True))
    except Exception as error:
        if len(members) == 1:
            return [(members[0], error)]
    outcomes = []
    for member in members:
        try:
            (result,) = run([member])
        except Exception as error:
            result = error
        outcomes.append((member, result))
    return outcomes


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.knobs = contract.EncoderKnobs.from_parameters(contract.parameters(config))
        filename = config.get("default_model_filename") or contract.DEFAULT_ENCODER_FILE
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        self.turns, options.intra_op_num_threads = encoder_runner.cpu_plan(
            config, self.knobs, args["model_instance_kind"]
        )
        if getattr(self.turns, "reason", None):
            pb_utils.Logger.log_warn(f"onnxruntime backend: model {args['model_name']!r}: {self.turns.reason}")
        options.inter_op_num_threads = self.knobs.inter_op_threads
        self.session = self._open_session(args, config, path, options)
        self.inputs = [(i["name"], TRITON_TO_NUMPY[i["data_type"]], len(i["dims"])) for i in config["input"]]
        self.max_sequence_length = max_sequence_length(config, self.session)
        self.output_names = [o["name"] for o in config["output"]]
        # outputs whose first non-batch axis is the sequence (token classification): padded back after trimming
        self.sequence_outputs = {o["name"] for o in config["output"] if o["dims"] and int(o["dims"][0]) == -1}

    def _open_session(self, args, config, path, options):
        """A session on the providers of this instance's kind and device; a fallback is logged, never silent."""
        kind = args["model_instance_kind"].upper().removeprefix("KIND_")  # Triton says "CPU" or "GPU"
        device_id = int(args["model_instance_device_id"])
        instance = f"model {args['model_name']!r} instance {args['model_instance_name']!r}"
        instance += f" (KIND_{kind}, device {device_id})"
        plan = providers.plan(config, kind, device_id, ort.get_available_providers(), instance=instance)
        if plan.is_gpu and hasattr(ort, "preload_dlls"):
            # onnxruntime-gpu loads CUDA and cuDNN from the nvidia-* wheels of tritonstack[gpu] only when asked
            # (ONNX Runtime >= 1.21); a failure here shows up as the CUDA tier's failure below
            try:
                ort.preload_dlls()
            except Exception as error:
                pb_utils.Logger.log_warn(f"onnxruntime backend: {instance}: onnxruntime.preload_dlls: {error}")
        for note in plan.notes:
            pb_utils.Logger.log_warn(f"onnxruntime backend: {instance}: {note}")
        # enable_fallback=0: ONNX Runtime would otherwise drop to the CPU quietly; providers.py falls back itself
        opened = providers.open_session(
            plan, lambda chosen: ort.InferenceSession(path, options, providers=chosen, enable_fallback=0)
        )
        fallback = providers.fallback_message(plan, opened)
        if fallback is not None:
            pb_utils.Logger.log_error(fallback)
        pb_utils.Logger.log_info(providers.providers_message(plan, opened))
        return opened.session

    def _run(self, feeds):
        """session.run over ``feeds``, rows regrouped by length (``encoder_runner.run_rows``); the caller holds
        this instance's turn on the CPUs."""
        return encoder_runner.run_rows(
            self.session, self.output_names, self.sequence_outputs, feeds, self.knobs.max_padding_waste,
            self.knobs.max_rows_per_call,
        )  # fmt: skip

    def finalize(self):
        self.turns.close()

    def _features(self, request):
        features = {}
        for name, dtype, rank in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise RequestError(f"missing input {name}")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise RequestError(f"input {name} must be {np.dtype(dtype).name}, got {array.dtype.name}")
            if array.ndim != rank + 1:
                raise RequestError(f"input {name} must have rank {rank + 1}, got shape {list(array.shape)}")
            if array.ndim > 1 and array.shape[1] > self.max_sequence_length:  # memory grows with it (attention)
                raise RequestError(
                    f"input {name} has {array.shape[1]} positions, more than this model's "
                    f"{contract.MAX_SEQUENCE_LENGTH_PARAMETER} {self.max_sequence_length}"
                )
            if array.size == 0:  # ONNX Runtime answers it with a meaningless vector (all zeros for BERT)
                raise RequestError(f"input {name} holds no values (shape {list(array.shape)})")
            features[name] = array
        shapes = {a.shape for a in features.values()}
        if len(shapes) > 1:
            raise RequestError(f"inputs must share one shape, got {sorted(shapes)}")
        return features

    def _run_members(self, members):
        """One ONNX Runtime call over the rows of ``members`` ((request index, features) pairs); the
        output tensors of each member."""
        feeds = {name: np.concatenate([features[name] for _, features in members]) for name, _, _ in self.inputs}
        results = self._run(feeds)
        per_member, start = [], 0
        for _, features in members:
            count = next(iter(features.values())).shape[0]
            per_member.append(
                [
                    pb_utils.Tensor(name, result[start : start + count])
                    for name, result in zip(self.output_names, results, strict=True)
                ]
            )
            start += count
        return per_member

    def execute(self, requests):
        responses = [None] * len(requests)
        try:
            self._execute(requests, responses)
        except Exception as error:  # a bug here must fail the requests it left unanswered, not escape
            failure = error_responses.failed("the onnxruntime backend", error)
            responses = [failure if r is None else r for r in responses]
        return responses

    def _execute(self, requests, responses):
        groups = {}  # shape -> [(request index, features)]
        for index, request in enumerate(requests):
            try:
                features = self._features(request)
            except RequestError as error:
                responses[index] = error_responses.invalid_argument(str(error))
                continue
            shape = next(iter(features.values())).shape[1:]
            groups.setdefault(shape, []).append((index, features))
        for members in groups.values():
            wait_s = encoder_runner.turn_wait_s([requests[index] for index, _ in members])
            try:
                with self.turns.hold(wait_s):
                    self._run_group(requests, responses, members)
            except encoder_runner.TurnTimeout as error:  # shed like a queue timeout, not failed
                for index, _ in members:
                    responses[index] = responses[index] or error_responses.overloaded(str(error))

    def _run_group(self, requests, responses, members):
        """Answer ``members`` (one shape), in this instance's turn on the CPUs."""
        # Asked once the turn is ours, right before the group runs: a request can wait for the turn and
        # behind the groups before it. Triton drops a request cancelled in its queue, but not once it is
        # batched for an instance, which happens while the previous batch still runs (Triton 2.51,
        # observed). Each call asks the parent process: tens of microseconds per request.
        live = []
        for index, features in members:
            if requests[index].is_cancelled():
                responses[index] = error_responses.cancelled()
            else:
                live.append((index, features))
        if not live:
            return
        for (index, _), outcome in run_isolating_failures(self._run_members, live):
            if isinstance(outcome, Exception):  # ORT raises its own exception types
                responses[index] = error_responses.failed("onnxruntime", outcome)
            else:
                responses[index] = pb_utils.InferenceResponse(output_tensors=outcome)
