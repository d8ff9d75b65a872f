"""Container image references, by the grammar of distribution/reference (what docker and the kubelet parse).

``name[:tag][@digest]``; a reference pinned by digest names the image's bytes
rather than a tag that can be moved.
"""

from __future__ import annotations

import re

_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
# A digest for tests: the form of one, no real image's.
EXAMPLE_DIGEST = "sha256:" + "0123456789abcdef" * 4


def parse(reference: str) -> re.Match[str]:
    match = REFERENCE.fullmatch(reference)
    assert match, f"{reference!r} is not an image reference"
    return match


def is_pinned(reference: str) -> bool:
    return parse(reference)["digest"] is not None
