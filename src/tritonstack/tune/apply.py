"""Write the winning config into the repository, keeping the configs it replaces beside the report.

Only the step configs that change are rewritten: the parsed protobufs
``knobs.apply_knobs`` edited, rendered by ``repository.config.render_proto``,
each written to a staged file and renamed over its ``config.pbtxt`` (a reader
sees the old config or the new one, never half of one). The files they
replace are copied first to ``<report>/previous/<model>/config.pbtxt`` -- the
repository's own layout, so ``cp -r <report>/previous/. <repository>/`` undoes
the change. A winner in the fused layout that the repository did not have yet
also gets ``NAME_fused`` (its configs and a version folder per served release,
``python_models.add_versions``), and the per-release ensembles (one per served release)
are rewritten from ``NAME``'s new config (``releases.write_releases``), so every
served release runs one layout; the undo command then removes ``NAME_fused``
too. The repository must then pass ``tritonstack validate``; if it does not,
or anything else stops the writing (an ``OSError``, Ctrl-C), the previous
files are put back, each by an atomic rename, and the error says why.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack import _faults
from tritonstack.in_triton import contract
from tritonstack.repository import files, lock, staging
from tritonstack.repository.config import write_config
from tritonstack.repository.errors import ConfigValidationError, RepositoryError
from tritonstack.repository.python_models import add_versions, write_version
from tritonstack.repository.releases import read_releases, write_releases
from tritonstack.repository.validate import check_repository
from tritonstack.tune.errors import TuneError
from tritonstack.tune.knobs import StepConfigs

PREVIOUS_DIR = "previous"


@dataclass(frozen=True)
class Written:
    repository: Path
    configs: tuple[Path, ...]  # the config.pbtxt files rewritten
    previous: Path  # the files they replaced, in the repository's layout
    created: tuple[Path, ...] = ()  # model folders that did not exist before (NAME_fused)

    @property
    def undo_command(self) -> str:
        remove = "".join(f"rm -r {shlex.quote(str(path))} && " for path in self.created)
        return f"{remove}cp -r {shlex.quote(f'{self.previous}/.')} {shlex.quote(f'{self.repository}/')}"


def replace_config(repository: Path, config: Any) -> Path:
    """Write ``config`` (a ``ModelConfig`` protobuf) over ``repository/<its name>/config.pbtxt``; that path."""
    model_dir = Path(repository) / config.name
    if not model_dir.is_dir():
        raise RepositoryError(f"no model {config.name!r} in {repository}", hint="export it first")
    return write_config(model_dir, config)


def write_winner(repository: Path, before: StepConfigs, after: StepConfigs, report_dir: Path) -> Written:
    """Rewrite the configs of ``after`` that differ from ``before``; keep the old files under ``report_dir``."""
    repository = Path(repository)
    with lock.locked(repository, f"tune {after.text_in.name}"):
        return _write_winner(repository, before, after, report_dir)


def _create_fused(repository: Path, name: str, fused: Any, releases: Sequence[int]) -> Path:
    """Make ``NAME_fused`` whole -- a version folder per served release, from that release's tokenizer, and
    its config -- in a staging folder, and rename it into place: killed midway, Triton never sees a model
    folder without its config."""
    fused_dir = repository / fused.name
    with staging.staging_dir(repository) as staged:
        new_dir = staged / fused.name
        for release in releases:
            (new_dir / str(release)).mkdir(parents=True)
            write_version(new_dir / str(release), repository / contract.tokenizer_name(name) / str(release))
        write_config(new_dir, fused)
        os.replace(new_dir, fused_dir)
    return fused_dir / "config.pbtxt"


def _put_back(kept_paths: Sequence[Path], previous: Path, created: Path | None, staged: Path) -> None:
    """The configs as they were, each by an atomic rename, then the model folder tune made taken out."""
    for path in kept_paths:
        kept = previous / path.parent.name / "config.pbtxt"
        if kept.is_file():
            files.write_text(path, kept.read_text())
    if created is not None and created.exists():
        staging.retire(created, staged)


def _write_winner(repository: Path, before: StepConfigs, after: StepConfigs, report_dir: Path) -> Written:
    fused_dir = repository / after.fused.name
    creates_fused = after.layout == contract.FUSED_LAYOUT and not fused_dir.exists()
    # an idle fused step on disk (an earlier export's) is replaced by the one measured: its config changes
    replaces_fused = after.layout == contract.FUSED_LAYOUT and before.layout == contract.ENSEMBLE_LAYOUT
    changed = [
        new
        for new, old in zip(after.all(), before.all(), strict=True)
        if new != old or (replaces_fused and new is after.fused)
    ]
    previous = report_dir / PREVIOUS_DIR
    releases = read_releases(repository, after.text_in.name)
    release_dirs = [repository / contract.release_name(after.text_in.name, r) for r in releases.served]
    kept_paths = [repository / c.name / "config.pbtxt" for c in changed] + [d / "config.pbtxt" for d in release_dirs]
    for path in kept_paths:
        if path.is_file():
            kept = previous / path.parent.name / "config.pbtxt"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, kept)
    _faults.point("tune-kept")
    written: list[Path] = []
    try:
        if creates_fused:
            written.append(_create_fused(repository, after.text_in.name, after.fused, releases.served))
            _faults.point("tune-created-fused")
        elif after.layout == contract.FUSED_LAYOUT:
            add_versions(repository, after.text_in.name, after.fused.name, releases.served)
        for config in changed:
            if not (creates_fused and config is after.fused):
                written.append(replace_config(repository, config))
                _faults.point(f"tune-wrote-{config.name}")
        if after.text_in != before.text_in:  # every served release's own ensemble runs the new layout too
            write_releases(repository, releases.name, releases.stable, releases.candidate)
        check_repository(repository)
    except BaseException as error:
        # whatever stopped it -- a bad config, a full disk (OSError), Ctrl-C -- the previous configs go back
        with staging.staging_dir(repository) as staged:
            _put_back(kept_paths, previous, fused_dir if creates_fused else None, staged)
        if isinstance(error, (RepositoryError, ConfigValidationError)):
            raise TuneError(
                f"the tuned configs were not kept, the previous ones are back: {error.message}",
                hint="this is a bug in tune; the report folder holds what it measured",
            ) from error
        if isinstance(error, OSError):
            raise TuneError(
                f"writing the tuned configs failed, the previous ones are back: {error}",
                hint="free the disk or fix the permissions, then run tune again",
            ) from error
        raise
    created = (fused_dir,) if creates_fused else ()
    return Written(repository=repository, configs=tuple(written), previous=previous, created=created)
