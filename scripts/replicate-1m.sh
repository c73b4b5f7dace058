#!/usr/bin/env bash
# Full-sync benchmark on a ~1M-key mixed dataset: builds the release binaries, starts
# dfly-emulator (--bench-source: the snapshot is serialized before DFLY SYNC's +OK, so the
# figures measure the replica, not the emulator's keyspace read) with its deterministic dataset
# of every type (`load --scale`) plus bulk keys of every plain type (strings, ints, lists,
# intsets, sets, zsets, hashes, TTLs, 4 dbs) written straight into its backing redis-server,
# replicates into a fresh redis-server, waits for stable sync, runs `check --mode full`
# (must say equal) and prints keys/s, MB/s and the replica's peak RSS (VmHWM).
#
#   scripts/replicate-1m.sh            # KEYS=1000000 SHARDS=4 SCALE=10 by default
#
# Everything binds 127.0.0.1; every process started here is stopped on exit; bounded waits.
set -euo pipefail
KEYS=${KEYS:-1000000}
SHARDS=${SHARDS:-4}
SCALE=${SCALE:-10}
EMU_PORT=${EMU_PORT:-0} # 0: a free port picked by the kernel, read back from the address file
TGT_PORT=${TGT_PORT:-16391}
cd "$(dirname "$0")/.."
cargo build --release --bins >&2
BIN=target/release
WORK=$(mktemp -d /tmp/replicate-1m.XXXXXX)
. scripts/lib.sh
lib_init

server "$TGT_PORT" "$WORK/target"
start_emulator "$EMU_PORT" --shards "$SHARDS" --bench-source
t0=$(date +%s.%N)
"$BIN/dfly-emulator" load --target "$BACKEND" --scale "$SCALE" >/dev/null 2>&1
# Bulk keys, inline commands through redis-cli --pipe: eight shapes in turn, spread over dbs
# 0, 1, 3 and 7; one key in ten with a far-future TTL.
BASE=$(redis-cli -p "$BPORT" dbsize)
awk -v n="$KEYS" -v have="$BASE" 'BEGIN {
    split("0 1 3 7", dbs, " ");
    per = int((n - have) / 4);
    for (d = 1; d <= 4; d++) {
        print "SELECT " dbs[d];
        for (i = 0; i < per; i++) {
            k = "bulk:" d ":" i;
            s = i % 8;
            if (s == 0) print "SET " k " value-" i "-abcdefghijklmnopqrstuvwxyz";
            else if (s == 1) print "SET " k " " i * 7919;
            else if (s == 2) print "RPUSH " k " a" i " b" i " c" i;
            else if (s == 3) print "SADD " k " " i " " i + 1 " " i + 2;
            else if (s == 4) print "SADD " k " m" i " n" i;
            else if (s == 5) print "ZADD " k " 1.5 x" i " " i " y" i;
            else if (s == 6) print "HSET " k " f1 v" i " f2 " i;
            else print "SET " k " " i " PX 86400000";
        }
    }
}' | redis-cli -p "$BPORT" --pipe >/dev/null
total=0
for db in 0 1 3 7; do
    total=$((total + $(redis-cli -p "$BPORT" -n "$db" dbsize)))
done
t1=$(date +%s.%N)
echo "dataset: $total keys in dbs 0,1,3,7 (load --scale $SCALE + bulk), loaded in $(echo "$t1 - $t0" | bc) s"

cat >"$WORK/replicate.yaml" <<EOF
source:
  addr: 127.0.0.1:$EMU_PORT
target:
  addr: 127.0.0.1:$TGT_PORT
checkpoint:
  dir: $WORK/ckpt
  interval: 1s
EOF
start_replica "$WORK/replicate.yaml" "$WORK/replica.log" 120
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$REPL/status")
bytes=$(redis-cli -p "$EMU_PORT" info replication | tr -d '\r' |
    awk -F: '/^slave0_bytes_sent:/ {n = split($2, a, ","); for (i = 1; i <= n; i++) s += a[i]; print s}')
wall=$(echo "scale=2; ($STABLE - $START) / 1" | bc)
snap=$(echo "scale=2; ($STABLE - $SYNCED) / 1" | bc)
serve=$(redis-cli -p "$EMU_PORT" info replication | tr -d '\r' | awk -F: '/^emulator_serve_micros:/ {print $2 / 1000000}')
echo "full sync: $total keys, $(echo "scale=1; $bytes / 1000000" | bc) MB of stream over $SHARDS flows"
echo "  replica side (DFLY SYNC answered -> every flow at FULLSYNC_END, applied, STARTSTABLE): $snap s -> $(echo "$total / $snap" | bc) keys/s, $(echo "scale=2; $bytes / 1000000 / $snap" | bc) MB/s"
echo "  emulator serving the pre-serialized streams (emulator_serve_micros): ${serve:-?} s"
echo "  process start to stable sync (incl. the emulator reading its keyspace at DFLY SYNC): $wall s -> $(echo "$total / $wall" | bc) keys/s"
echo "  replica peak RSS (VmHWM): $((hwm / 1024)) MB"
c0=$(date +%s.%N)
if timeout 300 "$BIN/df2redis-sync" -q check "$WORK/replicate.yaml" --mode full --rounds 1 \
    --result-dir "$WORK/check" >"$WORK/check.out"; then
    echo "check --mode full: $(grep -o 'result: [a-z]*' "$WORK/check.out") ($(echo "$(date +%s.%N) - $c0" | bc) s)"
else
    echo "check --mode full: NOT equal" >&2
    cat "$WORK/check.out" >&2
    exit 1
fi
kill -TERM "$REPL"
wait "$REPL" && echo "replica stopped cleanly (SIGTERM, exit 0)"
