"""The files of the Python-backend models of a text-in model (tokenizer, postprocess, fused step).

Every version folder of such a model holds the same Python files and the
tokenizer files of its release: ``model.py`` loads its siblings by path,
because the Triton stub that runs it has numpy, tokenizers (and onnxruntime
for the fused step) but not tritonstack. Export writes them; releases and tune
add the folder of a release a Python model lacks, from that release's tokenizer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from tritonstack.in_triton import contract
from tritonstack.repository.errors import RepositoryError

# The file in each version folder and the module of tritonstack.in_triton.models it comes from.
PYTHON_MODEL_FILES = {
    "model.py": "text_model.py",
    "tokenization.py": "tokenization.py",
    "error_responses.py": "error_responses.py",
    "encoder_runner.py": "encoder_runner.py",
}
# Needed by the fused step only: repositories exported before it existed lack it in their other Python models.
FUSED_ONLY_FILES = ("encoder_runner.py",)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def python_model_sources() -> dict[str, str]:
    """The Python-backend files: file name -> source."""
    package = resources.files("tritonstack.in_triton.models")
    return {filename: package.joinpath(module).read_text() for filename, module in PYTHON_MODEL_FILES.items()}


def copy_tokenizer(source: Path, destination: Path) -> None:
    copied = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    if "tokenizer.json" not in copied:
        raise RepositoryError(
            f"no tokenizer.json in {source}",
            hint="the served tokenizer needs a fast tokenizer: AutoTokenizer.from_pretrained(...).save_pretrained(dir)",
        )
    for name in copied:
        shutil.copy2(source / name, destination / name)


def write_version(version_dir: Path, tokenizer_dir: Path) -> None:
    """Fill ``version_dir`` (it exists) with the Python files and the tokenizer files of ``tokenizer_dir``."""
    for filename, source in python_model_sources().items():
        (version_dir / filename).write_text(source)
    copy_tokenizer(tokenizer_dir, version_dir)


def add_versions(repository: Path, name: str, model: str, releases: Sequence[int]) -> list[Path]:
    """Give the Python model ``model`` of text-in model ``name`` a version folder for each of ``releases`` that
    lacks one (the release was exported in the other layout), from that release's tokenizer files. The folders
    made, each complete before it appears (staged, then renamed)."""
    made = []
    for release in releases:
        version_dir = Path(repository) / model / str(release)
        if version_dir.is_dir():
            continue
        tokenizer_dir = Path(repository) / contract.tokenizer_name(name) / str(release)
        if not tokenizer_dir.is_dir():
            raise RepositoryError(f"{model!r} has no version folder for release {release}, nor has the tokenizer")
        staging = version_dir.with_name(f".{release}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            write_version(staging, tokenizer_dir)
            os.replace(staging, version_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        made.append(version_dir)
    return made
