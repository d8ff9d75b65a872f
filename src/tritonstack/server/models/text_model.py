"""Triton Python-backend model: the tokenizer and the text-in model of an export.

``tritonstack export`` copies this file as ``model.py`` into two models; the
``role`` parameter of each config picks what it does:

* ``tokenizer``: ``TEXT`` -> the encoder's int64 inputs.
* ``text_in``: ``TEXT`` -> tokenize -> one BLS call to the encoder -> the task's
  result (``EMBEDDING``; ``LABEL`` + ``SCORE``; ``ENTITIES``).

Every text of every request in a batch is tokenized together and padded to the
longest text *of that batch*, so concurrent requests of different lengths
become one encoder execution. The file is self-contained (the NGC image needs
only ``numpy`` and ``tokenizers`` beside it).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

# Tokenization only ever keeps the first max_sequence_length tokens; cutting
# absurdly long texts first bounds the work a single request can cause.
MAX_CHARS_PER_TOKEN = 256
MIN_CHAR_LIMIT = 65536


class InputError(Exception):
    pass


def _load_tokenizer(version_dir, max_length):
    tokenizer = Tokenizer.from_file(os.path.join(version_dir, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = 0
    config_path = os.path.join(version_dir, "tokenizer_config.json")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            pad_token = json.load(f).get("pad_token")
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content")
        if pad_token and tokenizer.token_to_id(pad_token) is not None:
            pad_id = tokenizer.token_to_id(pad_token)
    return tokenizer, pad_id


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
        self.char_limit = max(MIN_CHAR_LIMIT, self.max_length * MAX_CHARS_PER_TOKEN)
        self.encoder_model = params["encoder_model"]
        self.encoder_inputs = params["encoder_inputs"].split(",")
        self.encoder_output = params["encoder_output"]
        self.labels = json.loads(params.get("labels", "[]"))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer, self.pad_id = _load_tokenizer(version_dir, self.max_length)

    def _tokenize(self, texts):
        encodings = self.tokenizer.encode_batch([t[: self.char_limit] for t in texts])
        length = max(len(e.ids) for e in encodings)
        batch = {
            "input_ids": np.full((len(texts), length), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(texts), length), dtype=np.int64),
            "token_type_ids": np.zeros((len(texts), length), dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            batch["input_ids"][row, :n] = encoding.ids
            batch["attention_mask"][row, :n] = encoding.attention_mask
            batch["token_type_ids"][row, :n] = encoding.type_ids
        return {name: batch[name] for name in self.encoder_inputs}, encodings

    def _encode(self, features):
        request = pb_utils.InferenceRequest(
            model_name=self.encoder_model,
            requested_output_names=[self.encoder_output],
            inputs=[pb_utils.Tensor(name, array) for name, array in features.items()],
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"encoder {self.encoder_model}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, self.encoder_output).as_numpy()

    def _task_outputs(self, result, encodings):
        """Per-row output arrays of the task, keyed by output name."""
        if self.task == "feature-extraction":
            return {"EMBEDDING": result.astype(np.float32, copy=False)}
        if self.task == "text-classification":
            probs = _softmax(result.astype(np.float64))
            best = probs.argmax(axis=-1)
            labels = np.array([[self._label(i).encode()] for i in best], dtype=np.object_)
            scores = probs[np.arange(len(best)), best].astype(np.float32).reshape(-1, 1)
            return {"LABEL": labels, "SCORE": scores}
        probs = _softmax(result.astype(np.float64))
        entities = []
        for row, encoding in enumerate(encodings):
            items = []
            for position, (token, special) in enumerate(
                zip(encoding.tokens, encoding.special_tokens_mask, strict=True)
            ):
                if special:
                    continue
                best = int(probs[row, position].argmax())
                start, end = encoding.offsets[position]
                items.append(
                    {
                        "token": token,
                        "label": self._label(best),
                        "score": round(float(probs[row, position, best]), 6),
                        "start": start,
                        "end": end,
                    }
                )
            entities.append([json.dumps(items).encode()])
        return {"ENTITIES": np.array(entities, dtype=np.object_)}

    def _label(self, index):
        return self.labels[index] if index < len(self.labels) else f"LABEL_{index}"

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, owners = [], []
        for index, request in enumerate(requests):
            try:
                request_texts = _decode_texts(request)
            except InputError as error:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                continue
            texts.extend(request_texts)
            owners.append((index, len(request_texts)))
        if not texts:
            return responses
        features, encodings = self._tokenize(texts)
        if self.role == "tokenizer":
            outputs = features
        else:
            try:
                result = self._encode(features)
            except pb_utils.TritonModelException as error:
                for index, _ in owners:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                return responses
            outputs = self._task_outputs(result, encodings)
        start = 0
        for index, count in owners:
            tensors = [pb_utils.Tensor(name, array[start : start + count]) for name, array in outputs.items()]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += count
        return responses
