"""The experimental ``tokenize_at: gateway``'s pure parts: its config, reading the tokenizer step of a repository,
tokenizing as the served tokenizer does, and chunking by the encoder's ``max_batch_size``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tritonstack.gateway.settings import GatewayConfigError, parse_config
from tritonstack.gateway.tokenize import GatewayTokenizer, read_target
from tritonstack.in_triton import contract
from tritonstack.in_triton.models.tokenization import TextTokenizer

MAX_LENGTH = 16


def _config(task: str) -> str:
    def param(key: str, value: str) -> str:
        return f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'

    return (
        'name: "m_tokenizer"\nbackend: "python"\n'
        + param(contract.TASK_PARAMETER, task)
        + param(contract.MAX_SEQUENCE_LENGTH_PARAMETER, str(MAX_LENGTH))
        + param(contract.ENCODER_MODEL_PARAMETER, "m_encoder")
        + param(contract.ENCODER_INPUTS_PARAMETER, "input_ids,attention_mask")
        + param(contract.ENCODER_OUTPUT_PARAMETER, "sentence_embedding")
    )


@pytest.fixture
def repository(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> Path:
    """A repository holding only ``m_tokenizer``: its config and, in versions 1 and 3, the tiny model's files."""
    step = tmp_path / contract.tokenizer_name("m")
    for version in ("1", "3"):
        shutil.copytree(tiny_model_dirs["tiny"], step / version)
    (step / "config.pbtxt").write_text(_config(contract.FEATURE_EXTRACTION.name))
    return tmp_path


def test_config_takes_tokenize_at_and_needs_a_repository_for_it() -> None:
    config = parse_config({"models": {"m": {"tokenize_at": "gateway", "repository": "/r"}}})
    assert config.options("m").tokenize_at == "gateway"
    assert config.options("m").repository == Path("/r")
    assert config.options("other").tokenize_at == "triton"  # the default stays the text-in model
    with pytest.raises(GatewayConfigError, match="tokenize_at must be one of"):
        parse_config({"models": {"m": {"tokenize_at": "client"}}})
    with pytest.raises(GatewayConfigError, match=r"needs models\.m\.repository"):
        parse_config({"models": {"m": {"tokenize_at": "gateway"}}})


def test_read_target_reads_the_tokenizer_step(repository: Path) -> None:
    target = read_target(repository, "m")
    assert target.encoder == "m_encoder"
    assert target.inputs == ("input_ids", "attention_mask")
    assert target.output == "sentence_embedding"
    assert target.max_sequence_length == MAX_LENGTH
    assert target.version_dir == repository / "m_tokenizer" / "3"  # the newest version, as Triton serves


def test_read_target_refuses_what_it_cannot_serve(repository: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot read"):
        read_target(repository, "absent")
    (repository / "m_tokenizer" / "config.pbtxt").write_text(_config(contract.TEXT_CLASSIFICATION.name))
    with pytest.raises(GatewayConfigError, match="feature-extraction models only"):
        read_target(repository, "m")


def test_tokenize_counts_and_pads_as_the_served_tokenizer(repository: Path) -> None:
    tokenizer = GatewayTokenizer(read_target(repository, "m"))
    served = TextTokenizer(repository / "m_tokenizer" / "3", MAX_LENGTH)
    rows = ["a cat", "the cat sat on the mat " * 10, "dog"]
    tokenized = tokenizer.tokenize(rows)
    expected = served.token_counts(rows, served.encode(rows))
    np.testing.assert_array_equal(tokenized.counts, expected)
    assert tokenized.counts[1].tolist() == [MAX_LENGTH, 1]  # cut to max_sequence_length, and said so
    (whole,) = tokenizer.batches(tokenized, 0)
    for name, array in served.features(served.encode(rows), ("input_ids", "attention_mask")).items():
        np.testing.assert_array_equal(whole[name], array)


def test_batches_split_by_max_batch_size_each_padded_to_its_longest_row(repository: Path) -> None:
    tokenizer = GatewayTokenizer(read_target(repository, "m"))
    rows = ["a", "a b c d e f", "a b", "a b c", "a"]
    chunks = tokenizer.batches(tokenizer.tokenize(rows), 2)
    assert [len(c["input_ids"]) for c in chunks] == [2, 2, 1]
    assert all(set(c) == {"input_ids", "attention_mask"} for c in chunks)
    assert all(c["input_ids"].dtype == np.int64 for c in chunks)
    assert [int(c["attention_mask"].sum(axis=1).max()) for c in chunks] == [c["input_ids"].shape[1] for c in chunks]
