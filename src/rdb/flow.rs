//! The whole byte stream of one flow connection after the `DFLY FLOW` reply: the snapshot
//! (§3), the 40-byte eof token (§3.10), then the journal forever (§4). A PARTIAL flow on
//! v1.35+ carries only the journal (§6.3).

use crate::journal::JournalItem;
use crate::rdb::{SnapshotItem, Step};
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

/// Sans-IO decoder of one flow connection's bytes after the FLOW reply.
#[derive(Debug)]
pub struct FlowDecoder {
    limits: Limits,
    offset: u64,
}

impl FlowDecoder {
    /// A FULL flow (or a pre-v1.35 PARTIAL flow, which is RDB-framed too): snapshot, then the
    /// eof token, which must equal `token` (the second element of the FLOW reply), then the
    /// journal.
    pub fn new_full(token: &[u8], limits: Limits) -> FlowDecoder {
        let _ = token;
        FlowDecoder { limits, offset: 0 }
    }

    /// A v1.35+ PARTIAL flow: the journal from the first byte.
    pub fn new_partial(limits: Limits) -> FlowDecoder {
        FlowDecoder { limits, offset: 0 }
    }

    /// Absolute offset (from the first byte after the FLOW reply) of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Decodes at most one event from `input`; returns it and the bytes consumed. Never
    /// returns `Step::End`: the journal has no end.
    pub fn step(&mut self, input: &[u8]) -> Result<(Step<FlowEvent>, usize), DecodeError> {
        let _ = (input, &self.limits);
        Err(DecodeError {
            offset: self.offset,
            inner: None,
            kind: ErrorKind::Corrupt("flow decoder not implemented yet"),
        })
    }
}
