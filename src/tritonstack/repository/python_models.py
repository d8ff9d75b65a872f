"""The files of the Python-backend models of a text-in model (tokenizer, postprocess, fused step).

Every version folder of such a model holds the same Python files
(``in_triton/manifest.py``'s ``PYTHON_MODEL_FILES``) and the tokenizer files of
its release: ``model.py`` loads its siblings by path, because the Triton stub
that runs it has numpy, tokenizers (and onnxruntime for the fused step) but not
tritonstack. Export writes them; releases and tune add the folder of a release a
Python model lacks, from that release's tokenizer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from tritonstack.in_triton import contract, manifest
from tritonstack.repository import files
from tritonstack.repository.errors import RepositoryError

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


def copy_tokenizer(source: Path, destination: Path) -> None:
    copied = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    if "tokenizer.json" not in copied:
        raise RepositoryError(
            f"no tokenizer.json in {source}",
            hint="the served tokenizer needs a fast tokenizer: AutoTokenizer.from_pretrained(...).save_pretrained(dir)",
        )
    for name in copied:
        files.copy_file(source / name, destination / name)


def write_version(version_dir: Path, tokenizer_dir: Path) -> None:
    """Fill ``version_dir`` (it exists) with the Python files and the tokenizer files of ``tokenizer_dir``."""
    manifest.write(manifest.PYTHON_MODEL_FILES, version_dir)
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


def counts_tokens(version_dir: Path) -> bool:
    """Whether the Python model in ``version_dir`` answers ``contract.TOKENS_OUTPUT``: a folder exported before
    token counts carries a ``model.py`` that does not, and keeps it (a release is never rewritten)."""
    model_py = Path(version_dir) / "model.py"
    try:
        return "TOKENS_OUTPUT" in model_py.read_text(encoding="utf-8")
    except OSError:
        return False
