#!/usr/bin/env bash
# Full-sync scaling: df2redis-sync's peak RSS and throughput as the dataset grows
# (docs/performance.md). The source is examples/bench_master.rs serving a generated snapshot of
# N string keys (`key:<i>`, VALUE bytes, LZ4 frames) — it generates while it sends, so 10M
# keys need no 1 GB source keyspace and no emulator read of it; benches/e2e-fullsync.sh covers
# the emulator path, the other datasets and the 1 GiB hash.
#
#   benches/e2e-scale.sh                          # 1M and 10M keys, 4 flows
#   KEYS_LIST="1000000" FLOWS_LIST="1 2 4 8" benches/e2e-scale.sh
#
# Env: KEYS_LIST (default "1000000 10000000"), FLOWS_LIST (default 4), VALUE (default 64),
# PIPELINE (a YAML line under `pipeline:`), BIN (default target/release), KEEP=1.
# Build first: cargo build --release --bins --example bench_master
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MASTER=${MASTER:-$BIN/examples/bench_master}
[ -x "$BIN/df2redis-sync" ] && [ -x "$MASTER" ] ||
    { echo "build first: cargo build --release --bins --example bench_master" >&2; exit 2; }
KEYS_LIST=${KEYS_LIST:-1000000 10000000}
FLOWS_LIST=${FLOWS_LIST:-4}
VALUE=${VALUE:-64}
PIPELINE=${PIPELINE:-}
bench_init e2e-scale

echo "# e2e scale: $(date -u +%FT%TZ), $(nproc) cores, load average $(loadavg), strings of $VALUE bytes"
for keys in $KEYS_LIST; do
    for flows in $FLOWS_LIST; do
        mp=$(free_port)
        tp=$(free_port)
        start_redis "tgt-$keys-$flows" "$tp"
        tgt=${PIDS[-1]}
        "$MASTER" --port "$mp" --flows "$flows" --keys "$keys" --value-size "$VALUE" \
            --timeout 3600 >/dev/null 2>"$WORK/bm-$keys-$flows.err" &
        bm=$!
        PIDS+=($bm)
        wait_ping "$mp" 10
        cat >"$WORK/r-$keys-$flows.yaml" <<EOF
source:
  addr: 127.0.0.1:$mp
target:
  addr: 127.0.0.1:$tp
checkpoint:
  dir: $WORK/ckpt-$keys-$flows
pipeline:
  $(echo "${PIPELINE:-batch_commands: 512}" | sed "s/; */\n  /g")
EOF
        c0=$(server_cpu "$tp")
        "$BIN/df2redis-sync" replicate "$WORK/r-$keys-$flows.yaml" \
            --log-file "$WORK/replica-$keys-$flows.log" 2>/dev/null &
        repl=$!
        PIDS+=($repl)
        t=$(python3 benches/fullsync_timer.py "$WORK/replica-$keys-$flows.log" "$tp" "$flows" "$repl" 3000) || {
            tail -20 "$WORK/replica-$keys-$flows.log" >&2
            exit 1
        }
        tcpu=$(echo "$(server_cpu "$tp") - $c0" | bc)
        secs=$(echo "$t" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p')
        hwm=$(echo "$t" | sed -n 's/.*hwm_kib=\([0-9]*\).*/\1/p')
        cpu=$(echo "$t" | sed -n 's/.*cpu_s=\([0-9.]*\).*/\1/p')
        got=$(redis-cli -p "$tp" dbsize)
        # keys + one marker per flow (+ the owner marker where the build writes one)
        [ "$got" -ge "$((keys + flows))" ] && [ "$got" -le "$((keys + flows + 1))" ] ||
            { echo "MISMATCH: target holds $got keys for $keys" >&2; exit 1; }
        echo "$keys keys, $flows flows: ${secs}s = $(echo "$keys / $secs" | bc) keys/s; peak RSS $((hwm / 1024)) MiB ($hwm KiB), CPU ${cpu}s, target CPU ${tcpu}s (load $(loadavg))"
        stop_pid "$repl"
        stop_pid "$bm"
        stop_pid "$tgt"
        rm -rf "$WORK/tgt-$keys-$flows"
    done
done
