#!/usr/bin/env sh
# Installs what the emulator's conformance tests need besides redis-server/redis-cli/
# redis-benchmark (scripts/setup.sh): python3 and the redis package below 6, which speaks
# RESP2 by default (dfly-emulator answers HELLO 3 with NOPROTO). Idempotent.
set -eu
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if python3 -c 'import redis, sys; sys.exit(0 if int(redis.__version__.split(".")[0]) < 6 else 1)' 2>/dev/null; then
    echo "python redis package already installed (< 6)"
else
    python3 -m pip install --quiet 'redis<6'
fi
