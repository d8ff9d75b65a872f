"""The queries of the Grafana dashboards, in the form Prometheus evaluates them.

The tests run every panel's query against a live Prometheus, so a dashboard that
names a metric nobody exports fails a test instead of showing an empty panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Panels whose description starts with this need a GPU server: Triton exports
# nv_gpu_* only where DCGM finds a GPU, so they are empty on CPU-only machines.
GPU_ONLY_MARKER = "GPU only:"
_TRITON_METRIC = re.compile(r"\bnv_[a-z0-9_]+")


@dataclass(frozen=True)
class PanelQuery:
    """One query of a dashboard panel, with template variables replaced by "All"."""

    dashboard_uid: str
    panel_title: str
    ref_id: str
    expr: str
    gpu_only: bool


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every panel query of a Grafana dashboard JSON, ready for ``/api/v1/query``.

    Each template variable becomes its ``allValue`` (what Grafana sends when "All"
    is selected), so the query covers every model.
    """
    substitutions = {
        f"${variable['name']}": variable.get("allValue") or ".+"
        for variable in dashboard.get("templating", {}).get("list", [])
    }
    queries = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # rows nest their panels when collapsed
        gpu_only = str(panel.get("description", "")).startswith(GPU_ONLY_MARKER)
        for target in panel.get("targets", []):
            expr = str(target.get("expr", ""))
            # longest names first, so $model never eats the front of $model_version
            for name in sorted(substitutions, key=len, reverse=True):
                expr = expr.replace(name, substitutions[name])
            queries.append(
                PanelQuery(dashboard["uid"], panel.get("title", ""), target.get("refId", ""), expr, gpu_only)
            )
    return queries


def load_dashboards(monitoring_dir: Path) -> list[dict[str, Any]]:
    """The Grafana dashboards shipped under ``monitoring_dir`` (``grafana/dashboards/*.json``)."""
    return [json.loads(path.read_text()) for path in sorted((monitoring_dir / "grafana" / "dashboards").glob("*.json"))]


def gpu_panel_metrics(dashboards: Iterable[dict[str, Any]]) -> set[str]:
    """The Triton metrics (``nv_*``) the GPU-only panels of ``dashboards`` query: what a GPU server must export
    for those panels to show anything."""
    return {
        name
        for dashboard in dashboards
        for query in panel_queries(dashboard)
        if query.gpu_only
        for name in _TRITON_METRIC.findall(query.expr)
    }
