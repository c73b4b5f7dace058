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
BIN=target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/df2redis-demo.XXXXXX")
DIR=$WORK
. scripts/lib.sh
lib_init

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

TPORT=$(free_port)
server "$TPORT" "$DIR/target"

# Port 0: the emulator binds a port the kernel picks and writes it to the address file once
# it serves (no free-port guess another process could take first).
start_emulator 0 --shards 2
EPORT=$EMU_PORT

echo "demo: loading the dataset into the emulated Dragonfly (scale $SCALE)" >&2
"$BIN/dfly-emulator" load --target "127.0.0.1:$EPORT" --scale "$SCALE"

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
"$BIN/df2redis-sync" replicate "$DIR/demo.yaml" 2>"$DIR/replicate.log" &
REPL=$!
PIDS+=($REPL)

echo "demo: $WORK_OPS live writes while replicating" >&2
"$BIN/dfly-emulator" work --target "127.0.0.1:$EPORT" --rate 2000 --ops "$WORK_OPS"
sleep 2
kill -TERM "$REPL"
wait "$REPL" || true
echo "demo: replicate stopped (SIGTERM); its log:" >&2
grep -v ' DEBUG \| TRACE ' "$DIR/replicate.log" | tail -n 15 >&2 || true

echo "demo: checking source against target (mode full)" >&2
set +e
"$BIN/df2redis-sync" check "$DIR/demo.yaml"
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
