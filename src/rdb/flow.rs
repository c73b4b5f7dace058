//! The whole byte stream of one flow connection after the `DFLY FLOW` reply: the snapshot
//! (§3), the 40-byte eof token (§3.10), then the journal forever (§4). A PARTIAL flow on
//! v1.35+ carries only the journal (§6.3); a PARTIAL flow on v1.11–v1.34 is RDB-framed like a
//! FULL one (use [`FlowDecoder::new_full`]).

use crate::journal::{JournalDecoder, JournalItem};
use crate::model::Lsn;
use crate::rdb::consts::EOF_TOKEN_LEN;
use crate::rdb::{SnapshotDecoder, SnapshotItem, Step};
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
        loop {
            match self.phase {
                Phase::Snapshot => {
                    let (s, n) = self.snap.step(input)?;
                    self.offset += n as u64;
                    match s {
                        Step::Item(it) => {
                            match &it {
                                SnapshotItem::Eof { .. } => self.phase = Phase::Token,
                                SnapshotItem::JournalOffset(l) => self.journal_offset = Some(*l),
                                _ => {}
                            }
                            return Ok((Step::Item(FlowEvent::Snapshot(it)), n));
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
                Phase::Token => {
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
                    return Ok((Step::Item(FlowEvent::EofToken), EOF_TOKEN_LEN));
                }
                Phase::Journal => {
                    let (s, n) = self.journal.step(input)?;
                    self.offset += n as u64;
                    return Ok((
                        match s {
                            Step::Item(it) => Step::Item(FlowEvent::Journal(it)),
                            Step::NeedMore | Step::End => Step::NeedMore,
                        },
                        n,
                    ));
                }
            }
        }
    }
}
