"""Error responses of the served Python models and of the Python-based ``onnxruntime`` backend.

Runs inside Triton's Python-backend stub, without the tritonstack package:
``export`` copies it beside each Python model's ``model.py``, and the embedded
server beside the backend's. Each failure answers its own request only. What
an exception says stays in the server's log (:func:`failed`): a remote caller
gets a short message and an error id to quote.
"""

import secrets
import sys

import triton_python_backend_utils as pb_utils


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
