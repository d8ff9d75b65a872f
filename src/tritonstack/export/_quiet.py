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

# root: onnxruntime's quantizer; the others set their own levels and would not inherit ERROR
_NOISY_LOGGERS = ("", "onnxruntime", "transformers", "optimum")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
