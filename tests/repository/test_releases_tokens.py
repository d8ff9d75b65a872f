"""TOKENS across releases: a release exported before token counts keeps its own model.py, which does not answer
TOKENS, so the ensembles that run it must not map it, while a later release's do (repository/releases.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tinymodels
from tritonstack.in_triton import contract
from tritonstack.repository import releases
from tritonstack.repository.config import CONFIG_FILENAME, parse
from tritonstack.repository.python_models import counts_tokens
from tritonstack.repository.validate import check_repository


def _maps_tokens(repository: Path, model: str) -> bool:
    config = parse((repository / model / CONFIG_FILENAME).read_text())
    listed = contract.TOKENS_OUTPUT in [t.name for t in config.output]
    mapped = any(contract.TOKENS_OUTPUT in step.output_map for step in config.ensemble_scheduling.step)
    assert listed == mapped, model  # an output no step produces, or a mapping to no output: both invalid
    return listed


@pytest.mark.parametrize("layout", contract.LAYOUTS)
def test_a_release_from_before_token_counts_is_served_without_them(
    tmp_path: Path, tiny_model_dirs: dict[str, Path], layout: str
) -> None:
    repository = tmp_path / "model_repository"
    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "mix", layout=layout)
    counting = contract.tokenizer_name("mix") if layout == contract.ENSEMBLE_LAYOUT else contract.fused_name("mix")
    assert counts_tokens(repository / counting / "1") and _maps_tokens(repository, "mix")
    # release 1 as an earlier tritonstack wrote it: its model.py knows no TOKENS
    (repository / counting / "1" / "model.py").write_text("# a text-in step written before token counts\n")
    assert not counts_tokens(repository / counting / "1")

    tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "mix", layout=layout)  # release 2: a candidate
    assert releases.read_releases(repository, "mix").served == (1, 2)
    assert not _maps_tokens(repository, "mix")  # runs release 1
    assert not _maps_tokens(repository, "mix_v1")
    assert _maps_tokens(repository, "mix_v2")
    check_repository(repository)

    releases.promote(repository, "mix")  # release 2 stable: NAME answers TOKENS again
    assert _maps_tokens(repository, "mix") and _maps_tokens(repository, "mix_v2")
    assert not (repository / "mix_v1").exists()
    check_repository(repository)
