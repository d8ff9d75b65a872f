"""`tritonstack serve` as UID 10001 over a repository root exported: the containers' user, without a container.

docker-compose runs Triton as UID 10001 over a mounted repository; the Kubernetes image copies it in as
root-owned files. Here the export runs as root (the test's user) and the server as UID 10001, through an
interpreter that user can run: a virtual environment whose base interpreter is under a private home folder
(``/root``) is not one, so the test makes a venv of the system's Python of the same version and points it
at this environment's packages and this checkout's source.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import tinymodels
import tritonstack

pytestmark = pytest.mark.integration

UNPRIVILEGED_UID = 10001  # the containers' Triton user (docker-compose.yml, deploy/)


def _as_unprivileged() -> None:
    os.setgid(UNPRIVILEGED_UID)
    os.setgroups([])
    os.setuid(UNPRIVILEGED_UID)


def _runs_as_unprivileged(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, preexec_fn=_as_unprivileged, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _system_python() -> str | None:
    """A Python of this version that UID 10001 can run, with ``venv``."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for folder in ("/usr/bin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and _runs_as_unprivileged([str(candidate), "-c", "import venv"]):
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def shared_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("serving as another user needs root here (to drop to UID 10001)")
    python = _system_python()
    if python is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} UID 10001 can run")
    root = Path(tempfile.mkdtemp(prefix="tritonstack-uid10001-"))
    root.chmod(0o755)
    try:
        venv = root / "venv"
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
        packages = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
        source = Path(tritonstack.__file__).parent.parent  # this checkout's src/, first: it wins over an install
        Path(packages, "0-tritonstack-source.pth").write_text(f"{source}\n")
        Path(packages, "1-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        if not _runs_as_unprivileged([str(venv / "bin" / "python"), "-c", "import numpy, tritonclient, tritonstack"]):
            pytest.skip("this environment's packages or source are not readable by UID 10001")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_uid_10001_serves_a_repository_root_exported(tiny_model_dirs: dict[str, Path], shared_root: Path) -> None:
    from tritonstack.client import Client

    repository = shared_root / "model_repository"
    previous = os.umask(0o022)  # a usual umask: the one a deploy's export runs with
    try:
        tinymodels.export_fp32(tiny_model_dirs["tiny"], repository, "tiny")
    finally:
        os.umask(previous)
    home = shared_root / "home"
    home.mkdir()
    os.chown(home, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    command = [str(shared_root / "venv" / "bin" / "python"), "-m", "tritonstack", "serve"]
    command += ["--repository", str(repository), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    command += ["--log-file", str(home / "triton.log"), "--ready-timeout-s", "120"]
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=home,
        preexec_fn=_as_unprivileged,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready"):
                break
        output = "".join(lines)
        assert "ready" in output, output
        grpc_url = next(line.split()[1] for line in lines if line.startswith("gRPC"))
        assert Client(grpc_url, model="tiny").embed(["hello world"]).shape == (1, 32)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
