#!/usr/bin/env bash
# Stable-sync (journal) benchmark against the target's ceiling, in one run
# (docs/performance.md explains every figure).
#
# The journal source is examples/bench_master.rs, a synthetic Dragonfly master (the emulator
# proxies each write through redis under one lock and tops out near 20k writes/s here). It
# serves an empty snapshot, then after DFLY STARTSTABLE writes OPS journal entries
# `SET k:<flow>:<n> <VALUE bytes>` over FLOWS flows at a fixed offered rate, with a probe entry
# per flow every PROBE_MS (an RPUSH); a subscriber on the target (keyspace notifications for
# lists only, so the SETs publish nothing) measures each probe's lag: master write() → visible
# in the target.
#
#   1. ceiling: `redis-cli --pipe` of the same OPS SETs into a fresh redis-server;
#   2. df2redis-sync at the highest rate it takes (offered = unlimited): sustained entries/s;
#   3. df2redis-sync at fixed offered rates, as fractions of the ceiling (FRACTIONS), each for
#      about SECONDS: sustained rate and lag p50/p99/max.
#
#   benches/e2e-stable.sh
#   FRACTIONS="0.5" SECONDS_PER_RATE=10 benches/e2e-stable.sh
#
# Env: OPS (ceiling and max-rate runs, default 1000000), FLOWS (default 2), VALUE (default
# 64), KEYSPACE (distinct keys per flow, default 100000), FRACTIONS (default "0.1 0.25 0.5
# 0.75 0.9"), SECONDS_PER_RATE (default 5), PROBE_MS (default 5), PIPELINE (a YAML line
# under `pipeline:`), REPEAT (ceiling + max-rate runs, alternating; best of each compared;
# the fixed rates use the best ceiling; default 1), PIN=1 (target alone on the last CPU, see
# benches/lib.sh), CEIL (SETs/s: skip the ceiling and max-rate
# runs, use this ceiling for FRACTIONS; with MAXRATE=1 the max-rate run still runs), BIN (default target/release), MASTER (default
# $BIN/examples/bench_master), KEEP=1 keeps the work dir.
# Build first: cargo build --release --bins --example bench_master
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
MASTER=${MASTER:-$BIN/examples/bench_master}
[ -x "$BIN/df2redis-sync" ] && [ -x "$MASTER" ] ||
    { echo "build first: cargo build --release --bins --example bench_master" >&2; exit 2; }
OPS=${OPS:-1000000}
FLOWS=${FLOWS:-2}
VALUE=${VALUE:-64}
KEYSPACE=${KEYSPACE:-100000}
FRACTIONS=${FRACTIONS-0.1 0.25 0.5 0.75 0.9}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-5}
PROBE_MS=${PROBE_MS:-5}
PIPELINE=${PIPELINE:-}
bench_init e2e-stable

pipe_load() { # name dataset-args... -> PIPE_SECS, PIPE_TCPU, PIPE_SPLIT: gen_dataset.py's RESP
    # loaded into a fresh redis-server by `redis-cli --pipe` (must answer without errors)
    local name=$1 port pid t0 t1 c0 s0
    shift
    python3 benches/gen_dataset.py "$@" >"$WORK/$name.resp"
    port=$(free_port)
    start_redis "$name" "$port"
    pid=${PIDS[-1]}
    c0=$(server_cpu "$port")
    s0=$(server_cpu_split "$port")
    t0=$(date +%s.%N)
    "${ON_OTHERS[@]}" redis-cli -p "$port" --pipe <"$WORK/$name.resp" >"$WORK/$name.out"
    t1=$(date +%s.%N)
    PIPE_TCPU=$(echo "$(server_cpu "$port") - $c0" | bc)
    PIPE_SPLIT=$(split_diff "$s0" "$(server_cpu_split "$port")")
    grep -q "errors: 0" "$WORK/$name.out" || { cat "$WORK/$name.out" >&2; exit 1; }
    stop_pid "$pid"
    PIPE_SECS=$(echo "$t1 - $t0" | bc)
    rm -rf "${WORK:?}/$name" "$WORK/$name.resp"
}

ceiling() { # -> CEIL_RATE and the figures of the two framed files
    pipe_load ceil journal "$OPS" "$FLOWS" "$KEYSPACE" "$VALUE"
    CEIL_SECS=$PIPE_SECS CEIL_TCPU=$PIPE_TCPU CEIL_SPLIT=$PIPE_SPLIT
    CEIL_RATE=$(echo "$OPS / $CEIL_SECS" | bc)
    # The same SETs in a transaction framing (MULTI, 512 SETs, marker, EXEC): what Redis
    # itself pays for exactly-once batches of separate SETs, for comparison (not the ratio's
    # base); and as df2redis-sync sends runs of plain SETs: MULTI, one MSET of 1024, marker,
    # EXEC.
    pipe_load ceiltx journal-tx "$OPS" "$FLOWS" "$KEYSPACE" "$VALUE" 512
    CEILTX_SECS=$PIPE_SECS CEILTX_TCPU=$PIPE_TCPU
    pipe_load ceilmset journal-mset "$OPS" "$FLOWS" "$KEYSPACE" "$VALUE" 1024
    CEILMSET_SECS=$PIPE_SECS CEILMSET_TCPU=$PIPE_TCPU
}

split_diff() { # "u0 s0" "u1 s1" -> "user X s, sys Y s"
    echo "$1 $2" | awk '{printf "user %.2fs + sys %.2fs", $3 - $1, $4 - $2}'
}

cmd_calls() { # port command -> calls of that command (INFO commandstats), 0 if none
    redis-cli -p "$1" INFO commandstats | tr -d '\r' |
        awk -F'[:=,]' -v c="cmdstat_$2" '$1 == c {print $3; f=1} END {if (!f) print 0}'
}

batches() { # -> "N transactions, M entries each, K MSETs" from R_EXEC / R_MSETS / RESULT
    local sent
    sent=$(echo "$RESULT" | sed -n 's/.*sent \([0-9]*\) entries.*/\1/p')
    if [ "$R_EXEC" -gt 0 ] && [ -n "$sent" ]; then
        # Runs of plain SETs go as one MSET each, so the target's SET count is no longer the
        # entry count: entries per transaction are the journal entries sent / transactions.
        echo "$R_EXEC transactions, $(echo "scale=1; $sent / $R_EXEC" | bc) entries each, $R_MSETS MSETs"
    else
        echo "no transactions"
    fi
}

run() { # rate ops [extra bench_master flags] -> RESULT (bench_master's line), R_HWM, R_CPU
    local rate=$1 ops=$2 mp tp tgt bm repl timeout
    shift 2
    mp=$(free_port)
    tp=$(free_port)
    start_redis "tgt-$rate" "$tp"
    tgt=${PIDS[-1]}
    timeout=$((SECONDS_PER_RATE * 4 + 120))
    "${ON_OTHERS[@]}" "$MASTER" --port "$mp" --flows "$FLOWS" --rate "$rate" --ops "$ops" --value-size "$VALUE" \
        --keyspace "$KEYSPACE" --probe-ms "$PROBE_MS" --target "127.0.0.1:$tp" \
        --timeout "$timeout" --dump "$WORK/lags-$rate.txt" "$@" >"$WORK/bm-$rate.out" 2>"$WORK/bm-$rate.err" &
    bm=$!
    PIDS+=($bm)
    wait_ping "$mp" 10
    cat >"$WORK/r-$rate.yaml" <<EOF
source:
  addr: 127.0.0.1:$mp
target:
  addr: 127.0.0.1:$tp
checkpoint:
  dir: $WORK/ckpt-$rate
pipeline:
  $(echo "${PIPELINE:-batch_commands: 512}" | sed "s/; */\n  /g")
EOF
    local c0 s0
    c0=$(server_cpu "$tp")
    s0=$(server_cpu_split "$tp")
    "${ON_OTHERS[@]}" "$BIN/df2redis-sync" replicate "$WORK/r-$rate.yaml" --log-file "$WORK/replica-$rate.log" 2>/dev/null &
    repl=$!
    PIDS+=($repl)
    if ! wait "$bm"; then
        cat "$WORK/bm-$rate.err" >&2
        tail -5 "$WORK/replica-$rate.log" >&2
        exit 1
    fi
    RESULT=$(cat "$WORK/bm-$rate.out")
    R_TCPU=$(echo "$(server_cpu "$tp") - $c0" | bc)
    R_SPLIT=$(split_diff "$s0" "$(server_cpu_split "$tp")")
    R_HWM=$(hwm_kib "$repl")
    R_CPU=$(proc_cpu "$repl")
    # Transactions the target ran and the entries in each: the batch size df2redis-sync
    # achieved at this rate; MSETs: runs of plain SETs sent as one.
    R_EXEC=$(cmd_calls "$tp" exec)
    R_MSETS=$(cmd_calls "$tp" mset)
    local got
    got=$(redis-cli -p "$tp" dbsize)
    stop_pid "$repl"
    stop_pid "$tgt"
    rm -rf "$WORK/tgt-$rate"
    [ "$got" -gt 0 ] || { echo "nothing reached the target" >&2; exit 1; }
}

echo "# e2e stable sync: $(date -u +%FT%TZ), $(nproc) cores, load average $(loadavg), $FLOWS flows, SET of $VALUE-byte values, $(pinning)"
REPEAT=${REPEAT:-1}
best_ceil="" best_rate=""
if [ -n "${CEIL:-}" ]; then
    # A ceiling measured earlier (SETs/s): no ceiling or max-rate run, only the fixed rates
    # (for profiling one rate; ratios are only meaningful with a same-run ceiling).
    best_ceil=$CEIL
    echo "ceiling given: $CEIL SETs/s (not measured in this run)"
    if [ -n "${MAXRATE:-}" ]; then
        run 0 "$OPS" --no-lag
        applied=$(echo "$RESULT" | sed -n 's/.*applied in [0-9.]*s = \([0-9]*\)\/s.*/\1/p')
        echo "max rate: $RESULT; ratio to the given ceiling $(echo "scale=2; $applied / $CEIL" | bc); peak RSS $((R_HWM / 1024)) MiB, CPU ${R_CPU}s, target CPU ${R_TCPU}s ($R_SPLIT), $(batches) (load $(loadavg))"
    fi
else
    for _ in $(seq "$REPEAT"); do
        ceiling
        echo "ceiling: redis-cli --pipe of $OPS SETs in ${CEIL_SECS}s = $CEIL_RATE SETs/s; target CPU ${CEIL_TCPU}s ($CEIL_SPLIT) (load $(loadavg))"
        echo "same SETs as MULTI/512 SETs/marker/EXEC: ${CEILTX_SECS}s = $(echo "$OPS / $CEILTX_SECS" | bc) SETs/s; target CPU ${CEILTX_TCPU}s"
        echo "same SETs as MULTI/MSET of 1024/marker/EXEC: ${CEILMSET_SECS}s = $(echo "$OPS / $CEILMSET_SECS" | bc) keys/s; target CPU ${CEILMSET_TCPU}s"
        if [ -z "$best_ceil" ] || [ "$CEIL_RATE" -gt "$best_ceil" ]; then best_ceil=$CEIL_RATE; fi
        # Without keyspace notifications: they would cost the target CPU on every SET, which
        # the ceiling does not pay; the end is found by polling for the final probes.
        run 0 "$OPS" --no-lag
        applied=$(echo "$RESULT" | sed -n 's/.*applied in [0-9.]*s = \([0-9]*\)\/s.*/\1/p')
        echo "max rate: $RESULT; ratio to ceiling $(echo "scale=2; $applied / $CEIL_RATE" | bc); peak RSS $((R_HWM / 1024)) MiB, CPU ${R_CPU}s, target CPU ${R_TCPU}s ($R_SPLIT), $(batches) (load $(loadavg))"
        if [ -z "$best_rate" ] || [ "$applied" -gt "$best_rate" ]; then best_rate=$applied; fi
    done
    echo "SUMMARY best of $REPEAT: ceiling $best_ceil SETs/s, df2redis-sync $best_rate entries/s, ratio $(echo "scale=2; $best_rate / $best_ceil" | bc)"
fi
CEIL_RATE=$best_ceil
for f in $FRACTIONS; do
    rate=$(echo "$CEIL_RATE * $f / 1" | bc)
    ops=$((rate * SECONDS_PER_RATE))
    run "$rate" "$ops"
    echo "$f x ceiling: $RESULT; peak RSS $((R_HWM / 1024)) MiB, CPU ${R_CPU}s, target CPU ${R_TCPU}s ($R_SPLIT), $(batches) (load $(loadavg))"
done
