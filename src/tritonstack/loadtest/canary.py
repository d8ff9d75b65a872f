"""A canary: load split between a baseline and a candidate release, and the candidate judged.

The load test of ``tritonstack loadtest`` runs unchanged, its users sending
``weight`` of the requests to the candidate through the SDK's ``TrafficSplit``
and tagging each sample with the release that answered. Then:

* each latency and error objective of the SLO, on the candidate's requests alone
  (throughput on the whole run: the candidate gets only its share of the load);
* relative to the baseline under the same load: the candidate's p99 within
  ``p99_ratio`` (plus ``p99_slack_ms``, since a few-ms p99 jitters by more than a
  ratio) of the baseline's, and its error ratio at most the baseline's plus
  ``error_ratio``;
* reported, not judged: how the two releases agree on the same texts (cosine for
  embeddings, the share of equal labels for classification, for a ranking -- one
  query and the other texts as its documents -- the share of ranks that hold the
  same document) -- a new model may differ on purpose.

Every check passes: promote. One fails: roll back, naming it.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tritonstack._exceptions import TritonStackError
from tritonstack.in_triton import contract
from tritonstack.loadtest import plots
from tritonstack.loadtest.agreement import Agreement, compare_answers
from tritonstack.loadtest.canary_plan import CanaryPlan
from tritonstack.loadtest.execute import RunOptions, run_test
from tritonstack.loadtest.report import write_report
from tritonstack.loadtest.result import RunResult
from tritonstack.loadtest.users import UserSettings, client_call, make_client
from tritonstack.loadtest.verdict import Check, evaluate, violated
from tritonstack.measure.errors import LoadTestError
from tritonstack.measure.payload import load_texts
from tritonstack.measure.samples import Summary, summarize
from tritonstack.measure.slo import SLO

AGREEMENT_TEXTS = 64  # texts each release answers before the load, for the agreement figure


@dataclass
class CanaryResult:
    plan: CanaryPlan
    run: RunResult
    releases: dict[int, Summary]
    checks: list[Check]
    agreement: Agreement

    @property
    def promote(self) -> bool:
        return not violated(self.checks)


def verdict_line(checks: list[Check]) -> str:
    broken = violated(checks)
    if not broken:
        return f"promote: the candidate held all {len(checks)} checks"
    return "roll back: " + ", ".join(f"{c.objective} ({c.key})" for c in broken)


def _answers(client: object, texts: list[str], task: str, model: str) -> np.ndarray | list[str]:
    call: Callable[..., object] = client_call(client, task)
    answers = call(texts, model=model)
    if isinstance(answers, list):  # classifications: compared by label; a ranking: by the document at each rank
        return [c.label if hasattr(c, "label") else str(c.index) for c in answers]
    return np.asarray(answers)


def measure_agreement(host: str, settings: UserSettings, plan: CanaryPlan, texts: list[str]) -> Agreement:
    """Both releases answer ``texts``; a release that does not answer stops the canary (exit 2)."""
    from tritonstack.in_triton.contract import release_name

    client = make_client(host, settings)
    answers = {}
    try:
        for release in (plan.baseline, plan.candidate):
            try:
                answers[release] = _answers(client, texts, settings.task, release_name(plan.model, release))
            except TritonStackError as error:
                raise LoadTestError(
                    f"release {release} of {plan.model!r} at {host} did not answer: {error.message}",
                    hint=f"is it served? `tritonstack release list --model {plan.model}` lists the releases; "
                    "a second `tritonstack export` of the name makes a candidate",
                ) from None
    finally:
        client.close()
        gc.collect()  # an SDK error holds the channel in a cycle: collect it while gevent's hub runs
    agreement = compare_answers(contract.task(settings.task), answers[plan.baseline], answers[plan.candidate])
    return replace(agreement, texts=len(texts))  # a ranking compares one rank fewer: its query has none


def judge(slo: SLO, plan: CanaryPlan, run: RunResult) -> tuple[dict[int, Summary], list[Check]]:
    """Per-release summaries of ``run`` and the checks of the candidate (see the module docstring)."""
    start_s, end_s = run.summary.start_s, run.summary.end_s
    percentiles = slo.objectives.latency_ms
    releases = {
        release: summarize([s for s in run.samples if s.release == release], start_s, end_s, percentiles)
        for release in (plan.baseline, plan.candidate)
    }
    baseline, candidate = releases[plan.baseline], releases[plan.candidate]
    checks = [
        Check(c.key, f"candidate {c.objective}", c.target, c.measured, c.unit, c.comparator)
        for c in evaluate(slo.objectives, candidate, include_throughput=False)
    ]
    checks += [c for c in run.checks if c.key == "min_throughput_rps"]  # the whole run's
    tolerances = plan.tolerances
    baseline_p99, candidate_p99 = baseline.latency_ms.get(99.0), candidate.latency_ms.get(99.0)
    checks.append(
        Check(
            "p99_vs_baseline",
            f"candidate p99 vs baseline (+{tolerances.p99_ratio:.0%} +{tolerances.p99_slack_ms:g} ms)",
            baseline_p99 * (1 + tolerances.p99_ratio) + tolerances.p99_slack_ms if baseline_p99 is not None else 0.0,
            candidate_p99,
            "ms",
            "<=",
        )
    )
    baseline_errors = baseline.error_ratio if baseline.error_ratio is not None else 0.0
    checks.append(
        Check(
            "error_ratio_vs_baseline",
            f"candidate error ratio vs baseline (+{tolerances.error_ratio:.2%})",
            baseline_errors + tolerances.error_ratio,
            candidate.error_ratio,
            "",
            "<=",
        )
    )
    return releases, checks


def run_canary(slo: SLO, plan: CanaryPlan, options: RunOptions) -> CanaryResult:
    """Agreement first (and proof that both releases answer), then the split load, then the verdict."""
    settings = UserSettings.from_slo(slo)
    texts = load_texts(slo.payload.texts_file)[:AGREEMENT_TEXTS]
    agreement = measure_agreement(options.host, settings, plan, texts)
    split = replace(settings, baseline=plan.baseline, candidate=plan.candidate, candidate_weight=plan.weight)
    run = run_test(slo, options, settings=split)
    releases, checks = judge(slo, plan, run)
    return CanaryResult(plan, run, releases, checks, agreement)


def release_summary(summary: Summary, role: str) -> dict[str, object]:
    return {
        "role": role,
        "requests": summary.requests,
        "errors": summary.failures,
        "error_ratio": summary.error_ratio,
        "p50_ms": summary.latency_ms.get(50.0),
        "p99_ms": summary.latency_ms.get(99.0),
        "errors_by_type": dict(summary.errors_by_type),
    }


def write_canary_report(result: CanaryResult, directory: Path) -> Path:
    """``summary.json`` (per release, the checks, the verdict), a latency plot per release, and the load
    test's own report under ``load/``; returns ``summary.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_report(result.run, directory / "load")
    start_s, end_s = result.run.summary.start_s, result.run.summary.end_s
    roles = result.plan.roles()
    plot_files = []
    for release in result.releases:
        samples = [s for s in result.run.samples if s.release == release]
        path = directory / f"latency_release_{release}.png"
        plots.release_latency_plot(samples, release, roles[release], start_s, end_s, path)
        plot_files.append(path.name)
    summary = {
        "verdict": "promote" if result.promote else "roll back",
        "verdict_line": verdict_line(result.checks),
        "model": result.plan.model,
        "baseline": result.plan.baseline,
        "candidate": result.plan.candidate,
        "weight": result.plan.weight,
        "releases": {str(v): release_summary(s, roles[v]) for v, s in result.releases.items()},
        "checks": [check.to_dict() for check in result.checks],
        "agreement": result.agreement.to_dict(),
        "load": result.run.summary.to_dict(),
        "files": [*plot_files, "load/index.html"],
    }
    path = directory / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path
