"""Silence upstream chatter (root-logger warnings, tracer warnings) around one call.

onnxruntime's quantizer and optimizer log advice such as "consider running
pre-processing" on the root logger for every model; it says nothing actionable
to a ``tritonstack export`` user and drowns the candidate table. Some of it is
``print`` to stdout, which would also corrupt ``--json`` output, so stdout is
swallowed too (real failures surface as exceptions).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    root = logging.getLogger()
    ort_logger = logging.getLogger("onnxruntime")
    levels = (root.level, ort_logger.level)
    root.setLevel(logging.ERROR)
    ort_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(levels[0])
        ort_logger.setLevel(levels[1])
