#!/usr/bin/env bash
# Installs what the tests need, only when it is missing: Debian's redis-server and redis-tools
# (redis-cli). Idempotent; safe with CI=true and no stdin. The tests start their own
# redis-server processes on random loopback ports, so the system service the package starts is
# stopped and disabled again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)

if ((${#need[@]})); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo -n)
    fi
    echo "setup: installing ${need[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update </dev/null
    "${sudo[@]}" apt-get install -y --no-install-recommends "${need[@]}" </dev/null
    if [[ " ${need[*]} " == *" redis-server "* ]]; then
        # Debian starts redis on 6379 after installing it; the tests do not want it.
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            "${sudo[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
        fi
    fi
fi

redis-server --version >&2
redis-cli --version >&2

# TLS tests need a redis-server built with TLS (Debian's is). A build without it rejects the
# tls-port directive.
if timeout 10 redis-server --port 0 --tls-port 0 2>&1 | grep -q "Bad directive"; then
    echo "setup: this redis-server has no TLS support; the TLS tests will fail" >&2
    exit 1
fi

# The emulator's conformance tests drive it with the recordings' own generator (python redis).
sh "$(dirname "${BASH_SOURCE[0]}")/emulator-setup.sh" >&2
