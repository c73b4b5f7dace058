#!/usr/bin/env python3
"""Times one df2redis-sync full sync from the outside, with millisecond resolution.

  fullsync_timer.py LOG TARGET_PORT FLOWS PID [TIMEOUT_S] [MARKER_PREFIX]

start = the first of: the replica's log says "full sync started" (logged when `DFLY SYNC`
        was answered), or a first key of the snapshot is visible in the target. The second
        matters with `dfly-emulator --bench-source`: it serializes the flows one after the
        other inside `DFLY SYNC` and each flow starts sending as soon as its own snapshot is
        ready, so the first flows are applied before `+OK`. Starting at the first key is
        conservative: the emulator's serialization of the remaining flows then competes with
        the replica for the CPUs, and counts against the replica;
end   = the moment every flow's position marker exists in the target: a flow's marker is
        committed by the batch that follows its last snapshot batch, so every key is applied.

Prints one line: `start=<unix s> end=<unix s> secs=<end-start> hwm_kib=<VmHWM> cpu_s=<user+sys>`
with VmHWM and CPU seconds of PID read at the end. Exits 1 on timeout or if PID dies.
"""

import os
import socket
import sys
import time


def resp_cmd(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_int(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise RuntimeError("target closed the connection")
        data += chunk
    if not data.startswith(b":"):
        raise RuntimeError("unexpected reply %r" % data)
    return int(data[1:-2])


def read_reply(sock, buf):
    """One RESP reply (integer or bulk string) -> (value, rest of buf)."""
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("target closed the connection")
        buf += chunk
    line, _, rest = buf.partition(b"\r\n")
    if line.startswith(b":"):
        return int(line[1:]), rest
    if line.startswith(b"$"):
        n = int(line[1:])
        while len(rest) < n + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("target closed the connection")
            rest += chunk
        return rest[:n], rest[n + 2:]
    raise RuntimeError("unexpected reply %r" % line)


def keys_beyond_markers(sock, markers_q):
    """Keys in the target that are not the tool's markers."""
    sock.sendall(resp_cmd("INFO", "keyspace") + markers_q)
    info, rest = read_reply(sock, b"")
    markers, _ = read_reply(sock, rest)
    total = 0
    for line in info.decode().splitlines():
        if line.startswith("db") and "keys=" in line:
            total += int(line.split("keys=")[1].split(",")[0])
    return total - markers


def proc_figures(pid):
    hwm = "?"
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = line.split()[1]
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / tck
    except OSError:
        cpu = -1
    return hwm, cpu


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main():
    log, port, flows, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 600
    prefix = sys.argv[6] if len(sys.argv) > 6 else "df2redis-sync:ckpt:"
    deadline = time.time() + timeout
    start = None
    pos = 0
    tail = b""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    markers_q = resp_cmd("EXISTS", prefix + "owner", *["%s%d" % (prefix, i) for i in range(flows)])
    while start is None:
        if time.time() > deadline or not alive(pid):
            print("timeout or exit before the full sync started", file=sys.stderr)
            sys.exit(1)
        try:
            with open(log, "rb") as f:
                f.seek(pos)
                new = f.read()
                pos += len(new)
        except FileNotFoundError:
            new = b""
        tail += new
        if b"full sync started" in tail or keys_beyond_markers(sock, markers_q) > 0:
            start = time.time()
            break
        tail = tail[-200:]
        time.sleep(0.002)
    q = resp_cmd("EXISTS", *["%s%d" % (prefix, i) for i in range(flows)])
    while True:
        sock.sendall(q)
        if read_int(sock) == flows:
            end = time.time()
            break
        if time.time() > deadline or not alive(pid):
            print("timeout or exit before every marker was written", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.002)
    hwm, cpu = proc_figures(pid)
    print("start=%.3f end=%.3f secs=%.3f hwm_kib=%s cpu_s=%.2f" % (start, end, end - start, hwm, cpu))


if __name__ == "__main__":
    main()
