"""Triton Python-backend model: the tokenizer, the postprocessor and the fused text-in step of an export.

``tritonstack export`` copies this file as ``model.py`` into the Python models
of a text-in model, with the files of ``in_triton/manifest.py`` beside it; the
``role`` parameter of each config (``contract.TEXT_ROLES``) picks the class
that does the work:

* :class:`TokenizerStep` (``tokenizer``): ``TEXT`` (and ``TEXT_PAIR`` for a pair
  task: one (query, document) pair per row) -> the encoder's int64 inputs.
  Every text of every request in a batch is tokenized together and padded to
  the longest text *of that batch*, so the batch's requests reach the encoder
  with one shape and its dynamic batcher runs them as one execution. It
  answers ``TOKENS`` too (each row's token count and whether it was cut) where
  its config lists it, as the text-in step does.
* :class:`PostprocessStep` (``postprocess``, tasks with a postprocess step):
  logits -> ``LABEL`` + ``SCORE``, or ``TEXT`` + logits -> ``ENTITIES`` for a
  token-level task.
* :class:`TextInStep` (``text-in``, the fused layout's one step, CPU only):
  ``TEXT`` -> the task's outputs in one model. It tokenizes the batch as the
  tokenizer does, runs the ONNX file of the same release of ``encoder_model``
  (its folder ``<encoder_model>/<this model's version>/``) with ONNX Runtime in
  this process, rows regrouped by length as the ``onnxruntime`` backend does
  (``encoder_runner.py``, with the encoder's knobs as this config's
  parameters), and post-processes: one Python process and one copy per request
  fewer than the three-step ensemble. ``docs/export.md`` has the figures.

Which task it serves is a row of ``contract.py``'s task table: the steps read
its fields (``postprocess``, ``token_level``, ``pair``, ``outputs``), never its name. The
tokenizer rule itself lives in ``tokenization.py``; the bench imports the same
module from the package. The tokenizer and postprocess import only ``numpy`` and
``tokenizers`` besides Triton's own ``triton_python_backend_utils``: the NGC
image needs nothing else. The ``text-in`` role needs ``onnxruntime`` too
(imported only for it).
"""

import json
import os
import runpy
import time

import numpy as np
import triton_python_backend_utils as pb_utils

# The siblings copied beside this file, loaded by path: the stub runs without the tritonstack package.
HERE = os.path.dirname(os.path.abspath(__file__))
load_beside = runpy.run_path(os.path.join(HERE, "beside.py"))["load"]
contract = load_beside(HERE, "contract.py")
tokenization = load_beside(HERE, "tokenization.py")
error_responses = load_beside(HERE, "error_responses.py")


class InputError(Exception):
    pass


def _decode_texts(request, name=contract.TEXT_INPUT):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InputError(f"missing input {name}")
    array = tensor.as_numpy()
    texts = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            texts.append(item)
            continue
        if not isinstance(item, bytes):
            raise InputError(f"{name} must hold UTF-8 strings, got {type(item).__name__}")
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InputError(f"{name} is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return texts


def _decode_rows(request, task):
    """The texts of ``request``; for a pair task, its (query, document) pairs."""
    texts = _decode_texts(request)
    if not task.pair:
        return texts
    documents = _decode_texts(request, contract.TEXT_PAIR_INPUT)
    if len(documents) != len(texts):
        raise InputError(
            f"{len(texts)} rows of {contract.TEXT_INPUT} but {len(documents)} of {contract.TEXT_PAIR_INPUT}"
        )
    return list(zip(texts, documents, strict=True))


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _respond(outputs):
    """The response carrying ``outputs`` (name -> array)."""
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()])


class _Step:
    """What every role shares: its config's parameters, the tokenizer where it reads text, and ``execute``.

    A role says whether it reads the texts (``reads_text``), whether a batch is answered with one call
    (``batched``), and how a part of the batch is answered (``answer``).
    """

    batched = True
    trace = None  # the text-in step's error_responses.StepTrace
    # Whether ``answer`` asks each request whether its client gave up, right before computing it; then
    # ``execute`` does not ask as well. Each ask is a round trip to the server process (pb_cancel.cc).
    asks_cancelled_in_answer = False

    def __init__(self, args, config, params):
        self.task = contract.task(params[contract.TASK_PARAMETER])
        self.max_length = int(params[contract.MAX_SEQUENCE_LENGTH_PARAMETER])
        self.encoder_inputs = params[contract.ENCODER_INPUTS_PARAMETER].split(",")
        self.encoder_output = params[contract.ENCODER_OUTPUT_PARAMETER]
        self.labels = json.loads(params.get(contract.LABELS_PARAMETER, "[]"))
        self.queue_budget_us = error_responses.queue_budget_us(params, contract)
        if self.reads_text:
            version_dir = os.path.join(args["model_repository"], args["model_version"])
            self.tokenizer = tokenization.TextTokenizer(version_dir, self.max_length, pair=self.task.pair)
        # a config written before token counts lists no TOKENS output: the step then answers without it
        self.counts_tokens = any(output["name"] == contract.TOKENS_OUTPUT for output in config.get("output", ()))

    @property
    def reads_text(self):
        return True

    def finalize(self):
        return None

    def read(self, request):
        """(texts, logits) of one request; either is None where this role does not take it. A pair task's
        texts are (query, document) pairs."""
        if not self.reads_text:
            return None, None
        rows = _decode_rows(request, self.task)
        if self.task.pair:
            try:
                self.tokenizer.check_queries([query for query, _ in rows])
            except tokenization.QueryTooLongError as error:
                raise InputError(str(error)) from None
        return rows, None

    def answer(self, part, requests, responses):
        """Fill ``responses`` for the requests of ``part``: (request index, texts, logits) triples."""
        raise NotImplementedError

    def execute(self, requests):
        # Every request gets its own response and no exception escapes: one would fail the whole batch.
        responses = [None] * len(requests)
        batch = []  # (request index, texts, logits)
        now_us = time.time_ns() // 1000
        self.stats = {"requests": len(requests)}  # what the trace writes (error_responses.StepTrace)
        for index, request in enumerate(requests):
            try:
                # its client gave up (deadline, disconnect): not worth computing
                if not self.asks_cancelled_in_answer and request.is_cancelled():
                    responses[index] = error_responses.cancelled()
                    continue
                # queued past the budget: shed at once, uncomputed (no Triton queue policy: error_responses.py)
                refused = error_responses.shed(request, contract, self.queue_budget_us, now_us)
                if refused is not None:
                    responses[index] = refused
                    continue
                texts, logits = self.read(request)
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
        if self.trace:
            ages = [error_responses.queued_us(requests[index], contract, now_us) for index, _, _ in batch]
            self.stats.update(taken=len(batch), oldest_taken_ms=max((a or 0 for a in ages), default=0) / 1000)
        parts = [batch] if self.batched and batch else [[item] for item in batch]
        while parts:
            part = parts.pop(0)
            try:
                self.answer(part, requests, responses)
            except TimeoutError as error:  # no CPU turn in time (encoder_runner.TurnTimeout): shed, not retried
                for index, _, _ in part:  # past the budget by now: shed for its age (the SDK does not retry that)
                    responses[index] = (
                        responses[index]
                        or error_responses.shed(requests[index], contract, self.queue_budget_us)
                        or error_responses.overloaded(str(error))
                    )
            except Exception as error:
                if len(part) > 1:
                    parts.extend([item] for item in part)
                else:
                    responses[part[0][0]] = error_responses.unexpected(error)
        if self.trace:
            self.trace.write(at_us=now_us, **self.stats)
        return responses

    def _label(self, index):
        return self.labels[index] if index < len(self.labels) else f"LABEL_{index}"

    def _classify(self, logits):
        probs = _softmax(logits.astype(np.float64))
        best = probs.argmax(axis=-1)
        labels = np.array([[self._label(i).encode()] for i in best], dtype=np.object_)
        scores = probs[np.arange(len(best)), best].astype(np.float32).reshape(-1, 1)
        return {contract.LABEL_OUTPUT: labels, contract.SCORE_OUTPUT: scores}

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
        return {contract.ENTITIES_OUTPUT: np.array(rows, dtype=np.object_)}

    def _task_outputs(self, texts, logits, encodings):
        """The task's output arrays for the rows of ``texts`` from the encoder's output (postprocess, text-in)."""
        if not self.task.postprocess:  # the encoder's output is the answer (an embedding)
            (name,) = self.task.outputs
            return {name: logits}
        if self.task.token_level:  # one result per token: mapped back to the tokens and their offsets
            return self._entities(logits, encodings if encodings is not None else self.tokenizer.encode(texts))
        return self._classify(logits)


class TokenizerStep(_Step):
    """``tokenizer``: the texts of the whole batch -> the encoder's inputs, padded to the batch's longest."""

    def answer(self, part, requests, responses):
        rows = [t for _, texts, _ in part for t in texts]
        encodings = self.tokenizer.encode(rows)
        features = self.tokenizer.features(encodings, self.encoder_inputs)
        if self.counts_tokens:
            features[contract.TOKENS_OUTPUT] = self.tokenizer.token_counts(rows, encodings)
        start = 0
        for index, texts, _ in part:
            stop = start + len(texts)
            responses[index] = _respond({name: array[start:stop] for name, array in features.items()})
            start = stop


class PostprocessStep(_Step):
    """``postprocess``: the encoder's output [and the texts, for a token-level task] -> the task's outputs."""

    batched = False

    def __init__(self, args, config, params):
        super().__init__(args, config, params)
        # never shed here: a request that reaches the postprocess has had its encoder run, and the age runs from
        # the client's send, so a backlog at the encoder would throw finished work away. The entry step sheds.
        self.queue_budget_us = 0

    @property
    def reads_text(self):
        # a token-level task maps logits back to tokens and character offsets: it re-tokenizes the text
        return self.task.token_level

    def read(self, request):
        texts, _ = super().read(request)
        tensor = pb_utils.get_input_tensor_by_name(request, self.encoder_output)
        if tensor is None:
            raise InputError(f"missing input {self.encoder_output}")
        logits = tensor.as_numpy()
        if texts is not None and len(texts) != len(logits):
            raise InputError(f"{len(texts)} texts but {len(logits)} rows of {self.encoder_output}")
        return texts, logits

    def answer(self, part, requests, responses):
        ((index, texts, logits),) = part
        responses[index] = _respond(self._task_outputs(texts, logits, None))


class TextInStep(_Step):
    """``text-in`` (the fused step): tokenize, run the encoder of this release in this process, post-process."""

    asks_cancelled_in_answer = True  # in the turn: a request may wait there, and Triton batches before the turn

    def __init__(self, args, config, params):
        super().__init__(args, config, params)
        self.encoder = _Encoder(args, config, params, self.task)
        self.row_us = 0.0  # compute per row, a moving average: what a batch will take, for the budget
        self.computed = 0  # executions that computed; the first (the warm-up) pays ONNX Runtime's first run
        self.trace = error_responses.StepTrace(config["name"])

    def finalize(self):
        self.encoder.close()
        self.trace.close()

    def answer(self, part, requests, responses):
        """In this instance's turn on the CPUs: answer CANCELLED a request whose client gave up, shed the oldest
        requests until the rest are answered within the queue budget (``error_responses.over_budget``: the wait
        for the turn -- the other instance's batch -- and the batch's own work count against the budget, not only
        Triton's queue), then tokenize the texts left at once, run the encoder on them and answer each request.
        The wait for the turn ends when the youngest request would be past the budget; tokenizing in the turn
        keeps it from time-slicing a core with the other instance's compute, and spends nothing on a shed text."""
        waiting = time.perf_counter()
        with self.encoder.turns.hold(self._turn_wait_s(part, requests)):
            now_us = time.time_ns() // 1000
            pending = []  # (request index, texts)
            for index, request_texts, _ in part:
                if requests[index].is_cancelled():
                    responses[index] = error_responses.cancelled()
                else:
                    pending.append((index, request_texts))
            ages = [error_responses.queued_us(requests[index], contract, now_us) for index, _ in pending]
            counts = [len(request_texts) for _, request_texts in pending]
            late = error_responses.over_budget(ages, counts, self.row_us, self.queue_budget_us)
            expected_us = self.row_us * sum(counts)
            for k in late:
                age = ages[k] + expected_us
                responses[pending[k][0]] = error_responses.shed_response(age, self.queue_budget_us, contract)
            live = [item for k, item in enumerate(pending) if k not in late]
            texts = [text for _, request_texts in live for text in request_texts]
            self.stats.update(wait_ms=1000 * (time.perf_counter() - waiting), shed_in_turn=len(late), rows=len(texts))
            if not live:
                return
            computing = time.perf_counter()
            encodings = self.tokenizer.encode(texts)
            outputs = self.encoder.run(self.tokenizer.features(encodings, self.encoder_inputs))
            compute_us = 1e6 * (time.perf_counter() - computing)
        self.computed += 1
        if self.computed > 1:  # a slow first run taken as the rate would shed the first calls of a fresh server
            row_us = compute_us / len(texts)
            self.row_us = row_us if not self.row_us else 0.8 * self.row_us + 0.2 * row_us
        oldest_us = max((age for k, age in enumerate(ages) if k not in late and age is not None), default=0)
        self.stats.update(compute_ms=compute_us / 1000, oldest_answered_ms=(oldest_us + compute_us) / 1000)
        counts = self.tokenizer.token_counts(texts, encodings) if self.counts_tokens else None
        at = 0
        for index, request_texts in live:
            count = len(request_texts)
            answer = self._task_outputs(request_texts, outputs[at : at + count], encodings[at : at + count])
            if counts is not None:
                answer[contract.TOKENS_OUTPUT] = counts[at : at + count]
            responses[index] = _respond(answer)
            at += count

    def _turn_wait_s(self, part, requests):
        ages = [error_responses.queued_us(requests[index], contract) for index, _, _ in part]
        return error_responses.turn_wait_s(ages, self.queue_budget_us)


class FloorStep(_Step):
    """``serving-floor`` (bench only): the fused step's inputs and outputs with no model work -- it decodes the
    texts, sheds and answers as the text-in step does, with constant outputs of the right type and shape, so
    that its throughput and latency are those of the serving path alone (``bench/floor.py``)."""

    def __init__(self, args, config, params):
        self.task = contract.task(params[contract.TASK_PARAMETER])
        self.queue_budget_us = error_responses.queue_budget_us(params, contract)
        self.constants = {}  # output name -> one row of it
        for output in config["output"]:
            dims = [int(d) for d in output["dims"]]
            if output["data_type"] == "TYPE_STRING":
                self.constants[output["name"]] = np.full(dims, b"[]", dtype=np.object_)
            else:  # TOKENS (INT32) too: zeros, no tokenizer runs here
                dtype = np.int32 if output["data_type"] == "TYPE_INT32" else np.float32
                self.constants[output["name"]] = np.zeros(dims, dtype=dtype)

    def read(self, request):
        # decoded as the text-in step reads them; no tokenizer here, so no query-length check
        return _decode_rows(request, self.task), None

    def answer(self, part, requests, responses):
        for index, texts, _ in part:
            rows = len(texts)
            responses[index] = _respond(
                {name: np.repeat(row[None], rows, axis=0) for name, row in self.constants.items()}
            )


class _Encoder:
    """The ONNX file of this release of ``encoder_model``, run in this process for the ``text-in`` role."""

    def __init__(self, args, config, params, task):
        import onnxruntime as ort  # only this role needs it

        encoder_runner = load_beside(HERE, "encoder_runner.py")
        self.run_rows = encoder_runner.run_rows
        root = os.path.dirname(os.path.abspath(args["model_repository"]))
        filename = params.get(contract.ENCODER_FILE_PARAMETER, contract.DEFAULT_ENCODER_FILE)
        path = os.path.join(root, params[contract.ENCODER_MODEL_PARAMETER], args["model_version"], filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: the text-in model runs the encoder's file of its release")
        self.knobs = contract.EncoderKnobs.from_parameters(params)
        options = ort.SessionOptions()
        self.turns, options.intra_op_num_threads = encoder_runner.cpu_plan(
            config, self.knobs, args["model_instance_kind"]
        )
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.output_name = params[contract.ENCODER_OUTPUT_PARAMETER]
        self.sequence_output = task.token_level  # the output keeps the sequence axis: padded back after trimming

    def run(self, features):
        """The encoder's output for every row of ``features`` (the caller holds ``turns``)."""
        sequence = {self.output_name} if self.sequence_output else set()
        (output,) = self.run_rows(
            self.session,
            [self.output_name],
            sequence,
            features,
            self.knobs.max_padding_waste,
            self.knobs.max_rows_per_call,
        )
        return output

    def close(self):
        self.turns.close()


# The class of each role (the config's ``role`` parameter).
STEPS = {
    contract.TOKENIZER_ROLE: TokenizerStep,
    contract.POSTPROCESS_ROLE: PostprocessStep,
    contract.FUSED_ROLE: TextInStep,
    contract.FLOOR_ROLE: FloorStep,
}


class TritonPythonModel:
    """Triton's entry point: the step of this config's role does the work."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = contract.parameters(config)
        role = params[contract.ROLE_PARAMETER]
        if role not in STEPS:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(STEPS)}")
        self.step = STEPS[role](args, config, params)

    def execute(self, requests):
        return self.step.execute(requests)

    def finalize(self):
        self.step.finalize()
