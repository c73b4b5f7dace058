#!/usr/bin/env bash
# Shared helpers of scripts/demo.sh, scripts/replicate-1m.sh and scripts/cluster-bench.sh:
# sourced, not run. The caller sets `WORK` (a temp dir) and `BIN` (the binaries' directory)
# and has `set -euo pipefail`. Every process started here is recorded in `PIDS` and stopped
# by the EXIT trap installed by `lib_init`.

PIDS=()

# Installs the cleanup: stop every recorded process, remove WORK (on exit; Ctrl-C or SIGTERM
# exits with 130 through it).
lib_init() {
    trap lib_cleanup EXIT
    trap 'exit 130' INT TERM
}

lib_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# wait_ping PORT: until a redis-server answers on PORT (20 s at most, then exit 1).
wait_ping() {
    for _ in $(seq 1 200); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    exit 1
}

# server PORT DIR [ARGS...]: a redis-server without persistence, its log in DIR/redis.log.
server() {
    local port=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" \
        --daemonize no --logfile "$dir/redis.log" "$@" &
    PIDS+=($!)
    wait_ping "$port"
}

# start_emulator PORT [ARGS...]: dfly-emulator on PORT (0: a free port picked by the kernel,
# read back from its address file once it serves), its log in WORK/emulator.log. Sets
# EMU_ADDR, EMU_PORT, EMU_PID, BACKEND (its redis-server) and BPORT.
start_emulator() {
    local port=$1
    shift
    rm -f "$WORK/emulator.addr"
    RUST_LOG=info "$BIN/dfly-emulator" --port "$port" --addr-file "$WORK/emulator.addr" "$@" \
        >/dev/null 2>"$WORK/emulator.log" &
    EMU_PID=$!
    PIDS+=($EMU_PID)
    for _ in $(seq 1 600); do
        [ -s "$WORK/emulator.addr" ] && break
        kill -0 "$EMU_PID" 2>/dev/null || {
            echo "dfly-emulator exited:" >&2
            tail -n 20 "$WORK/emulator.log" >&2
            exit 1
        }
        sleep 0.1
    done
    [ -s "$WORK/emulator.addr" ] || { echo "dfly-emulator did not serve within 60 s" >&2; exit 1; }
    EMU_ADDR=$(cat "$WORK/emulator.addr")
    EMU_PORT=${EMU_ADDR##*:}
    BACKEND=$(redis-cli -p "$EMU_PORT" EMULATOR BACKEND)
    BPORT=${BACKEND##*:}
}

# start_replica CONFIG LOG LIMIT: `df2redis-sync replicate CONFIG` logging to LOG, waited for
# until it follows the journal (LIMIT seconds at most; exit 1 with the log's tail otherwise).
# Sets REPL (its pid), START (when it was started), SYNCED (when "full sync started" was
# logged, i.e. DFLY SYNC was answered: from there on the time is the replica's; START if not
# seen) and STABLE (when stable sync was reached).
start_replica() {
    local cfg=$1 log=$2 limit=$3
    START=$(date +%s.%N)
    SYNCED=""
    "$BIN/df2redis-sync" replicate "$cfg" --log-file "$log" 2>/dev/null &
    REPL=$!
    PIDS+=($REPL)
    for _ in $(seq 1 $((limit * 20))); do
        if [ -z "$SYNCED" ] && grep -q "full sync started" "$log" 2>/dev/null; then
            SYNCED=$(date +%s.%N)
        fi
        grep -q "stable sync: following the journal" "$log" 2>/dev/null && break
        kill -0 "$REPL" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.05
    done
    grep -q "stable sync: following the journal" "$log" || {
        echo "$cfg: no stable sync after $limit s" >&2
        tail -20 "$log" >&2
        exit 1
    }
    STABLE=$(date +%s.%N)
    SYNCED=${SYNCED:-$START}
}
