"""Who can reach the embedded server: loopback, unless the user exposes it on purpose.

The embedded ``tritonserver`` (from nvidia-pytriton) predates NVIDIA's 2025-2026
Triton security fixes (docs/deploy.md lists them). On loopback only local users
reach it; on a network, anyone who reaches its ports can send the crafted
requests those fixes are about. So ``serve`` binds 127.0.0.1 by default and binds
anything else only when asked twice: ``--expose``, and an admin key the user chose
(deciding who holds the key is part of deciding to expose the server; a
generated key also changes on every start). Then it says plainly what that means.
Triton takes that key only on its command line, which other local users can read
unless ``/proc`` is mounted with ``hidepid``: ``--expose`` also needs that, or
the operator's ``--allow-local-key-exposure``, and ``serve`` says so either way.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

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


# /proc mount options under which other users cannot read a process's command line (proc(5)).
_HIDDEN_PIDS = {"hidepid=1", "hidepid=2", "hidepid=invisible", "hidepid=noaccess"}
ALLOW_VISIBLE_KEY_FLAG = "--allow-local-key-exposure"


def admin_key_visible_locally(mounts: str | None = None) -> bool:
    """Whether other local users can read Triton's command line, and so the admin key on it: Triton 2.51 takes
    the restricted APIs' key only as a flag (``tritonserver --help`` has no file or environment form), and
    ``/proc/PID/cmdline`` is world-readable unless ``/proc`` is mounted with ``hidepid``. ``mounts``:
    ``/proc/mounts``' text (read when ``None``)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return True
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/proc" and fields[2] == "proc":
            return not _HIDDEN_PIDS.intersection(fields[3].split(","))
    return True


def visible_key_note() -> str:
    """What ``serve`` prints on stderr where other local users can read the admin key."""
    return (
        "note: Triton 2.51 takes the admin key only on its command line: any local user of this host can read\n"
        "  it (/proc/PID/cmdline), and with it load a model.py, i.e. run code as you. On a shared host, mount\n"
        "  /proc with hidepid=2 (docs/deploy.md)."
    )


def require_explicit_exposure(
    bind_address: str,
    *,
    expose: bool,
    key: AdminKey,
    allow_local_key_exposure: bool = False,
    key_visible: bool | None = None,
) -> None:
    """Raise :class:`ExposureRefusedError` unless binding ``bind_address`` (not loopback) was asked for
    with ``--expose`` and an admin key the user chose, long enough to withstand guessing, and the key is
    out of other local users' sight (``/proc`` with ``hidepid``; ``key_visible``: as
    :func:`admin_key_visible_locally` says when ``None``) or the operator accepts that it is not."""
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
    if key_visible is None:
        key_visible = admin_key_visible_locally()
    if key_visible and not allow_local_key_exposure:
        raise ExposureRefusedError(
            f"refusing to bind {bind_address}: the admin key would be on Triton's command line, which every "
            "local user of this host can read (Triton 2.51 takes it no other way), and it guards loading code",
            hint="mount /proc with hidepid=2 (`mount -o remount,hidepid=2 /proc`; docs/deploy.md), or, where "
            f"every local user may hold the key, pass {ALLOW_VISIBLE_KEY_FLAG}",
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
