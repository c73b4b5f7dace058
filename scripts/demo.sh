#!/usr/bin/env bash
# End-to-end demo on this machine: an emulated Dragonfly master (dfly-emulator over its own
# redis-server) -> df2redis-sync replicate -> a local redis-server, with writes going on during
# and after the full sync; then df2redis-sync check proves the two sides equal.
#
#   scripts/demo.sh [SCALE] [WORK_OPS]
#     SCALE     dataset size: about 1,000 keys per db and unit, every type (default 1)
#     WORK_OPS  live writes sent through the emulator while replicating (default 5000)
#
# Everything listens on 127.0.0.1 on free ports (the emulator's picked by the kernel), lives in
# a temp dir, and is stopped on exit.
# Exit status: that of `df2redis-sync check` (0 = equal).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCALE=${1:-1}
WORK_OPS=${2:-5000}

bash scripts/setup.sh >/dev/null 2>&1 || bash scripts/setup.sh
echo "demo: building (release)" >&2
cargo build --release --quiet --bin df2redis-sync --bin dfly-emulator
BIN=target/release/df2redis-sync
EMU=target/release/dfly-emulator

DIR=$(mktemp -d "${TMPDIR:-/tmp}/df2redis-demo.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_ping() { # port what
    for _ in $(seq 200); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "demo: $2 on port $1 did not answer" >&2
    exit 1
}

TPORT=$(free_port)

mkdir -p "$DIR/target"
redis-server --bind 127.0.0.1 --port "$TPORT" --dir "$DIR/target" --save "" --appendonly no \
    --logfile "$DIR/target/redis.log" &
PIDS+=($!)
wait_ping "$TPORT" "target redis-server"

# --port 0: the emulator binds a port the kernel picks and writes it to the address file once
# it serves (no free-port guess another process could take first).
"$EMU" --port 0 --addr-file "$DIR/emulator.addr" --shards 2 >/dev/null 2>"$DIR/emulator.log" &
EMU_PID=$!
PIDS+=($EMU_PID)
for _ in $(seq 600); do
    [ -s "$DIR/emulator.addr" ] && break
    if ! kill -0 "$EMU_PID" 2>/dev/null; then
        echo "demo: dfly-emulator exited during start-up; its log:" >&2
        tail -n 20 "$DIR/emulator.log" >&2
        exit 1
    fi
    sleep 0.1
done
[ -s "$DIR/emulator.addr" ] || { echo "demo: dfly-emulator did not serve within 60 s" >&2; exit 1; }
EADDR=$(cat "$DIR/emulator.addr")
EPORT=${EADDR##*:}

echo "demo: loading the dataset into the emulated Dragonfly (scale $SCALE)" >&2
"$EMU" load --target "127.0.0.1:$EPORT" --scale "$SCALE"

cat >"$DIR/demo.yaml" <<YAML
source:
  addr: 127.0.0.1:$EPORT
target:
  type: redis-standalone
  addr: 127.0.0.1:$TPORT
checkpoint:
  dir: $DIR/checkpoint
  interval: 1s
check:
  mode: full
  rounds: 5
  interval: 2s
  result_dir: $DIR/check
YAML

echo "demo: replicating 127.0.0.1:$EPORT (dfly-emulator) -> 127.0.0.1:$TPORT (redis-server)" >&2
"$BIN" replicate "$DIR/demo.yaml" 2>"$DIR/replicate.log" &
REPL=$!
PIDS+=($REPL)

echo "demo: $WORK_OPS live writes while replicating" >&2
"$EMU" work --target "127.0.0.1:$EPORT" --rate 2000 --ops "$WORK_OPS"
sleep 2
kill -TERM "$REPL"
wait "$REPL" || true
echo "demo: replicate stopped (SIGTERM); its log:" >&2
grep -v ' DEBUG \| TRACE ' "$DIR/replicate.log" | tail -n 15 >&2 || true

echo "demo: checking source against target (mode full)" >&2
set +e
"$BIN" check "$DIR/demo.yaml"
rc=$?
set -e
if [ "$rc" -eq 0 ]; then
    echo "demo: OK — the Redis target equals the emulated Dragonfly" >&2
else
    echo "demo: check exit code $rc; report in $DIR/check (kept)" >&2
    trap - EXIT
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
fi
exit "$rc"
