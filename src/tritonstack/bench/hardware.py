"""This CPU's theoretical peak, and what an encoder costs per token: the GFLOP/s estimate.

Peak = cores x clock x operations per cycle per core. The clock is read from
``lscpu`` ("CPU max MHz") or ``/proc/cpuinfo`` ("cpu MHz", the current clock
under a hypervisor), so the peak is an estimate, not a datasheet figure.
Operations per cycle assume two FMA (and two VNNI) ports per core, as on
current server cores:

* fp32: 2 ports x (16 lanes with AVX-512, 8 with AVX2) x 2 (an FMA is two FLOPs);
* int8 with VNNI: 2 ports x (64 or 32 u8*s8 products per VPDPBUSD) x 2;
* int8 without VNNI: 2 x the fp32 rate (VPMADDUBSW + VPMADDWD: twice the lanes,
  one extra instruction); with AMX: 2048 int8 operations per cycle per core.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Set
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tritonstack._cpu import parse_cpuinfo, read_cpuinfo


@dataclass(frozen=True)
class CpuPeak:
    model: str
    clock_ghz: float
    clock_source: str
    cores: int  # the cores the figure is for
    isa: str  # widest fp32 vector ISA found
    fp32_flop_per_cycle: int  # per core
    int8_isa: str
    int8_op_per_cycle: int  # per core

    @property
    def fp32_gflops(self) -> float:
        return self.cores * self.clock_ghz * self.fp32_flop_per_cycle

    @property
    def int8_gops(self) -> float:
        return self.cores * self.clock_ghz * self.int8_op_per_cycle

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fp32_peak_gflops": self.fp32_gflops, "int8_peak_gops": self.int8_gops}


def _lscpu_max_mhz() -> float | None:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^CPU max MHz:\s*([\d.]+)", output, re.MULTILINE)
    return float(match.group(1)) if match else None


def vector_rates(flags: Set[str]) -> tuple[str, int, str, int]:
    """(fp32 ISA, fp32 FLOP/cycle/core, int8 ISA, int8 ops/cycle/core) from /proc/cpuinfo flags."""
    if "avx512f" in flags:
        isa, fp32 = "AVX-512", 2 * 16 * 2
    elif "avx2" in flags and "fma" in flags:
        isa, fp32 = "AVX2+FMA", 2 * 8 * 2
    elif "avx" in flags:
        isa, fp32 = "AVX", 2 * 8
    else:
        isa, fp32 = "SSE", 2 * 4
    if "amx_int8" in flags:
        int8_isa, int8 = "AMX-INT8", 2048
    elif "avx512_vnni" in flags:
        int8_isa, int8 = "AVX-512 VNNI", 2 * 64 * 2
    elif "avx_vnni" in flags:
        int8_isa, int8 = "AVX-VNNI", 2 * 32 * 2
    else:
        int8_isa, int8 = f"{isa} (no VNNI)", 2 * fp32
    return isa, fp32, int8_isa, int8


def cpu_peak(cores: int, cpuinfo: str | None = None, max_mhz: float | None = None) -> CpuPeak:
    """The peak of ``cores`` cores of this machine (or of the given ``cpuinfo`` text)."""
    info = parse_cpuinfo(cpuinfo) if cpuinfo is not None else read_cpuinfo()
    mhz = max_mhz if max_mhz is not None else (_lscpu_max_mhz() if cpuinfo is None else None)
    if mhz:
        clock_ghz, source = mhz / 1000, "lscpu CPU max MHz"
    elif info.clocks_mhz:
        clock_ghz, source = max(info.clocks_mhz) / 1000, "/proc/cpuinfo cpu MHz"
    else:
        clock_ghz, source = 2.0, "unknown (2 GHz assumed)"
    isa, fp32, int8_isa, int8 = vector_rates(info.flags)
    return CpuPeak(info.model, clock_ghz, source, cores, isa, fp32, int8_isa, int8)


@dataclass(frozen=True)
class EncoderCost:
    """FLOPs of a BERT-style encoder per token: 2 x the layers' weights, plus attention."""

    layers: int
    hidden: int
    intermediate: int

    @property
    def weight_flop_per_token(self) -> float:
        # Q, K, V, output projections (4 h^2) and the feed-forward pair (2 h i), a multiply-add each.
        return 2.0 * self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate)

    def flop_per_token(self, sequence_length: float) -> float:
        # QK^T and attention x V: 2 x 2 x sequence x hidden per token and layer.
        return self.weight_flop_per_token + 4.0 * self.layers * self.hidden * sequence_length


def encoder_cost(model_dir: Path) -> EncoderCost:
    """The encoder's shape from a Hugging Face ``config.json`` (BERT, DistilBERT, RoBERTa names)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    hidden = config.get("hidden_size", config.get("dim"))
    intermediate = config.get("intermediate_size", config.get("hidden_dim"))
    if not (layers and hidden and intermediate):
        raise ValueError(f"{model_dir}/config.json has no layer count, hidden size or intermediate size")
    return EncoderCost(int(layers), int(hidden), int(intermediate))
