"""How long each measurement runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Per point: ``rounds`` windows of ``duration_s``, each after ``warmup_s`` of unmeasured load."""

    rounds: int = 3
    warmup_s: float = 2.0
    duration_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.warmup_s < 0 or self.duration_s <= 0:
            raise ValueError("need rounds >= 1, warmup_s >= 0 and duration_s > 0")

    @property
    def point_s(self) -> float:
        """The planned seconds of one point: its rounds, each a warm-up and a window."""
        return self.rounds * (self.warmup_s + self.duration_s)
