"""`tritonstack loadtest` with a text-ranking SLO: each Locust request is one rerank() call of a query and
payload.documents_per_query documents, against a tiny cross-encoder on the real embedded Triton."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_loadtest_cli import LOOSE, _loadtest, _run

import tinymodels

pytestmark = pytest.mark.integration

DOCUMENTS = 4


def test_a_ranking_slo_sends_a_query_and_its_documents_per_request(rerank_triton: Any, tmp_path: Path) -> None:
    # the tiny vocabulary spells unknown words letter by letter: texts of its own words, 3 to 120 tokens
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(tinymodels.WORDS[i : i + n]) for i in range(0, 60, 5) for n in (3, 40, 120)))
    slo = tmp_path / "slo.yaml"
    slo.write_text(
        "\n".join(
            [
                "model: rerank",
                "task: text-ranking",
                "load: {users: 2, spawn_rate: 2, duration: 3s, timeout_s: 10}",
                f"payload: {{texts: {texts}, documents_per_query: {DOCUMENTS}}}",
                "objectives:",
                *(f"  {key}: {value}" for key, value in LOOSE.items()),
            ]
        )
        + "\n"
    )
    report = tmp_path / "report"
    result = _run(_loadtest(rerank_triton, slo, report))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((report / "summary.json").read_text())
    measured = summary["summary"]
    assert measured["requests"] > 5 and measured["successes"] == measured["requests"]
    assert summary["slo"]["payload"]["documents_per_query"] == DOCUMENTS
    fused = summary["server"]["models"]["rerank_fused"]
    assert fused["requests"] > 0
