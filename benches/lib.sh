# Shared helpers of the end-to-end benchmark scripts (sourced, not run).
#
# Every process started through these helpers binds 127.0.0.1, is recorded in PIDS and killed
# by `bench_cleanup` (installed as the EXIT trap by `bench_init`); every wait is bounded.

BIN=${BIN:-target/release}
PIDS=()

# PIN=1: the target redis-server alone on the machine's last CPU, every other process of the
# benchmark (the ceiling's redis-cli, the synthetic master and its probe subscriber,
# df2redis-sync) on the others — the shape of a real migration, where source, replica and
# target are separate machines, and the same for the ceiling and the replication runs.
# Default: no pinning (the scheduler places everything).
ON_TARGET=()
ON_OTHERS=()
if [ -n "${PIN:-}" ]; then
    _ncpu=$(nproc)
    if [ "$_ncpu" -ge 2 ]; then
        ON_TARGET=(taskset -c "$((_ncpu - 1))")
        ON_OTHERS=(taskset -c "0-$((_ncpu - 2))")
    else
        echo "PIN ignored: one CPU" >&2
    fi
fi

pinning() { # -> a line for the report
    if [ ${#ON_TARGET[@]} -gt 0 ]; then
        echo "pinned: target on CPU ${ON_TARGET[2]}, everything else on CPU ${ON_OTHERS[2]}"
    else
        echo "not pinned"
    fi
}

bench_init() { # name -> WORK dir, cleanup trap
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    trap bench_cleanup EXIT INT TERM
}

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ping() { # port [seconds]
    local n=$(( ${2:-20} * 10 ))
    for _ in $(seq 1 "$n"); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2
    return 1
}

start_redis() { # name port [extra redis-server args...] -> pid appended to PIDS
    local name=$1 port=$2
    shift 2
    mkdir -p "$WORK/$name"
    "${ON_TARGET[@]}" redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$WORK/$name" --daemonize no --logfile "$WORK/$name/redis.log" "$@" &
    PIDS+=($!)
    wait_ping "$port"
}

stop_pid() { # pid: stop one process this script started, bounded
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# CPU seconds (user+sys) of a process so far.
proc_cpu() { # pid
    awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"
}

# CPU seconds (user+sys) a redis-server used so far.
server_cpu() { # port
    redis-cli -p "$1" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.2f", s}'
}

# CPU seconds of a redis-server so far, split: "<user> <sys>".
server_cpu_split() { # port
    redis-cli -p "$1" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_user:/ {u = $2} /^used_cpu_sys:/ {s = $2} END {printf "%.2f %.2f", u, s}'
}
