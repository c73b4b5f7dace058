#!/usr/bin/env bash
# Measures `df2redis-sync check` on loopback: throughput per mode over N keys (keys/s, MB/s)
# and peak memory (max RSS) while comparing one big hash.
#
# Two redis-servers are started on free ports in a temp dir (killed on exit). The source is
# filled with DEBUG POPULATE (strings) plus a few collections; the target becomes an exact copy
# through Redis replication (REPLICAOF, then REPLICAOF NO ONE), so the pair is equal.
#
# Usage: scripts/bench-check.sh [KEYS] [BIG_HASH_MIB]
#   KEYS          string keys for the throughput runs (default 1000000)
#   BIG_HASH_MIB  size of the big hash for the memory run, in MiB of values (default 1024)
# Env: BIN (default target/release/df2redis-sync), WORKERS (default 4), VALUE_SIZE (default 32).
# Build first: cargo build --release --bin df2redis-sync
set -euo pipefail

KEYS=${1:-1000000}
BIG_MIB=${2:-1024}
BIN=${BIN:-target/release/df2redis-sync}
WORKERS=${WORKERS:-4}
VALUE_SIZE=${VALUE_SIZE:-32}
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin df2redis-sync" >&2; exit 2; }

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_redis() { # name port
  mkdir -p "$DIR/$1"
  redis-server --bind 127.0.0.1 --port "$2" --dir "$DIR/$1" --save "" --appendonly no \
    --enable-debug-command yes --daemonize no --logfile "$DIR/$1/redis.log" &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$2" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "redis on $2 did not start" >&2; exit 2
}

copy_to_target() { # replicate source into target, wait for the sync, detach
  redis-cli -p "$TP" REPLICAOF 127.0.0.1 "$SP" >/dev/null
  for _ in $(seq 1200); do
    if redis-cli -p "$TP" INFO replication | grep -q 'master_link_status:up'; then
      # Up after the full sync was loaded; wait for the offsets to match.
      so=$(redis-cli -p "$SP" INFO replication | sed -n 's/^master_repl_offset:\([0-9]*\).*/\1/p')
      to=$(redis-cli -p "$TP" INFO replication | sed -n 's/^slave_repl_offset:\([0-9]*\).*/\1/p')
      [ "$so" = "$to" ] && break
    fi
    sleep 0.25
  done
  redis-cli -p "$TP" REPLICAOF NO ONE >/dev/null
}

run_check() { # mode -> prints one result line
  local mode=$1 out rss
  out=$( { /usr/bin/time -f 'RSS_KB=%M' "$BIN" check "$DIR/check.yaml" --mode "$mode" --rounds 1 \
      --workers "$WORKERS" --result-dir "$DIR/results" -q; } 2>&1 ) || {
    echo "check $mode failed:"; echo "$out"; exit 1; }
  rss=$(echo "$out" | sed -n 's/.*RSS_KB=\([0-9]*\).*/\1/p')
  echo "$out" | grep '^check (' | sed "s/\$/; max RSS ${rss} KiB/"
}

SP=$(free_port); TP=$(free_port)
start_redis src "$SP"; start_redis tgt "$TP"
cat > "$DIR/check.yaml" <<EOF
source: {addr: '127.0.0.1:$SP'}
target: {addr: '127.0.0.1:$TP'}
EOF

echo "== throughput: $KEYS string keys (value $VALUE_SIZE B) + 1000 hashes/lists/sets/zsets of 100, workers $WORKERS"
redis-cli -p "$SP" DEBUG POPULATE "$KEYS" key "$VALUE_SIZE" >/dev/null
python3 - <<'EOF' | redis-cli -p "$SP" --pipe >/dev/null
import sys
def cmd(*a):
    out = [f"*{len(a)}\r\n"]
    for x in a:
        x = str(x)
        out.append(f"${len(x.encode())}\r\n{x}\r\n")
    sys.stdout.write("".join(out))
for i in range(1000):
    cmd("HSET", f"h:{i}", *[v for j in range(100) for v in (f"f{j}", f"value-{j}")])
    cmd("RPUSH", f"l:{i}", *[f"item-{j}" for j in range(100)])
    cmd("SADD", f"s:{i}", *[f"member-{j}" for j in range(100)])
    cmd("ZADD", f"z:{i}", *[v for j in range(100) for v in (j * 1.5, f"m{j}")])
EOF
copy_to_target
echo "source keys: $(redis-cli -p "$SP" DBSIZE), target keys: $(redis-cli -p "$TP" DBSIZE)"
for mode in outline length smart full; do run_check "$mode"; done

echo "== memory: one hash of ${BIG_MIB} MiB (1 KiB values), mode full (chunked HSCAN/HMGET)"
redis-cli -p "$SP" FLUSHALL >/dev/null; redis-cli -p "$TP" FLUSHALL >/dev/null
python3 - "$BIG_MIB" <<'EOF' | redis-cli -p "$SP" --pipe >/dev/null
import sys
mib = int(sys.argv[1])
val = "v" * 1024
fields = mib * 1024
per = 1000
for start in range(0, fields, per):
    n = min(per, fields - start)
    parts = ["*%d\r\n$4\r\nHSET\r\n$7\r\nbighash\r\n" % (2 + 2 * n)]
    for j in range(start, start + n):
        f = "field:%d" % j
        parts.append("$%d\r\n%s\r\n$1024\r\n%s\r\n" % (len(f), f, val))
    sys.stdout.write("".join(parts))
EOF
copy_to_target
echo "hash fields: $(redis-cli -p "$SP" HLEN bighash) / $(redis-cli -p "$TP" HLEN bighash), source used_memory: $(redis-cli -p "$SP" INFO memory | sed -n 's/^used_memory_human:\(.*\)\r/\1/p')"
run_check full
