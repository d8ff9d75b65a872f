"""`tritonstack serve` as a child process, the way a user starts it: the tests that need the command itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_serve(
    repository: Path,
    log_file: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    umask: int = -1,
    stderr: int = subprocess.STDOUT,
) -> tuple[subprocess.Popen[str], str]:
    """Start `tritonstack serve` on ``repository`` with free ports and read its output up to the ``ready``
    line. Returns the process (the caller stops it) and what it printed so far."""
    command = [sys.executable, "-m", "tritonstack", "serve", "--repository", str(repository)]
    command += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--log-file", str(log_file), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, umask=umask)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("ready"):
            break
    return process, "".join(lines)
