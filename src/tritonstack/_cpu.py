"""This machine's CPU as ``/proc/cpuinfo`` describes it: model name, clocks and feature flags.

The one reader of that file: the export report records the int8 features
(int8 pays off only with VNNI/AMX), the benchmark derives the CPU's peak from
the clocks and vector flags. Standard library only, so either may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# What int8 speed depends on: VNNI and AMX multiply int8 natively; plain AVX2 needs extra instructions.
INT8_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"})
_UNKNOWN_MODEL = "unknown CPU"


@dataclass(frozen=True)
class CpuInfo:
    """The fields of ``/proc/cpuinfo`` we use; empty where the file says nothing (or is not there)."""

    model: str = _UNKNOWN_MODEL
    clocks_mhz: tuple[float, ...] = ()  # each logical CPU's current clock ("cpu MHz")
    flags: frozenset[str] = frozenset()  # the first processor's feature flags

    @property
    def int8_features(self) -> tuple[str, ...]:
        """The flags int8 throughput depends on, sorted."""
        return tuple(sorted(self.flags & INT8_FLAGS))


def parse_cpuinfo(text: str) -> CpuInfo:
    """The ``CpuInfo`` of ``/proc/cpuinfo`` text."""
    model, clocks, flags = _UNKNOWN_MODEL, [], frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            model = value
        elif key == "cpu MHz":
            clocks.append(float(value))
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, tuple(clocks), flags)


def read_cpuinfo(path: Path = CPUINFO) -> CpuInfo:
    """This machine's CPU; an empty ``CpuInfo`` where ``path`` cannot be read (not Linux)."""
    try:
        return parse_cpuinfo(path.read_text())
    except OSError:
        return CpuInfo()
