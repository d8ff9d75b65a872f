"""Write the winning config into the repository, keeping the configs it replaces beside the report.

Only the step configs that change are rewritten: the parsed protobufs
``knobs.apply_knobs`` edited, rendered by ``repository.config.render_proto``,
each written to a staged file and renamed over its ``config.pbtxt`` (a reader
sees the old config or the new one, never half of one). The files they
replace are copied first to ``<report>/previous/<model>/config.pbtxt`` -- the
repository's own layout, so ``cp -r <report>/previous/. <repository>/`` undoes
the change. The repository must then pass ``tritonstack validate``; if it does
not, the previous files are put back and the error says why.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonstack.repository.config import write_config
from tritonstack.repository.errors import ConfigValidationError, RepositoryError
from tritonstack.repository.validate import check_repository
from tritonstack.tune.errors import TuneError
from tritonstack.tune.knobs import StepConfigs

PREVIOUS_DIR = "previous"


@dataclass(frozen=True)
class Written:
    repository: Path
    configs: tuple[Path, ...]  # the config.pbtxt files rewritten
    previous: Path  # the files they replaced, in the repository's layout

    @property
    def undo_command(self) -> str:
        return f"cp -r {self.previous}/. {self.repository}/"


def replace_config(repository: Path, config: Any) -> Path:
    """Write ``config`` (a ``ModelConfig`` protobuf) over ``repository/<its name>/config.pbtxt``; that path."""
    model_dir = Path(repository) / config.name
    if not model_dir.is_dir():
        raise RepositoryError(f"no model {config.name!r} in {repository}", hint="export it first")
    return write_config(model_dir, config)


def write_winner(repository: Path, before: StepConfigs, after: StepConfigs, report_dir: Path) -> Written:
    """Rewrite the configs of ``after`` that differ from ``before``; keep the old files under ``report_dir``."""
    changed = [new for new, old in zip(after.all(), before.all(), strict=True) if new != old]
    previous = report_dir / PREVIOUS_DIR
    for config in changed:
        kept = previous / config.name / "config.pbtxt"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repository / config.name / "config.pbtxt", kept)
    written: list[Path] = []
    try:
        for config in changed:
            written.append(replace_config(repository, config))
        check_repository(repository)
    except (RepositoryError, ConfigValidationError) as error:
        for config in changed:
            shutil.copy2(previous / config.name / "config.pbtxt", repository / config.name / "config.pbtxt")
        raise TuneError(
            f"the tuned configs were not kept, the previous ones are back: {error.message}",
            hint="this is a bug in tune; the report folder holds what it measured",
        ) from error
    return Written(repository=repository, configs=tuple(written), previous=previous)
