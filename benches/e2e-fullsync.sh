#!/usr/bin/env bash
# End-to-end full-sync benchmark against the target's ceiling, in one run
# (docs/performance.md explains every figure).
#
# For each dataset: the RESP commands are generated once (benches/gen_dataset.py); the
# ceiling is `redis-cli --pipe` loading that file into a fresh redis-server; the same file is
# loaded into the backing redis-server of a `dfly-emulator --bench-source` (the snapshot is
# read and serialized before `DFLY SYNC` is answered, so the timed part is the replica's);
# df2redis-sync replicates into another fresh redis-server and is timed from "full sync
# started" to the moment every flow's position marker is in the target
# (benches/fullsync_timer.py). The target must then hold as many keys as the source, per db.
#
#   benches/e2e-fullsync.sh                      # strings, mixed, huge
#   DATASETS=strings KEYS=10000000 benches/e2e-fullsync.sh
#   DATASETS=bighash BIG_MIB=1024 benches/e2e-fullsync.sh
#   DATASETS=strings SHARDS_LIST="1 2 4 8" benches/e2e-fullsync.sh
#
# Env: DATASETS (strings mixed huge bighash; default "strings mixed huge"), KEYS (strings,
# default 1000000), VALUE (bytes, default 64), MIXED_KEYS (default 200000), HUGE_MIB (total
# of the four huge keys, default 400), BIG_MIB (bighash, default 1024), SHARDS_LIST (flows,
# default 4), CEILING (1 = measure redis-cli --pipe, default 1), PIPELINE (extra YAML lines
# under `pipeline:`, several separated by "; ", e.g. "batch_commands: 1024; channel_capacity: 4"), REPEAT (runs of ceiling + replica per
# dataset, alternating; the best of each is compared, default 1), BIN (default
# target/release), KEEP=1 keeps the work dir, PERF=<path> records a perf profile of each
# replica run to <path>.<dataset>.<flows> (its RSS and CPU figures are then perf's), PIN=1
# (target alone on the last CPU, see benches/lib.sh). Build first: cargo build --release --bins
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
[ -x "$BIN/df2redis-sync" ] && [ -x "$BIN/dfly-emulator" ] ||
    { echo "build first: cargo build --release --bins" >&2; exit 2; }

DATASETS=${DATASETS:-strings mixed huge}
KEYS=${KEYS:-1000000}
VALUE=${VALUE:-64}
MIXED_KEYS=${MIXED_KEYS:-200000}
HUGE_MIB=${HUGE_MIB:-400}
BIG_MIB=${BIG_MIB:-1024}
SHARDS_LIST=${SHARDS_LIST:-4}
CEILING=${CEILING:-1}
PIPELINE=${PIPELINE:-}
bench_init e2e-fullsync

dbs_keys() { # port -> "db:keys ..." for every non-empty db (markers excluded by the caller)
    redis-cli -p "$1" info keyspace | tr -d '\r' | sed -n 's/^db\([0-9]*\):keys=\([0-9]*\),.*/\1:\2/p' | tr '\n' ' '
}

total_keys() { # port
    redis-cli -p "$1" info keyspace | tr -d '\r' | sed -n 's/^db[0-9]*:keys=\([0-9]*\),.*/\1/p' |
        awk '{s += $1} END {print s + 0}'
}

gen() { # dataset -> file path (cached in WORK)
    local f="$WORK/$1.resp"
    if [ ! -f "$f" ]; then
        case $1 in
            strings) python3 benches/gen_dataset.py strings "$KEYS" "$VALUE" >"$f" ;;
            mixed) python3 benches/gen_dataset.py mixed "$MIXED_KEYS" >"$f" ;;
            huge) python3 benches/gen_dataset.py huge "$HUGE_MIB" >"$f" ;;
            bighash) python3 benches/gen_dataset.py bighash "$BIG_MIB" >"$f" ;;
            *) echo "unknown dataset $1" >&2; exit 2 ;;
        esac || { rm -f "$f"; echo "generating $1 failed" >&2; exit 1; }
    fi
    echo "$f"
}

ceiling() { # dataset file -> CEIL_SECS, CEIL_KEYS
    local port t0 t1 pid
    port=$(free_port)
    start_redis "ceil-$1" "$port"
    pid=${PIDS[-1]}
    local c0
    c0=$(server_cpu "$port")
    t0=$(date +%s.%N)
    "${ON_OTHERS[@]}" redis-cli -p "$port" --pipe <"$2" >"$WORK/ceil-$1.out"
    t1=$(date +%s.%N)
    CEIL_TCPU=$(echo "$(server_cpu "$port") - $c0" | bc)
    grep -q "errors: 0" "$WORK/ceil-$1.out" || { cat "$WORK/ceil-$1.out" >&2; exit 1; }
    CEIL_KEYS=$(total_keys "$port")
    stop_pid "$pid"
    rm -rf "$WORK/ceil-$1"
    CEIL_SECS=$(echo "$t1 - $t0" | bc)
}

replicate() { # dataset file shards -> prints the result line
    local ds=$1 file=$2 shards=$3 ep tp emu backend bport tgt repl t src_keys
    ep=$(free_port)
    tp=$(free_port)
    start_redis "tgt-$ds-$shards" "$tp"
    tgt=${PIDS[-1]}
    RUST_LOG=info "${ON_OTHERS[@]}" "$BIN/dfly-emulator" --port "$ep" --shards "$shards" --bench-source \
        2>"$WORK/emulator-$ds-$shards.log" &
    emu=$!
    PIDS+=($emu)
    wait_ping "$ep" 30
    backend=$(redis-cli -p "$ep" EMULATOR BACKEND)
    bport=${backend##*:}
    redis-cli -p "$bport" --pipe <"$file" >"$WORK/load-$ds.out"
    grep -q "errors: 0" "$WORK/load-$ds.out" || { cat "$WORK/load-$ds.out" >&2; exit 1; }
    src_keys=$(dbs_keys "$bport")
    cat >"$WORK/r-$ds-$shards.yaml" <<EOF
source:
  addr: 127.0.0.1:$ep
target:
  addr: 127.0.0.1:$tp
checkpoint:
  dir: $WORK/ckpt-$ds-$shards
replica:
  flow_timeout: 600s
pipeline:
  $(echo "${PIPELINE:-batch_commands: 512}" | sed "s/; */\n  /g")
EOF
    # A repeated run must not find the previous run's log lines or checkpoint.
    rm -rf "$WORK/replica-$ds-$shards.log" "$WORK/ckpt-$ds-$shards"
    local wrap=()
    [ -n "${PERF:-}" ] && wrap=(perf record -F 1999 -g -o "$PERF.$ds.$shards" --)
    "${wrap[@]}" "${ON_OTHERS[@]}" "$BIN/df2redis-sync" replicate "$WORK/r-$ds-$shards.yaml" \
        --log-file "$WORK/replica-$ds-$shards.log" 2>/dev/null &
    repl=$!
    PIDS+=($repl)
    local c0
    c0=$(server_cpu "$tp")
    t=$(python3 benches/fullsync_timer.py "$WORK/replica-$ds-$shards.log" "$tp" "$shards" "$repl" 1200) || {
        tail -20 "$WORK/replica-$ds-$shards.log" >&2
        exit 1
    }
    R_TCPU=$(echo "$(server_cpu "$tp") - $c0" | bc)
    local secs hwm cpu bytes
    secs=$(echo "$t" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p')
    hwm=$(echo "$t" | sed -n 's/.*hwm_kib=\([0-9]*\).*/\1/p')
    cpu=$(echo "$t" | sed -n 's/.*cpu_s=\([0-9.]*\).*/\1/p')
    bytes=$(redis-cli -p "$ep" info replication | tr -d '\r' |
        awk -F: '/^slave0_bytes_sent:/ {n = split($2, a, ","); for (i = 1; i <= n; i++) s += a[i]; print s}')
    # The target must hold the source's keys per db, plus the tool's markers in db 0 (one
    # per flow, and the owner marker where the build writes one).
    local want got markers mk=()
    for i in $(seq 0 $((shards - 1))); do mk+=("df2redis-sync:ckpt:$i"); done
    markers=$(redis-cli -p "$tp" exists "${mk[@]}" df2redis-sync:ckpt:owner)
    want=$(echo "$src_keys" | tr ' ' '\n' | awk -F: -v m="$markers" 'NF == 2 {if ($1 == 0) $2 += m; printf "%s:%s ", $1, $2}')
    got=$(dbs_keys "$tp")
    if [ "$(echo "$want" | xargs -n1 | sort | xargs)" != "$(echo "$got" | xargs -n1 | sort | xargs)" ]; then
        echo "MISMATCH $ds: source (+markers) $want, target $got" >&2
        exit 1
    fi
    R_SECS=$secs R_HWM=$hwm R_CPU=$cpu R_BYTES=$bytes
    R_KEYS=$(echo "$src_keys" | tr ' ' '\n' | awk -F: 'NF == 2 {s += $2} END {print s + 0}')
    stop_pid "$repl"
    stop_pid "$emu"
    stop_pid "$tgt"
    rm -rf "$WORK/tgt-$ds-$shards"
}

echo "# e2e full sync: $(date -u +%FT%TZ), $(nproc) cores, load average $(loadavg), redis $(redis-server --version | awk '{print $3}'), $(pinning)"
REPEAT=${REPEAT:-1}
for ds in $DATASETS; do
    file=$(gen "$ds") || exit 1
    resp_mb=$(echo "scale=1; $(stat -c %s "$file") / 1000000" | bc)
    best_ceil=""
    for shards in $SHARDS_LIST; do
        best=""
        for _ in $(seq "$REPEAT"); do
            if [ "$CEILING" = 1 ] && { [ "$shards" = "${SHARDS_LIST%% *}" ] || [ "$REPEAT" -gt 1 ]; }; then
                ceiling "$ds" "$file"
                echo "$ds: ceiling redis-cli --pipe: $CEIL_KEYS keys, $resp_mb MB of RESP in ${CEIL_SECS}s = $(echo "$CEIL_KEYS / $CEIL_SECS" | bc) keys/s, $(echo "scale=1; $resp_mb / $CEIL_SECS" | bc) MB/s; target CPU ${CEIL_TCPU}s (load $(loadavg))"
                if [ -z "$best_ceil" ] || [ "$(echo "$CEIL_SECS < $best_ceil" | bc)" = 1 ]; then best_ceil=$CEIL_SECS; fi
            fi
            replicate "$ds" "$file" "$shards"
            stream_mb=$(echo "scale=1; $R_BYTES / 1000000" | bc)
            line="$ds: df2redis-sync, $shards flows: $R_KEYS keys in ${R_SECS}s = $(echo "$R_KEYS / $R_SECS" | bc) keys/s"
            line="$line, $(echo "scale=1; $resp_mb / $R_SECS" | bc) MB/s of RESP, $stream_mb MB stream ($(echo "scale=1; $stream_mb / $R_SECS" | bc) MB/s)"
            [ -n "$best_ceil" ] && line="$line, ratio to best ceiling so far $(echo "scale=2; $best_ceil / $R_SECS" | bc)"
            line="$line; peak RSS $((R_HWM / 1024)) MiB, CPU ${R_CPU}s, target CPU ${R_TCPU}s (load $(loadavg))"
            echo "$line"
            if [ -z "$best" ] || [ "$(echo "$R_SECS < $best" | bc)" = 1 ]; then best=$R_SECS; fi
        done
        if [ "$REPEAT" -gt 1 ] || [ -n "$best_ceil" ]; then
            s_line="$ds, $shards flows, best of $REPEAT: df2redis-sync ${best}s = $(echo "$R_KEYS / $best" | bc) keys/s"
            [ -n "$best_ceil" ] && s_line="$s_line, ceiling ${best_ceil}s = $(echo "$R_KEYS / $best_ceil" | bc) keys/s, ratio $(echo "scale=2; $best_ceil / $best" | bc)"
            echo "SUMMARY $s_line"
        fi
    done
done
