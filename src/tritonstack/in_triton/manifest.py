"""Which files of ``in_triton/`` are copied where: the one list both copiers read.

``export`` (``repository/python_models.py``) writes :data:`PYTHON_MODEL_FILES`
into every version folder of a Python model, and the embedded server
(``server/embedded.py``) :data:`ONNXRUNTIME_BACKEND_FILES` into its
``backends/onnxruntime/`` folder. A copied file loads its siblings by path
(``beside.py``), so a file missing here is missing there. This module is the
package's own and is not copied (a test checks that every other module of
``in_triton/`` is).

It lives here, next to the files it lists, rather than in ``contract.py``: the
served models never read it, and the contract holds only what both sides read.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# The file in each version folder of a Python model -> its source, relative to in_triton/.
PYTHON_MODEL_FILES = {
    "model.py": "models/text_model.py",
    "beside.py": "beside.py",
    "contract.py": "contract.py",
    "tokenization.py": "models/tokenization.py",
    "error_responses.py": "models/error_responses.py",
    "encoder_runner.py": "models/encoder_runner.py",
}
# The file in the embedded server's backends/onnxruntime/ -> its source, relative to in_triton/.
ONNXRUNTIME_BACKEND_FILES = {
    "model.py": "backends/onnxruntime/model.py",
    "providers.py": "backends/onnxruntime/providers.py",
    "beside.py": "beside.py",
    "contract.py": "contract.py",
    "error_responses.py": "models/error_responses.py",
    "encoder_runner.py": "models/encoder_runner.py",
}

# Files that a Python model's version folder written by an earlier tritonstack may lack, because its own
# model.py does not load them. Each folder carries its own copies, so an old folder keeps working as it is.
# Needed by the fused step only: exports from before the fused step lack it in their other Python models.
FUSED_ONLY_FILES = ("encoder_runner.py",)
# Loaded by every model.py since the contract was copied beside it (a model.py that names BESIDE_FILE).
CONTRACT_FILES = ("beside.py", "contract.py")
BESIDE_FILE = "beside.py"


def sources(files: dict[str, str]) -> dict[str, str]:
    """``files`` (name -> source under in_triton/) as name -> the source's text."""
    package = resources.files(__package__)
    return {name: package.joinpath(source).read_text(encoding="utf-8") for name, source in files.items()}


def write(files: dict[str, str], destination: Path) -> None:
    """Write ``files`` (name -> source under in_triton/) into the folder ``destination``, which exists."""
    for name, text in sources(files).items():
        (Path(destination) / name).write_text(text, encoding="utf-8")
