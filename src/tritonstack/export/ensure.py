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
    cpu_instances: int | None = None,
    log: Log = print,
) -> ExportResult | None:
    """Make ``repository`` hold the text-in model ``name``; the export's result, ``None`` when reused.

    A model already there is reused unless ``reexport``, after the repository passes
    ``tritonstack validate`` (``ConfigValidationError`` if not). Otherwise ``model`` (a
    local Hugging Face folder or hub id) is exported with the defaults of
    ``tritonstack export MODEL --name NAME --repository REPOSITORY``: parity-gated, the
    fastest passing candidate, for ``target`` and ``task`` (``None``: inferred from the model), with
    ``cpu_instances`` (``None``: one per core of this machine; a reused model that runs another number is
    reused, and the log says so); a
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
        served = served_cpu_instances(repository, name) if target == "cpu" and cpu_instances is not None else None
        if served not in (None, cpu_instances):
            log(
                f"  it runs {served} CPU instances, where an export now would write {cpu_instances} (one per core "
                "of the server): --reexport to export it for this server"
            )
        return None
    flags = ("" if target == "cpu" else f" --target {target}") + (f" --task {task}" if task else "")
    if cpu_instances is not None:
        flags += f" --cpu-instances {cpu_instances}"
    log(f"$ tritonstack export {model} --name {name} --repository {repository}{flags}")
    try:
        result = export_model(
            ExportOptions(
                model=str(model),
                name=name,
                repository=repository,
                target=target,
                task=task,
                cpu_instances=cpu_instances,
            )
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


def served_cpu_instances(repository: Path, name: str) -> int | None:
    """The CPU instances of the step that runs text-in model ``name``'s encoder in ``repository`` (the fused
    step, else the encoder); ``None`` where there is none or its config cannot be read."""
    from google.protobuf import text_format

    from tritonstack.in_triton import contract
    from tritonstack.repository.config import CONFIG_FILENAME, parse
    from tritonstack.repository.layouts import existing_layout

    layout = existing_layout(repository, name)
    step = contract.fused_name(name) if layout == contract.FUSED_LAYOUT else contract.encoder_name(name)
    try:
        config = parse((repository / step / CONFIG_FILENAME).read_text())
    except (OSError, text_format.ParseError):
        return None
    cpu_groups = [g for g in config.instance_group if g.kind != g.KIND_GPU]
    return sum(max(1, g.count) for g in cpu_groups) if cpu_groups else None


def _log_lines(log: Log, text: str) -> None:
    for line in text.splitlines():
        log(line)
