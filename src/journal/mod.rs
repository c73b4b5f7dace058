//! Sans-IO decoder of Dragonfly's journal stream (packed integers, opcodes, LSNs).
//!
//! The journal is the endless stream a flow carries after the eof token (§4 of the protocol
//! document), and the content of every JOURNAL_BLOB inside the snapshot (§3.9). Entries have
//! no length prefix: each is found by parsing the one before it, so an unknown opcode is an
//! error (drop the session and resync), never something to skip.
//!
//! [`JournalDecoder::step`] takes the unread input and returns one [`Step`] plus the bytes it
//! used; an entry is decoded only once all its bytes are there (nothing is allocated before the
//! whole entry has arrived, so a lying length cannot make it allocate). SELECT is folded into
//! the decoder's current db and every entry carries the db it applies to.
//!
//! [`LsnCounter`] does the LSN bookkeeping of §4.5: which entries advance the count, what
//! `REPLCONF ACK` reports (the *next* LSN), and the check of LSN markers.

use std::fmt;

use crate::model::{Cmd, DbIndex, Lsn};
use crate::rdb::Step;
use crate::wire::{DecodeError, ErrorKind, Fail, Limits, Reader};

/// Journal opcodes (Dragonfly `src/server/journal/types.h`, `enum class Op`; §4.2).
pub mod op {
    /// NOOP: defined until v1.30, never sent. Decoded (no payload) for completeness.
    pub const NOOP: u8 = 0;
    /// SELECT `pu(db)`: sets the current db; not an entry.
    pub const SELECT: u8 = 6;
    /// EXPIRED (≤ v1.37): expiry/eviction deletion, same layout as COMMAND.
    pub const EXPIRED: u8 = 9;
    /// COMMAND: `pu(txid) pu(shard_cnt) pu(n) pu(total) n × (pu(len) bytes)`.
    pub const COMMAND: u8 = 10;
    /// MULTI_COMMAND (≤ v1.20): a command of an atomic group, same layout as COMMAND.
    pub const MULTI_COMMAND: u8 = 11;
    /// EXEC (≤ v1.20): `pu(txid) pu(shard_cnt)`, end of an atomic group on this flow.
    pub const EXEC: u8 = 12;
    /// PING: no payload; takes an LSN.
    pub const PING: u8 = 13;
    /// FIN (v1.16–v1.28, slot migration only, never sent to replicas): no payload.
    pub const FIN: u8 = 14;
    /// LSN marker `pu(lsn)`: the LSN of the entry just before it; not an entry.
    pub const LSN: u8 = 15;
}

/// The kind of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A write command (also expiry/eviction `DEL` from v1.38).
    Command,
    /// Expiry/eviction deletion (≤ v1.37), payload `DEL <key>`.
    Expired,
    /// A command of a MULTI/EXEC or Lua group (≤ v1.20); buffer until [`EntryKind::Exec`].
    MultiCommand,
    /// End of an atomic group on this flow (≤ v1.20); no command.
    Exec,
    /// A no-op that takes an LSN (WAIT, takeover); no command.
    Ping,
    /// Old no-op, never on the wire; no command.
    Noop,
    /// Old slot-migration end marker, never sent to replicas; no command.
    Fin,
}

/// One journal entry (anything but SELECT and LSN markers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// What it is.
    pub kind: EntryKind,
    /// The db of the last SELECT (0 at the start of a decoder).
    pub db: DbIndex,
    /// Transaction id; 0 when none was drawn (the common case). The same non-zero txid on
    /// several flows is one transaction (FLUSHALL/FLUSHDB barrier, §4.6).
    pub txid: u64,
    /// Shards the transaction touched (≤ v1.37); always 1 from v1.38. Do not rely on it.
    pub shard_cnt: u64,
    /// The command, name upper-case first; empty for Exec, Ping, Noop and Fin.
    pub cmd: Cmd,
}

impl JournalEntry {
    /// True for entries that take an LSN (all of them, §4.5 step 2).
    pub fn advances_lsn(&self) -> bool {
        true
    }
}

/// What the journal decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalItem {
    /// An entry: takes the LSN `next` and advances it ([`LsnCounter::observe`]).
    Entry(JournalEntry),
    /// LSN marker: the LSN of the entry just before it. Does not advance the count.
    LsnMarker(Lsn),
}

/// Sans-IO journal decoder. Keeps the current db and the absolute offset for errors.
#[derive(Debug, Clone)]
pub struct JournalDecoder {
    limits: Limits,
    db: DbIndex,
    offset: u64,
}

impl JournalDecoder {
    /// A decoder at db 0, offset 0.
    pub fn new(limits: Limits) -> JournalDecoder {
        JournalDecoder::with_offset(limits, 0)
    }

    /// A decoder whose first input byte is at absolute offset `offset` of the flow stream
    /// (so errors name stream offsets).
    pub fn with_offset(limits: Limits, offset: u64) -> JournalDecoder {
        JournalDecoder {
            limits,
            db: DbIndex(0),
            offset,
        }
    }

    /// The db of the last SELECT.
    pub fn db(&self) -> DbIndex {
        self.db
    }

    /// Absolute offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Decodes at most one item from `input`. Returns the step and the bytes consumed (which
    /// can be non-zero with `NeedMore`, after SELECTs). Never returns `Step::End`.
    pub fn step(&mut self, input: &[u8]) -> Result<(Step<JournalItem>, usize), DecodeError> {
        let mut used = 0;
        loop {
            let mut r = Reader::new(&input[used..]);
            match self.read_one(&mut r) {
                Ok(Some(item)) => {
                    used += r.pos();
                    self.offset += r.pos() as u64;
                    return Ok((Step::Item(item), used));
                }
                Ok(None) => {
                    // A SELECT: consumed, keep going.
                    used += r.pos();
                    self.offset += r.pos() as u64;
                }
                Err(Fail::Short) => return Ok((Step::NeedMore, used)),
                Err(Fail::Bad { at, kind }) => {
                    return Err(DecodeError {
                        offset: self.offset + at as u64,
                        inner: None,
                        kind,
                    })
                }
            }
        }
    }

    /// Decodes every item of a complete buffer (a JOURNAL_BLOB's string), appending them to
    /// `out`. A partial entry at the end is an error. The current db carries over.
    pub fn decode_all(
        &mut self,
        buf: &[u8],
        out: &mut Vec<JournalItem>,
    ) -> Result<(), (usize, ErrorKind)> {
        let mut r = Reader::new(buf);
        while r.remaining() > 0 {
            let start = r.pos();
            match self.read_one(&mut r) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => {}
                Err(Fail::Short) => return Err((start, ErrorKind::Truncated("journal entry"))),
                Err(Fail::Bad { at, kind }) => return Err((at, kind)),
            }
        }
        Ok(())
    }

    /// One opcode and its payload; `Ok(None)` for SELECT. On `Short` nothing is committed
    /// (SELECT's db change happens only once its bytes are complete).
    fn read_one(&mut self, r: &mut Reader<'_>) -> Result<Option<JournalItem>, Fail> {
        let at = r.pos();
        // The opcode is written as `pu(opcode)`, one byte for every opcode there is (< 64); a
        // first byte of 64 or more can only be an unknown opcode, so say so at once rather
        // than wait for a second byte.
        let opcode = r.u8()?;
        let kind = match opcode {
            op::SELECT => {
                let db_at = r.pos();
                let db = r.pu()?;
                if db > u64::from(u16::MAX) {
                    return Reader::bad_at(
                        db_at,
                        ErrorKind::TooLarge {
                            what: "journal SELECT db",
                            len: db,
                            max: u64::from(u16::MAX),
                        },
                    );
                }
                self.db = DbIndex(db as u32);
                return Ok(None);
            }
            op::LSN => return Ok(Some(JournalItem::LsnMarker(Lsn(r.pu()?)))),
            op::COMMAND => EntryKind::Command,
            op::EXPIRED => EntryKind::Expired,
            op::MULTI_COMMAND => EntryKind::MultiCommand,
            op::EXEC => EntryKind::Exec,
            op::PING => EntryKind::Ping,
            op::NOOP => EntryKind::Noop,
            op::FIN => EntryKind::Fin,
            other => return Reader::bad_at(at, ErrorKind::UnknownJournalOpcode(other)),
        };
        let mut entry = JournalEntry {
            kind,
            db: self.db,
            txid: 0,
            shard_cnt: 0,
            cmd: Cmd::default(),
        };
        match kind {
            EntryKind::Ping | EntryKind::Noop | EntryKind::Fin => {}
            EntryKind::Exec => {
                entry.txid = r.pu()?;
                entry.shard_cnt = r.pu()?;
            }
            EntryKind::Command | EntryKind::Expired | EntryKind::MultiCommand => {
                entry.txid = r.pu()?;
                entry.shard_cnt = r.pu()?;
                entry.cmd = self.read_payload(r)?;
            }
        }
        Ok(Some(JournalItem::Entry(entry)))
    }

    /// `pu(n) pu(total) n × (pu(len) bytes)` (`JournalWriter::Write(const Entry::Payload&)`).
    fn read_payload(&self, r: &mut Reader<'_>) -> Result<Cmd, Fail> {
        let n_at = r.pos();
        let n = r.len("journal argument count", self.limits.max_args as u64)? as usize;
        if n == 0 {
            return Reader::bad_at(
                n_at,
                ErrorKind::Corrupt("journal command with no arguments"),
            );
        }
        let total = r.len_usize("journal command payload", self.limits.max_command)?;
        // Every argument has at least a one-byte length prefix: wait for the whole entry before
        // allocating anything sized from the wire.
        if r.remaining() < total.saturating_add(n) {
            return Err(Fail::Short);
        }
        let mut cmd = Cmd::with_capacity(n, total);
        let mut left = total;
        for _ in 0..n {
            let len_at = r.pos();
            let len = r.len_usize("journal argument", self.limits.max_string)?;
            if len > left {
                return Reader::bad_at(
                    len_at,
                    ErrorKind::Corrupt("journal argument longer than the declared total"),
                );
            }
            left -= len;
            cmd.arg(r.bytes(len)?);
        }
        if left != 0 {
            return Reader::bad_at(
                r.pos(),
                ErrorKind::Corrupt("journal arguments shorter than the declared total"),
            );
        }
        Ok(cmd)
    }
}

/// The LSN position of one flow (§4.5): `next` is the LSN the next entry will get, and what
/// `REPLCONF ACK` reports once everything below it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsnCounter {
    next: Lsn,
}

/// An LSN marker that disagrees with the count: the stream position is wrong, resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsnMismatch {
    /// What the marker said.
    pub marker: Lsn,
    /// What the count expected (`next - 1`).
    pub expected: Lsn,
}

impl fmt::Display for LsnMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LSN marker {} does not match the entry count (expected {})",
            self.marker.0, self.expected.0
        )
    }
}

impl std::error::Error for LsnMismatch {}

impl LsnCounter {
    /// Starts at JOURNAL_OFFSET (full sync) or the LSN asked for (partial sync).
    pub fn new(start: Lsn) -> LsnCounter {
        LsnCounter { next: start }
    }

    /// The LSN the next entry will get: the value for `REPLCONF ACK` and the checkpoint once
    /// everything before it is applied.
    pub fn next(&self) -> Lsn {
        self.next
    }

    /// Accounts for one live journal item. For an entry, returns the LSN it carries (and
    /// advances `next`); for a marker, checks it against the count and returns `None`.
    pub fn observe(&mut self, item: &JournalItem) -> Result<Option<Lsn>, LsnMismatch> {
        match item {
            JournalItem::Entry(e) if e.advances_lsn() => {
                let lsn = self.next;
                self.next = Lsn(self.next.0.wrapping_add(1));
                Ok(Some(lsn))
            }
            JournalItem::Entry(_) => Ok(None),
            JournalItem::LsnMarker(m) => {
                let expected = Lsn(self.next.0.wrapping_sub(1));
                if *m == expected {
                    Ok(None)
                } else {
                    Err(LsnMismatch {
                        marker: *m,
                        expected,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<JournalItem> {
        let mut d = JournalDecoder::new(Limits::default());
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let (s, used) = d.step(&bytes[pos..]).unwrap();
            pos += used;
            match s {
                Step::Item(i) => out.push(i),
                _ => break,
            }
        }
        assert_eq!(pos, bytes.len());
        out
    }

    #[test]
    fn worked_examples_of_section_4_4() {
        let set = [
            0x06, 0x00, 0x0A, 0x00, 0x01, 0x03, 0x09, 0x03, b'S', b'E', b'T', 0x03, b'f', b'o',
            b'o', 0x03, b'b', b'a', b'z',
        ];
        let items = decode_all(&set);
        assert_eq!(items.len(), 1);
        let JournalItem::Entry(e) = &items[0] else {
            panic!("not an entry")
        };
        assert_eq!(e.kind, EntryKind::Command);
        assert_eq!(e.cmd, Cmd::from_args(["SET", "foo", "baz"]));
        assert_eq!((e.txid, e.shard_cnt, e.db), (0, 1, DbIndex(0)));

        let flushall = [
            0x06, 0x00, 0x0A, 0x42, 0xBC, 0x01, 0x01, 0x08, 0x08, b'F', b'L', b'U', b'S', b'H',
            b'A', b'L', b'L',
        ];
        let items = decode_all(&flushall);
        let JournalItem::Entry(e) = &items[0] else {
            panic!("not an entry")
        };
        assert_eq!(e.txid, 700);
        assert_eq!(e.cmd.name(), b"FLUSHALL");

        let items = decode_all(&[
            0x0D, 0x0F, 0x02, 0x0F, 0x80, 0x00, 0x01, 0x11, 0x70, 0x0C, 0x09, 0x02,
        ]);
        assert_eq!(items.len(), 4);
        assert!(matches!(&items[0], JournalItem::Entry(e) if e.kind == EntryKind::Ping));
        assert_eq!(items[1], JournalItem::LsnMarker(Lsn(2)));
        assert_eq!(items[2], JournalItem::LsnMarker(Lsn(70000)));
        assert!(
            matches!(&items[3], JournalItem::Entry(e) if e.kind == EntryKind::Exec && e.txid == 9 && e.shard_cnt == 2)
        );
    }

    #[test]
    fn select_sets_db_and_unknown_opcode_names_offset() {
        let mut d = JournalDecoder::with_offset(Limits::default(), 100);
        let bytes = [
            0x06, 0x03, 0x0A, 0x00, 0x01, 0x01, 0x07, 0x07, b'F', b'L', b'U', b'S', b'H', b'D',
            b'B', 0x64,
        ];
        let (s, used) = d.step(&bytes).unwrap();
        assert!(matches!(s, Step::Item(JournalItem::Entry(ref e)) if e.db == DbIndex(3)));
        let err = d.step(&bytes[used..]).unwrap_err();
        assert_eq!(err.offset, 100 + 15);
        assert_eq!(err.kind, ErrorKind::UnknownJournalOpcode(0x64));
        assert_eq!(
            err.to_string(),
            "decode error at byte 115: unknown journal opcode 0x64"
        );
    }

    #[test]
    fn short_input_consumes_nothing_and_lies_do_not_allocate() {
        let mut d = JournalDecoder::new(Limits::default());
        // n = 3, total = 2^30: waits for bytes rather than allocating.
        let (s, used) = d
            .step(&[0x0A, 0x00, 0x01, 0x03, 0x80, 0x40, 0x00, 0x00, 0x00])
            .unwrap();
        assert_eq!((s, used), (Step::NeedMore, 0));
        // total past the cap is an error.
        let err = d
            .step(&[0x0A, 0x00, 0x01, 0x03, 0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0])
            .unwrap_err();
        assert!(matches!(err.kind, ErrorKind::TooLarge { .. }));
    }

    #[test]
    fn lsn_counter_follows_section_4_5() {
        let mut c = LsnCounter::new(Lsn(5));
        let ping = JournalItem::Entry(JournalEntry {
            kind: EntryKind::Ping,
            db: DbIndex(0),
            txid: 0,
            shard_cnt: 0,
            cmd: Cmd::default(),
        });
        assert_eq!(c.observe(&ping), Ok(Some(Lsn(5))));
        assert_eq!(c.observe(&JournalItem::LsnMarker(Lsn(5))), Ok(None));
        assert_eq!(c.next(), Lsn(6));
        assert!(c.observe(&JournalItem::LsnMarker(Lsn(6))).is_err());
    }
}
