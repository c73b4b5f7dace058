#!/usr/bin/env python3
"""Writes a benchmark dataset as RESP commands on stdout (deterministic, no randomness).

The same bytes are loaded into the emulator's backing redis-server (the source of the full
sync) and piped into a fresh redis-server with `redis-cli --pipe` (the target's ceiling), so
both sides hold exactly the same data.

  gen_dataset.py strings N [VALUE_BYTES]   N x `SET key:<i> <VALUE_BYTES bytes>` (default 64)
  gen_dataset.py mixed N                   about N keys of every type, in dbs 0, 1, 3, 7:
                                           strings (raw, ints, with TTL), lists, intsets,
                                           sets, small and big zsets, small and big hashes,
                                           streams
  gen_dataset.py huge MIB                  four huge keys of about MIB/4 MiB each: a hash,
                                           a list, a set, a zset (values of 100 bytes)
  gen_dataset.py bighash MIB               one hash of MIB MiB (1 KiB values)
  gen_dataset.py journal OPS FLOWS KEYSPACE VALUE_BYTES
                                           the SETs examples/bench_master.rs journals
                                           (`SET k:<flow>:<n % KEYSPACE> <value>`), for
                                           the stable-sync ceiling
  gen_dataset.py journal-tx OPS FLOWS KEYSPACE VALUE_BYTES BATCH
                                           the same SETs framed the way df2redis-sync
                                           applies a journal batch: MULTI, BATCH SETs,
                                           SET <marker> <position>, EXEC
  gen_dataset.py journal-mset OPS FLOWS KEYSPACE VALUE_BYTES BATCH
                                           the same SETs as df2redis-sync sends runs of
                                           plain SETs: MULTI, one MSET of BATCH keys,
                                           SET <marker> <position>, EXEC
"""

import random
import sys

out = sys.stdout.buffer
buf = []
size = 0


def emit(*args):
    """Appends one RESP command (args: str or bytes)."""
    global size
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif not isinstance(a, bytes):
            a = str(a).encode()
        parts.append(b"$%d\r\n" % len(a))
        parts.append(a)
        parts.append(b"\r\n")
    chunk = b"".join(parts)
    buf.append(chunk)
    size += len(chunk)
    if size > 1 << 20:
        flush()


def flush():
    global buf, size
    out.write(b"".join(buf))
    buf = []
    size = 0


# Values are slices of a fixed pseudo-random pool of printable bytes: deterministic, about as
# compressible as base64 payloads (LZ4 finds little to remove), so the snapshot stream is not
# unrealistically small.
_rng = random.Random(20261124)
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
POOL = bytes(_rng.choice(_ALPHABET) for _ in range(1 << 20))


def value(i, n):
    """n bytes, different per i."""
    off = (i * 7919) % (len(POOL) - n) if n < len(POOL) else 0
    return POOL[off : off + n]


def strings(n, vbytes=64):
    for i in range(n):
        emit("SET", "key:%d" % i, value(i, vbytes))


def mixed(n):
    dbs = [0, 1, 3, 7]
    per = n // len(dbs)
    for d in dbs:
        emit("SELECT", d)
        for i in range(per):
            k = "m:%d:%d" % (d, i)
            s = i % 16
            if s in (0, 1, 2, 3):
                emit("SET", k, value(i, 40 + (i % 7) * 20))
            elif s == 4:
                emit("SET", k, i * 7919)
            elif s == 5:
                emit("SET", k, value(i, 32), "PX", 86400000 + i)
            elif s == 6:
                emit("RPUSH", k, *[value(i + j, 24) for j in range(8)])
            elif s == 7:
                emit("RPUSH", k, *[value(i + j, 200) for j in range(50)])
            elif s == 8:
                emit("SADD", k, *[i + j for j in range(10)])
            elif s == 9:
                emit("SADD", k, *["member-%d-%d" % (i, j) for j in range(10)])
            elif s == 10:
                emit("ZADD", k, *[x for j in range(10) for x in (j * 1.5, "z%d" % j)])
            elif s == 11:
                # Over the listpack limit (128): the skiplist encoding.
                emit("ZADD", k, *[x for j in range(200) for x in (j + 0.25, "zz-%d-%d" % (i, j))])
            elif s == 12:
                emit("HSET", k, *[x for j in range(10) for x in ("f%d" % j, value(i + j, 20))])
            elif s == 13:
                emit("HSET", k, *[x for j in range(200) for x in ("field-%d" % j, value(i + j, 40))])
            elif s == 14:
                for j in range(5):
                    emit("XADD", k, "%d-%d" % (1700000000000 + i, j), "a", value(j, 16), "b", j)
            else:
                emit("SET", k, value(i, 1000))


def huge(mib):
    """Four keys of about mib/4 MiB each."""
    each = max(1, mib * (1 << 20) // 4 // 110)
    step = 1000
    for start in range(0, each, step):
        n = min(step, each - start)
        emit("HSET", "huge:hash", *[x for j in range(start, start + n) for x in ("f:%d" % j, value(j, 100))])
    for start in range(0, each, step):
        n = min(step, each - start)
        emit("RPUSH", "huge:list", *[value(j, 100) for j in range(start, start + n)])
    for start in range(0, each, step):
        n = min(step, each - start)
        emit("SADD", "huge:set", *[value(j, 100) for j in range(start, start + n)])
    for start in range(0, each, step):
        n = min(step, each - start)
        emit("ZADD", "huge:zset", *[x for j in range(start, start + n) for x in (j * 0.5, value(j, 100))])


def bighash(mib):
    fields = mib * 1024
    step = 1000
    val = b"h" * 1024
    for start in range(0, fields, step):
        n = min(step, fields - start)
        emit("HSET", "bighash", *[x for j in range(start, start + n) for x in ("field:%d" % j, value(j, 1024))])


def journal(ops, flows, keyspace, vbytes):
    """Same keys, sizes and count as bench_master's journal (values differ, sizes do not)."""
    for f in range(flows):
        mine = ops // flows + (1 if f < ops % flows else 0)
        val = value(f, vbytes)
        for n in range(mine):
            emit("SET", "k:%d:%d" % (f, n % keyspace), val)


def journal_tx(ops, flows, keyspace, vbytes, batch, mset=False):
    """The journal's SETs in transactions of BATCH: MULTI, the SETs (or one MSET of them),
    the flow's marker SET, EXEC."""
    for f in range(flows):
        mine = ops // flows + (1 if f < ops % flows else 0)
        val = value(f, vbytes)
        for start in range(0, mine, batch):
            emit("MULTI")
            keys = ["k:%d:%d" % (f, n % keyspace) for n in range(start, min(mine, start + batch))]
            if mset:
                emit("MSET", *[a for k in keys for a in (k, val)])
            else:
                for k in keys:
                    emit("SET", k, val)
            emit("SET", "df2redis-sync:ckpt:%d" % f, "replid:%d" % (start + batch))
            emit("EXEC")


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if kind == "strings":
        strings(arg, int(sys.argv[3]) if len(sys.argv) > 3 else 64)
    elif kind == "mixed":
        mixed(arg)
    elif kind == "huge":
        huge(arg)
    elif kind == "bighash":
        bighash(arg)
    elif kind == "journal-tx":
        journal_tx(arg, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif kind == "journal-mset":
        journal_tx(arg, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), mset=True)
    elif kind == "journal":
        journal(arg, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
    flush()


if __name__ == "__main__":
    main()
