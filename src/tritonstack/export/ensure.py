"""A repository that holds a text-in model: reused when it is there and valid, else exported.

What the demo and the benchmark start from. It calls the export API directly,
so an export error reaches the caller as itself (an ``AccuracyGateError`` with
its numbers, say), not as the exit code of a nested ``tritonstack export``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tritonstack.export.errors import AccuracyGateError
from tritonstack.export.options import ExportOptions
from tritonstack.export.pipeline import ExportResult, export_model
from tritonstack.export.report import candidates_table, sensitivity_table, summarize
from tritonstack.repository.errors import ConfigValidationError
from tritonstack.repository.releases import promote, read_releases
from tritonstack.repository.validate import check_repository

Log = Callable[[str], None]


def ensure_exported(
    model: str | Path,
    repository: Path,
    name: str,
    *,
    reexport: bool = False,
    target: str = "cpu",
    task: str | None = None,
    log: Log = print,
) -> ExportResult | None:
    """Make ``repository`` hold the text-in model ``name``; the export's result, ``None`` when reused.

    A model already there is reused unless ``reexport``, after the repository passes
    ``tritonstack validate`` (``ConfigValidationError`` if not). Otherwise ``model`` (a
    local Hugging Face folder or hub id) is exported with the defaults of
    ``tritonstack export MODEL --name NAME --repository REPOSITORY``: parity-gated, the
    fastest passing candidate, for ``target`` and ``task`` (``None``: inferred from the model); a
    re-export is promoted to the stable release at once,
    so ``name`` serves what was just exported. What happens goes to ``log``, one line per call: the
    equivalent command, then the candidate table and summary that command prints.
    """
    if (repository / name).is_dir() and not reexport:
        try:
            check_repository(repository)
        except ConfigValidationError as error:
            raise ConfigValidationError(
                error.problems, hint=f"pass --reexport to export {name!r} into {repository} again"
            ) from error
        log(f"{name} is already in {repository}: reusing it (--reexport to export again)")
        return None
    flags = ("" if target == "cpu" else f" --target {target}") + (f" --task {task}" if task else "")
    log(f"$ tritonstack export {model} --name {name} --repository {repository}{flags}")
    try:
        result = export_model(
            ExportOptions(model=str(model), name=name, repository=repository, target=target, task=task)
        )
    except AccuracyGateError as error:
        # The table is the evidence for the refusal, as `tritonstack export` shows it.
        if error.report is not None:
            _log_lines(log, candidates_table(error.report))
        raise
    sensitivity = sensitivity_table(result.report)
    _log_lines(
        log, "\n\n".join(t for t in (candidates_table(result.report), sensitivity, summarize(result.report)) if t)
    )
    releases = read_releases(repository, name)
    if releases.candidate is not None:
        # A re-export is a candidate release (docs/releases.md); what asked for it measures it, so it serves as NAME.
        promote(repository, name)
        log(f"$ tritonstack release promote --model {name} --repository {repository}  (release {releases.candidate})")
    return result


def _log_lines(log: Log, text: str) -> None:
    for line in text.splitlines():
        log(line)
