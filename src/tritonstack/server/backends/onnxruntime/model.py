"""A Python-based Triton backend named ``onnxruntime``.

The embedded server has no native ONNX Runtime backend; Triton runs a backend
folder that holds ``model.py`` through its Python backend instead. So a
``platform: "onnxruntime_onnx"`` model written by ``tritonstack export`` loads
unchanged here and in the NGC image's native backend.

Honours ``default_model_filename``, ``intra_op_thread_count``,
``inter_op_thread_count`` and the instance count of the config. All requests
of a batch whose shapes agree run as one ONNX Runtime call; a malformed request
gets its own error response without failing the others or the instance.
"""

import json
import os

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


class RequestError(Exception):
    pass


def _invalid_argument(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0"))
        options.inter_op_num_threads = int(params.get("inter_op_thread_count", "0"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [(i["name"], TRITON_TO_NUMPY[i["data_type"]], len(i["dims"])) for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

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
            features[name] = array
        shapes = {a.shape for a in features.values()}
        if len(shapes) > 1:
            raise RequestError(f"inputs must share one shape, got {sorted(shapes)}")
        return features

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}  # shape -> [(request index, features)]
        for index, request in enumerate(requests):
            try:
                features = self._features(request)
            except RequestError as error:
                responses[index] = _invalid_argument(str(error))
                continue
            shape = next(iter(features.values())).shape[1:]
            groups.setdefault(shape, []).append((index, features))
        for members in groups.values():
            feeds = {name: np.concatenate([features[name] for _, features in members]) for name, _, _ in self.inputs}
            try:
                results = self.session.run(self.output_names, feeds)
            except Exception as error:  # ORT raises its own exception types
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {error}"))
                continue
            start = 0
            for index, features in members:
                count = next(iter(features.values())).shape[0]
                tensors = [
                    pb_utils.Tensor(name, result[start : start + count])
                    for name, result in zip(self.output_names, results, strict=True)
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += count
        return responses
