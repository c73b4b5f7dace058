#!/usr/bin/env bash
# Full-sync throughput into a 3-master Redis Cluster vs. into one standalone redis-server, on
# this machine, same dataset, same emulated master: builds the release binaries, starts
# dfly-emulator (--bench-source: each flow's snapshot is serialized before DFLY SYNC is
# answered, so the timing is the replica's), writes KEYS keys of the plain types into db 0 of
# its backing server (a cluster has only db 0), then replicates it twice: into a fresh
# standalone redis-server and into a fresh 3-master cluster (redis-cli --cluster create). For
# each: seconds from "full sync started" to "stable sync" and keys/s; the cluster run is
# checked with `check --mode full` (must say equal).
#
#   scripts/cluster-bench.sh              # KEYS=500000 SHARDS=4 by default
#
# Everything binds 127.0.0.1; every process started here is stopped on exit; bounded waits.
set -euo pipefail
KEYS=${KEYS:-500000}
SHARDS=${SHARDS:-4}
CONNS=${CONNS:-1}
BASE_PORT=${BASE_PORT:-17390}
cd "$(dirname "$0")/.."
cargo build --release --bins >&2
BIN=target/release
WORK=$(mktemp -d /tmp/cluster-bench.XXXXXX)
. scripts/lib.sh
lib_init

STD_PORT=$((BASE_PORT + 1))
C1=$((BASE_PORT + 2))
C2=$((BASE_PORT + 3))
C3=$((BASE_PORT + 4))

# Port 0: a free port picked by the kernel, read back from the address file once it serves.
start_emulator 0 --shards "$SHARDS" --bench-source
awk -v n="$KEYS" 'BEGIN {
    for (i = 0; i < n; i++) {
        k = "bulk:" i;
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
}' | redis-cli -p "$BPORT" --pipe >/dev/null
total=$(redis-cli -p "$BPORT" dbsize)
echo "dataset: $total keys in db 0 (8 plain shapes), $SHARDS flows, $CONNS writer connection(s) per node"

# Target 1: one standalone node.
server "$STD_PORT" "$WORK/std"
# Target 2: a 3-master cluster.
for p in $C1 $C2 $C3; do
    server "$p" "$WORK/c$p" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 3000
done
redis-cli --cluster create 127.0.0.1:$C1 127.0.0.1:$C2 127.0.0.1:$C3 --cluster-yes >/dev/null
for _ in $(seq 1 300); do
    ok=1
    for p in $C1 $C2 $C3; do
        redis-cli -p "$p" cluster info | grep -q "cluster_state:ok" || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
done

run() { # name target-yaml-section
    local name=$1 section=$2
    cat >"$WORK/$name.yaml" <<EOF
source:
  addr: 127.0.0.1:$EMU_PORT
target:
$section
checkpoint:
  dir: $WORK/ckpt-$name
  interval: 1s
pipeline:
  connections_per_node: $CONNS
EOF
    local log="$WORK/$name.log"
    start_replica "$WORK/$name.yaml" "$log" 150
    local secs
    secs=$(echo "scale=2; ($STABLE - $SYNCED) / 1" | bc)
    echo "$name: full sync of $total keys in $secs s -> $(echo "$total / $secs" | bc) keys/s"
    if [ "$name" = cluster ]; then
        if timeout 600 "$BIN/df2redis-sync" -q check "$WORK/$name.yaml" --mode full --rounds 1 \
            --result-dir "$WORK/check" >"$WORK/check.out"; then
            echo "  check --mode full: $(grep -o 'result: [a-z]*' "$WORK/check.out")"
        else
            echo "  check --mode full: NOT equal" >&2
            cat "$WORK/check.out" >&2
            exit 1
        fi
        for p in $C1 $C2 $C3; do
            echo "  master 127.0.0.1:$p holds $(redis-cli -p "$p" dbsize) keys"
        done
    fi
    kill -TERM "$REPL"
    wait "$REPL" || true
}

run standalone "  addr: 127.0.0.1:$STD_PORT"
run cluster "  type: redis-cluster
  seeds: [127.0.0.1:$C1]"
