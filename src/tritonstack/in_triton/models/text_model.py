"""Triton Python-backend model: the tokenizer and the postprocessor of an export.

``tritonstack export`` copies this file as ``model.py`` into the steps of the
text-in ensemble; the ``role`` parameter of each config picks what it does:

* ``tokenizer``: ``TEXT`` -> the encoder's int64 inputs. Every text of every
  request in a batch is tokenized together and padded to the longest text *of
  that batch*, so the batch's requests reach the encoder with one shape and
  its dynamic batcher runs them as one execution.
* ``postprocess`` (classification tasks): logits -> ``LABEL`` + ``SCORE``, or
  ``TEXT`` + logits -> ``ENTITIES`` for token classification.
* ``text-in`` (the fused layout's one step, CPU only): ``TEXT`` -> the task's
  outputs in one model. It tokenizes the batch as the tokenizer does, runs the
  ONNX file of the same release of ``encoder_model`` (its folder
  ``<encoder_model>/<this model's version>/``) with ONNX Runtime in this
  process, rows regrouped by length as the ``onnxruntime`` backend does
  (``encoder_runner.py``, with the encoder's knobs as this config's
  parameters), and post-processes: one Python process and one copy per request
  fewer than the three-step ensemble. ``docs/export.md`` has the figures.

The tokenizer rule itself lives in ``tokenization.py``, which export copies
beside this file; the bench imports the same module from the package. The
tokenizer and postprocess import only ``numpy`` and ``tokenizers`` besides
Triton's own ``triton_python_backend_utils``: the NGC image needs nothing else.
The ``text-in`` role needs ``onnxruntime`` too (imported only for it).
"""

import importlib.util
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def _load_beside(filename):
    """The module ``filename`` of this file's own version folder.

    Loaded by path, not from ``sys.path``: the stub runs without the tritonstack
    package, and a same-named module elsewhere on the path must not win.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing beside model.py; re-export the model")
    spec = importlib.util.spec_from_file_location("tritonstack_" + filename.removesuffix(".py"), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tokenization = _load_beside("tokenization.py")
error_responses = _load_beside("error_responses.py")
FUSED_ROLE = "text-in"


class InputError(Exception):
    pass


def _decode_texts(request):
    tensor = pb_utils.get_input_tensor_by_name(request, "TEXT")
    if tensor is None:
        raise InputError("missing input TEXT")
    array = tensor.as_numpy()
    texts = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            texts.append(item)
            continue
        if not isinstance(item, bytes):
            raise InputError(f"TEXT must hold UTF-8 strings, got {type(item).__name__}")
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InputError(f"TEXT is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return texts


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.role = params["role"]
        self.task = params["task"]
        self.max_length = int(params["max_sequence_length"])
        self.encoder_inputs = params["encoder_inputs"].split(",")
        self.encoder_output = params["encoder_output"]
        self.labels = json.loads(params.get("labels", "[]"))
        # Token classification maps logits back to tokens and character offsets: it re-tokenizes the text.
        self.needs_text = self.role in ("tokenizer", FUSED_ROLE) or self.task == "token-classification"
        if self.needs_text:
            version_dir = os.path.join(args["model_repository"], args["model_version"])
            self.tokenizer = tokenization.TextTokenizer(version_dir, self.max_length)
        self.encoder = _Encoder(args, config, params) if self.role == FUSED_ROLE else None
        if self.encoder is not None:
            self.output_names = [o["name"] for o in config["output"]]

    def finalize(self):
        if self.encoder is not None:
            self.encoder.close()

    def _label(self, index):
        return self.labels[index] if index < len(self.labels) else f"LABEL_{index}"

    def _classify(self, logits):
        probs = _softmax(logits.astype(np.float64))
        best = probs.argmax(axis=-1)
        labels = np.array([[self._label(i).encode()] for i in best], dtype=np.object_)
        scores = probs[np.arange(len(best)), best].astype(np.float32).reshape(-1, 1)
        return {"LABEL": labels, "SCORE": scores}

    def _entities(self, logits, encodings):
        rows = []
        for row, encoding in enumerate(encodings):
            probs = _softmax(logits[row].astype(np.float64))
            items = []
            for position, (token, special) in enumerate(
                zip(encoding.tokens, encoding.special_tokens_mask, strict=True)
            ):
                if special or position >= len(probs):
                    continue
                best = int(probs[position].argmax())
                start, end = encoding.offsets[position]
                items.append(
                    {
                        "token": token,
                        "label": self._label(best),
                        "score": round(float(probs[position, best]), 6),
                        "start": start,
                        "end": end,
                    }
                )
            rows.append([json.dumps(items, ensure_ascii=False).encode()])
        return {"ENTITIES": np.array(rows, dtype=np.object_)}

    def _answer(self, texts, logits, encodings):
        """The task's output arrays for the rows of ``texts`` (postprocess, text-in)."""
        if self.task == "token-classification":
            return self._entities(logits, encodings if encodings is not None else self.tokenizer.encode(texts))
        if self.task == "feature-extraction":
            return {self.output_names[0]: logits}
        return self._classify(logits)

    def _text_in(self, part, requests, responses):
        """Tokenize every text of ``part`` at once, run the encoder on the rows in this instance's turn on the
        CPUs, answer each request. A request whose client gave up while this instance waited for its turn is
        answered CANCELLED and its rows are not computed (the wait counts as compute in Triton's statistics)."""
        texts = [t for _, request_texts, _ in part for t in request_texts]
        encodings = self.tokenizer.encode(texts)
        features = self.tokenizer.features(encodings, self.encoder_inputs)
        with self.encoder.turns:
            live, rows, start = [], [], 0
            for index, request_texts, _ in part:
                stop = start + len(request_texts)
                if requests[index].is_cancelled():
                    responses[index] = error_responses.cancelled()
                else:
                    live.append((index, request_texts, start, stop))
                    rows.extend(range(start, stop))
                start = stop
            if not live:
                return
            kept = rows if len(rows) < len(texts) else slice(None)
            outputs = self.encoder.run({name: array[kept] for name, array in features.items()})
        at = 0
        for index, request_texts, start, stop in live:
            count = stop - start
            answer = self._answer(request_texts, outputs[at : at + count], encodings[start:stop])
            tensors = [pb_utils.Tensor(name, array) for name, array in answer.items()]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            at += count

    def _read(self, request):
        """(texts, logits) of one request; either may be None when this role does not take it."""
        texts = _decode_texts(request) if self.needs_text else None
        logits = None
        if self.role == "postprocess":
            tensor = pb_utils.get_input_tensor_by_name(request, self.encoder_output)
            if tensor is None:
                raise InputError(f"missing input {self.encoder_output}")
            logits = tensor.as_numpy()
            if texts is not None and len(texts) != len(logits):
                raise InputError(f"{len(texts)} texts but {len(logits)} rows of {self.encoder_output}")
        return texts, logits

    def execute(self, requests):
        # Every request gets its own response and no exception escapes: one would fail the whole batch.
        responses = [None] * len(requests)
        batch = []  # (request index, texts, logits)
        for index, request in enumerate(requests):
            try:
                if request.is_cancelled():  # its client gave up (deadline, disconnect): not worth computing
                    responses[index] = error_responses.cancelled()
                    continue
                texts, logits = self._read(request)
                if len(logits if texts is None else texts) == 0:
                    raise InputError("the request has no rows")
                batch.append((index, texts, logits))
            except InputError as error:
                responses[index] = error_responses.invalid_argument(str(error))
            except Exception as error:
                responses[index] = error_responses.unexpected(error)
        # The tokenizer and the text-in model answer the batch with one call and one padded length, the
        # postprocessor request by request. A part that fails is retried request by request, so that only a
        # bad one fails.
        parts = [batch] if self.role != "postprocess" and batch else [[item] for item in batch]
        while parts:
            part = parts.pop(0)
            try:
                if self.role == FUSED_ROLE:
                    self._text_in(part, requests, responses)
                elif self.role == "tokenizer":
                    encodings = self.tokenizer.encode([t for _, texts, _ in part for t in texts])
                    features = self.tokenizer.features(encodings, self.encoder_inputs)
                    start = 0
                    for index, texts, _ in part:
                        stop = start + len(texts)
                        tensors = [pb_utils.Tensor(name, array[start:stop]) for name, array in features.items()]
                        responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                        start = stop
                else:
                    ((index, texts, logits),) = part
                    outputs = self._answer(texts, logits, None)
                    tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            except Exception as error:
                if len(part) > 1:
                    parts.extend([item] for item in part)
                else:
                    responses[part[0][0]] = error_responses.unexpected(error)
        return responses


class _Encoder:
    """The ONNX file of this release of ``encoder_model``, run in this process for the ``text-in`` role."""

    def __init__(self, args, config, params):
        import onnxruntime as ort  # only this role needs it

        encoder_runner = _load_beside("encoder_runner.py")
        self.run_rows = encoder_runner.run_rows
        root = os.path.dirname(os.path.abspath(args["model_repository"]))
        filename = params.get("encoder_file", "model.onnx")
        path = os.path.join(root, params["encoder_model"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: the text-in model runs the encoder's file of its release")
        options = ort.SessionOptions()
        self.turns, options.intra_op_num_threads = encoder_runner.cpu_plan(config, params, args["model_instance_kind"])
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_name = params["encoder_output"]
        self.sequence_output = params["task"] == "token-classification"
        self.max_padding_waste = float(params.get("max_padding_waste", "0.25"))
        self.max_rows_per_call = int(params.get("max_rows_per_call", "0"))  # 0: no limit

    def run(self, features):
        """The encoder's output for every row of ``features`` (the caller holds ``turns``)."""
        sequence = {self.output_name} if self.sequence_output else set()
        (output,) = self.run_rows(
            self.session, [self.output_name], sequence, features, self.max_padding_waste, self.max_rows_per_call
        )
        return output

    def close(self):
        self.turns.close()
