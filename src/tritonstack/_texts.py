"""Files of texts, one text per line: the one rule for every such file the stack reads.

``tritonstack infer --file``, the load test's payload (``payload.texts``) and the
export's parity texts (``--parity-texts``) all read them the same way: each line
is one text, its surrounding white space removed; blank lines and lines whose
first non-blank character is ``#`` are skipped, so a file can carry comments.
"""

from __future__ import annotations

from pathlib import Path

from tritonstack._exceptions import TritonStackError

RULE = "one UTF-8 text per line; blank lines and lines starting with # are skipped"
COMMENT = "#"


def parse_texts(content: str) -> list[str]:
    """The texts in ``content``, by the rule above."""
    stripped = (line.strip() for line in content.splitlines())
    return [line for line in stripped if line and not line.startswith(COMMENT)]


def read_texts(path: Path, *, what: str, error: type[TritonStackError]) -> list[str]:
    """The texts of the UTF-8 file at ``path``, at least one.

    ``what`` names the file in messages ("texts file", "parity texts file") and
    ``error`` is the caller's error type, so each command fails with its own exit code.
    """
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as failure:
        reason = failure.strerror if isinstance(failure, OSError) and failure.strerror else failure
        raise error(f"cannot read {what} {path}: {reason}", hint=RULE) from failure
    texts = parse_texts(content)
    if not texts:
        raise error(f"{what} {path} holds no text", hint=RULE)
    return texts
