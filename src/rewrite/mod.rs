//! Pure functions turning decoded snapshot entries and journal commands into Redis commands.
//!
//! Input: what [`crate::rdb`] and [`crate::journal`] decode from a flow (key [`Piece`]s,
//! [`JournalEntry`]s, the other [`SnapshotItem`]s). Output: one [`Rewritten`] per input item:
//! the owned [`Cmd`]s to run on the target in the item's db, plus, never silently, what could
//! not be written ([`Skip`]). Nothing here does I/O or reads the clock: the caller passes the
//! current time in [`Options::now_ms`] (used only to drop keys and members that are already
//! expired, and to turn Dragonfly's relative field/member TTL commands into absolute times).
//!
//! The full table of how each type and each Dragonfly-only command is written is in
//! `docs/rewrite.md`. The rules the engine relies on:
//! * **Delete then write.** The first piece of a key emits `DEL key` before writing
//!   (strings use `SET`, which replaces); continuation pieces only append; the last piece
//!   applies the TTL as `PEXPIREAT` (absolute). Replaying a key from its first piece therefore
//!   never duplicates list/set/zset/stream elements.
//! * **TTLs stay absolute**: `SET … PXAT`, `PEXPIREAT`; never relative.
//! * **Global commands** (`FLUSHALL`, `FLUSHDB`) come back with [`Rewritten::global`] set: the
//!   engine applies them once, behind the cross-flow barrier keyed by their txid (protocol
//!   document §4.6).
//! * **Atomic groups** (MULTI_COMMAND … EXEC of v1.10–v1.20 masters) are buffered by the
//!   [`Rewriter`] and come back as one [`Rewritten`] with [`Rewritten::atomic`] set when their
//!   EXEC arrives.

mod command;
mod value;

use std::fmt;

use crate::journal::{EntryKind, JournalEntry, JournalItem};
use crate::model::{Cmd, DbIndex};
use crate::rdb::{FlowEvent, Piece, SnapshotItem, StringRef};

pub use command::is_known_write_command;
#[cfg(test)]
pub(crate) use command::PASS_THROUGH;

/// What to do with a journal command the rewrite does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Fail the flow with a [`RewriteError`] (the safe default: nothing is lost unnoticed).
    #[default]
    Error,
    /// Drop the command and report it as a [`Skip`].
    Skip,
}

/// Rewrite settings; the target's capabilities are probed by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Current unix time in ms (the caller's clock). Keys and members expired at this time
    /// are not written.
    pub now_ms: i64,
    /// The target has the JSON module (`MODULE LIST` shows `ReJSON`): JSON keys are written
    /// with `JSON.SET`, `JSON.*` journal commands pass through. Otherwise they are skipped.
    pub target_json: bool,
    /// The target supports hash field TTLs (`HPEXPIREAT`, Redis ≥ 7.4). Otherwise field TTLs
    /// are dropped and counted.
    pub target_field_ttl: bool,
    /// Unknown journal commands: error or counted skip.
    pub unknown: UnknownPolicy,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            now_ms: 0,
            target_json: false,
            target_field_ttl: false,
            unknown: UnknownPolicy::Error,
        }
    }
}

/// Why something was not written (or not written whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A value type Redis cannot hold (bloom filter, count-min sketch, top-k, cuckoo filter,
    /// module value): the key is not written. `rdb_type` is its RDB type byte.
    UnsupportedType {
        /// The RDB type byte.
        rdb_type: u8,
    },
    /// A JSON key or `JSON.*` command while the target has no JSON module.
    JsonWithoutModule,
    /// The key was already expired when its (whole) value arrived: not written, as
    /// Dragonfly's own loader does (`RdbLoader::ShouldDiscardKey`). Not a loss.
    Expired,
    /// The key was written but these hash fields lost their TTL (target without field TTLs).
    FieldTtlDropped {
        /// Fields whose TTL was dropped.
        fields: usize,
    },
    /// The key was written but these set members lost their TTL (Redis has no member TTL).
    MemberTtlDropped {
        /// Members whose TTL was dropped.
        members: usize,
    },
    /// The stream was written but these consumer-group pending entries could not be restored
    /// (they point at deleted entries of a stream that arrived in several pieces; only a
    /// whole stream can re-create them, see `docs/rewrite.md`).
    PendingEntriesDropped {
        /// Pending entries not restored.
        count: usize,
    },
    /// A journal command that has no exact Redis equivalent (Dragonfly-only, module command
    /// without the module), dropped by design.
    UnsupportedCommand {
        /// The command name.
        name: Vec<u8>,
    },
    /// A journal command the rewrite does not know, dropped by [`UnknownPolicy::Skip`].
    UnknownCommand {
        /// The command name.
        name: Vec<u8>,
    },
}

impl SkipReason {
    /// True when the key itself is absent from the target because of this skip (as opposed
    /// to written with some metadata missing, or a dropped command).
    pub fn key_not_written(&self) -> bool {
        matches!(
            self,
            SkipReason::UnsupportedType { .. }
                | SkipReason::JsonWithoutModule
                | SkipReason::Expired
        )
    }

    /// A short stable name, for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            SkipReason::UnsupportedType { .. } => "unsupported-type",
            SkipReason::JsonWithoutModule => "json-without-module",
            SkipReason::Expired => "expired",
            SkipReason::FieldTtlDropped { .. } => "field-ttl-dropped",
            SkipReason::MemberTtlDropped { .. } => "member-ttl-dropped",
            SkipReason::PendingEntriesDropped { .. } => "pending-entries-dropped",
            SkipReason::UnsupportedCommand { .. } => "unsupported-command",
            SkipReason::UnknownCommand { .. } => "unknown-command",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::UnsupportedType { rdb_type } => {
                write!(f, "RDB type {rdb_type} cannot be held by Redis")
            }
            SkipReason::JsonWithoutModule => {
                f.write_str("JSON without the JSON module on the target")
            }
            SkipReason::Expired => f.write_str("already expired"),
            SkipReason::FieldTtlDropped { fields } => {
                write!(
                    f,
                    "TTL of {fields} hash field(s) dropped (target has no field TTL)"
                )
            }
            SkipReason::MemberTtlDropped { members } => {
                write!(
                    f,
                    "TTL of {members} set member(s) dropped (Redis has no member TTL)"
                )
            }
            SkipReason::PendingEntriesDropped { count } => {
                write!(
                    f,
                    "{count} pending entries of deleted stream ids not restored"
                )
            }
            SkipReason::UnsupportedCommand { name } => {
                write!(
                    f,
                    "command {} has no Redis equivalent",
                    crate::model::escape_bytes(name)
                )
            }
            SkipReason::UnknownCommand { name } => {
                write!(f, "unknown command {}", crate::model::escape_bytes(name))
            }
        }
    }
}

/// Something not written, with the key it concerns (when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The key (None for commands without a key, e.g. `FT.CREATE`).
    pub key: Option<Vec<u8>>,
    /// Why.
    pub reason: SkipReason,
}

/// Whether a command result is one global operation (FLUSHALL / FLUSHDB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    /// The transaction id shared by the copies of this command on every flow: wait until
    /// every flow has reached it, apply the command once, release all flows (§4.6).
    pub txid: u64,
}

/// The commands for one input item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewritten {
    /// The database every command applies to (the engine sends `SELECT` when it changes;
    /// Redis Cluster targets accept only db 0).
    pub db: DbIndex,
    /// The commands, in order. May be empty (PING, SELECT-only items, skipped items).
    pub cmds: Vec<Cmd>,
    /// What could not be written, if anything.
    pub skipped: Option<Skip>,
    /// Set for FLUSHALL / FLUSHDB: `cmds` holds the one command to run behind the barrier.
    pub global: Option<Global>,
    /// The commands form one atomic group (pre-v1.21 MULTI_COMMAND/EXEC): run them as one
    /// `MULTI … EXEC` on the target node.
    pub atomic: bool,
}

impl Rewritten {
    fn empty(db: DbIndex) -> Rewritten {
        Rewritten {
            db,
            ..Rewritten::default()
        }
    }

    fn skip(db: DbIndex, key: Option<&[u8]>, reason: SkipReason) -> Rewritten {
        Rewritten {
            db,
            skipped: Some(Skip {
                key: key.map(<[u8]>::to_vec),
                reason,
            }),
            ..Rewritten::default()
        }
    }
}

/// A journal command the rewrite refuses (only with [`UnknownPolicy::Error`], or for a
/// malformed command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteError {
    /// The db of the command.
    pub db: DbIndex,
    /// The command, escaped.
    pub command: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot rewrite {} ({}): {}",
            self.command, self.db, self.reason
        )
    }
}

impl std::error::Error for RewriteError {}

/// Per-flow rewrite state: the options, and the MULTI_COMMAND group being buffered (only for
/// v1.10–v1.20 masters). One per flow; cheap to create.
#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    opts: Options,
    group: Vec<Cmd>,
    group_db: DbIndex,
    group_skip: Option<Skip>,
}

impl Rewriter {
    /// A rewriter with these options.
    pub fn new(opts: Options) -> Rewriter {
        Rewriter {
            opts,
            ..Rewriter::default()
        }
    }

    /// The options in use.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Updates the current time (call before each batch; the rewrite never reads the clock).
    pub fn set_now_ms(&mut self, now_ms: i64) {
        self.opts.now_ms = now_ms;
    }

    /// One piece of a snapshot key.
    pub fn piece(&self, piece: &Piece) -> Rewritten {
        value::rewrite_piece(piece, &self.opts)
    }

    /// A whole string key borrowed from the decoder ([`crate::rdb::FlowDecoder::step_ref`]):
    /// the same commands as [`Rewriter::piece`] gives for its owned piece, without the copy.
    pub fn string_ref(&self, s: &StringRef<'_>) -> Rewritten {
        value::rewrite_string(s, &self.opts)
    }

    /// One journal entry (from the live journal), by value: a command replayed as it is
    /// moves into the result instead of being copied (the stable-sync hot path).
    pub fn entry_owned(&mut self, entry: JournalEntry) -> Result<Rewritten, RewriteError> {
        match entry.kind {
            EntryKind::Ping | EntryKind::Noop | EntryKind::Fin => Ok(Rewritten::empty(entry.db)),
            EntryKind::Command | EntryKind::Expired => {
                command::rewrite_command(entry.db, entry.txid, entry.cmd, &self.opts)
            }
            EntryKind::MultiCommand => {
                let r = command::rewrite_command(entry.db, entry.txid, entry.cmd, &self.opts)?;
                if self.group.is_empty() {
                    self.group_db = r.db;
                }
                self.group.extend(r.cmds);
                if r.skipped.is_some() {
                    self.group_skip = r.skipped;
                }
                Ok(Rewritten::empty(entry.db))
            }
            EntryKind::Exec => {
                let cmds = std::mem::take(&mut self.group);
                Ok(Rewritten {
                    db: self.group_db,
                    atomic: cmds.len() > 1,
                    cmds,
                    skipped: self.group_skip.take(),
                    global: None,
                })
            }
        }
    }

    /// One journal entry (from the live journal or a JOURNAL_BLOB), borrowed: a copy goes
    /// through [`Rewriter::entry_owned`].
    pub fn entry(&mut self, entry: &JournalEntry) -> Result<Rewritten, RewriteError> {
        self.entry_owned(entry.clone())
    }

    /// A journal item (entries are rewritten; LSN markers give nothing).
    pub fn journal_item(&mut self, item: &JournalItem) -> Result<Rewritten, RewriteError> {
        match item {
            JournalItem::Entry(e) => self.entry(e),
            JournalItem::LsnMarker(_) => Ok(Rewritten::default()),
        }
    }

    /// Any event of a flow decoder: snapshot items, the eof token (nothing to write) and
    /// live journal items.
    pub fn flow_event(&mut self, ev: &FlowEvent) -> Result<Rewritten, RewriteError> {
        match ev {
            FlowEvent::Snapshot(item) => self.snapshot_item(item),
            FlowEvent::EofToken => Ok(Rewritten::default()),
            FlowEvent::Journal(j) => self.journal_item(j),
        }
    }

    /// Any snapshot item: key pieces and journal blobs are rewritten; a `lua` AUX field
    /// becomes `SCRIPT LOAD` (so EVALSHA works on the target, like on a Dragonfly replica);
    /// a Redis function library becomes `FUNCTION LOAD REPLACE`; everything else (header,
    /// SELECTDB, FULLSYNC_END, JOURNAL_OFFSET, EOF …) gives nothing to write.
    pub fn snapshot_item(&mut self, item: &SnapshotItem) -> Result<Rewritten, RewriteError> {
        match item {
            SnapshotItem::Piece(p) => Ok(self.piece(p)),
            SnapshotItem::JournalBlob(j) => self.journal_item(j),
            SnapshotItem::Aux { key, value } if key.as_slice() == b"lua" => {
                let mut c = Cmd::new("SCRIPT");
                c.arg(b"LOAD").arg(value);
                Ok(Rewritten {
                    cmds: vec![c],
                    ..Rewritten::default()
                })
            }
            SnapshotItem::Function(code) => {
                let mut c = Cmd::new("FUNCTION");
                c.arg(b"LOAD").arg(b"REPLACE").arg(code);
                Ok(Rewritten {
                    cmds: vec![c],
                    ..Rewritten::default()
                })
            }
            _ => Ok(Rewritten::default()),
        }
    }
}
