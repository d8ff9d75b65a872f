"""Who can reach the embedded server: loopback, unless the user exposes it on purpose.

The embedded ``tritonserver`` (from nvidia-pytriton) predates NVIDIA's 2025-2026
Triton security fixes (docs/deploy.md lists them). On loopback only local users
reach it; on a network, anyone who reaches its ports can send the crafted
requests those fixes are about. So ``serve`` binds 127.0.0.1 by default and binds
anything else only when asked twice: ``--expose``, and an admin key the user chose
(deciding who holds the key is part of deciding to expose the server; a
generated key also changes on every start). Then it says plainly what that means.
"""

from __future__ import annotations

import ipaddress

from tritonstack.server import flags
from tritonstack.server.admin_key import AdminKey
from tritonstack.server.errors import ExposureRefusedError

# What nvidia-pytriton ships; tests/server/test_server_admin.py checks it against the running server.
EMBEDDED_TRITON_VERSION = "2.51.0"
# An exposed key can be guessed over the network; `openssl rand -hex 32` gives 64 characters.
MIN_EXPOSED_KEY_LENGTH = 16
_KEY_RECIPE = f"export {flags.ADMIN_KEY_ENV}=$(openssl rand -hex 32)"


def is_loopback(address: str) -> bool:
    """Whether only this host can reach ``address``. A host name other than ``localhost`` counts as reachable."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def require_explicit_exposure(bind_address: str, *, expose: bool, key: AdminKey) -> None:
    """Raise :class:`ExposureRefusedError` unless binding ``bind_address`` (not loopback) was asked for
    with ``--expose`` and an admin key the user chose, long enough to withstand guessing."""
    if not expose:
        raise ExposureRefusedError(
            f"refusing to bind {bind_address}: other hosts could reach the embedded Triton "
            f"{EMBEDDED_TRITON_VERSION}, which predates NVIDIA's 2025-2026 Triton security fixes",
            hint="serve other hosts from the NGC image (docs/deploy.md); to expose this server anyway, "
            f"on a network you trust, pass --expose with an admin key you chose: {_KEY_RECIPE}",
        )
    if not key.chosen:
        raise ExposureRefusedError(
            f"--expose needs an admin key you chose, not a generated one (binding {bind_address})",
            hint=f"{_KEY_RECIPE} (the environment keeps it out of `ps`; --admin-key works too)",
        )
    if len(key.value) < MIN_EXPOSED_KEY_LENGTH:
        raise ExposureRefusedError(
            f"the admin key from {key.source.value} has {len(key.value)} characters; "
            f"an exposed server needs at least {MIN_EXPOSED_KEY_LENGTH}",
            hint=_KEY_RECIPE,
        )


def exposure_warning(bind_address: str) -> str:
    """What ``serve --expose`` prints to stderr before it starts Triton."""
    return (
        f"warning: Triton will listen on {bind_address}: other hosts can reach it.\n"
        f"  The embedded Triton {EMBEDDED_TRITON_VERSION} (nvidia-pytriton) predates NVIDIA's 2025-2026 Triton\n"
        "  security fixes (e.g. CVE-2025-23319, CVE-2025-23320, CVE-2025-23334 in the Python backend these\n"
        "  models run on): whoever reaches its ports may crash it or run code in it. Inference, health and\n"
        "  metrics need no key, and all traffic, the admin key included, is plaintext. Expose it only on a\n"
        "  network you trust; serve anyone else from the NGC image (docs/deploy.md)."
    )
