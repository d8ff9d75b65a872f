"""Prometheus and Grafana for the stack, run locally: ``tritonstack monitor``.

The configs, rules and dashboards themselves live in the checkout's top-level
``monitoring/`` folder (data, shared with docker-compose and Kubernetes); this
package renders and runs them:

    local        render_config, LocalPrometheus, find_monitoring_dir
    dashboards   panel_queries: every Grafana panel's query, ready for Prometheus;
                 gpu_panel_metrics: what the GPU-only panels need a server to export
    command      the CLI command
    errors       MonitoringError
"""

from __future__ import annotations

from tritonstack.monitoring.dashboards import (
    GPU_ONLY_MARKER,
    PanelQuery,
    gpu_panel_metrics,
    load_dashboards,
    panel_queries,
)
from tritonstack.monitoring.errors import MonitoringError
from tritonstack.monitoring.local import (
    GATEWAY_JOB,
    LOADTEST_JOB,
    TRITON_JOB,
    LocalPrometheus,
    find_monitoring_dir,
    render_config,
)

__all__ = [
    "GATEWAY_JOB",
    "GPU_ONLY_MARKER",
    "LOADTEST_JOB",
    "TRITON_JOB",
    "LocalPrometheus",
    "MonitoringError",
    "PanelQuery",
    "find_monitoring_dir",
    "gpu_panel_metrics",
    "load_dashboards",
    "panel_queries",
    "render_config",
]
