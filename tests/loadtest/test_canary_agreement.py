"""The canary's agreement figure, by task: cosine for embeddings, equal labels, and for a ranking the same
document at each rank -- each labelled as what it compares."""

from __future__ import annotations

import numpy as np
import pytest

from tritonstack.in_triton import contract
from tritonstack.loadtest.agreement import agreement_metric, compare_answers


def test_every_task_the_canary_can_send_has_its_own_label() -> None:
    labels = {name: agreement_metric(contract.task(name)) for name in contract.SDK_TASKS}
    assert labels == {
        "feature-extraction": "cosine",
        "text-classification": "same label",
        "text-ranking": "same document at each rank",
    }


def test_rankings_agree_by_the_document_at_each_rank() -> None:
    ranking = contract.TEXT_RANKING
    baseline = ["2", "0", "3", "1"]  # the documents' indices, best first (canary._answers)
    same = compare_answers(ranking, baseline, list(baseline))
    assert (same.metric, same.texts, same.mean, same.min) == ("same document at each rank", 4, 1.0, 1.0)
    swapped = compare_answers(ranking, baseline, ["0", "2", "3", "1"])  # the top two traded places
    assert (swapped.mean, swapped.min) == (0.5, 0.0)
    assert swapped.to_dict()["metric"] == "same document at each rank"


def test_labels_and_vectors_agree_as_before() -> None:
    labels = compare_answers(contract.TEXT_CLASSIFICATION, ["POSITIVE", "NEGATIVE"], ["POSITIVE", "POSITIVE"])
    assert (labels.metric, labels.mean, labels.min) == ("same label", 0.5, 0.0)
    vectors = np.array([[1.0, 0.0], [0.0, 2.0]])
    cosine = compare_answers(contract.FEATURE_EXTRACTION, vectors, np.array([[2.0, 0.0], [1.0, 1.0]]))
    assert cosine.metric == "cosine" and cosine.min == pytest.approx(np.sqrt(0.5))
    assert cosine.mean == pytest.approx((1.0 + np.sqrt(0.5)) / 2)
