"""The int8 search on tiny models: smoothing is exact in fp32, the walk is greedy and conditional, the gate
split decides, what the search measured is reported, round-trips and is cached."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tinymodels
from tritonstack.export.candidates import Candidate
from tritonstack.export.errors import AccuracyGateError
from tritonstack.export.gates import Gate
from tritonstack.export.options import ExportOptions, Precision
from tritonstack.export.parity import Parity, compute_reference, run_onnx, tokenize_batches
from tritonstack.export.pipeline import export_model
from tritonstack.export.report import ExportReport, sensitivity_table
from tritonstack.export.search import SplitFeeds, search_mixes
from tritonstack.export.sensitivity import MAX_FP32_NODES, MixSearch
from tritonstack.export.smoothing import SWITCH_INPUT, SmoothableGraph
from tritonstack.export.texts import CALIBRATION, builtin_split
from tritonstack.in_triton import contract
from tritonstack.repository.config import parameter, parse

FAST = {"progress": False, "reps": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny bert (seed 0) exported to fp32 ONNX, and its calibration split as one-text-per-call feeds."""
    from tritonstack.export.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("int8-tiny")
    model_dir = tinymodels.build(root / "bert", "bert", "feature-extraction", seed=0)
    export = export_onnx(model_dir, None, root / "onnx")
    texts = builtin_split(CALIBRATION).texts
    feeds = tokenize_batches(
        export.tokenizer_dir, texts, export.max_sequence_length, export.input_names, rows_per_call=1
    )
    return export, SplitFeeds(compute_reference(export, texts), feeds, 1)


def _session(model: Any) -> Any:
    from tritonstack.export.benchmark import make_session

    return make_session(model, threads=1)


def test_smoothing_is_exact_in_fp32_and_the_switchboard_runs_every_mix_as_built(tiny: Any) -> None:
    export, calibration = tiny
    graph = SmoothableGraph(export.onnx_path)
    assert len(graph.nodes) >= 12  # q, k, v, attention output, ffn up and down of two layers
    assert any(len(members) == 3 for members in graph.groups.values())  # q, k, v read one activation
    scales = graph.scales(graph.activation_maxima(_session, calibration.feeds), alpha=0.75)
    fp32 = run_onnx(_session(export.onnx_path), calibration.feeds, False)

    smoothed_fp32 = run_onnx(_session(graph.build(scales, graph.nodes)), calibration.feeds, False)
    np.testing.assert_allclose(smoothed_fp32, fp32, atol=2e-5)  # X/s . sW = XW

    board = _session(graph.switchboard(scales))
    for kept in ((), (graph.nodes[5],), (graph.nodes[0], graph.nodes[11])):
        built = run_onnx(_session(graph.build(scales, kept)), calibration.feeds, False)
        switch = np.array([n not in kept for n in graph.nodes])
        switched = run_onnx(board, calibration.feeds, False, {SWITCH_INPUT: switch})
        np.testing.assert_allclose(switched, built, atol=1e-6)
        assert np.abs(built - fp32).max() > 1e-4  # int8 somewhere: not the fp32 model
    with pytest.raises(ValueError, match="no weighted MatMul"):
        graph.build(scales, ("nonexistent",))


def _search(tiny: Any, cache_root: Path | None = None) -> MixSearch:
    from tritonstack.export.cache import SearchCache

    export, calibration = tiny
    graph = SmoothableGraph(export.onnx_path)
    cache = SearchCache("0" * 64, "test", cache_root)
    return MixSearch(graph, calibration.reference, calibration.feeds, Gate(0.99), _session, cache)


def test_the_ranking_is_deterministic_for_a_seed_and_each_step_is_conditional_on_the_last(tiny: Any) -> None:
    runs = []
    for _ in range(2):
        search = _search(tiny)
        alpha = search.choose_alpha()
        walk = search.walk()
        steps = [next(walk) for _ in range(3)]
        runs.append((alpha, search.alpha_trials, steps))
    assert runs[0] == runs[1]
    alpha, trials, steps = runs[0]
    assert alpha in {t.alpha for t in trials} and len(trials) >= 5
    assert steps[0].fp32_nodes == () and steps[0].trials == ()
    for before, after in itertools.pairwise(steps):
        assert after.fp32_nodes[:-1] == before.fp32_nodes  # greedy: keeps what it kept
        ranked = [t.node for t in after.trials]
        assert after.fp32_nodes[-1] == ranked[0] and not set(before.fp32_nodes) & set(ranked)
        values = [t.value for t in after.trials]
        assert values == sorted(values, reverse=True) and after.value == values[0]


def test_the_greedy_walk_stops_at_the_first_passing_mix(tiny: Any, tmp_path: Path) -> None:
    export, calibration = tiny
    judged: list[tuple[tuple[str, ...], bool]] = []

    def judge(candidate: Candidate) -> None:  # the gate split's verdict, staged: the third mix passes...
        assert candidate.recipe is not None
        judged.append((candidate.fp32_nodes, candidate.recipe.per_token))
        # ...and per token (finer scales), already the second
        passes = len(candidate.fp32_nodes) == 2 or (candidate.recipe.per_token and len(candidate.fp32_nodes) == 1)
        candidate.parity = Parity("min_cosine", 0.995 if passes else 0.95, 0.99, {})

    candidates, sensitivity = search_mixes(export, calibration, Gate(0.99), tmp_path, judge, cache_root=tmp_path)
    per_call = [nodes for nodes, per_token in judged if not per_token]
    assert [len(nodes) for nodes in per_call] == [0, 1, 2]
    # each mix also per token, until one passes: one with more fp32 MatMuls would only be slower
    assert [len(nodes) for nodes, per_token in judged if per_token] == [0, 1]
    per_call_candidates = [c for c in candidates if c.recipe and not c.recipe.per_token]
    assert [c.passed for c in per_call_candidates] == [False, False, True]
    assert all(c.path is not None and c.path.is_file() and c.max_rows_per_call == 1 for c in per_call_candidates)
    per_token_candidates = [c for c in candidates if c.recipe and c.recipe.per_token]
    assert [c.passed for c in per_token_candidates] == [False, True]
    assert all(c.path is not None and c.path.is_file() and c.max_rows_per_call == 0 for c in per_token_candidates)
    assert [c.name for c in per_token_candidates] == [c.name + "_per_token" for c in per_call_candidates[:2]]
    assert [s.fp32_nodes for s in sensitivity.steps] == per_call
    (cached,) = (tmp_path / "export").glob("*.json")
    assert len(json.loads(cached.read_text())["steps"]) == 3  # nothing measured beyond the first pass


def test_a_gate_no_mix_can_pass_is_refused_with_the_numbers(tiny: Any, tmp_path: Path) -> None:
    export, _ = tiny
    repository = tmp_path / "repo"
    with pytest.raises(AccuracyGateError) as caught:
        export_model(
            ExportOptions(
                str(export.model_dir),
                repository=repository,
                precision=Precision.INT8,
                recipes=(),
                gate=Gate(1.01),
                cache_dir=tmp_path / "cache",
                **FAST,
            )
        )
    error = caught.value
    assert "min_cosine >= 1.01" in error.message and "nothing written" in error.message
    assert error.hint and "best candidate reached" in error.hint
    report = error.report
    assert report is not None and report.status == "refused" and report.sensitivity is not None
    walked = min(MAX_FP32_NODES, len(SmoothableGraph(export.onnx_path).nodes)) + 1
    assert len(report.sensitivity.steps) == walked  # walked to the limit, none passed
    mixes = [c for c in report.candidates if c.recipe and c.recipe.smoothing_alpha is not None]
    per_call = [c for c in mixes if c.recipe and not c.recipe.per_token]
    assert len(per_call) == walked and not any(c.passed for c in mixes)
    assert len(mixes) == 2 * walked  # each also per token (none passed)
    numbers = {row["name"]: row["value"] for row in error.measured["candidates"]}
    assert set(numbers) == {c.name for c in mixes} and all(0.0 < v < 1.01 for v in numbers.values())
    assert ExportReport.from_json(report.to_json()) == report
    assert not repository.exists()


def test_the_int8_report_round_trips_and_a_reexport_replays_the_cache(tiny: Any, tmp_path: Path) -> None:
    export, _ = tiny
    options = ExportOptions(
        str(export.model_dir),
        name="tiny",
        repository=tmp_path / "repo",
        precision=Precision.INT8,
        recipes=(),
        gate=Gate(0.9),
        cache_dir=tmp_path / "cache",
        **FAST,
    )
    first = export_model(options).report
    assert first.chosen is not None and first.sensitivity is not None and not first.sensitivity.cached
    assert first.chosen.recipe is not None and first.chosen.recipe.smoothing_alpha == first.sensitivity.alpha
    assert first.chosen.calibration is not None and first.chosen.parity is not None
    assert first.chosen.parity.figure("top10_overlap") is not None  # retrieval agreement, gate split
    assert first.frontier and first.splits[CALIBRATION].count == len(builtin_split(CALIBRATION))
    assert ExportReport.from_json(first.to_json()) == first
    assert "smoothing  alpha" in sensitivity_table(first)
    encoder = parse((tmp_path / "repo" / contract.encoder_name("tiny") / "config.pbtxt").read_text())
    # dynamic int8 with one activation scale per call: one text per call; a per-token twin: no limit
    rows = "1" if not first.chosen.recipe.per_token else None
    assert parameter(encoder, contract.MAX_ROWS_PER_CALL_PARAMETER) == rows

    second = export_model(options).report
    assert second.sensitivity is not None and second.sensitivity.cached
    assert second.sensitivity.steps == first.sensitivity.steps
    assert second.sensitivity.alpha_trials == first.sensitivity.alpha_trials
    # the replayed search builds and gates the same candidates to the same figures; which passing one is fastest
    # is timed again (a smoothed mix and its per-token twin can be equally fast on a tiny model)
    gated = {c.name: (c.passed, c.parity) for c in first.candidates}
    assert {c.name: (c.passed, c.parity) for c in second.candidates} == gated
    assert second.chosen is not None and gated[second.chosen.name][0]
    assert second.parity == gated[second.chosen.name][1]


@pytest.mark.parametrize(
    ("architecture", "task", "gate"),
    [
        ("distilbert", "text-classification", Gate.parse("max_abs_prob_diff=0.2")),
        ("roberta", "token-classification", Gate(0.9)),
    ],
)
def test_classifiers_get_the_int8_search_gated_on_their_own_figures(
    architecture: str, task: str, gate: Gate, tmp_path: Path
) -> None:
    model_dir = tinymodels.build(tmp_path / architecture, architecture, task, seed=3)
    report = export_model(
        ExportOptions(
            str(model_dir),
            repository=tmp_path / "repo",
            precision=Precision.INT8,
            recipes=(),
            gate=gate,
            cache_dir=None,
            **FAST,
        )
    ).report
    metric = gate.for_task(task).metric
    assert report.gate.metric is metric and report.sensitivity is not None
    assert report.sensitivity.metric == str(metric)
    assert report.chosen is not None and report.chosen.parity is not None and report.chosen.calibration is not None
    for figures in (report.chosen.parity, report.chosen.calibration):
        assert {"label_agreement", "max_abs_prob_diff"} <= set(figures.details)
        assert figures.figure("min_cosine") is None  # no embeddings, no cosine
    assert report.chosen.parity.passed and gate.for_task(task).passes(report.chosen.parity.value)


def test_the_cache_is_keyed_by_model_and_search_and_a_bad_entry_is_a_miss(tmp_path: Path) -> None:
    from tritonstack.export.cache import SearchCache, search_key

    model = "ab" * 32
    cache = SearchCache(model, search_key({"texts": ["a"]}), tmp_path)
    assert cache.load() is None
    cache.store({"alpha": 0.75})
    assert cache.load() == {"alpha": 0.75}
    assert SearchCache(model, search_key({"texts": ["b"]}), tmp_path).load() is None  # other texts
    assert SearchCache("cd" * 32, search_key({"texts": ["a"]}), tmp_path).load() is None  # other model
    assert cache.path is not None
    cache.path.write_text("{not json")
    assert cache.load() is None
    disabled = SearchCache(model, "k", None)
    disabled.store({"alpha": 0.5})
    assert disabled.load() is None and [p.name for p in (tmp_path / "export").iterdir()] == [cache.path.name]
