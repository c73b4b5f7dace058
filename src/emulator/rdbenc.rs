//! The snapshot *encoder*: RDB primitives, Redis blob formats (listpack, intset, stream
//! nodes), the value encodings real Dragonfly chooses (§3.6 of the protocol document) and the
//! flow-level framing: SELECTDB, compressed blobs (LZ4/ZSTD), big values split into tagged
//! chunks (v1.40) or contiguous pieces (legacy), journal blobs, FULLSYNC_END and the
//! end-of-snapshot trailer.
//!
//! Byte layouts follow `dragonfly src/server/rdb_save.cc (RdbSerializer::SaveEntry, SaveValue,
//! SaveListObject, SaveStreamObject, Flush, PushToConsumerIfNeeded)`. Byte values come from the
//! decoder's table (`crate::rdb::consts`), so encoder and decoder share one source.

use crate::rdb::consts;

/// Object type: string.
pub const T_STRING: u8 = consts::TYPE_STRING;
/// Object type: plain set.
pub const T_SET: u8 = consts::TYPE_SET;
/// Object type: plain hash.
pub const T_HASH: u8 = consts::TYPE_HASH;
/// Object type: skiplist zset with binary doubles.
pub const T_ZSET_2: u8 = consts::TYPE_ZSET_2;
/// Object type: intset.
pub const T_SET_INTSET: u8 = consts::TYPE_SET_INTSET;
/// Object type: listpack hash.
pub const T_HASH_LISTPACK: u8 = consts::TYPE_HASH_LISTPACK;
/// Object type: listpack zset.
pub const T_ZSET_LISTPACK: u8 = consts::TYPE_ZSET_LISTPACK;
/// Object type: quicklist v2 list.
pub const T_LIST_QUICKLIST_2: u8 = consts::TYPE_LIST_QUICKLIST_2;
/// Object type: stream (listpacks v3).
pub const T_STREAM_LISTPACKS_3: u8 = consts::TYPE_STREAM_LISTPACKS_3;
/// Opcode FULLSYNC_END.
pub const OP_FULLSYNC_END: u8 = consts::OP_FULLSYNC_END;
/// Opcode ZSTD blob.
pub const OP_ZSTD_BLOB: u8 = consts::OP_COMPRESSED_ZSTD_BLOB_START;
/// Opcode LZ4 blob.
pub const OP_LZ4_BLOB: u8 = consts::OP_COMPRESSED_LZ4_BLOB_START;
/// Opcode JOURNAL_BLOB.
pub const OP_JOURNAL_BLOB: u8 = consts::OP_JOURNAL_BLOB;
/// Opcode JOURNAL_OFFSET.
pub const OP_JOURNAL_OFFSET: u8 = consts::OP_JOURNAL_OFFSET;
/// Opcode TAGGED_CHUNK.
pub const OP_TAGGED_CHUNK: u8 = consts::OP_TAGGED_CHUNK;
/// Opcode AUX.
pub const OP_AUX: u8 = consts::OP_AUX;
/// Opcode EXPIRETIME_MS.
pub const OP_EXPIRETIME_MS: u8 = consts::OP_EXPIRETIME_MS;
/// Opcode SELECTDB.
pub const OP_SELECTDB: u8 = consts::OP_SELECTDB;
/// Opcode EOF.
pub const OP_EOF: u8 = consts::OP_EOF;

/// Appends `pu(x)`, the packed unsigned integer (§3.2.1), shortest form.
pub fn put_pu(out: &mut Vec<u8>, x: u64) {
    if x < 64 {
        out.push(x as u8);
    } else if x < 16384 {
        out.push(0x40 | (x >> 8) as u8);
        out.push(x as u8);
    } else if x <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(x as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&x.to_be_bytes());
    }
}

/// Redis `string2ll`: canonical decimal i64 (no `+`, no leading zeros, no `-0`).
pub fn canonical_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if b == b"-0" {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Appends `str(x)` (§3.2.2): the integer forms when the text is a canonical int32 of at
/// most 11 characters, else length + raw bytes.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 11 {
        if let Some(v) = canonical_int(s) {
            if let Ok(v8) = i8::try_from(v) {
                out.push(0xC0);
                out.push(v8 as u8);
                return;
            }
            if let Ok(v16) = i16::try_from(v) {
                out.push(0xC1);
                out.extend_from_slice(&v16.to_le_bytes());
                return;
            }
            if let Ok(v32) = i32::try_from(v) {
                out.push(0xC2);
                out.extend_from_slice(&v32.to_le_bytes());
                return;
            }
        }
    }
    put_pu(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Appends `str(x)`, LZF-compressed (`C3 pu(clen) pu(ulen) data`) when `lzf` is on, the
/// string is longer than 20 bytes and compression saves at least 8 bytes and 15 %
/// (`dragonfly src/server/rdb_save.cc (RdbSerializer::SaveString, SaveLzfBlob)`).
pub fn put_s(out: &mut Vec<u8>, lzf: bool, s: &[u8]) {
    if lzf && s.len() > 20 && canonical_int(s).is_none() {
        let c = crate::wire::lzf::compress(s);
        if c.len() + 8 <= s.len() && c.len() * 100 <= s.len() * 85 {
            out.push(0xC3);
            put_pu(out, c.len() as u64);
            put_pu(out, s.len() as u64);
            out.extend_from_slice(&c);
            return;
        }
    }
    put_str(out, s);
}

/// Dragonfly's score text: the shortest round-trip form, plain decimal for exponents −6..20,
/// with an exponent (no `+`) otherwise (`dragonfly src/facade/reply_builder.cc (FormatDouble)`).
pub fn format_double(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-6..21).contains(&exp) {
        format!("{f}")
    } else {
        format!("{f:e}")
    }
}

/// A listpack (Redis 7 format) under construction.
#[derive(Default)]
pub struct Listpack {
    body: Vec<u8>,
    count: usize,
}

impl Listpack {
    /// Appends one element; canonical integers use the integer encodings, like `lpAppend`.
    pub fn push(&mut self, s: &[u8]) {
        match canonical_int(s) {
            Some(v) => self.push_int(v),
            None => self.push_bytes(s),
        }
    }

    /// Appends an integer element.
    pub fn push_int(&mut self, v: i64) {
        let start = self.body.len();
        if (0..=127).contains(&v) {
            self.body.push(v as u8);
        } else if (-4096..=4095).contains(&v) {
            let u = if v < 0 { (1i64 << 13) + v } else { v } as u16;
            self.body.push(0xC0 | (u >> 8) as u8);
            self.body.push(u as u8);
        } else if let Ok(x) = i16::try_from(v) {
            self.body.push(0xF1);
            self.body.extend_from_slice(&x.to_le_bytes());
        } else if (-(1i64 << 23)..(1i64 << 23)).contains(&v) {
            self.body.push(0xF2);
            self.body.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if let Ok(x) = i32::try_from(v) {
            self.body.push(0xF3);
            self.body.extend_from_slice(&x.to_le_bytes());
        } else {
            self.body.push(0xF4);
            self.body.extend_from_slice(&v.to_le_bytes());
        }
        self.backlen(start);
    }

    /// Appends a string element (never integer-encoded).
    pub fn push_bytes(&mut self, s: &[u8]) {
        let start = self.body.len();
        let l = s.len();
        if l < 64 {
            self.body.push(0x80 | l as u8);
        } else if l < 4096 {
            self.body.push(0xE0 | (l >> 8) as u8);
            self.body.push(l as u8);
        } else {
            self.body.push(0xF0);
            self.body.extend_from_slice(&(l as u32).to_le_bytes());
        }
        self.body.extend_from_slice(s);
        self.backlen(start);
    }

    fn backlen(&mut self, start: usize) {
        let l = (self.body.len() - start) as u64;
        let b = &mut self.body;
        if l <= 127 {
            b.push(l as u8);
        } else if l < 16383 {
            b.push((l >> 7) as u8);
            b.push((l & 127) as u8 | 128);
        } else if l < 2_097_151 {
            b.push((l >> 14) as u8);
            b.push(((l >> 7) & 127) as u8 | 128);
            b.push((l & 127) as u8 | 128);
        } else if l < 268_435_455 {
            b.push((l >> 21) as u8);
            b.push(((l >> 14) & 127) as u8 | 128);
            b.push(((l >> 7) & 127) as u8 | 128);
            b.push((l & 127) as u8 | 128);
        } else {
            b.push((l >> 28) as u8);
            b.push(((l >> 21) & 127) as u8 | 128);
            b.push(((l >> 14) & 127) as u8 | 128);
            b.push(((l >> 7) & 127) as u8 | 128);
            b.push((l & 127) as u8 | 128);
        }
        self.count += 1;
    }

    /// Bytes the finished blob will take.
    pub fn len(&self) -> usize {
        self.body.len() + 7
    }

    /// True when no element was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of elements.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The finished blob: u32le total, u16le count, entries, `FF`.
    pub fn finish(self) -> Vec<u8> {
        let total = self.body.len() + 7;
        let mut v = Vec::with_capacity(total);
        v.extend_from_slice(&(total as u32).to_le_bytes());
        v.extend_from_slice(&(self.count.min(65535) as u16).to_le_bytes());
        v.extend_from_slice(&self.body);
        v.push(0xFF);
        v
    }
}

/// Redis's intset blob for sorted-unique `vals`.
pub fn intset(vals: &mut [i64]) -> Vec<u8> {
    vals.sort_unstable();
    let width: usize = if vals.iter().all(|v| i16::try_from(*v).is_ok()) {
        2
    } else if vals.iter().all(|v| i32::try_from(*v).is_ok()) {
        4
    } else {
        8
    };
    let mut out = Vec::with_capacity(8 + width * vals.len());
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out.extend_from_slice(&(vals.len() as u32).to_le_bytes());
    for v in vals.iter() {
        out.extend_from_slice(&v.to_le_bytes()[..width]);
    }
    out
}

/// A stream id.
pub type StreamId = (u64, u64);

/// One stream entry: its id and field/value pairs.
pub type StreamEntry = (StreamId, Vec<(Vec<u8>, Vec<u8>)>);

/// A stream consumer group, as `XINFO STREAM … FULL` describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Group name.
    pub name: Vec<u8>,
    /// Last delivered id.
    pub last_id: StreamId,
    /// Entries read (`u64::MAX` = unknown).
    pub entries_read: u64,
    /// Pending entries: id, delivery time (ms), delivery count.
    pub pel: Vec<(StreamId, i64, u64)>,
    /// Consumers.
    pub consumers: Vec<Consumer>,
}

/// A stream consumer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Consumer {
    /// Consumer name.
    pub name: Vec<u8>,
    /// Seen time (ms).
    pub seen_time: i64,
    /// Active time (ms).
    pub active_time: i64,
    /// Ids pending for this consumer.
    pub pel: Vec<StreamId>,
}

/// A stream value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamVal {
    /// Live entries, ascending.
    pub entries: Vec<StreamEntry>,
    /// Last generated id.
    pub last_id: StreamId,
    /// Recorded first entry id.
    pub first_id: StreamId,
    /// Max deleted entry id.
    pub max_deleted: StreamId,
    /// Entries added over the stream's life.
    pub entries_added: u64,
    /// Consumer groups.
    pub groups: Vec<Group>,
}

/// A value read from the keyspace.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// String.
    Str(Vec<u8>),
    /// List, head first.
    List(Vec<Vec<u8>>),
    /// Set members.
    Set(Vec<Vec<u8>>),
    /// Sorted set, ascending score.
    ZSet(Vec<(Vec<u8>, f64)>),
    /// Hash pairs.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// Stream.
    Stream(Box<StreamVal>),
}

/// Compression of flushed blobs (`--compression_mode` 0, 2, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Mode 0.
    None,
    /// Mode 2.
    Zstd,
    /// Mode 3, the default.
    Lz4,
    /// Mode 1 (SINGLE_ENTRY): strings longer than 20 bytes LZF-compressed one by one.
    Lzf,
}

/// How a flow's snapshot is framed.
#[derive(Debug, Clone, Copy)]
pub struct FrameOpts {
    /// Blob compression.
    pub compression: Compression,
    /// Tagged chunks (v1.40 default) or the legacy contiguous form.
    pub tagged: bool,
    /// `serialization_max_chunk_size`; 0 = never split.
    pub chunk_size: usize,
    /// Buffer size at which whole entries are flushed.
    pub flush_size: usize,
}

/// Size limits of Dragonfly's compact encodings (its defaults, which are Redis's).
const LISTPACK_MAX_ENTRIES: usize = 128;
const LISTPACK_MAX_VALUE: usize = 64;
const INTSET_MAX_ENTRIES: usize = 512;
/// A list node holds at most 8 KiB of listpack (`list_max_listpack_size = -2`); an element
/// this big or bigger gets a PLAIN node of its own.
const LIST_NODE_BYTES: usize = 8 * 1024;
const STREAM_NODE_BYTES: usize = 4096;
const STREAM_NODE_ENTRIES: usize = 100;

/// Serializes one flow's snapshot into `out`, framing as Dragonfly does.
pub struct SnapWriter {
    opts: FrameOpts,
    buf: Vec<u8>,
    /// Finished bytes, ready for the socket.
    pub out: Vec<u8>,
    cur_db: Option<u32>,
    next_id: u32,
    entry_id: u32,
    entry_start: usize,
    entry_split: bool,
    raw_next_flush: bool,
    /// Plaintext bytes put into compressed frames / frames written (for tests and stats).
    pub frames: u64,
    /// Per-string LZF (`--compression_mode=1`, SINGLE_ENTRY) instead of blob compression.
    lzf: bool,
}

impl SnapWriter {
    /// A writer with nothing written yet.
    pub fn new(opts: FrameOpts) -> SnapWriter {
        SnapWriter {
            opts,
            buf: Vec::with_capacity(opts.flush_size.min(1 << 20) + 1024),
            out: Vec::new(),
            cur_db: None,
            next_id: 0,
            entry_id: 0,
            entry_start: 0,
            entry_split: false,
            raw_next_flush: false,
            frames: 0,
            lzf: opts.compression == Compression::Lzf,
        }
    }

    /// Writes `REDIS0009` and the AUX fields straight to `out` (never compressed).
    pub fn header(&mut self, aux: &[(&str, Vec<u8>)]) {
        self.out.extend_from_slice(b"REDIS0009");
        for (k, v) in aux {
            self.out.push(OP_AUX);
            put_str(&mut self.out, k.as_bytes());
            put_str(&mut self.out, v);
        }
    }

    fn select(&mut self, db: u32) {
        if self.cur_db != Some(db) {
            self.buf.push(OP_SELECTDB);
            put_pu(&mut self.buf, u64::from(db));
            self.cur_db = Some(db);
        }
    }

    /// Writes one key entry, splitting it at the split points of §3.6.
    pub fn entry(&mut self, db: u32, key: &[u8], expire_ms: Option<i64>, val: &Val) {
        let empty = match val {
            Val::List(v) | Val::Set(v) => v.is_empty(),
            Val::ZSet(v) => v.is_empty(),
            Val::Hash(v) => v.is_empty(),
            Val::Str(_) | Val::Stream(_) => false,
        };
        if empty {
            return; // Dragonfly skips empty containers (TagAllowsEmptyValue).
        }
        self.select(db);
        self.next_id = match self.next_id.wrapping_add(1) {
            0 | u32::MAX => 1,
            n => n,
        };
        self.entry_id = self.next_id;
        self.entry_start = self.buf.len();
        self.entry_split = false;
        if let Some(t) = expire_ms {
            self.buf.push(OP_EXPIRETIME_MS);
            self.buf.extend_from_slice(&(t as u64).to_le_bytes());
        }
        self.value(key, val);
        self.end_entry();
    }

    fn value(&mut self, key: &[u8], val: &Val) {
        match val {
            Val::Str(s) => {
                self.buf.push(T_STRING);
                put_s(&mut self.buf, self.lzf, key);
                put_s(&mut self.buf, self.lzf, s);
            }
            Val::List(items) => self.list(key, items),
            Val::Set(members) => self.set(key, members),
            Val::ZSet(pairs) => self.zset(key, pairs),
            Val::Hash(pairs) => self.hash(key, pairs),
            Val::Stream(s) => self.stream(key, s),
        }
    }

    fn list(&mut self, key: &[u8], items: &[Vec<u8>]) {
        // Group elements into nodes: ≤ 8 KiB listpacks; huge elements as PLAIN nodes.
        enum Node {
            Packed(Vec<u8>),
            Plain(usize),
        }
        let mut nodes = Vec::new();
        let mut lp = Listpack::default();
        for (i, it) in items.iter().enumerate() {
            if it.len() >= LIST_NODE_BYTES {
                if !lp.is_empty() {
                    nodes.push(Node::Packed(std::mem::take(&mut lp).finish()));
                }
                nodes.push(Node::Plain(i));
                continue;
            }
            if !lp.is_empty() && lp.len() + it.len() + 11 > LIST_NODE_BYTES {
                nodes.push(Node::Packed(std::mem::take(&mut lp).finish()));
            }
            lp.push(it);
        }
        if !lp.is_empty() {
            nodes.push(Node::Packed(lp.finish()));
        }
        self.buf.push(T_LIST_QUICKLIST_2);
        put_s(&mut self.buf, self.lzf, key);
        put_pu(&mut self.buf, nodes.len() as u64);
        let n = nodes.len();
        for (i, node) in nodes.into_iter().enumerate() {
            match node {
                Node::Packed(blob) => {
                    put_pu(&mut self.buf, 2);
                    put_s(&mut self.buf, self.lzf, &blob);
                }
                Node::Plain(idx) => {
                    put_pu(&mut self.buf, 1);
                    put_s(&mut self.buf, self.lzf, &items[idx]);
                }
            }
            if i + 1 < n {
                self.split_point();
            }
        }
    }

    fn set(&mut self, key: &[u8], members: &[Vec<u8>]) {
        let ints: Option<Vec<i64>> = members.iter().map(|m| canonical_int(m)).collect();
        match ints {
            Some(mut v) if v.len() <= INTSET_MAX_ENTRIES => {
                self.buf.push(T_SET_INTSET);
                put_s(&mut self.buf, self.lzf, key);
                put_s(&mut self.buf, self.lzf, &intset(&mut v));
            }
            _ => {
                self.buf.push(T_SET);
                put_s(&mut self.buf, self.lzf, key);
                put_pu(&mut self.buf, members.len() as u64);
                for (i, m) in members.iter().enumerate() {
                    put_s(&mut self.buf, self.lzf, m);
                    if i + 1 < members.len() {
                        self.split_point();
                    }
                }
            }
        }
    }

    fn zset(&mut self, key: &[u8], pairs: &[(Vec<u8>, f64)]) {
        if pairs.len() <= LISTPACK_MAX_ENTRIES
            && pairs.iter().all(|(m, _)| m.len() <= LISTPACK_MAX_VALUE)
        {
            let mut lp = Listpack::default();
            for (m, s) in pairs {
                lp.push(m);
                if s.fract() == 0.0 && s.abs() < 1e17 {
                    lp.push_int(*s as i64);
                } else {
                    lp.push_bytes(format_double(*s).as_bytes());
                }
            }
            self.buf.push(T_ZSET_LISTPACK);
            put_s(&mut self.buf, self.lzf, key);
            put_s(&mut self.buf, self.lzf, &lp.finish());
        } else {
            self.buf.push(T_ZSET_2);
            put_s(&mut self.buf, self.lzf, key);
            put_pu(&mut self.buf, pairs.len() as u64);
            for (i, (m, s)) in pairs.iter().enumerate() {
                put_s(&mut self.buf, self.lzf, m);
                self.buf.extend_from_slice(&s.to_le_bytes());
                if i + 1 < pairs.len() {
                    self.split_point();
                }
            }
        }
    }

    fn hash(&mut self, key: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) {
        if pairs.len() <= LISTPACK_MAX_ENTRIES
            && pairs
                .iter()
                .all(|(f, v)| f.len() <= LISTPACK_MAX_VALUE && v.len() <= LISTPACK_MAX_VALUE)
        {
            let mut lp = Listpack::default();
            for (f, v) in pairs {
                lp.push(f);
                lp.push(v);
            }
            self.buf.push(T_HASH_LISTPACK);
            put_s(&mut self.buf, self.lzf, key);
            put_s(&mut self.buf, self.lzf, &lp.finish());
        } else {
            self.buf.push(T_HASH);
            put_s(&mut self.buf, self.lzf, key);
            put_pu(&mut self.buf, pairs.len() as u64);
            for (i, (f, v)) in pairs.iter().enumerate() {
                put_s(&mut self.buf, self.lzf, f);
                put_s(&mut self.buf, self.lzf, v);
                if i + 1 < pairs.len() {
                    self.split_point();
                }
            }
        }
    }

    fn stream(&mut self, key: &[u8], s: &StreamVal) {
        let nodes = stream_nodes(&s.entries);
        self.buf.push(T_STREAM_LISTPACKS_3);
        put_s(&mut self.buf, self.lzf, key);
        put_pu(&mut self.buf, nodes.len() as u64);
        let n = nodes.len();
        for (i, (master, blob)) in nodes.into_iter().enumerate() {
            let mut id = Vec::with_capacity(16);
            id.extend_from_slice(&master.0.to_be_bytes());
            id.extend_from_slice(&master.1.to_be_bytes());
            put_s(&mut self.buf, self.lzf, &id);
            put_s(&mut self.buf, self.lzf, &blob);
            if i + 1 < n {
                self.split_point();
            }
        }
        let lzf = self.lzf;
        let b = &mut self.buf;
        put_pu(b, s.entries.len() as u64);
        put_pu(b, s.last_id.0);
        put_pu(b, s.last_id.1);
        put_pu(b, s.first_id.0);
        put_pu(b, s.first_id.1);
        put_pu(b, s.max_deleted.0);
        put_pu(b, s.max_deleted.1);
        put_pu(b, s.entries_added);
        put_pu(b, s.groups.len() as u64);
        for g in &s.groups {
            put_s(b, lzf, &g.name);
            put_pu(b, g.last_id.0);
            put_pu(b, g.last_id.1);
            put_pu(b, g.entries_read);
            put_pu(b, g.pel.len() as u64);
            for (id, t, cnt) in &g.pel {
                b.extend_from_slice(&id.0.to_be_bytes());
                b.extend_from_slice(&id.1.to_be_bytes());
                b.extend_from_slice(&t.to_le_bytes());
                put_pu(b, *cnt);
            }
            put_pu(b, g.consumers.len() as u64);
            for c in &g.consumers {
                put_s(b, lzf, &c.name);
                b.extend_from_slice(&c.seen_time.to_le_bytes());
                b.extend_from_slice(&c.active_time.to_le_bytes());
                put_pu(b, c.pel.len() as u64);
                for id in &c.pel {
                    b.extend_from_slice(&id.0.to_be_bytes());
                    b.extend_from_slice(&id.1.to_be_bytes());
                }
            }
        }
    }

    /// A point where the value may be cut (`PushToConsumerIfNeeded`).
    fn split_point(&mut self) {
        if self.opts.chunk_size == 0 || self.buf.len() < self.opts.chunk_size {
            return;
        }
        if self.opts.tagged {
            self.cut_chunk();
            self.flush(true);
        } else {
            // Legacy: the piece goes out raw, the entry continues contiguously.
            self.flush(false);
            self.raw_next_flush = true;
        }
        self.entry_start = 0;
        self.entry_split = true;
    }

    /// Wraps the bytes of the current entry since `entry_start` as one tagged chunk.
    fn cut_chunk(&mut self) {
        let payload = self.buf.split_off(self.entry_start);
        if payload.is_empty() {
            return;
        }
        self.buf.push(OP_TAGGED_CHUNK);
        self.buf.extend_from_slice(&self.entry_id.to_le_bytes());
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&payload);
    }

    fn end_entry(&mut self) {
        if self.entry_split && self.opts.tagged {
            self.cut_chunk();
        }
        if self.entry_split && !self.opts.tagged {
            // Legacy: the last piece of a split value is flushed at once, uncompressed
            // (recorded in s3-zstd-contiguous-chunks: a raw piece, then a ZSTD frame of the
            // small entries that follow it).
            self.flush(false);
            self.raw_next_flush = false;
        }
        self.entry_split = false;
        if self.buf.len() >= self.opts.flush_size {
            let raw = self.raw_next_flush;
            self.flush(!raw);
            self.raw_next_flush = false;
        }
    }

    /// Flushes the buffer at the end of a database, as Dragonfly does.
    pub fn end_db(&mut self) {
        let raw = self.raw_next_flush;
        self.flush(!raw);
        self.raw_next_flush = false;
    }

    /// Moves the buffer to `out`, as one compressed blob when allowed and worth it.
    pub fn flush(&mut self, compressible: bool) {
        if self.buf.is_empty() {
            return;
        }
        let len = self.buf.len();
        let mut done = false;
        if compressible
            && self.opts.compression != Compression::None
            && (256..=1 << 20).contains(&len)
        {
            if let Some((op, frame)) = compress(self.opts.compression, &self.buf) {
                if frame.len() * 100 < len * 95 {
                    self.out.push(op);
                    put_pu(&mut self.out, frame.len() as u64);
                    self.out.extend_from_slice(&frame);
                    self.frames += 1;
                    done = true;
                }
            }
        }
        if !done {
            self.out.extend_from_slice(&self.buf);
        }
        self.buf.clear();
        // The serializer forgets the db after every flush (§3.5).
        self.cur_db = None;
    }

    /// Buffers a JOURNAL_BLOB holding one serialized journal item.
    pub fn journal_blob(&mut self, item: &[u8]) {
        self.buf.push(OP_JOURNAL_BLOB);
        put_pu(&mut self.buf, 1);
        put_s(&mut self.buf, self.lzf, item);
        if self.buf.len() >= self.opts.flush_size {
            self.flush(true);
        }
    }

    /// FULLSYNC_END + 8 zero bytes, flushed.
    pub fn fullsync_end(&mut self) {
        self.buf.push(OP_FULLSYNC_END);
        self.buf.extend_from_slice(&[0; 8]);
        self.flush(true);
    }

    /// JOURNAL_OFFSET, then EOF + zero checksum and the eof token (never compressed).
    pub fn finish(&mut self, next_lsn: u64, token: &[u8]) {
        self.buf.push(OP_JOURNAL_OFFSET);
        self.buf.extend_from_slice(&next_lsn.to_le_bytes());
        self.flush(true);
        self.out.push(OP_EOF);
        self.out.extend_from_slice(&[0; 8]);
        self.out.extend_from_slice(token);
    }

    /// Takes the finished bytes.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Compresses one blob as a frame with its content size set (Dragonfly's reader refuses
/// frames without one, `dragonfly src/server/detail/decompress.cc`).
pub fn compress(c: Compression, data: &[u8]) -> Option<(u8, Vec<u8>)> {
    match c {
        Compression::None | Compression::Lzf => None,
        Compression::Lz4 => {
            use std::io::Write;
            let info = lz4_flex::frame::FrameInfo::new()
                .content_size(Some(data.len() as u64))
                .block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                info,
                Vec::with_capacity(data.len() / 2),
            );
            enc.write_all(data).ok()?;
            Some((OP_LZ4_BLOB, enc.finish().ok()?))
        }
        Compression::Zstd => {
            let mut cctx = zstd::bulk::Compressor::new(2).ok()?;
            cctx.include_contentsize(true).ok()?;
            cctx.set_pledged_src_size(Some(data.len() as u64)).ok()?;
            Some((OP_ZSTD_BLOB, cctx.compress(data).ok()?))
        }
    }
}

/// Builds Redis stream nodes: (master id, listpack blob) with ≤ 100 entries / ~4 KiB each.
pub fn stream_nodes(entries: &[StreamEntry]) -> Vec<(StreamId, Vec<u8>)> {
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let master = entries[i].0;
        let master_fields: Vec<&[u8]> = entries[i].1.iter().map(|(f, _)| f.as_slice()).collect();
        // Decide how many entries go in this node.
        let mut j = i;
        let mut approx = 0usize;
        while j < entries.len() && j - i < STREAM_NODE_ENTRIES {
            let sz: usize = entries[j]
                .1
                .iter()
                .map(|(f, v)| f.len() + v.len() + 4)
                .sum::<usize>()
                + 8;
            if j > i && approx + sz > STREAM_NODE_BYTES {
                break;
            }
            approx += sz;
            j += 1;
        }
        let mut lp = Listpack::default();
        lp.push_int((j - i) as i64); // count
        lp.push_int(0); // deleted
        lp.push_int(master_fields.len() as i64);
        for f in &master_fields {
            lp.push(f);
        }
        lp.push_int(0); // master entry terminator
        for (id, fields) in &entries[i..j] {
            let same = fields.len() == master_fields.len()
                && fields
                    .iter()
                    .zip(&master_fields)
                    .all(|((f, _), m)| f.as_slice() == *m);
            lp.push_int(if same { 2 } else { 0 });
            lp.push_int(id.0.wrapping_sub(master.0) as i64);
            lp.push_int(id.1.wrapping_sub(master.1) as i64);
            if same {
                for (_, v) in fields {
                    lp.push(v);
                }
                lp.push_int(fields.len() as i64 + 3);
            } else {
                lp.push_int(fields.len() as i64);
                for (f, v) in fields {
                    lp.push(f);
                    lp.push(v);
                }
                lp.push_int(fields.len() as i64 * 2 + 4);
            }
        }
        nodes.push((master, lp.finish()));
        i = j;
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pu_examples_from_the_document() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (63, &[0x3F]),
            (64, &[0x40, 0x40]),
            (300, &[0x41, 0x2C]),
            (16383, &[0x7F, 0xFF]),
            (16384, &[0x80, 0, 0, 0x40, 0]),
            (70000, &[0x80, 0, 1, 0x11, 0x70]),
            (4294967296, &[0x81, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        for (v, b) in cases {
            let mut o = Vec::new();
            put_pu(&mut o, *v);
            assert_eq!(&o, b, "pu({v})");
        }
    }

    #[test]
    fn str_integer_forms() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"64", &[0xC0, 0x40]),
            (b"-1", &[0xC0, 0xFF]),
            (b"300", &[0xC1, 0x2C, 0x01]),
            (b"100000", &[0xC2, 0xA0, 0x86, 0x01, 0x00]),
            (b"007", &[0x03, b'0', b'0', b'7']),
            (
                b"4294967296",
                &[
                    0x0A, b'4', b'2', b'9', b'4', b'9', b'6', b'7', b'2', b'9', b'6',
                ],
            ),
        ];
        for (s, b) in cases {
            let mut o = Vec::new();
            put_str(&mut o, s);
            assert_eq!(&o, b);
        }
    }

    #[test]
    fn listpack_a_b_matches_the_document() {
        let mut lp = Listpack::default();
        lp.push(b"a");
        lp.push(b"b");
        assert_eq!(
            lp.finish(),
            vec![0x0D, 0, 0, 0, 2, 0, 0x81, 0x61, 2, 0x81, 0x62, 2, 0xFF]
        );
    }

    #[test]
    fn worked_example_flow1_bytes() {
        // §8.2 flow 1: cnt = 42 with a TTL, mylist = [a, b].
        let mut w = SnapWriter::new(FrameOpts {
            compression: Compression::None,
            tagged: true,
            chunk_size: 65536,
            flush_size: 65536,
        });
        w.entry(0, b"cnt", Some(1798761600000), &Val::Str(b"42".to_vec()));
        w.entry(
            0,
            b"mylist",
            None,
            &Val::List(vec![b"a".to_vec(), b"b".to_vec()]),
        );
        w.fullsync_end();
        let mut want = vec![
            0xFE, 0x00, 0xFC, 0x00, 0xD4, 0x8B, 0xCE, 0xA2, 0x01, 0x00, 0x00,
        ];
        want.extend_from_slice(b"\x00\x03cnt\xC0\x2A");
        want.extend_from_slice(
            b"\x12\x06mylist\x01\x02\x0D\x0D\x00\x00\x00\x02\x00\x81a\x02\x81b\x02\xFF",
        );
        want.extend_from_slice(&[0xC8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(w.take(), want);
    }

    #[test]
    fn doubles_format_like_dragonfly() {
        assert_eq!(format_double(1e-7), "1e-7");
        assert_eq!(format_double(-3.5), "-3.5");
        assert_eq!(format_double(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_double(f64::MAX), "1.7976931348623157e308");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn big_hash_is_split_into_tagged_chunks_with_one_id() {
        let pairs: Vec<_> = (0..5000)
            .map(|i| (format!("field:{i}").into_bytes(), vec![b'x'; 50]))
            .collect();
        let mut w = SnapWriter::new(FrameOpts {
            compression: Compression::None,
            tagged: true,
            chunk_size: 16 * 1024,
            flush_size: 16 * 1024,
        });
        w.entry(0, b"h", None, &Val::Hash(pairs));
        w.end_db();
        let out = w.take();
        // FE 00, then E0 chunks back to back, all with id 1.
        assert_eq!(&out[..2], &[0xFE, 0x00]);
        let mut p = 2;
        let mut chunks = 0;
        while p < out.len() {
            assert_eq!(out[p], OP_TAGGED_CHUNK, "at {p}");
            let id = u32::from_le_bytes(out[p + 1..p + 5].try_into().unwrap());
            let len = u32::from_le_bytes(out[p + 5..p + 9].try_into().unwrap()) as usize;
            assert_eq!(id, 1);
            p += 9 + len;
            chunks += 1;
        }
        assert_eq!(p, out.len());
        assert!(chunks > 10, "{chunks} chunks");
    }

    #[test]
    fn lz4_frames_carry_content_size_and_round_trip() {
        let data = vec![b'a'; 5000];
        let (op, frame) = compress(Compression::Lz4, &data).unwrap();
        assert_eq!(op, OP_LZ4_BLOB);
        assert_eq!(&frame[..4], &[0x04, 0x22, 0x4D, 0x18]);
        assert_ne!(frame[4] & 0x08, 0, "content size flag");
        let mut dec = lz4_flex::frame::FrameDecoder::new(&frame[..]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut dec, &mut back).unwrap();
        assert_eq!(back, data);
        let (op, frame) = compress(Compression::Zstd, &data).unwrap();
        assert_eq!(op, OP_ZSTD_BLOB);
        assert_eq!(zstd::bulk::decompress(&frame, 10000).unwrap(), data);
    }
}
