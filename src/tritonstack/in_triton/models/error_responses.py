"""Error responses of the served Python models and of the Python-based ``onnxruntime`` backend.

Runs inside Triton's Python-backend stub, without the tritonstack package:
``export`` copies it beside each Python model's ``model.py``, and the embedded
server beside the backend's. Each failure answers its own request only.
"""

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


def unexpected(error):
    """The response for an unexpected exception."""
    return internal_error(f"{type(error).__name__}: {error}")
