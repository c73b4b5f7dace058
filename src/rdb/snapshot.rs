//! The snapshot decoder: the RDB header, every top-level opcode of §3.4 at every level,
//! compressed blobs re-parsed as top-level items (§3.7), tagged chunks (§3.8), journal blobs
//! (§3.9), FULLSYNC_END, JOURNAL_OFFSET, EOF and its checksum (§3.10).
//!
//! State kept across calls, per stream: the current db, the pending key attributes
//! (EXPIRETIME_MS, DF_MASK), the key entry being decoded in the contiguous form, the tagged
//! chunk being read (its id and remaining budget), the entries whose tagged chunks are still
//! open (`open`, keyed by chunk id, each remembering the db of its first chunk), the
//! decompressed blob being re-parsed, and the journal reader of the journal blobs (its current
//! db lasts from one blob to the next, §3.9).

use std::collections::{HashMap, VecDeque};
use std::io::Read;

use crate::journal::{JournalDecoder, JournalItem};
use crate::model::{DbIndex, Lsn};
use crate::rdb::consts::*;
use crate::rdb::value::{Progress, ValueDecoder};
use crate::rdb::{KeyMask, Piece, Step, Value};
use crate::wire::{DecodeError, ErrorKind, Fail, Limits, RResult, Reader};

/// One top-level item of a snapshot stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotItem {
    /// `REDIS` + the 4-digit version (always 9 from Dragonfly).
    Header {
        /// The RDB version.
        version: u32,
    },
    /// AUX field (`FA str str`).
    Aux {
        /// Field name (`redis-ver`, `df-ver`, `lua`, `shard-id`, …).
        key: Vec<u8>,
        /// Field value.
        value: Vec<u8>,
    },
    /// SELECTDB: later key entries (and first chunks) belong to this db.
    SelectDb(DbIndex),
    /// RESIZEDB hint (Redis files only).
    ResizeDb {
        /// Keys in the db.
        db_size: u64,
        /// Keys with a TTL.
        expires_size: u64,
    },
    /// Redis 7 function library code (`FUNCTION2`), to be loaded with `FUNCTION LOAD`.
    Function(Vec<u8>),
    /// One piece of a key.
    Piece(Piece),
    /// An item of a JOURNAL_BLOB: a change made while the snapshot ran. Apply it; do not count
    /// it for LSNs (§3.9).
    JournalBlob(JournalItem),
    /// FULLSYNC_END: this flow's snapshot traversal is complete (§3.10).
    FullSyncEnd,
    /// JOURNAL_OFFSET: the LSN of the first live journal entry (§3.10).
    JournalOffset(Lsn),
    /// An item with no meaning for a replica that was skipped (VECTOR_INDEX, SHARD_DOC_INDEX,
    /// MODULE_AUX, SLOT_INFO).
    Skipped {
        /// Its opcode.
        opcode: u8,
    },
    /// EOF and the 8 checksum bytes that follow it (zero in replication).
    Eof {
        /// The checksum bytes as sent (CRC64 little-endian in Redis files).
        checksum: [u8; 8],
    },
}

/// A key entry whose value is being decoded.
#[derive(Debug)]
struct Pending {
    db: DbIndex,
    key: Vec<u8>,
    rdb_type: u8,
    expire_ms: Option<i64>,
    mask: KeyMask,
    vd: ValueDecoder,
    emitted: bool,
}

impl Pending {
    fn piece(&mut self, last: bool) -> Piece {
        let first = !self.emitted;
        self.emitted = true;
        let key = if last {
            std::mem::take(&mut self.key)
        } else {
            self.key.clone()
        };
        Piece {
            db: self.db,
            key,
            rdb_type: self.rdb_type,
            expire_ms: self.expire_ms,
            mask: self.mask,
            first,
            last,
            value: self.vd.take_batch(),
        }
    }
}

/// The tagged chunk being read.
#[derive(Debug)]
struct Chunk {
    id: u32,
    left: u64,
    pending: Option<Pending>,
}

/// A decompressed blob being re-parsed.
#[derive(Debug)]
struct Blob {
    data: Vec<u8>,
    pos: usize,
    start: u64,
}

/// A plain string key borrowed from the decoder's input (see [`SnapshotDecoder::step_ref`]).
/// It is always a whole value: the piece it stands for has `first` and `last` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringRef<'a> {
    /// Database of the key.
    pub db: DbIndex,
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Absolute expiry, unix milliseconds.
    pub expire_ms: Option<i64>,
    /// Dragonfly's DF_MASK properties.
    pub mask: KeyMask,
}

impl StringRef<'_> {
    /// The owned piece [`SnapshotDecoder::step`] delivers for this key.
    pub fn to_piece(&self) -> Piece {
        Piece {
            db: self.db,
            key: self.key.to_vec(),
            rdb_type: TYPE_STRING,
            expire_ms: self.expire_ms,
            mask: self.mask,
            first: true,
            last: true,
            value: Value::String(self.value.to_vec()),
        }
    }
}

/// What [`SnapshotDecoder::step_ref`] yields: a borrowed whole string key, or any item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemRef<'a> {
    /// A whole plain string key, borrowed.
    String(StringRef<'a>),
    /// Any other item (including string keys the fast path does not take).
    Item(SnapshotItem),
}

impl ItemRef<'_> {
    /// The owned item ([`SnapshotItem::Piece`] for a borrowed string).
    pub fn into_owned(self) -> SnapshotItem {
        match self {
            ItemRef::String(s) => SnapshotItem::Piece(s.to_piece()),
            ItemRef::Item(it) => it,
        }
    }
}

/// Where a whole string key lies in its source buffer.
#[derive(Debug, Clone, Copy)]
struct WholeString {
    key: (usize, usize),
    value: (usize, usize),
    expire_ms: Option<i64>,
    /// Position just after the value.
    end: usize,
}

impl WholeString {
    /// The same positions, in a buffer where the parsed bytes start at `base`.
    fn shifted(self, base: usize) -> WholeString {
        WholeString {
            key: (self.key.0 + base, self.key.1 + base),
            value: (self.value.0 + base, self.value.1 + base),
            expire_ms: self.expire_ms,
            end: self.end + base,
        }
    }

    /// The borrowed key, in `src` (the buffer the positions refer to).
    fn to_ref(self, src: &[u8], db: DbIndex, mask: KeyMask) -> StringRef<'_> {
        StringRef {
            db,
            key: src.get(self.key.0..self.key.1).unwrap_or(&[]),
            value: src.get(self.value.0..self.value.1).unwrap_or(&[]),
            expire_ms: self.expire_ms,
            mask,
        }
    }
}

/// A raw RDB string `pu(len) bytes` at `pos`: its byte range, or `None` when it is encoded
/// (integer, LZF), runs past `src`, or is longer than `max` (the general path then reads it
/// and reports what is wrong).
#[inline]
fn raw_str_at(src: &[u8], pos: usize, max: usize) -> Option<(usize, usize)> {
    let b = *src.get(pos)?;
    let (len, head) = match b >> 6 {
        0 => (usize::from(b & 0x3F), 1),
        1 => (
            (usize::from(b & 0x3F) << 8) | usize::from(*src.get(pos + 1)?),
            2,
        ),
        _ if b == 0x80 => {
            let a = src.get(pos + 1..pos + 5)?;
            (u32::from_be_bytes([a[0], a[1], a[2], a[3]]) as usize, 5)
        }
        _ => return None,
    };
    if len > max {
        return None;
    }
    let start = pos + head;
    let end = start.checked_add(len)?;
    (end <= src.len()).then_some((start, end))
}

/// The fast path of the snapshot decoder: `[EXPIRETIME_MS u64] 00 str(key) str(value)` with
/// both strings raw and complete in `src`. `None` for anything else (nothing is consumed;
/// the general path decodes it). `pending_expire` is an EXPIRETIME read by an earlier call.
#[inline]
fn whole_string(src: &[u8], pending_expire: Option<i64>, max: usize) -> Option<WholeString> {
    let mut pos = 0;
    let mut expire_ms = pending_expire;
    if *src.first()? == OP_EXPIRETIME_MS {
        let b = src.get(1..9)?;
        expire_ms = Some(i64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]));
        pos = 9;
    }
    if *src.get(pos)? != TYPE_STRING {
        return None;
    }
    let key = raw_str_at(src, pos + 1, max)?;
    let value = raw_str_at(src, key.1, max)?;
    Some(WholeString {
        key,
        value,
        expire_ms,
        end: value.1,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Magic,
    Body,
    Done,
}

/// What one pass over a source produced.
enum Out {
    Item(SnapshotItem),
    Short,
    /// A compressed blob was opened: parse it before the source continues.
    Switch,
}

/// Sans-IO decoder of one RDB-framed snapshot stream (a Dragonfly flow up to EOF + checksum,
/// a Redis RDB file).
#[derive(Debug)]
pub struct SnapshotDecoder {
    limits: Limits,
    offset: u64,
    phase: Phase,
    version: u32,
    db: DbIndex,
    expire: Option<i64>,
    mask: KeyMask,
    current: Option<Pending>,
    chunk: Option<Chunk>,
    open: HashMap<u32, Pending>,
    inner: Option<Blob>,
    queue: VecDeque<SnapshotItem>,
    journal: JournalDecoder,
    /// Whole raw string keys take the fast path (off only in tests, to compare).
    fast: bool,
    /// The buffer of the last decompressed blob, reused for the next one.
    spare: Vec<u8>,
}

impl SnapshotDecoder {
    /// A decoder expecting the `REDIS` magic at absolute offset 0.
    pub fn new(limits: Limits) -> SnapshotDecoder {
        SnapshotDecoder::with_offset(limits, 0)
    }

    /// A decoder whose first byte is at absolute offset `offset` of the stream.
    pub fn with_offset(limits: Limits, offset: u64) -> SnapshotDecoder {
        SnapshotDecoder {
            limits,
            offset,
            phase: Phase::Magic,
            version: 0,
            db: DbIndex(0),
            expire: None,
            mask: KeyMask::default(),
            current: None,
            chunk: None,
            open: HashMap::new(),
            inner: None,
            queue: VecDeque::new(),
            journal: JournalDecoder::new(limits),
            fast: true,
            spare: Vec::new(),
        }
    }

    /// Absolute offset of the next unread input byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The RDB version from the header (0 before it was read).
    pub fn rdb_version(&self) -> u32 {
        self.version
    }

    /// The db of the last SELECTDB.
    pub fn db(&self) -> DbIndex {
        self.db
    }

    /// Number of keys whose tagged chunks are still open.
    pub fn open_chunks(&self) -> usize {
        self.open.len() + usize::from(self.chunk.is_some())
    }

    /// True after EOF and its checksum.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done && self.queue.is_empty()
    }

    /// Decodes at most one item from `input`; returns it and the bytes consumed. After EOF
    /// and its checksum every call returns `Step::End` and consumes nothing.
    pub fn step(&mut self, input: &[u8]) -> Result<(Step<SnapshotItem>, usize), DecodeError> {
        let (s, n) = self.step_ref(input)?;
        Ok((
            match s {
                Step::Item(it) => Step::Item(it.into_owned()),
                Step::NeedMore => Step::NeedMore,
                Step::End => Step::End,
            },
            n,
        ))
    }

    /// [`SnapshotDecoder::step`] without copying whole string keys: a plain string key whose
    /// key and value are raw RDB strings (the common case: no LZF, no integer encoding, not
    /// split into tagged chunks) comes back as an [`ItemRef::String`] borrowing its bytes
    /// from `input` or from the decompressed blob being read; everything else as
    /// [`ItemRef::Item`]. The items, in order, are exactly those of `step`.
    pub fn step_ref<'a>(
        &'a mut self,
        input: &'a [u8],
    ) -> Result<(Step<ItemRef<'a>>, usize), DecodeError> {
        let mut used = 0usize;
        loop {
            if let Some(it) = self.queue.pop_front() {
                return Ok((Step::Item(ItemRef::Item(it)), used));
            }
            if self.inner.is_some() {
                // The fast path first: a whole raw string key inside the blob.
                let fast = match &self.inner {
                    Some(b) if self.fast_ok() => {
                        let src = b.data.get(b.pos..).unwrap_or(&[]);
                        whole_string(src, self.expire, self.limits.max_string)
                            .map(|f| f.shifted(b.pos))
                    }
                    _ => None,
                };
                if let Some(f) = fast {
                    if let Some(b) = self.inner.as_mut() {
                        b.pos = f.end;
                    }
                    let (db, mask) = self.take_attrs();
                    let this: &'a SnapshotDecoder = self;
                    let data = this.inner.as_ref().map_or(&[][..], |b| &b.data[..]);
                    return Ok((Step::Item(ItemRef::String(f.to_ref(data, db, mask))), used));
                }
                if let Some(it) = self.step_blob()? {
                    return Ok((Step::Item(ItemRef::Item(it)), used));
                }
                continue;
            }
            if self.phase == Phase::Done {
                return Ok((Step::End, used));
            }
            let src = input.get(used..).unwrap_or(&[]);
            if self.fast_ok() {
                if let Some(f) = whole_string(src, self.expire, self.limits.max_string) {
                    let f = f.shifted(used);
                    self.offset += (f.end - used) as u64;
                    let (db, mask) = self.take_attrs();
                    return Ok((
                        Step::Item(ItemRef::String(f.to_ref(input, db, mask))),
                        f.end,
                    ));
                }
            }
            let mut r = Reader::new(src);
            let res = self.body(&mut r, false);
            let n = r.pos();
            match res {
                Ok(out) => {
                    self.offset += n as u64;
                    used += n;
                    match out {
                        Out::Item(it) => return Ok((Step::Item(ItemRef::Item(it)), used)),
                        Out::Short => return Ok((Step::NeedMore, used)),
                        Out::Switch => continue,
                    }
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

    /// Turns the whole-string fast path off (tests compare both paths).
    #[cfg(test)]
    pub(crate) fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    /// True when the next bytes start a top-level item (no key entry or tagged chunk is
    /// half-read), so the whole-string fast path may look at them.
    fn fast_ok(&self) -> bool {
        self.fast && self.phase == Phase::Body && self.chunk.is_none() && self.current.is_none()
    }

    /// The db and the mask for the key entry just read by the fast path; the pending
    /// attributes are consumed by it (its expiry was read with it).
    fn take_attrs(&mut self) -> (DbIndex, KeyMask) {
        self.expire = None;
        (self.db, std::mem::take(&mut self.mask))
    }

    /// One pass over the open decompressed blob. `Ok(None)` when the blob is finished.
    fn step_blob(&mut self) -> Result<Option<SnapshotItem>, DecodeError> {
        let Some(mut blob) = self.inner.take() else {
            return Ok(None);
        };
        let src = blob.data.get(blob.pos..).unwrap_or(&[]);
        let mut r = Reader::new(src);
        let res = self.body(&mut r, true);
        let n = r.pos();
        let err = |blob: &Blob, at: usize, kind| DecodeError {
            offset: blob.start,
            inner: Some((blob.pos + at) as u64),
            kind,
        };
        match res {
            Ok(Out::Item(it)) => {
                blob.pos += n;
                self.inner = Some(blob);
                Ok(Some(it))
            }
            Ok(Out::Short) | Err(Fail::Short) => {
                blob.pos += n;
                if blob.pos < blob.data.len() {
                    return Err(err(
                        &blob,
                        0,
                        ErrorKind::Truncated("item in compressed blob"),
                    ));
                }
                // The virtual COMPRESSED_BLOB_END (§3.7): nothing may be left half-read.
                if self.chunk.is_some() {
                    return Err(err(
                        &blob,
                        0,
                        ErrorKind::Corrupt("tagged chunk crosses the end of a compressed blob"),
                    ));
                }
                if self.current.is_some() {
                    return Err(err(
                        &blob,
                        0,
                        ErrorKind::Corrupt("key entry crosses the end of a compressed blob"),
                    ));
                }
                // Keep the buffer for the next blob (Dragonfly's are at most ~1 MiB; a
                // bigger one is not kept).
                if blob.data.capacity() <= SPARE_MAX {
                    self.spare = blob.data;
                }
                Ok(None)
            }
            Ok(Out::Switch) => Err(err(
                &blob,
                n,
                ErrorKind::Corrupt("compressed blob inside a compressed blob"),
            )),
            Err(Fail::Bad { at, kind }) => Err(err(&blob, at, kind)),
        }
    }

    /// Decodes from one source until an item, a short read or a blob switch.
    fn body(&mut self, r: &mut Reader<'_>, in_blob: bool) -> RResult<Out> {
        if self.phase == Phase::Magic {
            let a = r.array::<9>()?;
            if &a[..5] != RDB_MAGIC || !a[5..].iter().all(u8::is_ascii_digit) {
                return Reader::bad_at(0, ErrorKind::BadMagic);
            }
            let v = a[5..]
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
            if !(1..=12).contains(&v) {
                return Reader::bad_at(5, ErrorKind::UnsupportedVersion(v));
            }
            self.version = v;
            self.phase = Phase::Body;
            return Ok(Out::Item(SnapshotItem::Header { version: v }));
        }
        loop {
            if self.chunk.is_some() {
                if let Some(out) = self.chunk_step(r)? {
                    return Ok(out);
                }
                continue;
            }
            if let Some(p) = self.current.as_mut() {
                match p.vd.advance(r)? {
                    Progress::Short => return Ok(Out::Short),
                    Progress::BatchFull => {
                        return Ok(Out::Item(SnapshotItem::Piece(p.piece(false))))
                    }
                    Progress::Done => {
                        let piece = p.piece(true);
                        self.current = None;
                        return Ok(Out::Item(SnapshotItem::Piece(piece)));
                    }
                }
            }
            let save = r.pos();
            match self.top(r, in_blob) {
                Ok(Some(out)) => return Ok(out),
                Ok(None) => {}
                Err(Fail::Short) => {
                    r.rewind(save);
                    return Ok(Out::Short);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `[FC][DC] type str(key)` units; returns the new entry once its key is read.
    /// `Ok(None)` after an attribute opcode.
    fn key_header(&mut self, r: &mut Reader<'_>, op: u8, at: usize) -> RResult<Option<Pending>> {
        match op {
            OP_EXPIRETIME_MS => {
                self.expire = Some(r.u64le()? as i64);
                Ok(None)
            }
            OP_EXPIRETIME => {
                self.expire = Some(i64::from(r.u32le()?) * 1000);
                Ok(None)
            }
            OP_DF_MASK => {
                let flags = r.u32le()?;
                let mc = if flags & DF_MASK_FLAG_MC_FLAGS != 0 {
                    Some(r.u32le()?)
                } else {
                    None
                };
                self.mask = KeyMask {
                    sticky: flags & DF_MASK_FLAG_STICKY != 0,
                    mc_flags: mc,
                };
                Ok(None)
            }
            OP_IDLE => {
                r.pu()?;
                Ok(None)
            }
            OP_FREQ => {
                r.u8()?;
                Ok(None)
            }
            t => {
                let key = r.rdb_str(self.limits.max_string)?.into_vec();
                let vd = ValueDecoder::new(t, self.version < 10, self.limits)
                    .map_err(|kind| Fail::Bad { at, kind })?;
                Ok(Some(Pending {
                    db: self.db,
                    key,
                    rdb_type: t,
                    expire_ms: self.expire.take(),
                    mask: std::mem::take(&mut self.mask),
                    vd,
                    emitted: false,
                }))
            }
        }
    }

    /// One step inside a tagged chunk. `Ok(None)`: state changed, loop again.
    fn chunk_step(&mut self, r: &mut Reader<'_>) -> RResult<Option<Out>> {
        let Some(ch) = self.chunk.as_mut() else {
            return Ok(None);
        };
        if ch.left == 0 {
            // The chunk is used up and its value is not complete: park it under its id.
            let Some(mut ch) = self.chunk.take() else {
                return Ok(None);
            };
            let Some(mut p) = ch.pending.take() else {
                return Reader::bad_at(
                    r.pos(),
                    ErrorKind::Corrupt("tagged chunk ends inside a key header"),
                );
            };
            let out = if p.vd.has_batch() {
                Some(Out::Item(SnapshotItem::Piece(p.piece(false))))
            } else {
                None
            };
            self.open.insert(ch.id, p);
            return Ok(out);
        }
        let rest = r.rest();
        let avail = (rest.len() as u64).min(ch.left) as usize;
        let whole = avail as u64 == ch.left;
        let base = r.pos();
        let mut sub = Reader::new(&rest[..avail]);
        if ch.pending.is_none() {
            loop {
                let save = sub.pos();
                let res = sub.u8().and_then(|op| {
                    // SELECTDB of a first chunk is outside it (§3.8); only attributes and the
                    // key entry itself may be inside.
                    if op >= 200
                        && !matches!(
                            op,
                            OP_EXPIRETIME_MS | OP_EXPIRETIME | OP_DF_MASK | OP_IDLE | OP_FREQ
                        )
                    {
                        return Reader::bad_at(
                            save,
                            ErrorKind::Corrupt(
                                "opcode other than a key entry inside a tagged chunk",
                            ),
                        );
                    }
                    self.key_header(&mut sub, op, save)
                });
                match res {
                    Ok(Some(p)) => {
                        if let Some(ch) = self.chunk.as_mut() {
                            ch.pending = Some(p);
                        }
                        break;
                    }
                    Ok(None) => {}
                    Err(Fail::Short) => {
                        sub.rewind(save);
                        if whole {
                            return Reader::bad_at(
                                base + save,
                                ErrorKind::Corrupt("tagged chunk ends inside a key header"),
                            );
                        }
                        r.skip(sub.pos())?;
                        if let Some(ch) = self.chunk.as_mut() {
                            ch.left -= sub.pos() as u64;
                        }
                        return Ok(Some(Out::Short));
                    }
                    Err(Fail::Bad { at, kind }) => return Reader::bad_at(base + at, kind),
                }
            }
        }
        let Some(ch) = self.chunk.as_mut() else {
            return Ok(None);
        };
        let Some(p) = ch.pending.as_mut() else {
            return Ok(None);
        };
        let res = p.vd.advance(&mut sub).map_err(|e| match e {
            Fail::Bad { at, kind } => Fail::Bad {
                at: base + at,
                kind,
            },
            s => s,
        })?;
        let n = sub.pos();
        r.skip(n)?;
        ch.left -= n as u64;
        match res {
            Progress::BatchFull => Ok(Some(Out::Item(SnapshotItem::Piece(p.piece(false))))),
            Progress::Done => {
                let piece = p.piece(true);
                if ch.left != 0 {
                    return Reader::bad_at(
                        r.pos(),
                        ErrorKind::Corrupt("value complete before the end of its tagged chunk"),
                    );
                }
                self.chunk = None;
                Ok(Some(Out::Item(SnapshotItem::Piece(piece))))
            }
            Progress::Short => {
                if whole && ch.left > 0 {
                    return Reader::bad_at(
                        r.pos(),
                        ErrorKind::Corrupt("element crosses the end of its tagged chunk"),
                    );
                }
                if ch.left == 0 {
                    Ok(None)
                } else {
                    Ok(Some(Out::Short))
                }
            }
        }
    }

    /// One top-level opcode and its payload. `Ok(None)` when it produced no item.
    fn top(&mut self, r: &mut Reader<'_>, in_blob: bool) -> RResult<Option<Out>> {
        let at = r.pos();
        let op = r.u8()?;
        let lim = self.limits;
        let item = match op {
            OP_SELECTDB => {
                let db = r.len("SELECTDB index", u64::from(u32::MAX))?;
                self.db = DbIndex(db as u32);
                SnapshotItem::SelectDb(self.db)
            }
            OP_AUX => {
                let key = r.rdb_str(lim.max_string)?;
                let value = r.rdb_str(lim.max_string)?;
                SnapshotItem::Aux {
                    key: key.into_vec(),
                    value: value.into_vec(),
                }
            }
            OP_RESIZEDB => SnapshotItem::ResizeDb {
                db_size: r.pu()?,
                expires_size: r.pu()?,
            },
            OP_FUNCTION2 => SnapshotItem::Function(r.rdb_str(lim.max_string)?.into_vec()),
            OP_SLOT_INFO => {
                r.pu()?;
                r.pu()?;
                r.pu()?;
                SnapshotItem::Skipped { opcode: op }
            }
            OP_MODULE_AUX => {
                // pu(module id) pu(when opcode) pu(when), then module opcodes up to EOF
                // (Redis rdbLoadCheckModuleValue).
                r.pu()?;
                r.pu()?;
                r.pu()?;
                loop {
                    let oat = r.pos();
                    match r.pu()? {
                        MODULE_OPCODE_EOF => break,
                        MODULE_OPCODE_SINT | MODULE_OPCODE_UINT => {
                            r.pu()?;
                        }
                        MODULE_OPCODE_FLOAT => r.skip(4)?,
                        MODULE_OPCODE_DOUBLE => r.skip(8)?,
                        MODULE_OPCODE_STRING => r.skip_rdb_str(lim.max_string)?,
                        _ => {
                            return Reader::bad_at(
                                oat,
                                ErrorKind::Corrupt("unknown module aux opcode"),
                            )
                        }
                    }
                }
                SnapshotItem::Skipped { opcode: op }
            }
            OP_FULLSYNC_END => {
                r.skip(FULLSYNC_END_PADDING)?;
                SnapshotItem::FullSyncEnd
            }
            OP_JOURNAL_OFFSET => SnapshotItem::JournalOffset(Lsn(r.u64le()?)),
            OP_COMPRESSED_ZSTD_BLOB_START | OP_COMPRESSED_LZ4_BLOB_START => {
                if in_blob {
                    return Reader::bad_at(
                        at,
                        ErrorKind::Corrupt("compressed blob inside a compressed blob"),
                    );
                }
                let n = r.len_usize("compressed blob", lim.max_blob)?;
                let data = r.bytes(n)?;
                let out = if op == OP_COMPRESSED_ZSTD_BLOB_START {
                    zstd_frame(data, lim.max_blob)
                } else {
                    lz4_frame(data, lim.max_blob, std::mem::take(&mut self.spare))
                };
                let data = out.map_err(|kind| Fail::Bad { at, kind })?;
                self.inner = Some(Blob {
                    data,
                    pos: 0,
                    start: self.offset + at as u64,
                });
                return Ok(Some(Out::Switch));
            }
            OP_JOURNAL_BLOB => {
                let count = r.len("journal blob count", lim.max_elements)?;
                let mut items = Vec::new();
                let mut strs = Vec::new();
                for _ in 0..count {
                    let sat = r.pos();
                    strs.push((sat, r.rdb_str(lim.max_string)?));
                }
                for (sat, s) in strs {
                    self.journal
                        .decode_all(s.as_bytes(), &mut items)
                        .map_err(|(_, kind)| Fail::Bad { at: sat, kind })?;
                }
                let mut it = items.into_iter();
                let Some(first) = it.next() else {
                    return Ok(None);
                };
                self.queue.extend(it.map(SnapshotItem::JournalBlob));
                SnapshotItem::JournalBlob(first)
            }
            OP_VECTOR_INDEX => {
                skip_vector_index(r, &lim)?;
                SnapshotItem::Skipped { opcode: op }
            }
            OP_SHARD_DOC_INDEX => {
                r.pu()?;
                r.skip_rdb_str(lim.max_string)?;
                let m = r.len("shard doc index size", lim.max_elements)?;
                for _ in 0..m {
                    r.skip_rdb_str(lim.max_string)?;
                    r.pu()?;
                }
                SnapshotItem::Skipped { opcode: op }
            }
            OP_TAGGED_CHUNK => {
                let id = r.u32le()?;
                let len = r.u32le()?;
                if id == 0 || len == 0 {
                    return Reader::bad_at(
                        at,
                        ErrorKind::Corrupt("tagged chunk with id 0 or length 0"),
                    );
                }
                if in_blob && u64::from(len) > r.remaining() as u64 {
                    return Reader::bad_at(
                        at,
                        ErrorKind::Corrupt("tagged chunk crosses the end of a compressed blob"),
                    );
                }
                let pending = self.open.remove(&id);
                self.chunk = Some(Chunk {
                    id,
                    left: u64::from(len),
                    pending,
                });
                return Ok(None);
            }
            OP_EOF => {
                if in_blob {
                    return Reader::bad_at(at, ErrorKind::Corrupt("EOF inside a compressed blob"));
                }
                let checksum = r.array::<8>()?;
                if !self.open.is_empty() {
                    return Reader::bad_at(
                        at,
                        ErrorKind::Corrupt(
                            "EOF while values split into tagged chunks are unfinished",
                        ),
                    );
                }
                self.phase = Phase::Done;
                SnapshotItem::Eof { checksum }
            }
            OP_COMPRESSED_BLOB_END | OP_FUNCTION_PRE_GA => {
                return Reader::bad_at(at, ErrorKind::UnknownOpcode(op))
            }
            t if t < OP_FULLSYNC_END
                || matches!(
                    t,
                    OP_EXPIRETIME_MS | OP_EXPIRETIME | OP_DF_MASK | OP_IDLE | OP_FREQ
                ) =>
            {
                if let Some(p) = self.key_header(r, t, at)? {
                    self.current = Some(p);
                }
                return Ok(None);
            }
            _ => return Reader::bad_at(at, ErrorKind::UnknownOpcode(op)),
        };
        Ok(Some(Out::Item(item)))
    }
}

/// Skips a VECTOR_INDEX item (§3.6.12): `str(index_key) pu(entry_point) pu(n)`, then n nodes
/// `u32le id, u64le global id, u32le level`, then per level 0..=level `u32le links_num`
/// followed by `links_num × u32le` (Dragonfly `RdbLoader::SkipVectorIndex`).
fn skip_vector_index(r: &mut Reader<'_>, lim: &Limits) -> RResult<()> {
    r.skip_rdb_str(lim.max_string)?;
    r.pu()?;
    let n = r.len("vector index nodes", lim.max_elements)?;
    for _ in 0..n {
        r.skip(12)?;
        let at = r.pos();
        let level = r.u32le()?;
        if level > 64 {
            return Reader::bad_at(at, ErrorKind::Corrupt("vector index node level above 64"));
        }
        for _ in 0..=level {
            let links = r.u32le()? as usize;
            r.skip(links.saturating_mul(4))?;
        }
    }
    Ok(())
}

/// Decompresses a zstd frame that declares its content size (Dragonfly refuses others).
fn zstd_frame(data: &[u8], max: usize) -> Result<Vec<u8>, ErrorKind> {
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) => n,
        _ => {
            return Err(ErrorKind::Decompress(
                "zstd frame without a content size".into(),
            ))
        }
    };
    if size > max as u64 {
        return Err(ErrorKind::TooLarge {
            what: "decompressed zstd blob",
            len: size,
            max: max as u64,
        });
    }
    let out = zstd::bulk::decompress(data, size as usize)
        .map_err(|e| ErrorKind::Decompress(format!("zstd: {e}")))?;
    if out.len() as u64 != size {
        return Err(ErrorKind::Decompress(
            "zstd frame shorter than its content size".into(),
        ));
    }
    Ok(out)
}

/// Largest decompression buffer kept for reuse between blobs.
const SPARE_MAX: usize = 4 << 20;

/// The content size an LZ4 frame declares in its header, if it does (LZ4 frame format:
/// magic `04 22 4D 18`, FLG with bit 3 = content size present, BD, then the size as u64 LE).
fn lz4_content_size(data: &[u8]) -> Option<u64> {
    let h = data.get(..14)?;
    if h[..4] != [0x04, 0x22, 0x4D, 0x18] || h[4] & 0x08 == 0 {
        return None;
    }
    Some(u64::from_le_bytes([
        h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13],
    ]))
}

/// Decompresses one LZ4 frame into `out` (cleared first, its allocation reused), refusing
/// more than `max` bytes of output.
fn lz4_frame(data: &[u8], max: usize, mut out: Vec<u8>) -> Result<Vec<u8>, ErrorKind> {
    out.clear();
    if let Some(n) = lz4_content_size(data) {
        // Declared by the remote: only a hint, capped (the output is capped below anyway).
        out.reserve((n.min(max as u64) as usize).min(SPARE_MAX));
    }
    lz4_flex::frame::FrameDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ErrorKind::Decompress(format!("lz4: {e}")))?;
    if out.len() > max {
        return Err(ErrorKind::TooLarge {
            what: "decompressed lz4 blob",
            len: out.len() as u64,
            max: max as u64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::{FlowDecoder, FlowEvent, Value};
    use crate::wire::{put_pu, put_raw_str};

    fn all(bytes: &[u8]) -> Result<Vec<SnapshotItem>, DecodeError> {
        let mut d = SnapshotDecoder::new(Limits::default());
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            let (s, n) = d.step(&bytes[pos..])?;
            pos += n;
            match s {
                Step::Item(it) => out.push(it),
                _ => return Ok(out),
            }
        }
    }

    fn pieces(items: &[SnapshotItem]) -> Vec<&Piece> {
        items
            .iter()
            .filter_map(|i| match i {
                SnapshotItem::Piece(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unknown_opcode_and_type_name_the_offset() {
        let e = all(b"REDIS0009\xfe\x00\xf0").unwrap_err();
        assert_eq!(e.offset, 11);
        assert_eq!(
            e.to_string(),
            "decode error at byte 11: unknown opcode 0xf0"
        );
        let e = all(b"REDIS0009\x1a\x01k").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownType(26));
        assert_eq!(all(b"RADIS0009").unwrap_err().kind, ErrorKind::BadMagic);
    }

    #[test]
    fn mask_and_expiry_apply_to_the_next_key_only() {
        let mut v = b"REDIS0009".to_vec();
        v.push(OP_EXPIRETIME_MS);
        v.extend_from_slice(&1_900_000_000_000u64.to_le_bytes());
        v.extend_from_slice(&[OP_DF_MASK, 3, 0, 0, 0, 42, 0, 0, 0]);
        v.extend_from_slice(&[0, 1, b'a', 1, b'x', 0, 1, b'b', 0xC0, 0xFF]);
        v.push(OP_EOF);
        v.extend_from_slice(&[0; 8]);
        let items = all(&v).unwrap();
        let p = pieces(&items);
        assert_eq!(p[0].expire_ms, Some(1_900_000_000_000));
        assert_eq!(
            p[0].mask,
            KeyMask {
                sticky: true,
                mc_flags: Some(42)
            }
        );
        assert_eq!(p[1].expire_ms, None);
        assert_eq!(p[1].mask, KeyMask::default());
        assert_eq!(p[1].value, Value::String(b"-1".to_vec()));
    }

    /// A hash split into two tagged chunks with a SELECTDB and a whole key between them: the
    /// continuation keeps the db of the first chunk (§3.8).
    #[test]
    fn continuation_chunk_keeps_the_first_chunks_db() {
        let mut first = vec![TYPE_HASH];
        put_raw_str(&mut first, b"h");
        put_pu(&mut first, 2);
        put_raw_str(&mut first, b"f1");
        put_raw_str(&mut first, b"v1");
        let mut second = Vec::new();
        put_raw_str(&mut second, b"f2");
        put_raw_str(&mut second, b"v2");
        let chunk = |id: u32, p: &[u8]| {
            let mut c = vec![OP_TAGGED_CHUNK];
            c.extend_from_slice(&id.to_le_bytes());
            c.extend_from_slice(&(p.len() as u32).to_le_bytes());
            c.extend_from_slice(p);
            c
        };
        let mut v = b"REDIS0009".to_vec();
        v.extend_from_slice(&[OP_SELECTDB, 2]);
        v.extend(chunk(5, &first));
        v.extend_from_slice(&[OP_SELECTDB, 4, 0, 1, b's', 1, b'x']);
        v.extend(chunk(5, &second));
        let mut eof = v.clone();
        eof.push(OP_EOF);
        eof.extend_from_slice(&[0; 8]);
        let items = all(&eof).unwrap();
        let p = pieces(&items);
        assert_eq!(p.len(), 3);
        assert!(p[0].first && !p[0].last && p[0].db == DbIndex(2));
        assert_eq!(p[1].db, DbIndex(4));
        assert!(!p[2].first && p[2].last && p[2].db == DbIndex(2) && p[2].key == b"h");
        assert_eq!(
            p[2].value,
            Value::Hash([b"f2", b"v2"].into_iter().collect())
        );

        // EOF while the chunked value is open is an error.
        let mut open = b"REDIS0009".to_vec();
        open.extend(chunk(5, &first));
        open.push(OP_EOF);
        open.extend_from_slice(&[0; 8]);
        assert!(matches!(
            all(&open).unwrap_err().kind,
            ErrorKind::Corrupt(_)
        ));
        // Id 0 is corruption.
        let mut zero = b"REDIS0009".to_vec();
        zero.extend(chunk(0, &first));
        assert!(all(&zero).is_err());
        // An element running past the chunk's budget is corruption.
        let mut over = b"REDIS0009".to_vec();
        over.extend(chunk(6, &first[..first.len() - 1]));
        over.push(b'1');
        assert!(all(&over).is_err());
    }

    #[test]
    fn flow_checks_the_eof_token_then_reads_the_journal() {
        let mut v = b"REDIS0009".to_vec();
        v.extend_from_slice(&[OP_FULLSYNC_END, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&[OP_JOURNAL_OFFSET, 9, 0, 0, 0, 0, 0, 0, 0]);
        v.push(OP_EOF);
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&[b'a'; 40]);
        v.extend_from_slice(&[0x0D, 0x0F, 0x09]);
        let run = |token: &[u8]| -> Result<Vec<FlowEvent>, DecodeError> {
            let mut d = FlowDecoder::new_full(token, Limits::default());
            let mut pos = 0;
            let mut out = Vec::new();
            while let (Step::Item(e), n) = d.step(&v[pos..])? {
                pos += n;
                out.push(e);
            }
            Ok(out)
        };
        let ev = run(&[b'a'; 40]).unwrap();
        assert_eq!(ev.len(), 7);
        assert_eq!(ev[4], FlowEvent::EofToken);
        assert!(matches!(
            ev[6],
            FlowEvent::Journal(JournalItem::LsnMarker(Lsn(9)))
        ));
        let e = run(&[b'b'; 40]).unwrap_err();
        assert_eq!((e.kind, e.offset), (ErrorKind::TokenMismatch, 36));
    }
}
