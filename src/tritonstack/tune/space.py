"""The values each knob may take, as ordered lists a hill-climb steps along.

Ordered, so that a step to a neighbour is a small change in one direction and
a direction that stops paying can be abandoned (see ``search``). The lists
hold what matters on a CPU: the bundled MiniLM is fastest one row per ONNX
Runtime call on a 2-core machine, a larger model or a wider CPU wants chunks
of a few rows, and the Triton batch as a whole rarely wins against length
groups of trimmed rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tritonstack.in_triton import contract
from tritonstack.tune.knobs import Knobs

# 0 (no limit) last: it is the largest call
ROWS_PER_CALL = (1, 2, 4, 8, 16, 0)
# () last: without a preferred size Triton forms the largest batch it can within the delay
PREFERRED_BATCH: tuple[tuple[int, ...], ...] = ((2,), (4,), (8,), (16,), ())
ENCODER_DELAY_US = (0, 100, 250, 500, 1000, 2000, 4000)
TOKENIZER_DELAY_US = (0, 250, 500, 1000, 2000, 4000)
PADDING_WASTE = (0.0, 0.1, 0.25, 0.5, 1.0)

# ONNX Runtime operators that quantize activations with one scale per call: a text's result then depends on
# the texts it was batched with, so such an encoder must run one row per call (max_rows_per_call 1).
PER_CALL_SCALE_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def _always(knobs: Knobs) -> bool:
    return True


def _itself(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Dimension:
    """One knob (or a pair that moves together), its ordered values, and when it matters at all."""

    name: str
    values: tuple[Any, ...]  # in the order of ``order``
    get: Callable[[Knobs], Any]
    set: Callable[[Knobs, Any], Knobs]
    applies: Callable[[Knobs], bool] = _always
    order: Callable[[Any], Any] = _itself  # sort key of the values

    def around(self, knobs: Knobs) -> tuple[tuple[Any, ...], int]:
        """The values with ``knobs``' own inserted in order where it is not one of them, and its index."""
        current = self.get(knobs)
        values = self.values if current in self.values else tuple(sorted((*self.values, current), key=self.order))
        return values, values.index(current)


def _no_limit_last(value: Any) -> Any:
    """Order of values where the empty one means "no limit": 0 rows per call, no preferred batch size."""
    return (not value, value)


def shared_threads(cores: int, instances: int) -> int:
    """Intra-op threads per encoder instance when the config sets none: the embedded backend's share of the
    server's cores (``default_threads`` in in_triton/backends/onnxruntime/model.py)."""
    return max(1, cores // max(1, instances))


def encoder_splits(cores: int) -> tuple[tuple[int, int], ...]:
    """(instances, intra-op threads per instance): 1 x cores, 2 x cores/2, 4 x cores/4, ... up to
    ``max(2, cores)`` instances, at least one thread each.

    Two instances are a candidate even on one core (two single-threaded instances sharing it): under a
    queue policy, Triton 2.51's dynamic batcher stalls while its only instance is busy and a second one
    avoids that (docs/tune.md). Exports and tune write no queue policy now, but a repository may still have
    one, and whether two processes taking turns pay is per machine (docs/bench.md).
    """
    most = max(2, cores)
    splits = []
    instances = 1
    while instances <= most:
        splits.append((instances, shared_threads(cores, instances)))
        instances *= 2
    if splits[-1][0] != most:
        splits.append((most, 1))
    return tuple(splits)


def per_call_activation_scales(onnx_path: Path) -> bool:
    """Whether the graph quantizes activations once per call (dynamic int8), from its operators."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(node.op_type in PER_CALL_SCALE_OPS for node in graph.node)


def _ensemble_only(knobs: Knobs) -> bool:
    return knobs.layout == contract.ENSEMBLE_LAYOUT


def dimensions(
    *, cores: int, max_batch_size: int, rows_fixed: bool, layouts: tuple[str, ...] = (contract.ENSEMBLE_LAYOUT,)
) -> list[Dimension]:
    """The knobs to search on ``cores`` server cores, most influential first.

    ``rows_fixed``: the encoder must keep one row per call (``per_call_activation_scales``). ``layouts``: the
    layouts to try (``repository/layouts.py``), the one the repository runs first.
    """

    def set_split(knobs: Knobs, split: tuple[int, int]) -> Knobs:
        instances, threads = split
        # the backend's own share is written as 0 (absent): the embedded backend then splits the cores the
        # server runs on among the instances, which keeps the config right on more or fewer cores
        threads_written = 0 if threads == shared_threads(cores, instances) else threads
        return replace(knobs, encoder_instances=instances, encoder_threads=threads_written)

    found = [
        # first: the fused layout saves a Python process, a hop and a copy per request (docs/export.md); the
        # other knobs are then searched for the layout that won
        Dimension("layout", layouts, lambda k: k.layout, lambda k, v: replace(k, layout=v)),
        # then: a split that stalls (one instance under a queue policy, which a repository may still have, see
        # ``encoder_splits``) misses the half-load point by several times whatever the other knobs are
        Dimension(
            "encoder_split",
            encoder_splits(cores),
            lambda k: (k.encoder_instances, k.encoder_threads or shared_threads(cores, k.encoder_instances)),
            set_split,
        ),
        Dimension(
            "rows_per_call",
            ROWS_PER_CALL,
            lambda k: k.rows_per_call,
            lambda k, v: replace(k, rows_per_call=v),
            order=_no_limit_last,
        ),
        Dimension(
            "encoder_delay_us",
            ENCODER_DELAY_US,
            lambda k: k.encoder_delay_us,
            lambda k, v: replace(k, encoder_delay_us=v),
        ),
        Dimension(
            "preferred_batch",
            tuple(p for p in PREFERRED_BATCH if all(size <= max_batch_size for size in p)),
            lambda k: k.preferred_batch,
            lambda k, v: replace(k, preferred_batch=v),
            order=_no_limit_last,
        ),
        Dimension(
            "tokenizer_instances",
            tuple(sorted({1, 2} | {n for n in (4, 8) if n <= cores})),
            lambda k: k.tokenizer_instances,
            lambda k, v: replace(k, tokenizer_instances=v),
            applies=_ensemble_only,  # the fused step tokenizes itself
        ),
        Dimension(
            "tokenizer_delay_us",
            TOKENIZER_DELAY_US,
            lambda k: k.tokenizer_delay_us,
            lambda k, v: replace(k, tokenizer_delay_us=v),
            applies=_ensemble_only,
        ),
        Dimension(
            "max_padding_waste",
            PADDING_WASTE,
            lambda k: k.max_padding_waste,
            lambda k, v: replace(k, max_padding_waste=v),
            # one row per call pads nothing
            applies=lambda k: k.rows_per_call != 1,
        ),
    ]
    if rows_fixed:
        found = [d for d in found if d.name not in ("rows_per_call", "max_padding_waste")]
    return [d for d in found if len(d.values) > 1]
