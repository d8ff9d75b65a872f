"""Error responses of the served Python models and of the Python-based ``onnxruntime`` backend, and which
requests get one without being computed (their client gave up, or they queued past the step's budget).

Runs inside Triton's Python-backend stub, without the tritonstack package:
``export`` copies it beside each Python model's ``model.py``, and the embedded
server beside the backend's. Each failure answers its own request only. What
an exception says stays in the server's log (:func:`failed`): a remote caller
gets a short message and an error id to quote.

Shedding by queueing age replaces Triton's queue policy, which bounds a queue
but stalls Triton 2.51's dynamic batcher: with any ``default_queue_policy``
the batcher loses the wake-up when an instance frees and sleeps a hard-coded
500 ms (docs/export.md). Without a policy the batcher never stalls, and the
step sheds itself: the SDK stamps each request with its send time
(``contract.SENT_AT_PARAMETER``), and a request that reaches the step more
than the budget after it was sent is answered UNAVAILABLE with
``contract.SHED_MESSAGE`` (the SDK's OverloadedError) -- what Triton's queue
timeout did, without its 500 ms granularity -- instead of being computed for a
client that has likely given up, which would only delay fresher requests.

The age is the server's wall clock minus the client's: client and server
clocks must agree within a small part of the budget (one host, or NTP). A
stamp from the future (a client clock ahead) reads as no wait; one older than
``IMPLAUSIBLE_AGE_US`` as a clock set wrong, and is not shed: a queue of this
stack never holds a minute of work.
"""

import json
import os
import secrets
import sys
import time

import triton_python_backend_utils as pb_utils

IMPLAUSIBLE_AGE_US = 60_000_000


def _error(message, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def invalid_argument(message):
    return _error(message, pb_utils.TritonError.INVALID_ARG)


def cancelled():
    return _error("cancelled by its client before it ran: not computed", pb_utils.TritonError.CANCELLED)


def overloaded(message):
    """UNAVAILABLE with Triton's own text for a request that waited past its queue timeout, which clients
    (the SDK's ``OverloadedError``) read as "alive, shedding load": a request that waited too long for its
    turn on the CPUs is shed like one that waited too long in Triton's queue, not taken for a dead server."""
    return _error(f"Request timeout expired: {message}", pb_utils.TritonError.UNAVAILABLE)


def internal_error(message):
    return _error(message, pb_utils.TritonError.INTERNAL)


def _log_error(text):
    try:
        pb_utils.Logger.log_error(text)
    except Exception:  # outside a stub (the tests load this file without one)
        print(text, file=sys.stderr)


def failed(what, error):
    """The response for a request that ``what`` (``"onnxruntime"``, ``"the model"``) failed on: a short
    message and an error id to the client, the exception's text -- file paths, ONNX Runtime's internals, the
    input's values -- to the server's log under that id, where the operator finds it and a remote caller
    does not."""
    error_id = secrets.token_hex(4)
    _log_error(f"{what} failed on a request (error {error_id}): {type(error).__name__}: {error}")
    return internal_error(f"{what} failed on this request (error {error_id}; the details are in the server's log)")


def unexpected(error):
    """The response for an unexpected exception (its text goes to the log, see :func:`failed`)."""
    return failed("the model", error)


def queue_budget_us(params, contract):
    """The queue budget of a step (its config's parameters) in microseconds; 0: none (absent or "0")."""
    value = params.get(contract.QUEUE_BUDGET_MS_PARAMETER, "0") or "0"
    return max(0, int(float(value) * 1000))


def queued_us(request, contract, now_us=None):
    """How long ``request`` has waited since its client sent it (µs); None without a usable stamp."""
    try:
        stamp = json.loads(request.parameters() or "{}").get(contract.SENT_AT_PARAMETER)
    except (ValueError, AttributeError):
        return None
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return None
    age = (time.time_ns() // 1000 if now_us is None else now_us) - stamp
    return age if 0 <= age < IMPLAUSIBLE_AGE_US else None


def shed(request, contract, budget_us, now_us=None):
    """The UNAVAILABLE response for ``request`` when it queued longer than ``budget_us`` (0: never); None to
    serve it."""
    if budget_us <= 0:
        return None
    age = queued_us(request, contract, now_us)
    if age is None or age <= budget_us:
        return None
    return shed_response(age, budget_us, contract)


def shed_response(age_us, budget_us, contract):
    """The UNAVAILABLE response of a request shed at ``age_us`` against ``budget_us`` (the SDK's OverloadedError)."""
    message = f"{contract.SHED_MESSAGE} ({age_us / 1000:.0f} ms > {budget_us / 1000:.0f} ms): send less or add capacity"
    return _error(message, pb_utils.TritonError.UNAVAILABLE)


def over_budget(ages_us, rows, row_us, budget_us):
    """Positions of the requests of a batch to shed once it holds the CPU: a batch's answers all leave when it
    is computed, so each request is answered at its age now plus the whole batch's compute (``rows`` per
    request, ``row_us`` the step's estimate per row). The oldest are shed until the rest are answered within
    ``budget_us``: the budget bounds the answer, not only the queueing before the batch was taken (a batch
    taken in time could otherwise wait for the other instance's turn and compute past it). Requests without a
    usable stamp (None) are never shed; a budget of 0 sheds nothing."""
    if budget_us <= 0:
        return set()
    oldest_first = sorted((k for k, age in enumerate(ages_us) if age is not None), key=lambda k: -ages_us[k])
    total_rows = sum(rows)
    late = set()
    for k in oldest_first:
        if ages_us[k] + row_us * total_rows <= budget_us:
            break  # the younger ones fit too
        late.add(k)
        total_rows -= rows[k]
    return late


def turn_wait_s(ages_us, budget_us, floor_s=0.001):
    """How long a batch of requests of ``ages_us`` may wait for its CPU turn (seconds): until its youngest is
    past ``budget_us``, when all of it would be shed anyway (at least ``floor_s``); ``None`` -- the turn's own
    bound -- without a budget, or where a request has no usable stamp (None)."""
    if budget_us <= 0 or not ages_us or None in ages_us:
        return None
    return max(floor_s, (budget_us - min(ages_us)) / 1e6)


TRACE_ENV = "TRITONSTACK_STEP_TRACE"


class StepTrace:
    """One JSON line per execution of a step (ages, waits, rows, compute), in the folder ``TRITONSTACK_STEP_TRACE``
    names (``<model>-<pid>.jsonl``, one file per instance); without it, nothing. What ``bench --overload``'s
    breakdown reads to tell where an admitted call waited."""

    def __init__(self, model_name):
        folder = os.environ.get(TRACE_ENV)
        self._file = None
        if folder:
            path = os.path.join(folder, f"{model_name}-{os.getpid()}.jsonl")
            try:
                self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 -- the instance's life
            except OSError as error:  # a measurement aid: never what keeps a model from loading
                _log_error(f"no step trace in {folder}: {error}")

    def __bool__(self):
        return self._file is not None

    def write(self, **fields):
        if self._file is not None:
            self._file.write(json.dumps(fields) + "\n")

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None
