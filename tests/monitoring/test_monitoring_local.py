"""The local Prometheus runner: error paths, with the real binary where one is needed."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tritonstack.cli import main
from tritonstack.monitoring import LocalPrometheus, MonitoringError, find_monitoring_dir, render_config


@pytest.fixture()
def prometheus_binary() -> None:
    # A requirement, not an option: `make test` installs it (scripts/install-system-deps.sh).
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run `make system-deps` (apt-get install prometheus)")


needs_prometheus = pytest.mark.usefixtures("prometheus_binary")


def test_the_monitor_command_reports_a_missing_monitoring_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", "--monitoring-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: no prometheus/prometheus.yml" in err
    assert "hint: pass --monitoring-dir" in err


def test_the_checkout_monitoring_dir_is_found() -> None:
    assert (find_monitoring_dir() / "prometheus" / "prometheus.yml").is_file()


def test_a_missing_binary_is_named_with_the_package_to_install() -> None:
    with pytest.raises(MonitoringError) as raised:
        LocalPrometheus({}, binary="prometheus-that-does-not-exist").start()
    assert raised.value.hint is not None and "apt-get install" in raised.value.hint


@pytest.mark.integration
@needs_prometheus
def test_a_port_in_use_fails_with_prometheus_own_reason() -> None:
    config = render_config(find_monitoring_dir(), triton_targets=["127.0.0.1:1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(MonitoringError) as raised:
            LocalPrometheus(config, port=taken.getsockname()[1], startup_timeout_s=20).start()
    assert "exited" in raised.value.message
    assert raised.value.hint is not None and "address already in use" in raised.value.hint


@pytest.mark.integration
@needs_prometheus
def test_wait_for_targets_names_the_target_that_is_down() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        config = render_config(find_monitoring_dir(), triton_targets=[f"127.0.0.1:{port}"], scrape_interval_s=1)
        with LocalPrometheus(config) as prometheus, pytest.raises(MonitoringError) as raised:
            prometheus.wait_for_targets(timeout_s=8)
    assert f"http://127.0.0.1:{port}/metrics" in raised.value.message
