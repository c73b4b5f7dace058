//! The master's journal: per-shard LSNs and an in-memory ring of serialized journal items
//! (the partial-sync backlog), in the byte form Dragonfly's `JournalWriter` produces
//! (`dragonfly src/server/journal/serializer.cc (JournalWriter::Write)`): every COMMAND item
//! carries its own `06 pu(db)` SELECT in front, PING carries none.
//!
//! Like Dragonfly, the journal only starts when the first `DFLY FLOW` arrives
//! (`journal::StartInThread`): writes before that get no LSN. LSNs start at 1 and
//! `next_lsn` is always the LSN the next item will get.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::rdbenc::put_pu;

/// Journal opcode COMMAND (`dragonfly src/server/journal/types.h`).
pub const OP_COMMAND: u8 = 0x0A;
/// Journal opcode EXPIRED (≤ v1.37: expiry deletions).
pub const OP_EXPIRED: u8 = 0x09;
/// Journal opcode SELECT.
pub const OP_SELECT: u8 = 0x06;
/// Journal opcode PING.
pub const OP_PING: u8 = 0x0D;
/// Journal opcode LSN marker.
pub const OP_LSN: u8 = 0x0F;

/// One journaled item of one shard.
#[derive(Debug)]
pub struct Entry {
    /// Its LSN in the shard.
    pub lsn: u64,
    /// The serialized item (`06 pu(db) 0A …` or `0D`).
    pub bytes: Vec<u8>,
    /// Keys it touches (so the snapshot can hold it back until their baseline went out).
    pub keys: Vec<Vec<u8>>,
    /// Database of the item.
    pub db: u32,
}

/// Serializes a COMMAND-like item: `06 pu(db) op pu(txid) pu(shard_cnt) pu(n) pu(total) strings`.
pub fn encode_command<A: AsRef<[u8]>>(
    db: u32,
    op: u8,
    txid: u64,
    shard_cnt: u64,
    args: &[A],
) -> Vec<u8> {
    let total: usize = args.iter().map(|a| a.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total + 16 + args.len() * 2);
    out.push(OP_SELECT);
    put_pu(&mut out, u64::from(db));
    out.push(op);
    put_pu(&mut out, txid);
    put_pu(&mut out, shard_cnt);
    put_pu(&mut out, args.len() as u64);
    put_pu(&mut out, total as u64);
    for a in args {
        let a = a.as_ref();
        put_pu(&mut out, a.len() as u64);
        out.extend_from_slice(a);
    }
    out
}

/// What a reader gets back.
#[derive(Debug)]
pub enum Read {
    /// Entries from the requested LSN on (possibly empty after a timeout).
    Entries(Vec<Arc<Entry>>),
    /// The requested LSN is no longer in the ring.
    Evicted,
}

#[derive(Debug, Default)]
struct ShardLog {
    next_lsn: u64,
    ring: VecDeque<Arc<Entry>>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    cap: usize,
    shards: Vec<ShardLog>,
    next_txid: u64,
}

/// All shards' journals behind one lock, with a condition variable for the flow streamers.
#[derive(Debug)]
pub struct Journal {
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl Journal {
    /// A stopped journal of `shards` shards keeping up to `cap` items each.
    pub fn new(shards: usize, cap: usize) -> Journal {
        Journal {
            inner: Mutex::new(Inner {
                enabled: false,
                cap: cap.max(1),
                shards: (0..shards)
                    .map(|_| ShardLog {
                        next_lsn: 1,
                        ring: VecDeque::new(),
                    })
                    .collect(),
                next_txid: 1,
            }),
            cond: Condvar::new(),
        }
    }

    /// Starts journaling (idempotent).
    pub fn start(&self) {
        self.inner.lock().enabled = true;
    }

    /// True once started.
    pub fn enabled(&self) -> bool {
        self.inner.lock().enabled
    }

    /// Forgets everything, as a master restart does: LSNs back to 1, journal stopped.
    pub fn reset(&self) {
        let mut g = self.inner.lock();
        g.enabled = false;
        for s in &mut g.shards {
            s.next_lsn = 1;
            s.ring.clear();
        }
        self.cond.notify_all();
    }

    /// Draws a transaction id (for multi-shard, MULTI/EXEC and global commands).
    pub fn draw_txid(&self) -> u64 {
        let mut g = self.inner.lock();
        let t = g.next_txid;
        g.next_txid += 1;
        t
    }

    /// Appends one serialized item to `shard`; returns its LSN, or `None` when the journal is
    /// not running (or the shard does not exist).
    pub fn append(&self, shard: usize, db: u32, bytes: Vec<u8>, keys: Vec<Vec<u8>>) -> Option<u64> {
        let mut g = self.inner.lock();
        if !g.enabled {
            return None;
        }
        let cap = g.cap;
        let s = g.shards.get_mut(shard)?;
        let lsn = s.next_lsn;
        s.next_lsn += 1;
        s.ring.push_back(Arc::new(Entry {
            lsn,
            bytes,
            keys,
            db,
        }));
        while s.ring.len() > cap {
            s.ring.pop_front();
        }
        drop(g);
        self.cond.notify_all();
        Some(lsn)
    }

    /// The LSN the next item of `shard` will get.
    pub fn next_lsn(&self, shard: usize) -> u64 {
        self.inner
            .lock()
            .shards
            .get(shard)
            .map(|s| s.next_lsn)
            .unwrap_or(1)
    }

    /// Every shard's next LSN (`DFLY REPLICAOFFSET`).
    pub fn next_lsns(&self) -> Vec<u64> {
        self.inner
            .lock()
            .shards
            .iter()
            .map(|s| s.next_lsn)
            .collect()
    }

    /// Dragonfly's `IsLSNInBuffer`: the LSN is the next one, or lies inside the ring.
    pub fn lsn_in_backlog(&self, shard: usize, lsn: u64) -> bool {
        let g = self.inner.lock();
        let Some(s) = g.shards.get(shard) else {
            return false;
        };
        if lsn == s.next_lsn {
            return true;
        }
        match (s.ring.front(), s.ring.back()) {
            (Some(f), Some(b)) => f.lsn <= lsn && lsn <= b.lsn,
            _ => false,
        }
    }

    /// Entries of `shard` with LSN ≥ `from` (at most `max`), waiting up to `wait` for the
    /// first one.
    pub fn read_from(&self, shard: usize, from: u64, max: usize, wait: Duration) -> Read {
        let deadline = Instant::now() + wait;
        let mut g = self.inner.lock();
        loop {
            let Some(s) = g.shards.get(shard) else {
                return Read::Evicted;
            };
            if from > s.next_lsn {
                // Asked beyond the end (after a reset): the position is lost.
                return Read::Evicted;
            }
            if from < s.next_lsn {
                let first = s.ring.front().map(|e| e.lsn).unwrap_or(s.next_lsn);
                if from < first {
                    return Read::Evicted;
                }
                let skip = (from - first) as usize;
                let v: Vec<_> = s.ring.iter().skip(skip).take(max).cloned().collect();
                return Read::Entries(v);
            }
            if self.cond.wait_until(&mut g, deadline).timed_out() {
                return Read::Entries(Vec::new());
            }
        }
    }

    /// Wakes every waiting reader (used on session teardown).
    pub fn wake(&self) {
        self.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_bytes_match_the_protocol_example() {
        // §4.4: SET foo baz, db 0, txid 0.
        let b = encode_command(0, OP_COMMAND, 0, 1, &["SET", "foo", "baz"]);
        assert_eq!(b, b"\x06\x00\x0a\x00\x01\x03\x09\x03SET\x03foo\x03baz");
        // FLUSHALL with txid 700.
        let b = encode_command(0, OP_COMMAND, 700, 1, &["FLUSHALL"]);
        assert_eq!(b, b"\x06\x00\x0a\x42\xbc\x01\x01\x08\x08FLUSHALL");
    }

    #[test]
    fn ring_lsns_and_eviction() {
        let j = Journal::new(2, 3);
        assert_eq!(j.append(0, 0, vec![OP_PING], vec![]), None);
        j.start();
        for i in 1..=5u64 {
            assert_eq!(j.append(0, 0, vec![OP_PING], vec![]), Some(i));
        }
        assert_eq!(j.next_lsn(0), 6);
        assert!(j.lsn_in_backlog(0, 6));
        assert!(j.lsn_in_backlog(0, 3));
        assert!(!j.lsn_in_backlog(0, 2));
        assert!(matches!(
            j.read_from(0, 2, 10, Duration::ZERO),
            Read::Evicted
        ));
        match j.read_from(0, 4, 10, Duration::ZERO) {
            Read::Entries(v) => assert_eq!(v.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![4, 5]),
            Read::Evicted => panic!("4 is in the ring"),
        }
        assert!(j.lsn_in_backlog(1, 1));
        match j.read_from(1, 1, 10, Duration::from_millis(5)) {
            Read::Entries(v) => assert!(v.is_empty()),
            Read::Evicted => panic!("nothing evicted on shard 1"),
        }
    }
}
