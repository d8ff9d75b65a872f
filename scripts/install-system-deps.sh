#!/usr/bin/env bash
# System packages the tests need: Prometheus (brings promtool) for the monitoring tests, redis-server for the
# gateway's shared cache,
# and the shared libpython the Triton Python-backend stub links against.
set -euo pipefail

python_version=$(python3 -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ldconfig -p 2>/dev/null | grep -q "libpython${python_version}.so.1.0" || missing+=("libpython${python_version}")
[ ${#missing[@]} -eq 0 ] && exit 0

packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${packages}- install them: sudo apt-get install -y ${packages}" >&2
    exit 1
fi
echo "installing system packages: ${packages}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends ${packages} >/dev/null
# The Debian package may start a system Prometheus on :9090; the tests run their own.
if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
pkill -x prometheus 2>/dev/null || true
# likewise a system redis-server on :6379; the gateway tests start their own
if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
