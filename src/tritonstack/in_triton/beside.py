"""The one loader of the code that runs inside Triton: a sibling module of a copied file, by path.

Triton's Python stub runs ``model.py`` without the tritonstack package, so a
Python model's ``model.py`` and the embedded ``onnxruntime`` backend's load the
files copied beside them (``manifest.py``) with :func:`load`. ``model.py`` finds
this file the same way, by its path: ``runpy.run_path(<folder>/beside.py)``.

A module is registered under a name made of its folder and file, so two copies
of a file (two releases, the backend and a Python model) never share one
``sys.modules`` entry, and a same-named module on ``sys.path`` (a user's
``contract``) never wins. It must be registered at all: ``dataclasses`` looks
a class's module up there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from types import ModuleType


def module_name(folder: str, filename: str) -> str:
    """The ``sys.modules`` name of ``filename`` in ``folder``: unique per folder."""
    digest = hashlib.sha1(os.path.abspath(folder).encode(), usedforsecurity=False).hexdigest()[:12]
    return f"tritonstack_in_triton_{digest}_{filename.removesuffix('.py')}"


def load(folder: str, filename: str) -> ModuleType:
    """The module ``filename`` of ``folder``, loaded once per process."""
    name = module_name(folder, filename)
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: the files of a Python model are copied together "
            "(re-export the model; for the embedded onnxruntime backend, reinstall tritonstack)"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a half-run module must not be found by the next load
        raise
    return module
