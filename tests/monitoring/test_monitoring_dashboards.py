"""Grafana provisioning and dashboards: structural sanity, no Grafana needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonstack.monitoring import (
    GPU_ONLY_MARKER,
    find_monitoring_dir,
    gpu_panel_metrics,
    load_dashboards,
    panel_queries,
)

GRAFANA = find_monitoring_dir() / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    pending = list(dashboard["panels"])
    while pending:
        panel = pending.pop(0)
        panels.append(panel)
        pending.extend(panel.get("panels", []))
    return panels


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    return {"type": source["type"], "uid": source["uid"]}


@pytest.fixture(scope="module", params=DASHBOARD_FILES, ids=[p.name for p in DASHBOARD_FILES])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_dashboard(request.param)


def test_both_dashboards_exist_with_unique_uids() -> None:
    uids = [load_dashboard(path)["uid"] for path in DASHBOARD_FILES]
    assert sorted(uids) == ["tritonstack-slo", "tritonstack-triton-overview"]
    titles = [load_dashboard(path)["title"] for path in DASHBOARD_FILES]
    assert len(set(titles)) == len(titles)


def test_provisioning_loads_the_dashboards_folder() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tritonstack.yml").read_text())
    (provider,) = provisioned["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_panel_has_a_query(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        exprs = [target.get("expr", "").strip() for target in panel.get("targets", [])]
        assert exprs and all(exprs), panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(exprs), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows and from which metric"


def test_datasource_references_resolve(dashboard: dict[str, Any], datasource: dict[str, Any]) -> None:
    references = [variable["datasource"] for variable in dashboard["templating"]["list"]]
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        references.append(panel["datasource"])
        references.extend(target["datasource"] for target in panel["targets"])
    assert references
    assert all(reference == datasource for reference in references)


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_template_variables_are_all_substituted(dashboard: dict[str, Any]) -> None:
    for variable in dashboard["templating"]["list"]:
        assert variable["includeAll"] and variable["allValue"], variable["name"]
    for query in panel_queries(dashboard):
        assert "$" not in query.expr, query


def test_gpu_panels_and_only_they_are_marked(dashboard: dict[str, Any]) -> None:
    # The live test excuses marked panels on a CPU-only server; a GPU query
    # without the marker, or a marker on a CPU panel, would hide a broken panel.
    gpu_metric = re.compile(r"\bnv_(gpu_\w+|energy_consumption)\b")
    for query in panel_queries(dashboard):
        assert query.gpu_only == bool(gpu_metric.search(query.expr)), query
    if dashboard["uid"] == "tritonstack-triton-overview":
        marked = {q.panel_title for q in panel_queries(dashboard) if q.gpu_only}
        assert marked == {"GPU utilisation", "GPU memory", "GPU power"}
        assert all(p["description"].startswith(GPU_ONLY_MARKER) for p in all_panels(dashboard) if p["title"] in marked)


def test_panel_queries_substitutes_variables_and_descends_into_rows() -> None:
    dashboard = {
        "uid": "d",
        "templating": {"list": [{"name": "model", "allValue": ".+"}, {"name": "model_version", "allValue": "1|2"}]},
        "panels": [
            {
                "type": "row",
                "title": "collapsed",
                "panels": [
                    {
                        "title": "p",
                        "description": GPU_ONLY_MARKER + " x",
                        "targets": [{"refId": "A", "expr": 'm{model=~"$model", version=~"$model_version"}'}],
                    }
                ],
            }
        ],
    }
    (query,) = panel_queries(dashboard)
    assert query.expr == 'm{model=~".+", version=~"1|2"}'
    assert query.gpu_only and query.panel_title == "p" and query.dashboard_uid == "d"


def test_a_gpu_server_must_export_what_the_gpu_panels_query() -> None:
    needed = gpu_panel_metrics(load_dashboards(find_monitoring_dir()))
    assert needed == {
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
    }
