"""Which release of a model a call goes to: one named release, or a split between two. Pure: no I/O.

A release is an exported version of a text-in model, served end to end under a name of its own
(``NAME_vV``, see ``tritonstack.repository.releases``), so the release that answers is the one named.

A ``TrafficSplit`` sends ``weight`` of the calls to the candidate:

* without a key, each call draws a uniform number in [0, 1) (the shell's RNG; a test passes a seeded
  one): a canary;
* with a key (a user, a session), the key's hash decides, so the same key always reaches the same
  release: an A/B test. Raising the weight only moves keys from the baseline to the candidate, never
  back (a key's bucket is fixed; the threshold moves).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

from tritonstack.client._exceptions import InvalidInputError
from tritonstack.in_triton import contract

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Release:
    """Release ``version`` of the text-in model ``model``."""

    model: str
    version: int

    @property
    def served_as(self) -> str:
        """The name Triton serves this release under."""
        return contract.release_name(self.model, self.version)


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """``weight`` (0 to 1) of the calls to release ``candidate`` of ``model``, the rest to ``baseline``."""

    model: str
    baseline: int
    candidate: int
    weight: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise InvalidInputError(
                f"traffic split weight {self.weight} is not a share", hint="pass the candidate's share, 0 to 1"
            )

    def choose(self, *, key: str | None, draw: float) -> Release:
        """The release a call goes to: by ``key``'s bucket if given, else by ``draw`` (uniform in [0, 1))."""
        share = key_bucket(self.model, key) if key is not None else draw
        return Release(self.model, self.candidate if share < self.weight else self.baseline)


@dataclass(frozen=True, slots=True)
class Routed(Generic[T]):
    """A result and the release that produced it."""

    release: Release
    value: T


def key_bucket(model: str, key: str) -> float:
    """A key's fixed place in [0, 1): its SHA-256 (stable across processes, unlike ``hash``), per model."""
    digest = hashlib.sha256(f"{model}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(route: Release | TrafficSplit, *, key: str | None, draw: float) -> Release:
    """The release a call goes to: ``route`` itself when it names one."""
    return route if isinstance(route, Release) else route.choose(key=key, draw=draw)
