"""export --task text-ranking: (query, document) pairs of the built-in texts, the per-query ranking figures, the
gate on pairs the search did not use, and a tiny cross-encoder exported end to end (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tritonstack.export.errors import ExportError
from tritonstack.export.gates import Gate, GateMetric
from tritonstack.export.options import ExportOptions, Precision
from tritonstack.export.parity import ranking_agreement
from tritonstack.export.pipeline import export_model
from tritonstack.export.registry import infer_task, optimum_task
from tritonstack.export.report import ExportReport, summarize
from tritonstack.export.texts import DOCUMENTS_PER_QUERY, QUERY_KIND, load_splits

FAST = {"progress": False, "reps": 1, "mixes": False, "cache_dir": None}


def test_pairs_are_each_query_with_documents_of_its_own_split_the_same_every_time() -> None:
    splits = load_splits().paired()
    again = load_splits().paired()
    assert splits == again
    for split in (splits.calibration, splits.gate):
        assert split.text_pairs is not None and len(split.text_pairs) == len(split.texts)
        assert split.queries * DOCUMENTS_PER_QUERY == len(split)
        assert QUERY_KIND not in split.kinds  # the documents are the other kinds
        for query in set(split.texts):
            documents = [d for q, d in zip(split.texts, split.text_pairs, strict=True) if q == query]
            assert len(set(documents)) == DOCUMENTS_PER_QUERY
    gate, calibration = splits.gate, splits.calibration
    assert gate.text_pairs is not None and calibration.text_pairs is not None
    gate_texts = set(gate.texts) | set(gate.text_pairs)
    assert not gate_texts & (set(calibration.texts) | set(calibration.text_pairs))  # held out from the search


def test_ranking_figures_are_per_query() -> None:
    queries = ["a"] * 4 + ["b"] * 4
    reference = np.array([4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0])
    assert ranking_agreement(queries, reference, reference + 0.01) == {
        "rank_spearman": 1.0, "rank_top1_agreement": 1.0, "rank_top3_overlap": 1.0,
        "min_query_spearman": 1.0, "worst_query_index": 0, "queries": 2,
    }  # fmt: skip
    swapped = reference.copy()
    swapped[[4, 7]] = swapped[[7, 4]]  # query b's best and worst change places
    figures = ranking_agreement(queries, reference, swapped)
    assert figures["rank_top1_agreement"] == 0.5 and figures["worst_query_index"] == 1
    assert figures["rank_top3_overlap"] == pytest.approx((1 + 2 / 3) / 2)
    assert figures["min_query_spearman"] == pytest.approx(-0.8)  # ranks 0123 vs 3120: 1 - 6 * 18 / 60
    assert figures["rank_spearman"] == pytest.approx((1 - 0.8) / 2)


def test_the_ranking_gate_fits_only_the_ranking_task() -> None:
    assert Gate().for_task("text-ranking").metric is GateMetric.RANK_SPEARMAN
    assert Gate.parse("max_abs_score_diff=0.1").for_task("text-ranking").passes(0.05)
    with pytest.raises(ExportError, match="--gate min_cosine does not apply to text-ranking"):
        Gate(0.99, GateMetric.MIN_COSINE).for_task("text-ranking")
    with pytest.raises(ExportError, match="--gate rank_spearman does not apply to text-classification") as refused:
        Gate(0.99, GateMetric.RANK_SPEARMAN).for_task("text-classification")
    assert refused.value.hint == "for text-classification use one of: label_agreement, max_abs_prob_diff"


def test_a_cross_encoder_is_inferred_from_sentence_transformers_mark(tmp_path: Path) -> None:
    head = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}
    assert infer_task(tmp_path, {**head, "sentence_transformers": {"activation_fn": "x"}}) == "text-ranking"
    assert infer_task(tmp_path, {**head, "sbert_ce_default_activation_function": "x"}) == "text-ranking"
    assert infer_task(tmp_path, head) == "text-classification"  # bge-reranker: pass --task text-ranking
    two = {"architectures": ["XLMRobertaForSequenceClassification"], "id2label": {"0": "A", "1": "B"}}
    assert infer_task(tmp_path, {**two, "sbert_ce_default_activation_function": "x"}) == "text-classification"
    assert optimum_task("text-ranking") == "text-classification"
    assert optimum_task("feature-extraction") == "feature-extraction"


def test_a_tiny_cross_encoder_exports_with_per_query_figures(tiny_reranker_dir: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    result = export_model(
        ExportOptions(str(tiny_reranker_dir), repository=repository, precision=Precision.FP32, **FAST)
    )
    report = result.report
    assert report.task == "text-ranking" and report.labels == ("LABEL_0",)  # inferred from the mark
    assert report.parity is not None and report.parity.metric == "rank_spearman" and report.parity.value == 1.0
    details = report.parity.details
    assert details["rank_top1_agreement"] == 1.0 and details["rank_top3_overlap"] == 1.0
    assert details["max_abs_score_diff"] < 1e-4
    gate = load_splits().gate
    assert details["queries"] == report.splits["gate"].queries == gate.kinds.count(QUERY_KIND)
    assert report.splits["gate"].count == report.splits["gate"].queries * DOCUMENTS_PER_QUERY
    assert "(query, document) pairs of 13 queries" in summarize(report)
    assert ExportReport.from_json(report.to_json()) == report
    text_in = json.loads((result.version_dir / "export_report.json").read_text())
    assert text_in["splits"]["gate"]["queries"] == 13
    config = (repository / "tiny_rerank" / "config.pbtxt").read_text()
    assert '"TEXT_PAIR"' in config and '"SCORE"' in config


def test_a_model_of_two_labels_is_no_reranker(tmp_path: Path) -> None:
    import tinymodels

    model = tinymodels.build(tmp_path / "cls", "bert", "text-classification")
    with pytest.raises(ExportError, match=r"has 2 labels; a text-ranking model .* has one relevance logit"):
        export_model(ExportOptions(str(model), task="text-ranking", repository=tmp_path / "repo", **FAST))
    assert not (tmp_path / "repo").exists()


def test_a_parity_query_too_long_for_max_sequence_length_is_named(tiny_reranker_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ExportError, match=r"the parity query .* tokens, which leaves its documents no room in"
    ) as error:
        export_model(
            ExportOptions(
                str(tiny_reranker_dir), repository=tmp_path / "repo", precision=Precision.FP32,
                max_sequence_length=32, **FAST,
            )
        )  # fmt: skip
    assert error.value.hint == "raise --max-sequence-length"
    assert not (tmp_path / "repo").exists()


@pytest.mark.slow
def test_int8_is_gated_on_the_rankings_of_held_out_pairs(tiny_reranker_dir: Path, tmp_path: Path) -> None:
    options = {**FAST, "mixes": True}
    result = export_model(
        ExportOptions(str(tiny_reranker_dir), repository=tmp_path / "repo", precision=Precision.INT8, **options)
    )
    report = result.report
    assert report.precision == "int8" and report.parity is not None and report.parity.passed
    assert report.parity.metric == "rank_spearman" and report.parity.value >= 0.99
    chosen = report.chosen
    assert chosen is not None and chosen.calibration is not None  # measured on both splits, gated on one
    assert {"rank_top1_agreement", "rank_top3_overlap", "max_abs_score_diff"} <= set(report.parity.details)
