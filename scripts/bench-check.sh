#!/usr/bin/env bash
# Measures `df2redis-sync check` on loopback: throughput per mode over N keys (keys/s, MB/s)
# and peak memory (max RSS) while comparing one big hash.
#
# Two redis-servers are started on free ports in a temp dir (killed on exit). The source is
# filled with DEBUG POPULATE (strings) plus a few collections; the target becomes an exact copy
# through Redis replication (REPLICAOF, then REPLICAOF NO ONE), so the pair is equal.
#
# Each throughput line also gives the CPU seconds used by the checker (user+sys) and by each
# redis-server (INFO cpu) and the load average, since on a shared machine keys/s alone says
# little. With CEILING=1 the source server's own cost of the same per-key work is measured
# first (redis-cli --pipe of TYPE / PEXPIRETIME per key, EXISTS of 1000 keys, a full SCAN).
#
# Usage: scripts/bench-check.sh [KEYS] [BIG_HASH_MIB]
#   KEYS          string keys for the throughput runs (default 1000000)
#   BIG_HASH_MIB  size of the big hash for the memory run, in MiB of values (default 1024;
#                 0 skips the memory run)
# Env: BIN (default target/release/df2redis-sync), WORKERS (default 4), VALUE_SIZE (default 32),
#      MODES (default "outline length smart full"), REPEAT (runs per mode, default 1),
#      CEILING (1 = measure the server's ceiling too).
# Build first: cargo build --release --bin df2redis-sync
set -euo pipefail

KEYS=${1:-1000000}
BIG_MIB=${2:-1024}
BIN=${BIN:-target/release/df2redis-sync}
WORKERS=${WORKERS:-4}
VALUE_SIZE=${VALUE_SIZE:-32}
MODES=${MODES:-outline length smart full}
REPEAT=${REPEAT:-1}
CEILING=${CEILING:-0}
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

server_cpu() { # port -> CPU seconds used so far (user + sys)
  redis-cli -p "$1" INFO cpu | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.2f", s}'
}

run_check() { # mode -> prints one result line
  local mode=$1 out rss cpu s0 t0 s1 t1
  s0=$(server_cpu "$SP"); t0=$(server_cpu "$TP")
  out=$( { /usr/bin/time -f 'RSS_KB=%M CPU=%U+%S' "$BIN" check "$DIR/check.yaml" --mode "$mode" \
      --rounds 1 --workers "$WORKERS" --result-dir "$DIR/results" -q; } 2>&1 ) || {
    echo "check $mode failed:"; echo "$out"; exit 1; }
  s1=$(server_cpu "$SP"); t1=$(server_cpu "$TP")
  rss=$(echo "$out" | sed -n 's/.*RSS_KB=\([0-9]*\).*/\1/p')
  cpu=$(echo "$out" | sed -n 's/.*CPU=\([0-9.+]*\).*/\1/p')
  echo "$out" | grep '^check (' | sed "s/\$/; max RSS ${rss} KiB; CPU s: checker ${cpu}, source $(echo "$s1 - $s0" | bc), target $(echo "$t1 - $t0" | bc); load $(cut -d' ' -f1-3 /proc/loadavg)/"
}

ceiling() { # port: the server's CPU for the per-key work of a check of $KEYS string keys
  local p=$1 what c0 c1
  python3 - "$KEYS" "$DIR" <<'PY'
import sys
n, d = int(sys.argv[1]), sys.argv[2]
def one(name, path):
    with open(path, "w") as f:
        for i in range(n):
            k = "key:%d" % i
            f.write("*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(name), name, len(k), k))
one("TYPE", d + "/type.resp")
one("PEXPIRETIME", d + "/pexpiretime.resp")
with open(d + "/exists.resp", "w") as f:
    for s in range(0, n, 1000):
        ks = ["key:%d" % i for i in range(s, min(n, s + 1000))]
        f.write("*%d\r\n$6\r\nEXISTS\r\n" % (len(ks) + 1))
        f.write("".join("$%d\r\n%s\r\n" % (len(k), k) for k in ks))
PY
  for what in type pexpiretime exists; do
    c0=$(server_cpu "$p"); redis-cli -p "$p" --pipe < "$DIR/$what.resp" >/dev/null; c1=$(server_cpu "$p")
    echo "ceiling: $what per key: $(echo "$c1 - $c0" | bc) server CPU s for $KEYS keys; load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  c0=$(server_cpu "$p"); redis-cli -p "$p" --scan >/dev/null; c1=$(server_cpu "$p")
  echo "ceiling: SCAN of every key (COUNT 10): $(echo "$c1 - $c0" | bc) server CPU s; load $(cut -d' ' -f1-3 /proc/loadavg)"
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
if [ "$CEILING" = 1 ]; then ceiling "$SP"; fi
for mode in $MODES; do
  for _ in $(seq "$REPEAT"); do run_check "$mode"; done
done
[ "$BIG_MIB" = 0 ] && exit 0

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
