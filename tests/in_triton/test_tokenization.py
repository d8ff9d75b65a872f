"""The one tokenizer rule (in_triton/models/tokenization.py) that the served tokenizer model and the bench share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonstack.bench.inprocess import InProcessModel
from tritonstack.in_triton.models.tokenization import TextTokenizer, char_limit
from tritonstack.measure.served_files import locate

MAX_LENGTH = 64  # the tiny models' max_sequence_length
# Past the character cut the tokenizer never sees "hello world": the cut text is blank.
TEXT_PAST_THE_CUT = " " * char_limit(MAX_LENGTH) + "hello world"


@pytest.fixture()
def tokenizer_dir(tiny_repository: Path) -> Path:
    return tiny_repository / "tiny_tokenizer" / "1"


def _with_pad_token(tokenizer_dir: Path, destination: Path, pad_token: object) -> Path:
    shutil.copytree(tokenizer_dir, destination)
    config_path = destination / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["pad_token"] = pad_token
    config_path.write_text(json.dumps(config))
    return destination


def test_texts_are_cut_to_the_character_limit_before_tokenizing(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir, MAX_LENGTH)
    (cut,) = tokenizer.encode([TEXT_PAST_THE_CUT])
    assert cut.tokens == ["[CLS]", "[SEP]"]
    assert tokenizer.tokenizer.encode(TEXT_PAST_THE_CUT).tokens == ["[CLS]", "hello", "world", "[SEP]"]


def test_texts_are_truncated_to_max_length_tokens(tokenizer_dir: Path) -> None:
    (encoding,) = TextTokenizer(tokenizer_dir, MAX_LENGTH).encode(["word " * 3000])
    assert len(encoding.ids) == MAX_LENGTH
    assert encoding.tokens[-1] == "[SEP]"


def test_rows_are_padded_to_the_longest_of_the_batch_with_the_configured_pad_token(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    # tokenizer_config.json as transformers writes an AddedToken: a dict with the token's content
    folder = _with_pad_token(tokenizer_dir, tmp_path / "tok", {"content": "[MASK]", "special": True})
    tokenizer = TextTokenizer(folder, MAX_LENGTH)
    mask_id = tokenizer.tokenizer.token_to_id("[MASK]")
    assert tokenizer.pad_id == mask_id != 0
    features = tokenizer.features(tokenizer.encode(["hello", "hello world data"]), ("input_ids", "attention_mask"))
    assert list(features) == ["input_ids", "attention_mask"]
    ids, mask = features["input_ids"], features["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert ids[0, 3:].tolist() == [mask_id, mask_id]


def test_a_pad_token_the_vocabulary_lacks_pads_with_0(tokenizer_dir: Path, tmp_path: Path) -> None:
    folder = _with_pad_token(tokenizer_dir, tmp_path / "tok", "<not-in-the-vocabulary>")
    assert TextTokenizer(folder, MAX_LENGTH).pad_id == 0


def test_a_missing_tokenizer_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        TextTokenizer(tmp_path, MAX_LENGTH)


@pytest.mark.integration
def test_the_bench_tokenizes_exactly_as_the_served_tokenizer_model(triton: Any, tiny_repository: Path) -> None:
    import tritonclient.grpc as grpcclient

    texts = ["hello", TEXT_PAST_THE_CUT, "word " * 3000, "the quick brown fox"]
    array = np.array([[t.encode()] for t in texts], dtype=np.object_)
    text = grpcclient.InferInput("TEXT", list(array.shape), "BYTES")
    text.set_data_from_numpy(array)
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        served = client.infer("tiny_tokenizer", [text])
    files = locate(tiny_repository, "tiny")
    assert not files.max_rows_per_call  # fp32: one call for the batch, padded as the tokenizer model pads it
    ((rows, bench),) = InProcessModel(files, threads=1).calls(texts)
    assert rows == list(range(len(texts))) and list(bench) == list(files.input_names)
    for name in files.input_names:
        np.testing.assert_array_equal(bench[name], served.as_numpy(name), err_msg=name)
    # the cut is what makes the long text's ids agree: uncut, "hello world" would be tokenized
    assert bench["attention_mask"][1].sum() == 2
