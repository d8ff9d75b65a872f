"""Which MatMuls must stay fp32, measured jointly on the calibration split.

Two measurements, both on the calibration split only (the gate split never
steers them):

1. **Smoothing strength.** ``alpha`` is tried on a coarse grid, then refined
   around the best, with every MatMul int8; the best calibration figure wins.
   It matters: on MiniLM 0.5 and 0.9 both lose most of what 0.75 gains.
2. **Greedy, conditional sensitivity.** Quantizing one MatMul at a time costs
   little each, yet the errors add up across layers, so a ranking by
   one-at-a-time sensitivity needs many fp32 islands. Instead each step keeps
   fp32 the MatMul whose fp32 gives the best figure *given the ones already
   kept*, and the caller gates each step's mix and stops at the first that
   passes: the fewest islands, each of which costs speed. One switchboard
   session (``SmoothableGraph.switchboard``) scores every mix of a step.

What a step measured is cached per model (``cache.py``), so a re-export
replays it instead of measuring again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tritonstack.export.cache import SearchCache
from tritonstack.export.gates import Gate, GateMetric
from tritonstack.export.parity import Parity, Reference, compare, run_onnx
from tritonstack.export.smoothing import SWITCH_INPUT, SmoothableGraph
from tritonstack.in_triton import contract

COARSE_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
ALPHA_REFINEMENT = 0.05  # then the best coarse alpha +- this
MAX_FP32_NODES = 6  # each fp32 island costs ~5 % of int8's speed on MiniLM: beyond six, fp32 is as fast
# What breaks a tie of the gate's figure (label agreement is coarse on a few dozen texts), and its sign:
# -1 where lower is better
_TIEBREAK = {
    GateMetric.MIN_COSINE: ("mean_cosine", 1.0),
    GateMetric.TOP10_OVERLAP: (GateMetric.PAIRWISE_SPEARMAN.value, 1.0),
    GateMetric.PAIRWISE_SPEARMAN: (GateMetric.MIN_COSINE.value, 1.0),
    GateMetric.LABEL_AGREEMENT: (GateMetric.MAX_ABS_PROB_DIFF.value, -1.0),
    GateMetric.MAX_ABS_PROB_DIFF: (GateMetric.LABEL_AGREEMENT.value, 1.0),
    GateMetric.RANK_SPEARMAN: (GateMetric.MAX_ABS_SCORE_DIFF.value, -1.0),
    GateMetric.RANK_TOP1_AGREEMENT: (GateMetric.RANK_SPEARMAN.value, 1.0),
    GateMetric.RANK_TOP3_OVERLAP: (GateMetric.RANK_SPEARMAN.value, 1.0),
    GateMetric.MAX_ABS_SCORE_DIFF: (GateMetric.RANK_SPEARMAN.value, 1.0),
}


def score(parity: Parity) -> tuple[float, float]:
    """A parity as a sortable score, higher is better: the gate's figure, then its tie-break."""
    metric = GateMetric(parity.metric)
    tiebreak, tiebreak_sign = _TIEBREAK[metric]
    sign = 1.0 if metric.higher_is_better else -1.0
    return sign * parity.value, tiebreak_sign * float(parity.details[tiebreak])


@dataclass(frozen=True)
class AlphaTrial:
    alpha: float
    value: float  # the gate's figure on the calibration split, every MatMul int8


@dataclass(frozen=True)
class NodeTrial:
    node: str
    value: float  # the gate's figure on the calibration split with this node fp32 as well


@dataclass(frozen=True)
class WalkStep:
    """One mix of the greedy walk: step 0 has every MatMul int8, step k keeps k of them fp32."""

    fp32_nodes: tuple[str, ...]  # in the order they were chosen
    value: float  # the gate's figure on the calibration split
    trials: tuple[NodeTrial, ...] = ()  # this step's ranking: every node it tried, best first

    def to_dict(self) -> dict[str, Any]:
        return {
            "fp32_nodes": list(self.fp32_nodes),
            "value": self.value,
            "trials": [{"node": t.node, "value": t.value} for t in self.trials],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WalkStep:
        trials = tuple(NodeTrial(t["node"], t["value"]) for t in data["trials"])
        return cls(tuple(data["fp32_nodes"]), data["value"], trials)


@dataclass(frozen=True)
class Sensitivity:
    """What the search measured on the calibration split: the smoothing strength and the walk."""

    metric: str  # the gate's metric every value here is
    alpha: float
    alpha_trials: tuple[AlphaTrial, ...]
    steps: tuple[WalkStep, ...]  # as far as the export walked
    cached: bool  # replayed from the cache rather than measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "alpha": self.alpha,
            "alpha_trials": [{"alpha": t.alpha, "value": t.value} for t in self.alpha_trials],
            "steps": [s.to_dict() for s in self.steps],
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sensitivity:
        return cls(
            data["metric"],
            data["alpha"],
            tuple(AlphaTrial(t["alpha"], t["value"]) for t in data["alpha_trials"]),
            tuple(WalkStep.from_dict(s) for s in data["steps"]),
            data["cached"],
        )


def _rounded(value: float) -> float:
    return round(float(value), 6)


class MixSearch:
    """The smoothing strength and the greedy walk for one model, on the calibration split.

    ``open_session(model_proto)`` opens an ONNX Runtime session; ``progress(what)``
    names each measurement as it starts and ``grow(n)`` announces ``n`` more.
    """

    def __init__(
        self,
        graph: SmoothableGraph,
        reference: Reference,
        feeds: Sequence[dict[str, np.ndarray]],
        gate: Gate,
        open_session: Callable[[Any], Any],
        cache: SearchCache,
        *,
        progress: Callable[[str], None] = lambda _: None,
        grow: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.graph, self.reference, self.feeds, self.gate = graph, reference, list(feeds), gate
        self.open_session, self.cache, self.progress, self.grow = open_session, cache, progress, grow
        metric = gate.for_task(reference.task).metric
        assert metric is not None  # for_task resolves it
        self.metric = metric
        cached = cache.load() or {}
        self.alpha: float | None = cached.get("alpha")
        self.alpha_trials = tuple(AlphaTrial(t["alpha"], t["value"]) for t in cached.get("alpha_trials", []))
        self.steps = [WalkStep.from_dict(s) for s in cached.get("steps", [])] if self.alpha is not None else []
        self.cached = self.alpha is not None
        self.walked = 0  # steps the caller has taken: the report shows those, not the whole cache
        self.maxima: dict[str, np.ndarray] | None = None
        self._switchboard: Any = None

    def activation_maxima(self) -> dict[str, np.ndarray]:
        if self.maxima is None:
            self.progress("smoothing: activation ranges")
            self.maxima = self.graph.activation_maxima(self.open_session, self.feeds)
        return self.maxima

    def scales(self, alpha: float) -> dict[str, np.ndarray]:
        return self.graph.scales(self.activation_maxima(), alpha)

    def _parity(self, session: Any, extra: dict[str, np.ndarray] | None = None) -> Parity:
        outputs = run_onnx(session, self.feeds, contract.task(self.reference.task).token_level, extra)
        return compare(self.reference, outputs, self.gate)

    def calibration_parity(self, model: Any) -> Parity:
        """The figures of a built mix on the calibration split."""
        return self._parity(self.open_session(model))

    def choose_alpha(self) -> float:
        """The smoothing strength with the best calibration score (``score``), every MatMul int8."""
        if self.alpha is None:
            trials: dict[float, tuple[tuple[float, float], float]] = {}

            def trial(alpha: float) -> None:
                alpha = round(alpha, 3)
                if alpha not in trials and 0.0 < alpha < 1.0:
                    self.progress(f"smoothing: alpha {alpha}")
                    parity = self.calibration_parity(self.graph.build(self.scales(alpha)))
                    trials[alpha] = (score(parity), parity.value)

            self.grow(len(COARSE_ALPHAS) + 3)
            for alpha in COARSE_ALPHAS:
                trial(alpha)
            best = max(trials, key=lambda a: trials[a][0])
            for alpha in (best - ALPHA_REFINEMENT, best + ALPHA_REFINEMENT):
                trial(alpha)
            self.alpha = max(trials, key=lambda a: trials[a][0])
            self.alpha_trials = tuple(AlphaTrial(a, _rounded(v)) for a, (_, v) in sorted(trials.items()))
            self._store()
        return self.alpha

    def walk(self, max_fp32_nodes: int = MAX_FP32_NODES) -> Iterator[WalkStep]:
        """Step 0 (every MatMul int8), then one more fp32 MatMul per step, lazily: stop iterating at the
        first mix that passes. Ends when ``max_fp32_nodes`` are fp32 or every node is."""
        alpha = self.choose_alpha()
        limit = min(max_fp32_nodes, len(self.graph.nodes))
        for index in range(limit + 1):
            if index == len(self.steps):
                self.steps.append(self._measure_step(alpha))
                self._store()
            self.walked = index + 1
            yield self.steps[index]

    def _measure_step(self, alpha: float) -> WalkStep:
        if not self.steps:
            self.progress("sensitivity: every MatMul int8")
            parity = self.calibration_parity(self.graph.build(self.scales(alpha)))
            return WalkStep((), _rounded(parity.value))
        kept = self.steps[-1].fp32_nodes
        remaining = [n for n in self.graph.nodes if n not in kept]
        self.grow(len(remaining))
        if self._switchboard is None:
            self._switchboard = self.open_session(self.graph.switchboard(self.scales(alpha)))
        scored = []
        for number, node in enumerate(remaining, 1):
            self.progress(f"sensitivity step {len(kept) + 1}: {number}/{len(remaining)}")
            switch = np.array([n not in kept and n != node for n in self.graph.nodes])
            parity = self._parity(self._switchboard, {SWITCH_INPUT: switch})
            scored.append((score(parity), node, parity.value))
        # best first; ties in graph order, so the ranking is a function of the model and texts alone
        scored.sort(key=lambda s: (-s[0][0], -s[0][1], self.graph.nodes.index(s[1])))
        trials = tuple(NodeTrial(node, _rounded(value)) for _, node, value in scored)
        return WalkStep((*kept, trials[0].node), trials[0].value, trials)

    def result(self) -> Sensitivity:
        alpha, steps = self.choose_alpha(), tuple(self.steps[: self.walked])
        return Sensitivity(self.metric.value, alpha, self.alpha_trials, steps, self.cached)

    def _store(self) -> None:
        self.cache.store(
            {
                "alpha": self.alpha,
                "alpha_trials": [{"alpha": t.alpha, "value": t.value} for t in self.alpha_trials],
                "steps": [s.to_dict() for s in self.steps],
            }
        )
