"""The SDK depends on the contract and the ground-floor modules only: never on the server, the repository
writer or the export (each pulls in far more than a client needs, and protobuf config code)."""

from __future__ import annotations

import json
import subprocess
import sys

# What the SDK and its command may import of tritonstack: the package, its ground floor, the contract.
ALLOWED = {
    "tritonstack",
    "tritonstack._exceptions",
    "tritonstack._ports",
    "tritonstack._texts",
    "tritonstack.client",
    "tritonstack.commands",
    "tritonstack.commands._args",  # the options commands share (infer's TLS flags); imports nothing of tritonstack
    "tritonstack.commands.infer",
    "tritonstack.in_triton",
    "tritonstack.in_triton.contract",
}
FORBIDDEN = ("tritonstack.repository", "tritonstack.server", "tritonstack.export")

_PROBE = """
import json, sys
import tritonstack, tritonstack.client as client
from tritonstack.commands import infer
for name in client.__all__:  # every lazily imported name, so every SDK module loads
    getattr(client, name)
tritonstack.Client, tritonstack.AsyncClient
print(json.dumps(sorted(m for m in sys.modules if m.startswith("tritonstack"))))
"""


def test_the_sdk_imports_only_the_contract_and_the_ground_floor() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not [m for m in loaded if m.startswith(FORBIDDEN)]  # repository.config's protobuf code among them
    assert {m for m in loaded if not m.startswith("tritonstack.client.")} <= ALLOWED
    assert "tritonstack.client._sync" in loaded and "tritonstack.client._async" in loaded
