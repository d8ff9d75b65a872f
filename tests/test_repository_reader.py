"""Configs read back into the typed ModelConfig: lossless on everything export writes, loud otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tritonstack.repository.config import DynamicBatching, parse, render
from tritonstack.repository.errors import RepositoryError
from tritonstack.repository.reader import from_proto, read_config
from tritonstack.repository.writer import replace_config

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.pbtxt"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_config_export_writes_reads_back_unchanged(path: Path) -> None:
    text = path.read_text()
    assert render(from_proto(parse(text))) == text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("response_cache { enable: true }", "response_cache"),
        ('instance_group { name: "pinned" count: 2 kind: KIND_CPU }', "instance_group"),
        ("dynamic_batching { priority_levels: 2 }", "dynamic_batching"),
    ],
)
def test_a_setting_the_typed_config_does_not_carry_is_refused_by_name(extra: str, field: str) -> None:
    text = 'name: "m" backend: "python" max_batch_size: 8 ' + extra
    with pytest.raises(RepositoryError, match=field) as error:
        from_proto(parse(text))
    assert "would drop" in error.value.message


def test_replace_config_rewrites_one_config_in_place(tmp_path: Path) -> None:
    golden = next(p for p in GOLDEN if p.stem == "feature-extraction-cpu-demo_encoder")
    model_dir = tmp_path / "demo_encoder"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(golden.read_text())
    config = read_config(model_dir)
    assert config.dynamic_batching is not None
    changed = replace(config, dynamic_batching=replace(config.dynamic_batching, max_queue_delay_us=123))
    replace_config(tmp_path, changed)

    written = read_config(model_dir)
    assert isinstance(written.dynamic_batching, DynamicBatching)
    assert written.dynamic_batching.max_queue_delay_us == 123
    assert config.dynamic_batching.queue_policy is not None
    assert written.dynamic_batching.queue_policy == config.dynamic_batching.queue_policy
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.pbtxt"]  # nothing staged is left behind


def test_replace_config_refuses_a_model_that_is_not_there(tmp_path: Path) -> None:
    config = from_proto(parse('name: "absent" backend: "python" max_batch_size: 8'))
    with pytest.raises(RepositoryError, match="no model 'absent'"):
        replace_config(tmp_path, config)
