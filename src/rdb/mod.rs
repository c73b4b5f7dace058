//! Sans-IO decoder of Dragonfly's full-sync snapshot stream (RDB with Dragonfly's opcodes), of
//! standalone Redis RDB files and of `DUMP` payloads.
//!
//! Bytes in, items and bytes consumed out: [`SnapshotDecoder::step`] and
//! [`FlowDecoder::step`] take the unread input and return one [`Step`] plus how many bytes
//! they used; the caller drops those bytes and calls again. Nothing here reads sockets,
//! spawns threads, logs or prints. The caller adds the flow id and the LSN to errors.
//!
//! Layout:
//! * [`consts`]: every opcode, type byte and blob encoding constant.
//! * `blob`: listpack, ziplist, intset and zipmap readers (complete buffers).
//! * `value`: the per-type value state machines (header, then elements in batches).
//! * `snapshot`: top-level items, compressed blobs, tagged chunks ([`SnapshotDecoder`]).
//! * `flow`: the whole flow stream: snapshot, eof token, then the journal ([`FlowDecoder`]).
//! * `dump`: [`decode_dump_payload`].
//!
//! ## What a key becomes
//! Each key entry is delivered as one or more [`Piece`]s: the first has `first == true` (the
//! replayer replaces the key), later ones append, and the one with `last == true` completes
//! the value (apply the TTL then). Collections are cut into pieces of at most
//! [`Limits::batch_elements`] elements / about [`Limits::batch_bytes`] bytes, so no value is
//! ever held whole. Pieces of keys split into tagged chunks (opcode 224, §3.8 of the protocol
//! document) can interleave with other keys; each piece names its key and db (the db of the
//! first chunk). Piece boundaries depend only on the stream, never on how the input was cut.
//! A value held in one blob string (intset, listpack, ziplist, zipmap: never split by the
//! master, and at most [`Limits::max_string`] bytes) comes whole in one piece; a list node
//! counts as all its elements.
//!
//! ## Borrowed string keys (the fast path)
//! Most keys of a real snapshot are small plain strings. [`SnapshotDecoder::step_ref`] and
//! [`FlowDecoder::step_ref`] return such a key (type 0, raw key and value, complete in the
//! input or in the decompressed blob being read, not inside a tagged chunk) as a
//! [`StringRef`] that borrows its bytes instead of copying them into a [`Piece`]; everything
//! else comes owned, exactly as from `step` (which is `step_ref` + `into_owned`). The flow
//! thread rewrites a borrowed key straight into its `SET` command, so a 64-byte string costs
//! no allocation in the decoder. Figures: `docs/performance.md`.
//!
//! ## Expired keys
//! A key whose EXPIRETIME_MS already lies in the past is still sent by the master (§3.5). The
//! decoder never looks at the clock (that would be I/O): it delivers the key with its absolute
//! `expire_ms`. Policy, implemented by the rewrite: skip a key whose expiry is not after the
//! time the piece is applied, exactly as Dragonfly's own loader does
//! (`RdbLoader::ShouldDiscardKey`); [`Piece::is_expired_at`] is the test to use.

pub mod consts;

mod blob;
mod dump;
mod flow;
mod snapshot;
mod value;

pub use crate::wire::{Blobs, DecodeError, ErrorKind, Limits};
pub use dump::{crc64, decode_dump_payload, Dump};
pub use flow::{EventRef, FlowDecoder, FlowEvent};
pub use snapshot::{ItemRef, SnapshotDecoder, SnapshotItem, StringRef};

use crate::model::DbIndex;

/// What one call of a `step` function produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    /// Nothing more can be decoded from the given bytes: append more input and call again
    /// (the bytes consumed, if any, still have to be dropped).
    NeedMore,
    /// One decoded item.
    Item(T),
    /// The stream is over (standalone RDB: after EOF and its checksum). Never for a flow.
    End,
}

/// Dragonfly's per-key properties (DF_MASK, opcode 220, §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyMask {
    /// The key is sticky (Dragonfly `STICK`: never evicted). Redis has no equivalent.
    pub sticky: bool,
    /// Memcached client flags, when the key was set through the memcache port.
    pub mc_flags: Option<u32>,
}

/// A sorted-set score: the exact binary64 value, plus the original text when the wire carried
/// text (listpack / ziplist strings, type 3 text doubles) so nothing is ever rounded twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// The score (for text, the correctly rounded parse, identical to Redis's `strtod`;
    /// `inf` and `-inf` included). Never NaN: a NaN score is a decode error, as in Redis.
    pub value: f64,
    /// The text as sent, when the score was sent as text.
    pub text: Option<Vec<u8>>,
}

/// A stream entry id `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

/// One live stream entry (deleted entries are not delivered; see [`StreamMeta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry id.
    pub id: StreamId,
    /// Field, value, field, value…
    pub fields: Blobs,
}

/// A pending entry of a consumer group (group PEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPending {
    /// The entry id.
    pub id: StreamId,
    /// Last delivery time, unix ms.
    pub delivery_time_ms: i64,
    /// Number of deliveries.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumer {
    /// Consumer name.
    pub name: Vec<u8>,
    /// Last time the consumer was seen, unix ms.
    pub seen_time_ms: i64,
    /// Last time the consumer was active, unix ms (type 21 only).
    pub active_time_ms: Option<i64>,
    /// Ids of the group PEL entries this consumer owns.
    pub pending: Vec<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    /// Group name.
    pub name: Vec<u8>,
    /// Last delivered id.
    pub last_id: StreamId,
    /// Entries read (types 19 and 21); `u64::MAX` is Redis's "unknown" value, kept as is.
    pub entries_read: Option<u64>,
    /// The group PEL.
    pub pending: Vec<StreamPending>,
    /// The consumers.
    pub consumers: Vec<StreamConsumer>,
}

/// The stream metadata that follows all its listpacks (always in the last piece).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamMeta {
    /// Number of live entries (`XLEN`).
    pub length: u64,
    /// Last id ever added (`XSETID` target).
    pub last_id: StreamId,
    /// First live id (types 19, 21).
    pub first_id: Option<StreamId>,
    /// Largest deleted id (types 19, 21).
    pub max_deleted_id: Option<StreamId>,
    /// Entries ever added (types 19, 21).
    pub entries_added: Option<u64>,
    /// Consumer groups.
    pub groups: Vec<StreamGroup>,
    /// Number of deleted entries skipped in the listpacks of this stream (all pieces).
    pub deleted_entries: u64,
}

/// The decoded content of one piece of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (also HyperLogLog, bitmaps). Never split.
    String(Vec<u8>),
    /// List elements, head to tail.
    List(Blobs),
    /// Set members.
    Set(Blobs),
    /// Dragonfly set with per-member TTL (type 32): members and, per member, the absolute
    /// expiry in unix seconds (`None` = no TTL).
    SetWithExpiry {
        /// Members.
        members: Blobs,
        /// Absolute unix-seconds expiry per member.
        expire_unix_s: Vec<Option<i64>>,
    },
    /// Sorted-set members and their scores (same length).
    ZSet {
        /// Members.
        members: Blobs,
        /// Scores, one per member.
        scores: Vec<Score>,
    },
    /// Hash fields and values, alternating (use [`Blobs::pairs`]).
    Hash(Blobs),
    /// Dragonfly hash with per-field TTL (type 31): field/value pairs and, per pair, the
    /// absolute expiry in unix seconds (`None` = no TTL).
    HashWithExpiry {
        /// Field, value, field, value…
        fields: Blobs,
        /// Absolute unix-seconds expiry per pair.
        expire_unix_s: Vec<Option<i64>>,
    },
    /// Stream entries of this piece; the metadata comes with the last piece.
    Stream {
        /// Live entries, in id order.
        entries: Vec<StreamEntry>,
        /// Length, ids, groups: present in the piece that completes the stream.
        meta: Option<Box<StreamMeta>>,
    },
    /// JSON document text (type 30, or 20 in streams with RDB version < 10).
    Json(Vec<u8>),
    /// A type Redis cannot hold natively (SBF, SBF2, CMS, TOPK, CUCKOO, module values): the
    /// value's wire bytes (everything after the key), cut into pieces. The pieces
    /// concatenated are the value encoding Dragonfly's `RESTORE` reads after the type byte,
    /// in canonical form: RDB strings inside SBF and TOPK values are written raw (LZF and
    /// integer forms expanded), so the same value always gives the same bytes.
    Opaque(Vec<u8>),
}

impl Value {
    /// Number of elements in this piece (strings and opaque bytes count as 1).
    pub fn element_count(&self) -> usize {
        match self {
            Value::String(_) | Value::Json(_) | Value::Opaque(_) => 1,
            Value::List(b) | Value::Set(b) => b.len(),
            Value::SetWithExpiry { members, .. } => members.len(),
            Value::ZSet { members, .. } => members.len(),
            Value::Hash(b) => b.len() / 2,
            Value::HashWithExpiry { fields, .. } => fields.len() / 2,
            Value::Stream { entries, .. } => entries.len(),
        }
    }
}

/// One piece of one key (see the module docs for first/last semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Database of the key (for tagged chunks: the db current when the first chunk came).
    pub db: DbIndex,
    /// The key.
    pub key: Vec<u8>,
    /// The RDB object type byte it was encoded with ([`consts`]).
    pub rdb_type: u8,
    /// Absolute expiry, unix milliseconds (EXPIRETIME_MS, or EXPIRETIME × 1000).
    pub expire_ms: Option<i64>,
    /// Dragonfly's DF_MASK properties.
    pub mask: KeyMask,
    /// First piece of the key: replace whatever the target holds.
    pub first: bool,
    /// Last piece: the value is complete (apply the expiry now).
    pub last: bool,
    /// The decoded elements of this piece.
    pub value: Value,
}

impl Piece {
    /// True when the key's expiry is at or before `now_ms` (unix ms): such a key is skipped,
    /// as Dragonfly's loader does (`RdbLoader::ShouldDiscardKey`).
    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        matches!(self.expire_ms, Some(e) if e <= now_ms)
    }

    /// True when the piece holds the whole value (first and last).
    pub fn is_whole(&self) -> bool {
        self.first && self.last
    }
}

impl Value {
    /// Appends the elements of a later piece of the same value (`other` must be the same
    /// variant; a string or JSON piece replaces). Used to reassemble whole values in tests,
    /// the inspector and DUMP decoding.
    pub fn append(&mut self, other: Value) {
        match (self, other) {
            (Value::List(a), Value::List(b))
            | (Value::Set(a), Value::Set(b))
            | (Value::Hash(a), Value::Hash(b)) => a.extend(&b),
            (
                Value::SetWithExpiry {
                    members: a,
                    expire_unix_s: x,
                },
                Value::SetWithExpiry {
                    members: b,
                    expire_unix_s: y,
                },
            ) => {
                a.extend(&b);
                x.extend(y);
            }
            (
                Value::HashWithExpiry {
                    fields: a,
                    expire_unix_s: x,
                },
                Value::HashWithExpiry {
                    fields: b,
                    expire_unix_s: y,
                },
            ) => {
                a.extend(&b);
                x.extend(y);
            }
            (
                Value::ZSet {
                    members: a,
                    scores: x,
                },
                Value::ZSet {
                    members: b,
                    scores: y,
                },
            ) => {
                a.extend(&b);
                x.extend(y);
            }
            (
                Value::Stream {
                    entries: a,
                    meta: m,
                },
                Value::Stream {
                    entries: b,
                    meta: n,
                },
            ) => {
                a.extend(b);
                if n.is_some() {
                    *m = n;
                }
            }
            (Value::Opaque(a), Value::Opaque(b)) => a.extend_from_slice(&b),
            (s, o) => *s = o,
        }
    }
}
