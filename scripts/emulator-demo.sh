#!/usr/bin/env sh
# Starts dfly-emulator (a Dragonfly v1.40 master over its own redis-server) on 127.0.0.1:6390,
# fills it with the deterministic dataset and keeps a light workload running, so a replica
# (df2redis-sync) has a live source to follow. Ctrl-C stops everything.
#
#   scripts/emulator-demo.sh [PORT] [SHARDS] [SCALE]
set -eu
PORT=${1:-6390}
SHARDS=${2:-4}
SCALE=${3:-1}
BIN=${DFLY_EMULATOR:-target/debug/dfly-emulator}
[ -x "$BIN" ] || cargo build --bin dfly-emulator
"$BIN" --port "$PORT" --shards "$SHARDS" &
EMU=$!
trap 'kill "$WORK" 2>/dev/null || true; kill "$EMU" 2>/dev/null || true; wait' INT TERM EXIT
i=0
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 100 ] || { echo "emulator did not start" >&2; exit 1; }
    sleep 0.1
done
"$BIN" load --target "127.0.0.1:$PORT" --scale "$SCALE"
echo "dfly-emulator on 127.0.0.1:$PORT ($SHARDS shards): dataset loaded, workload running at 200 ops/s"
"$BIN" work --target "127.0.0.1:$PORT" --rate 200 --ops 100000000 &
WORK=$!
wait "$WORK"
