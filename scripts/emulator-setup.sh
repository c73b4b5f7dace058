#!/usr/bin/env sh
# Installs what the emulator's conformance tests need besides redis-server/redis-cli/
# redis-benchmark (scripts/setup.sh): python3 and its `redis` package (any version: the
# emulator speaks RESP2 and RESP3). Idempotent.
set -eu
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if python3 -c 'import redis' 2>/dev/null; then
    echo "python redis package already installed"
else
    python3 -m pip install --quiet redis
fi
