"""Prometheus config and rules: promtool's own checks and unit tests, plus the
consistency promtool cannot see (referenced rule names, SLO threshold, windows)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonstack.monitoring import (
    GATEWAY_JOB,
    LOADTEST_JOB,
    TRITON_JOB,
    find_monitoring_dir,
    panel_queries,
    render_config,
)

MONITORING = find_monitoring_dir()
PROMETHEUS = MONITORING / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RECORDING = PROMETHEUS / "rules" / "tritonstack-recording.yml"
ALERTS = PROMETHEUS / "rules" / "tritonstack-alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))

# What Triton 2.51.0 (nvidia-pytriton 0.7.0) exports with summary_latencies on,
# read from a live server's /metrics (tests/monitoring/test_monitoring_live.py checks the
# non-GPU ones against the embedded server), plus the DCGM GPU metrics that only
# a GPU server exports.
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
    "nv_pinned_memory_pool_total_bytes",
    "nv_pinned_memory_pool_used_bytes",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
}
# What the pinned Triton adds for a model that enables the response cache (tests/monitoring/test_monitoring_live.py
# reads them from the embedded server's cached model).
TRITON_CACHE_METRICS = {
    "nv_cache_num_hits_per_model",
    "nv_cache_num_misses_per_model",
    "nv_cache_hit_duration_per_model",
    "nv_cache_miss_duration_per_model",
}
TRITON_GPU_METRICS = {
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
}
# The load-test exporter's contract (docs/monitoring.md).
CLIENT_METRICS = {
    "tritonstack_client_request_duration_seconds",
    "tritonstack_client_requests_total",
}
# The gateway's contract (docs/gateway.md; tests/monitoring/test_monitoring_gateway.py checks it against the app).
GATEWAY_METRICS = {
    "tritonstack_gateway_requests_total",
    "tritonstack_gateway_request_duration_seconds",
    "tritonstack_gateway_inputs_total",
    "tritonstack_gateway_tokens_total",
    "tritonstack_gateway_errors_total",
    "tritonstack_gateway_cache_lookups_total",
}
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")

_RECORDED_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")
_RAW_NAME = re.compile(r"\b(?:nv|tritonstack)_[a-z0-9_]+\b")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        # A requirement, not an option: `make test` installs it (scripts/install-system-deps.sh).
        pytest.fail("promtool is not installed: run `make system-deps` (apt-get install prometheus)")
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules(RECORDING)}


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules(ALERTS)}


def dashboard_exprs() -> list[str]:
    return [query.expr for path in DASHBOARDS for query in panel_queries(json.loads(path.read_text()))]


def all_exprs() -> list[str]:
    return [rule["expr"] for path in (RECORDING, ALERTS) for rule in rules(path)] + dashboard_exprs()


# -- promtool -----------------------------------------------------------------


def test_promtool_accepts_the_config_and_its_rule_files() -> None:
    result = promtool("check", "config", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RECORDING, ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules(ALERTS))} rules found" in result.stdout


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[path.name for path in RULE_TESTS])
def test_promtool_rule_unit_tests_pass(test_file: Path) -> None:
    result = promtool("test", "rules", test_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    # The unit tests above must be able to fail: flip one expectation of one case.
    source = PROMETHEUS / "tests" / "tritonstack-triton-alerts.test.yml"
    suite = load(source)
    suite["rule_files"] = [str((source.parent / path).resolve()) for path in suite["rule_files"]]
    suite["tests"] = [test for test in suite["tests"] if test["name"] == "a backlog that never drains and keeps rising"]
    case = suite["tests"][0]["alert_rule_test"][0]["exp_alerts"][0]
    assert case["exp_annotations"]["description"].startswith("At least 8 requests")
    case["exp_annotations"]["description"] = case["exp_annotations"]["description"].replace("8", "9", 1)
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(suite))
    result = promtool("test", "rules", broken)
    assert result.returncode != 0
    assert "TritonQueueBacklogGrowing" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test_file in RULE_TESTS:
        for test in load(test_file)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alert_names() - firing == set(), "alerts never shown to fire"
    assert alert_names() - quiet == set(), "alerts never shown to stay quiet"


def test_rendered_local_config_passes_promtool(tmp_path: Path) -> None:
    config = render_config(
        MONITORING,
        triton_targets=["127.0.0.1:18002"],
        loadtest_targets=["127.0.0.1:19646"],
        gateway_targets=["127.0.0.1:18080"],
        scrape_interval_s=1,
        evaluation_interval_s=1,
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))
    result = promtool("check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: wrap every panel query in a recording rule.
    exprs = dashboard_exprs()
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "q", "rules": [{"record": f"q:{i}:x", "expr": e} for i, e in enumerate(exprs)]}]}
        )
    )
    result = promtool("check", "rules", rule_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


# -- render_config (pure) -------------------------------------------------------


def test_render_config_points_jobs_at_the_given_targets() -> None:
    config = render_config(
        MONITORING,
        triton_targets=["127.0.0.1:1"],
        loadtest_targets=["127.0.0.1:2", "127.0.0.1:3"],
        gateway_targets=["127.0.0.1:4"],
    )
    targets = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert targets == {
        TRITON_JOB: [{"targets": ["127.0.0.1:1"]}],
        LOADTEST_JOB: [{"targets": ["127.0.0.1:2", "127.0.0.1:3"]}],
        GATEWAY_JOB: [{"targets": ["127.0.0.1:4"]}],
    }
    assert [Path(p) for p in config["rule_files"]] == [RECORDING.resolve(), ALERTS.resolve()]
    # the committed intervals stay when not overridden
    assert config["global"]["scrape_interval"] == load(CONFIG)["global"]["scrape_interval"]


def test_render_config_drops_a_job_without_targets_and_caps_the_timeout() -> None:
    config = render_config(MONITORING, triton_targets=["127.0.0.1:1"], scrape_interval_s=0.5, evaluation_interval_s=2)
    assert [job["job_name"] for job in config["scrape_configs"]] == [TRITON_JOB]
    assert config["global"] == {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "2s"}


# -- consistency promtool does not check ---------------------------------------------


def test_every_recorded_name_used_is_defined() -> None:
    defined = recorded_names()
    used = {name for expr in all_exprs() for name in _RECORDED_NAME.findall(expr)}
    assert used - defined == set()
    # and every recording rule is used by an alert, a dashboard or another rule
    assert defined - used == set(), "recording rules nothing reads"


def test_only_metrics_the_pinned_triton_or_the_client_contract_export() -> None:
    known = TRITON_METRICS | TRITON_CACHE_METRICS | TRITON_GPU_METRICS | CLIENT_METRICS | GATEWAY_METRICS
    used = set()
    for expr in all_exprs():
        for name in _RAW_NAME.findall(_RECORDED_NAME.sub(" ", expr)):
            base = next(
                (name[: -len(s)] for s in SERIES_SUFFIXES if name.endswith(s) and name[: -len(s)] in known), name
            )
            used.add(base)
    assert used - known == set()
    assert {"nv_inference_request_summary_us", "nv_inference_pending_request_count"} <= used
    assert used >= TRITON_CACHE_METRICS


def test_latency_threshold_is_one_number_everywhere() -> None:
    threshold = next(r["expr"] for r in rules(RECORDING) if r["record"] == "tritonstack:slo_latency_threshold:seconds")
    value = re.fullmatch(r"vector\(([0-9.]+)\)", threshold.strip())
    assert value is not None
    boundaries = {le for expr in all_exprs() for le in re.findall(r'\ble="([^"]+)"', expr)}
    assert boundaries == {value.group(1)}


def test_the_cost_counts_text_in_models_and_none_of_their_steps() -> None:
    from tritonstack.in_triton import contract

    expr = next(r["expr"] for r in rules(RECORDING) if r["record"] == "tritonstack:text_in_request_success:rate1m")
    (pattern,) = re.findall(r'model!~"([^"]+)"', expr)
    steps = re.compile(pattern)
    name = "minilm_v2"
    assert not steps.fullmatch(name)
    for step in (contract.tokenizer_name(name), contract.encoder_name(name), contract.postprocess_name(name)):
        assert steps.fullmatch(step), step


def test_the_replica_price_is_set_in_one_place() -> None:
    recorded = {rule["record"]: rule["expr"] for rule in rules(RECORDING)}
    assert re.fullmatch(r"vector\([0-9.]+\)", recorded["tritonstack:triton_replica_price:usd_per_hour"].strip())
    # every cost figure reads the price through tritonstack:triton_cost:usd_per_hour
    readers = [expr for expr in all_exprs() if "tritonstack:triton_replica_price:usd_per_hour" in expr]
    assert readers == [recorded["tritonstack:triton_cost:usd_per_hour"]]


def test_the_load_test_exporter_has_the_slo_bucket() -> None:
    from tritonstack.loadtest import exporter

    threshold = next(r["expr"] for r in rules(RECORDING) if r["record"] == "tritonstack:slo_latency_threshold:seconds")
    value = re.fullmatch(r"vector\(([0-9.]+)\)", threshold.strip())
    assert value is not None
    assert float(value.group(1)) in exporter.BUCKETS_S
    assert {exporter.REQUEST_DURATION, exporter.REQUESTS_TOTAL} == CLIENT_METRICS


def test_windowed_slo_rules_differ_only_in_their_window() -> None:
    windowed: dict[str, dict[str, str]] = {}
    for rule in rules(RECORDING):
        match = re.fullmatch(r"(model:tritonstack_slo_\w+:ratio_rate)(\w+)", rule.get("record", ""))
        if match:
            windowed.setdefault(match.group(1), {})[match.group(2)] = rule["expr"]
    assert set(windowed) == {"model:tritonstack_slo_errors:ratio_rate", "model:tritonstack_slo_latency_slow:ratio_rate"}
    for family in windowed.values():
        # the burn-rate alerts need these windows; the budget panels need 30d
        assert set(family) == {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"}
        template = family["5m"].replace("[5m]", "[W]")
        for window, expr in family.items():
            assert expr.replace(f"[{window}]", "[W]") == template, window
