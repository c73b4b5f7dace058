//! The whole byte stream of one flow connection after the `DFLY FLOW` reply: the snapshot
//! (§3), the 40-byte eof token (§3.10), then the journal forever (§4). A PARTIAL flow on
//! v1.35+ carries only the journal (§6.3); a PARTIAL flow on v1.11–v1.34 is RDB-framed like a
//! FULL one (use [`FlowDecoder::new_full`]).

use crate::journal::{JournalDecoder, JournalItem};
use crate::model::Lsn;
use crate::rdb::consts::EOF_TOKEN_LEN;
use crate::rdb::{ItemRef, SnapshotDecoder, SnapshotItem, Step, StringRef};
use crate::wire::{DecodeError, ErrorKind, Limits};

/// What a flow stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowEvent {
    /// A snapshot item (including journal-blob items, FULLSYNC_END, JOURNAL_OFFSET, EOF).
    Snapshot(SnapshotItem),
    /// The 40-byte eof token was read and matched the FLOW reply's token. Live journal next.
    EofToken,
    /// A live journal item: count it with [`crate::journal::LsnCounter`].
    Journal(JournalItem),
}

/// What [`FlowDecoder::step_ref`] yields: a borrowed whole string key of the snapshot, or
/// any event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventRef<'a> {
    /// A whole plain string key of the snapshot, borrowed.
    String(StringRef<'a>),
    /// Any other event.
    Event(FlowEvent),
}

impl EventRef<'_> {
    /// The owned event (`FlowEvent::Snapshot(SnapshotItem::Piece(..))` for a string).
    pub fn into_owned(self) -> FlowEvent {
        match self {
            EventRef::String(s) => FlowEvent::Snapshot(SnapshotItem::Piece(s.to_piece())),
            EventRef::Event(e) => e,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Snapshot,
    Token,
    Journal,
}

/// Sans-IO decoder of one flow connection's bytes after the FLOW reply.
#[derive(Debug)]
pub struct FlowDecoder {
    phase: Phase,
    snap: SnapshotDecoder,
    journal: JournalDecoder,
    token: Vec<u8>,
    offset: u64,
    journal_offset: Option<Lsn>,
    limits: Limits,
}

impl FlowDecoder {
    /// A FULL flow (or a pre-v1.35 PARTIAL flow, which is RDB-framed too): snapshot, then the
    /// eof token, which must equal `token` (the second element of the FLOW reply), then the
    /// journal.
    pub fn new_full(token: &[u8], limits: Limits) -> FlowDecoder {
        FlowDecoder {
            phase: Phase::Snapshot,
            snap: SnapshotDecoder::new(limits),
            journal: JournalDecoder::new(limits),
            token: token.to_vec(),
            offset: 0,
            journal_offset: None,
            limits,
        }
    }

    /// A v1.35+ PARTIAL flow: the journal from the first byte.
    pub fn new_partial(limits: Limits) -> FlowDecoder {
        let mut d = FlowDecoder::new_full(&[], limits);
        d.phase = Phase::Journal;
        d
    }

    /// Absolute offset (from the first byte after the FLOW reply) of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// True once the eof token has been read (or from the start for a PARTIAL flow).
    pub fn in_journal(&self) -> bool {
        self.phase == Phase::Journal
    }

    /// The JOURNAL_OFFSET seen in the snapshot, if any: the LSN the live journal starts at.
    pub fn journal_offset(&self) -> Option<Lsn> {
        self.journal_offset
    }

    /// The snapshot decoder (RDB version, open chunks…).
    pub fn snapshot(&self) -> &SnapshotDecoder {
        &self.snap
    }

    /// Decodes at most one event from `input`; returns it and the bytes consumed. Never
    /// returns `Step::End`: the journal has no end.
    pub fn step(&mut self, input: &[u8]) -> Result<(Step<FlowEvent>, usize), DecodeError> {
        let (s, n) = self.step_ref(input)?;
        Ok((
            match s {
                Step::Item(ev) => Step::Item(ev.into_owned()),
                Step::NeedMore => Step::NeedMore,
                Step::End => Step::End,
            },
            n,
        ))
    }

    /// [`FlowDecoder::step`] without copying whole plain string keys of the snapshot: they
    /// come back as [`EventRef::String`], borrowed from `input` or from the decoder's
    /// decompressed blob (see [`SnapshotDecoder::step_ref`]). The events, in order, are
    /// exactly those of `step`.
    pub fn step_ref<'a>(
        &'a mut self,
        input: &'a [u8],
    ) -> Result<(Step<EventRef<'a>>, usize), DecodeError> {
        // No loop: a borrow of `self.snap` that may be returned must not be taken twice.
        if self.phase == Phase::Snapshot {
            let (s, n) = self.snap.step_ref(input)?;
            self.offset += n as u64;
            match s {
                Step::Item(ItemRef::String(s)) => return Ok((Step::Item(EventRef::String(s)), n)),
                Step::Item(ItemRef::Item(it)) => {
                    match &it {
                        SnapshotItem::Eof { .. } => self.phase = Phase::Token,
                        SnapshotItem::JournalOffset(l) => self.journal_offset = Some(*l),
                        _ => {}
                    }
                    return Ok((Step::Item(EventRef::Event(FlowEvent::Snapshot(it))), n));
                }
                Step::NeedMore => return Ok((Step::NeedMore, n)),
                Step::End => {
                    self.phase = Phase::Token;
                    if n > 0 {
                        return Ok((Step::NeedMore, n));
                    }
                }
            }
        }
        if self.phase == Phase::Token {
            let Some(tok) = input.get(..EOF_TOKEN_LEN) else {
                return Ok((Step::NeedMore, 0));
            };
            if tok != self.token.as_slice() {
                return Err(DecodeError {
                    offset: self.offset,
                    inner: None,
                    kind: ErrorKind::TokenMismatch,
                });
            }
            self.offset += EOF_TOKEN_LEN as u64;
            self.phase = Phase::Journal;
            self.journal = JournalDecoder::with_offset(self.limits, self.offset);
            return Ok((
                Step::Item(EventRef::Event(FlowEvent::EofToken)),
                EOF_TOKEN_LEN,
            ));
        }
        let (s, n) = self.journal.step(input)?;
        self.offset += n as u64;
        Ok((
            match s {
                Step::Item(it) => Step::Item(EventRef::Event(FlowEvent::Journal(it))),
                Step::NeedMore | Step::End => Step::NeedMore,
            },
            n,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::rdbenc::{Compression, FrameOpts, SnapWriter, Val};

    const TOKEN: &[u8; 40] = b"tttttttttttttttttttttttttttttttttttttttt";

    /// Strings of every length form (6-bit, 14-bit, 32-bit `pu`), empty, integer-encoded,
    /// with and without expiry, between collections, in every blob compression.
    fn flow(compression: Compression) -> Vec<u8> {
        let mut w = SnapWriter::new(FrameOpts {
            compression,
            tagged: true,
            chunk_size: 4096,
            flush_size: 4096,
        });
        w.header(&[("redis-ver", b"7.4.0".to_vec())]);
        let lens = [0usize, 1, 20, 63, 64, 100, 16383, 16384, 70_000];
        for i in 0..60u32 {
            let len = lens[i as usize % lens.len()];
            let v: Vec<u8> = (0..len)
                .map(|j| b'a' + ((j + i as usize) % 7) as u8)
                .collect();
            let expire = (i % 3 == 0).then_some(1_900_000_000_000 + i64::from(i));
            w.entry(i % 2, format!("s:{i}").as_bytes(), expire, &Val::Str(v));
            w.entry(
                0,
                format!("n:{i}").as_bytes(),
                None,
                &Val::Str(i.to_string().into()),
            );
            if i % 10 == 0 {
                let h = (0..300)
                    .map(|j| (format!("f{j}").into_bytes(), format!("v{j}").into_bytes()))
                    .collect();
                w.entry(1, format!("h:{i}").as_bytes(), expire, &Val::Hash(h));
            }
        }
        w.end_db();
        w.fullsync_end();
        w.finish(7, TOKEN);
        let mut out = w.take();
        // A live journal entry after the token.
        out.extend_from_slice(&[0x0D]);
        out
    }

    /// Decodes `bytes` fed in pieces of `cut(i)` bytes (the way the flow thread does: one
    /// buffer, consumed with an offset), with or without the fast path.
    fn events(bytes: &[u8], fast: bool, cut: impl Fn(usize) -> usize) -> Vec<FlowEvent> {
        let mut d = FlowDecoder::new_full(TOKEN, Limits::default());
        d.snap.set_fast_path(fast);
        let (mut buf, mut pos, mut fed, mut out, mut i) = (Vec::new(), 0, 0, Vec::new(), 0);
        loop {
            let (s, n) = d.step_ref(&buf[pos..]).expect("test flow decodes");
            pos += n;
            match s {
                Step::Item(ev) => out.push(ev.into_owned()),
                _ if fed == bytes.len() => return out,
                _ => {
                    i += 1;
                    let n = cut(i).clamp(1, bytes.len() - fed);
                    buf.extend_from_slice(&bytes[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn borrowed_strings_give_exactly_the_owned_events() {
        for c in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Lzf,
        ] {
            let bytes = flow(c);
            let slow = events(&bytes, false, |_| usize::MAX);
            let strings = slow
                .iter()
                .filter(|e| {
                    matches!(e, FlowEvent::Snapshot(SnapshotItem::Piece(p))
                        if p.rdb_type == crate::rdb::consts::TYPE_STRING)
                })
                .count();
            assert_eq!(strings, 120, "{c:?}");
            assert!(matches!(slow.last(), Some(FlowEvent::Journal(_))));
            assert_eq!(events(&bytes, true, |_| usize::MAX), slow, "{c:?} whole");
            assert_eq!(events(&bytes, true, |_| 1), slow, "{c:?} byte by byte");
            assert_eq!(
                events(&bytes, true, |i| (i * 7919) % 5000),
                slow,
                "{c:?} uneven chunks"
            );
        }
    }

    #[test]
    fn the_fast_path_borrows_from_the_input_and_from_blobs() {
        for c in [Compression::None, Compression::Lz4] {
            let bytes = flow(c);
            let mut d = FlowDecoder::new_full(TOKEN, Limits::default());
            let (mut pos, mut borrowed) = (0, 0);
            loop {
                let (s, n) = d.step_ref(&bytes[pos..]).expect("test flow decodes");
                pos += n;
                match s {
                    Step::Item(EventRef::String(s)) => {
                        assert!(s.key.starts_with(b"s:"), "{:?}", s.key);
                        borrowed += 1;
                    }
                    Step::Item(EventRef::Event(FlowEvent::EofToken)) => break,
                    Step::Item(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            // Every non-integer string key; the integer-encoded values take the owned path.
            assert_eq!(borrowed, 60, "{c:?}");
        }
    }
}
