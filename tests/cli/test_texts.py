"""Files of texts: one rule for `infer --file`, the load test's payload and the export's parity texts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from tritonstack._texts import parse_texts
from tritonstack.client import ClientError
from tritonstack.commands.infer import read_texts as infer_texts
from tritonstack.export.errors import ExportError
from tritonstack.export.texts import GATE, builtin_split, load_splits
from tritonstack.measure import payload
from tritonstack.measure.errors import LoadTestError

CONTENT = "# a comment\n  reset password  \n\n\t\nwhere is my order\n   # an indented comment\nC# is a language\n"


def test_a_line_is_a_text_stripped_and_blank_lines_and_comments_are_skipped() -> None:
    assert parse_texts(CONTENT) == ["reset password", "where is my order", "C# is a language"]
    assert parse_texts("one\r\ntwo\r\n") == ["one", "two"]


def test_every_reader_reads_a_file_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "texts.txt"
    path.write_text(CONTENT, encoding="utf-8")
    expected = parse_texts(CONTENT)
    assert payload.load_texts(path) == expected
    assert list(load_splits(path).gate.texts) == [*builtin_split(GATE).texts, *expected]
    assert infer_texts(_infer_args(path)) == expected


@pytest.mark.parametrize(
    ("read", "error"),
    [
        (payload.load_texts, LoadTestError),
        (load_splits, ExportError),
        (lambda path: infer_texts(_infer_args(path)), ClientError),
    ],
    ids=["loadtest", "parity", "infer"],
)
def test_each_reader_fails_with_its_commands_error_and_the_rule_as_hint(
    tmp_path: Path, read: Callable[[Path], list[str]], error: type[Exception]
) -> None:
    comments_only = tmp_path / "comments.txt"
    comments_only.write_text("# nothing but a comment\n\n", encoding="utf-8")
    with pytest.raises(error, match="holds no text") as raised:
        read(comments_only)
    assert "lines starting with # are skipped" in str(getattr(raised.value, "hint", ""))
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(error, match="cannot read"):
        read(not_utf8)
    with pytest.raises(error, match="No such file"):
        read(tmp_path / "missing.txt")


def _infer_args(path: Path) -> argparse.Namespace:
    return argparse.Namespace(text=None, file=path)
