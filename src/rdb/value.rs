//! Per-type value decoding: the value header, then elements in bounded batches (§3.6).
//!
//! A [`ValueDecoder`] is created once the type byte and the key have been read. Each call of
//! [`ValueDecoder::advance`] decodes whole units (a header, one element, one list node, one
//! stream listpack, one filter chunk…) from a [`Reader`] until the value is complete, the batch
//! is full, or the input runs short. A unit is decoded into temporaries first and committed
//! only when all its bytes were there, so a short read leaves no trace and the same unit is
//! retried with more input. Batch boundaries therefore depend only on the data.

use crate::rdb::blob::{self, Elem};
use crate::rdb::consts::*;
use crate::rdb::{Blobs, Score, StreamConsumer, StreamEntry, StreamGroup, StreamId};
use crate::rdb::{StreamMeta, StreamPending, Value};
use crate::wire::{put_pu, put_raw_str, ErrorKind, Fail, Limits, RResult, RdbStr, Reader};

/// Largest unit of raw counter bytes read at once for CMS values.
const RAW_UNIT: u64 = 64 << 10;

/// What [`ValueDecoder::advance`] stopped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The input ended before the next unit; nothing of it was consumed.
    Short,
    /// The batch reached its element or byte limit: take it and call again.
    BatchFull,
    /// The value is complete: take the last batch.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VState {
    Start,
    Counted { left: u64 },
    Nodes { left: u64 },
    StreamLps { left: u64 },
    StreamMeta,
    Filters { left: u64 },
    FilterChunks { filters_left: u64, bytes_left: u64 },
    RawBytes { left: u64 },
    Module,
    Done,
}

/// Decodes one value of one RDB type, batch by batch.
#[derive(Debug)]
pub(crate) struct ValueDecoder {
    rdb_type: u8,
    json_old: bool,
    state: VState,
    batch: Value,
    batch_n: usize,
    batch_bytes: usize,
    stream_deleted: u64,
    limits: Limits,
}

fn bad<T>(at: usize, kind: ErrorKind) -> RResult<T> {
    Reader::bad_at(at, kind)
}

fn corrupt<T>(at: usize, m: &'static str) -> RResult<T> {
    bad(at, ErrorKind::Corrupt(m))
}

/// Parses a score sent as text (listpack / ziplist string, type 3 text double).
fn text_score(at: usize, s: &[u8]) -> RResult<f64> {
    match std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
    {
        Some(v) if v.is_nan() => corrupt(at, "sorted-set score is NaN"),
        Some(v) => Ok(v),
        None => corrupt(at, "sorted-set score is not a number"),
    }
}

/// A Dragonfly per-member / per-field TTL string: seconds since 2023-02-01 or -1 (§3.6.2).
fn member_ttl(at: usize, s: &[u8]) -> RResult<Option<i64>> {
    let v: i64 = match std::str::from_utf8(s).ok().and_then(|t| t.parse().ok()) {
        Some(v) => v,
        None => return corrupt(at, "member TTL is not an integer"),
    };
    match v {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v.saturating_add(MEMBER_EXPIRY_BASE))),
        _ => corrupt(at, "negative member TTL"),
    }
}

fn empty_value(rdb_type: u8, json_old: bool) -> Value {
    match rdb_type {
        TYPE_STRING => Value::String(Vec::new()),
        TYPE_JSON => Value::Json(Vec::new()),
        TYPE_SET_LISTPACK if json_old => Value::Json(Vec::new()),
        TYPE_LIST | TYPE_LIST_ZIPLIST | TYPE_LIST_QUICKLIST | TYPE_LIST_QUICKLIST_2 => {
            Value::List(Blobs::new())
        }
        TYPE_SET | TYPE_SET_INTSET | TYPE_SET_LISTPACK => Value::Set(Blobs::new()),
        TYPE_SET_WITH_EXPIRY => Value::SetWithExpiry {
            members: Blobs::new(),
            expire_unix_s: Vec::new(),
        },
        TYPE_ZSET | TYPE_ZSET_2 | TYPE_ZSET_ZIPLIST | TYPE_ZSET_LISTPACK => Value::ZSet {
            members: Blobs::new(),
            scores: Vec::new(),
        },
        TYPE_HASH | TYPE_HASH_ZIPMAP | TYPE_HASH_ZIPLIST | TYPE_HASH_LISTPACK => {
            Value::Hash(Blobs::new())
        }
        TYPE_HASH_WITH_EXPIRY => Value::HashWithExpiry {
            fields: Blobs::new(),
            expire_unix_s: Vec::new(),
        },
        TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => {
            Value::Stream {
                entries: Vec::new(),
                meta: None,
            }
        }
        _ => Value::Opaque(Vec::new()),
    }
}

impl ValueDecoder {
    /// A decoder for a value of type `rdb_type`. `json_old` makes type 20 mean JSON (streams
    /// with RDB version < 10, i.e. every Dragonfly stream, §3.6.7).
    pub(crate) fn new(
        rdb_type: u8,
        json_old: bool,
        limits: Limits,
    ) -> Result<ValueDecoder, ErrorKind> {
        match rdb_type {
            TYPE_MODULE_PRE_GA | 22..=25 => return Err(ErrorKind::UnsupportedType(rdb_type)),
            t if is_known_type(t) => {}
            t => return Err(ErrorKind::UnknownType(t)),
        }
        Ok(ValueDecoder {
            rdb_type,
            json_old,
            state: VState::Start,
            batch: empty_value(rdb_type, json_old),
            batch_n: 0,
            batch_bytes: 0,
            stream_deleted: 0,
            limits,
        })
    }

    /// True when the current batch holds something not yet taken.
    pub(crate) fn has_batch(&self) -> bool {
        self.batch_n > 0
    }

    /// Takes the current batch, leaving an empty one.
    pub(crate) fn take_batch(&mut self) -> Value {
        self.batch_n = 0;
        self.batch_bytes = 0;
        std::mem::replace(&mut self.batch, empty_value(self.rdb_type, self.json_old))
    }

    /// Decodes units until the value is done, the batch is full or the input is short.
    pub(crate) fn advance(&mut self, r: &mut Reader<'_>) -> RResult<Progress> {
        loop {
            if self.state == VState::Done {
                return Ok(Progress::Done);
            }
            let save = r.pos();
            match self.unit(r) {
                Ok(()) => {
                    if self.state == VState::Done {
                        return Ok(Progress::Done);
                    }
                    if self.batch_n >= self.limits.batch_elements
                        || self.batch_bytes >= self.limits.batch_bytes
                    {
                        return Ok(Progress::BatchFull);
                    }
                }
                Err(Fail::Short) => {
                    r.rewind(save);
                    return Ok(Progress::Short);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn count(&mut self, n: usize, bytes: usize) {
        self.batch_n += n;
        self.batch_bytes += bytes;
    }

    fn max_str(&self) -> usize {
        self.limits.max_string
    }

    fn max_el(&self) -> u64 {
        self.limits.max_elements
    }

    /// Decodes one unit. Must not change any state unless it returns `Ok`.
    fn unit(&mut self, r: &mut Reader<'_>) -> RResult<()> {
        match self.state {
            VState::Start => self.start(r),
            VState::Counted { left } => {
                self.element(r)?;
                self.state = if left <= 1 {
                    VState::Done
                } else {
                    VState::Counted { left: left - 1 }
                };
                Ok(())
            }
            VState::Nodes { left } => {
                self.list_node(r)?;
                self.state = if left <= 1 {
                    VState::Done
                } else {
                    VState::Nodes { left: left - 1 }
                };
                Ok(())
            }
            VState::StreamLps { left } => {
                self.stream_listpack(r)?;
                self.state = if left <= 1 {
                    VState::StreamMeta
                } else {
                    VState::StreamLps { left: left - 1 }
                };
                Ok(())
            }
            VState::StreamMeta => {
                let mut meta = self.stream_meta(r)?;
                meta.deleted_entries = self.stream_deleted;
                if let Value::Stream { meta: m, .. } = &mut self.batch {
                    *m = Some(Box::new(meta));
                }
                self.state = VState::Done;
                Ok(())
            }
            VState::Filters { left } => self.filter_header(r, left),
            VState::FilterChunks {
                filters_left,
                bytes_left,
            } => {
                let start = r.pos();
                let at = r.pos();
                let len = r.len("filter chunk", self.max_str() as u64)?;
                if len == 0 || len > bytes_left {
                    return corrupt(at, "filter chunk length outside the filter's size");
                }
                r.skip(len as usize)?;
                self.opaque(r.since(start));
                let left = bytes_left - len;
                self.state = if left > 0 {
                    VState::FilterChunks {
                        filters_left,
                        bytes_left: left,
                    }
                } else if filters_left > 0 {
                    VState::Filters { left: filters_left }
                } else {
                    VState::Done
                };
                Ok(())
            }
            VState::RawBytes { left } => {
                let n = left.min(RAW_UNIT);
                let start = r.pos();
                r.skip(n as usize)?;
                self.opaque(r.since(start));
                self.state = if left > n {
                    VState::RawBytes { left: left - n }
                } else {
                    VState::Done
                };
                Ok(())
            }
            VState::Module => {
                let start = r.pos();
                let at = r.pos();
                let op = r.pu()?;
                match op {
                    MODULE_OPCODE_EOF => {}
                    MODULE_OPCODE_SINT | MODULE_OPCODE_UINT => {
                        r.pu()?;
                    }
                    MODULE_OPCODE_FLOAT => r.skip(4)?,
                    MODULE_OPCODE_DOUBLE => r.skip(8)?,
                    MODULE_OPCODE_STRING => r.skip_rdb_str(self.max_str())?,
                    _ => return corrupt(at, "unknown module value opcode"),
                }
                self.opaque(r.since(start));
                if op == MODULE_OPCODE_EOF {
                    self.state = VState::Done;
                }
                Ok(())
            }
            VState::Done => Ok(()),
        }
    }

    fn opaque(&mut self, bytes: &[u8]) {
        if let Value::Opaque(v) = &mut self.batch {
            v.extend_from_slice(bytes);
        }
        self.count(1, bytes.len());
    }

    fn start(&mut self, r: &mut Reader<'_>) -> RResult<()> {
        let t = self.rdb_type;
        let at = r.pos();
        match t {
            TYPE_STRING => {
                let s = r.rdb_str(self.max_str())?.into_vec();
                self.count(1, s.len());
                self.batch = Value::String(s);
                self.state = VState::Done;
            }
            TYPE_JSON | TYPE_JSON_OLD if t == TYPE_JSON || self.json_old => {
                let s = r.rdb_str(self.max_str())?.into_vec();
                self.count(1, s.len());
                self.batch = Value::Json(s);
                self.state = VState::Done;
            }
            TYPE_LIST
            | TYPE_SET
            | TYPE_ZSET
            | TYPE_HASH
            | TYPE_ZSET_2
            | TYPE_HASH_WITH_EXPIRY
            | TYPE_SET_WITH_EXPIRY => {
                let n = r.len("collection element count", self.max_el())?;
                self.state = if n == 0 {
                    VState::Done
                } else {
                    VState::Counted { left: n }
                };
            }
            TYPE_LIST_QUICKLIST | TYPE_LIST_QUICKLIST_2 => {
                let n = r.len("quicklist node count", self.max_el())?;
                self.state = if n == 0 {
                    VState::Done
                } else {
                    VState::Nodes { left: n }
                };
            }
            TYPE_HASH_ZIPMAP | TYPE_LIST_ZIPLIST | TYPE_SET_INTSET | TYPE_ZSET_ZIPLIST
            | TYPE_HASH_ZIPLIST | TYPE_HASH_LISTPACK | TYPE_ZSET_LISTPACK | TYPE_SET_LISTPACK => {
                let s = r.rdb_str(self.max_str())?;
                self.blob_value(at, s.as_bytes())?;
                self.state = VState::Done;
            }
            TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => {
                let n = r.len("stream listpack count", self.max_el())?;
                self.state = if n == 0 {
                    VState::StreamMeta
                } else {
                    VState::StreamLps { left: n }
                };
            }
            TYPE_SBF | TYPE_SBF2 => {
                // pu(options) f64 grow_factor f64 fp_prob pu(prev_size) pu(current_size)
                // pu(max_capacity) pu(num_filters) (Dragonfly rdb_save.cc SaveSBFObject).
                let start = r.pos();
                r.pu()?;
                r.skip(16)?;
                r.pu()?;
                r.pu()?;
                r.pu()?;
                let n = r.len("bloom filter count", self.max_el())?;
                self.opaque(r.since(start));
                self.state = if n == 0 {
                    VState::Done
                } else {
                    VState::Filters { left: n }
                };
            }
            TYPE_CUCKOO => {
                // slots_per_bucket, max_iterations, expansion, num_buckets, num_items,
                // num_deletes, num_filters (§3.6.9).
                let start = r.pos();
                for _ in 0..6 {
                    r.pu()?;
                }
                let n = r.len("cuckoo filter count", self.max_el())?;
                self.opaque(r.since(start));
                self.state = if n == 0 {
                    VState::Done
                } else {
                    VState::Filters { left: n }
                };
            }
            TYPE_CMS => {
                let start = r.pos();
                let w = r.pu()?;
                let d = r.pu()?;
                r.pu()?;
                let bytes = w.checked_mul(d).and_then(|x| x.checked_mul(8));
                let bytes = match bytes {
                    Some(b) if b <= self.max_str() as u64 => b,
                    _ => {
                        return bad(
                            at,
                            ErrorKind::TooLarge {
                                what: "count-min sketch counters",
                                len: bytes.unwrap_or(u64::MAX),
                                max: self.max_str() as u64,
                            },
                        )
                    }
                };
                self.opaque(r.since(start));
                self.state = if bytes == 0 {
                    VState::Done
                } else {
                    VState::RawBytes { left: bytes }
                };
            }
            TYPE_TOPK => {
                // pu(0) pu(k) pu(width) pu(depth) f64 decay pu(heap) heap × (str pu)
                // pu(byte_len) bytes (§3.6.9). Never split, read whole.
                let start = r.pos();
                for _ in 0..4 {
                    r.pu()?;
                }
                r.skip(8)?;
                let head = r.since(start);
                let heap = r.len("top-k heap size", self.max_el())?;
                let mut canon = head.to_vec();
                put_pu(&mut canon, heap);
                for _ in 0..heap {
                    put_raw_str(&mut canon, r.rdb_str(self.max_str())?.as_bytes());
                    put_pu(&mut canon, r.pu()?);
                }
                let n = r.len_usize("top-k counters", self.max_str())?;
                put_pu(&mut canon, n as u64);
                canon.extend_from_slice(r.bytes(n)?);
                self.opaque(&canon);
                self.state = VState::Done;
            }
            TYPE_MODULE_2 => {
                let start = r.pos();
                r.pu()?; // module id (64 bits: 54-bit name + 10-bit version)
                self.opaque(r.since(start));
                self.state = VState::Module;
            }
            _ => return bad(at, ErrorKind::UnknownType(t)),
        }
        Ok(())
    }

    /// One bloom / cuckoo filter header.
    fn filter_header(&mut self, r: &mut Reader<'_>, left: u64) -> RResult<()> {
        let start = r.pos();
        match self.rdb_type {
            TYPE_SBF => {
                let hash_count = r.pu()?;
                let bits = r.rdb_str(self.max_str())?;
                // Canonical form: the filter string written raw, whatever form it came in
                // (Dragonfly's DUMP sends it LZF-compressed, the snapshot raw).
                let mut canon = Vec::with_capacity(bits.as_bytes().len() + 10);
                put_pu(&mut canon, hash_count);
                put_raw_str(&mut canon, bits.as_bytes());
                self.opaque(&canon);
                self.state = if left > 1 {
                    VState::Filters { left: left - 1 }
                } else {
                    VState::Done
                };
            }
            _ => {
                if self.rdb_type == TYPE_SBF2 {
                    r.pu()?; // hash count
                }
                let total = r.pu()?;
                self.opaque(r.since(start));
                let filters_left = left - 1;
                self.state = if total > 0 {
                    VState::FilterChunks {
                        filters_left,
                        bytes_left: total,
                    }
                } else if filters_left > 0 {
                    VState::Filters { left: filters_left }
                } else {
                    VState::Done
                };
            }
        }
        Ok(())
    }

    /// One element of a counted collection (types 1–5, 31, 32).
    fn element(&mut self, r: &mut Reader<'_>) -> RResult<()> {
        let max = self.max_str();
        match (self.rdb_type, &mut self.batch) {
            (TYPE_LIST, Value::List(b)) | (TYPE_SET, Value::Set(b)) => {
                let s = r.rdb_str(max)?;
                let n = s.as_bytes().len();
                b.push(s.as_bytes());
                self.count(1, n);
            }
            (TYPE_HASH, Value::Hash(b)) => {
                let f = r.rdb_str(max)?;
                let v = r.rdb_str(max)?;
                let n = f.as_bytes().len() + v.as_bytes().len();
                b.push(f.as_bytes());
                b.push(v.as_bytes());
                self.count(1, n);
            }
            (TYPE_ZSET_2, Value::ZSet { members, scores }) => {
                let m = r.rdb_str(max)?;
                let at = r.pos();
                let v = r.f64le()?;
                if v.is_nan() {
                    // Redis and Dragonfly refuse a NaN score on load ("Zset with NAN score").
                    return corrupt(at, "sorted-set score is NaN");
                }
                let n = m.as_bytes().len() + 8;
                members.push(m.as_bytes());
                scores.push(Score {
                    value: v,
                    text: None,
                });
                self.count(1, n);
            }
            (TYPE_ZSET, Value::ZSet { members, scores }) => {
                let m = r.rdb_str(max)?;
                let at = r.pos();
                let l = r.u8()?;
                let (value, text) = match l {
                    TEXT_DOUBLE_NAN => return corrupt(at, "sorted-set score is NaN"),
                    TEXT_DOUBLE_POS_INF => (f64::INFINITY, b"inf".to_vec()),
                    TEXT_DOUBLE_NEG_INF => (f64::NEG_INFINITY, b"-inf".to_vec()),
                    _ => {
                        let t = r.bytes(usize::from(l))?;
                        (text_score(at, t)?, t.to_vec())
                    }
                };
                let n = m.as_bytes().len() + text.len();
                members.push(m.as_bytes());
                scores.push(Score {
                    value,
                    text: Some(text),
                });
                self.count(1, n);
            }
            (
                TYPE_SET_WITH_EXPIRY,
                Value::SetWithExpiry {
                    members,
                    expire_unix_s,
                },
            ) => {
                let m = r.rdb_str(max)?;
                let at = r.pos();
                let t = r.rdb_str(max)?;
                let ttl = member_ttl(at, t.as_bytes())?;
                let n = m.as_bytes().len();
                members.push(m.as_bytes());
                expire_unix_s.push(ttl);
                self.count(1, n);
            }
            (
                TYPE_HASH_WITH_EXPIRY,
                Value::HashWithExpiry {
                    fields,
                    expire_unix_s,
                },
            ) => {
                let f = r.rdb_str(max)?;
                let v = r.rdb_str(max)?;
                let at = r.pos();
                let t = r.rdb_str(max)?;
                let ttl = member_ttl(at, t.as_bytes())?;
                let n = f.as_bytes().len() + v.as_bytes().len();
                fields.push(f.as_bytes());
                fields.push(v.as_bytes());
                expire_unix_s.push(ttl);
                self.count(1, n);
            }
            _ => return corrupt(r.pos(), "element of a type that has no counted elements"),
        }
        Ok(())
    }

    /// One quicklist node (type 14: a ziplist; type 18: container + listpack or plain).
    fn list_node(&mut self, r: &mut Reader<'_>) -> RResult<()> {
        let max = self.max_str();
        let at = r.pos();
        let container = if self.rdb_type == TYPE_LIST_QUICKLIST_2 {
            r.pu()?
        } else {
            QUICKLIST_NODE_CONTAINER_PACKED
        };
        let data_at = r.pos();
        let s = r.rdb_str(max)?;
        let Value::List(b) = &mut self.batch else {
            return corrupt(at, "list node outside a list");
        };
        let (n, bytes) = match container {
            QUICKLIST_NODE_CONTAINER_PLAIN => {
                b.push(s.as_bytes());
                (1, s.as_bytes().len())
            }
            QUICKLIST_NODE_CONTAINER_PACKED => {
                let mark = b.mark();
                let mut bytes = 0;
                let res = if self.rdb_type == TYPE_LIST_QUICKLIST_2 {
                    blob::listpack(s.as_bytes(), |e| {
                        bytes += e.text_len();
                        push_elem(b, e);
                        Ok(())
                    })
                } else {
                    blob::ziplist(s.as_bytes(), |e| {
                        bytes += e.text_len();
                        push_elem(b, e);
                        Ok(())
                    })
                };
                match res {
                    Ok(n) => (n, bytes),
                    Err(e) => {
                        b.rollback(mark);
                        return Err(inner_err(e, data_at, &s));
                    }
                }
            }
            _ => return corrupt(at, "unknown quicklist node container"),
        };
        self.count(n, bytes);
        Ok(())
    }

    /// A value held in one blob string (intset, listpack, ziplist, zipmap).
    fn blob_value(&mut self, at: usize, s: &[u8]) -> RResult<()> {
        let t = self.rdb_type;
        let mut bytes = 0usize;
        let res = match &mut self.batch {
            Value::Set(b) if t == TYPE_SET_INTSET => blob::intset(s, |v| {
                b.push_int(v);
                bytes += 8;
                Ok(())
            }),
            Value::List(b) | Value::Set(b) => {
                let f = |e: Elem<'_>| {
                    bytes += e.text_len();
                    push_elem(b, e);
                    Ok(())
                };
                if t == TYPE_SET_LISTPACK {
                    blob::listpack(s, f)
                } else {
                    blob::ziplist(s, f)
                }
            }
            Value::Hash(b) => {
                let f = |e: Elem<'_>| {
                    bytes += e.text_len();
                    push_elem(b, e);
                    Ok(())
                };
                let n = match t {
                    TYPE_HASH_ZIPMAP => blob::zipmap(s, f),
                    TYPE_HASH_ZIPLIST => blob::ziplist(s, f),
                    _ => blob::listpack(s, f),
                };
                match n {
                    Ok(_) if b.len() % 2 != 0 => {
                        return corrupt(at, "hash blob with an odd number of elements")
                    }
                    other => other.map(|_| b.len() / 2),
                }
            }
            Value::ZSet { members, scores } => {
                let mut odd = false;
                let f = |e: Elem<'_>| {
                    if !odd {
                        bytes += e.text_len();
                        push_elem(members, e);
                    } else {
                        let (value, text) = match e {
                            Elem::Int(v) => {
                                let mut t = Vec::new();
                                e.write_to(&mut t);
                                (v as f64, t)
                            }
                            Elem::Str(s) => (text_score(at, s)?, s.to_vec()),
                        };
                        scores.push(Score {
                            value,
                            text: Some(text),
                        });
                    }
                    odd = !odd;
                    Ok(())
                };
                let n = if t == TYPE_ZSET_ZIPLIST {
                    blob::ziplist(s, f)
                } else {
                    blob::listpack(s, f)
                };
                match n {
                    Ok(_) if members.len() != scores.len() => {
                        return corrupt(at, "sorted-set blob with an odd number of elements")
                    }
                    other => other.map(|_| members.len()),
                }
            }
            _ => return corrupt(at, "blob encoding for a type without one"),
        };
        let n = res.map_err(|e| match e {
            Fail::Bad { at: _, kind } => Fail::Bad { at, kind },
            Fail::Short => Fail::Bad {
                at,
                kind: ErrorKind::Truncated("blob"),
            },
        })?;
        self.count(n, bytes);
        Ok(())
    }

    /// One `(master id, listpack)` pair of a stream.
    fn stream_listpack(&mut self, r: &mut Reader<'_>) -> RResult<()> {
        let max = self.max_str();
        let at = r.pos();
        let key = r.rdb_str(max)?;
        let lp_at = r.pos();
        let lp = r.rdb_str(max)?;
        let Ok(id) = <[u8; STREAM_ID_LEN]>::try_from(key.as_bytes()) else {
            return corrupt(at, "stream listpack key is not a 16-byte id");
        };
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&id[..8]);
        seq.copy_from_slice(&id[8..]);
        let master = StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        };
        let mut items: Vec<Elem<'_>> = Vec::new();
        blob::listpack(lp.as_bytes(), |e| {
            items.push(e);
            Ok(())
        })
        .map_err(|e| inner_err(e, lp_at, &lp))?;
        let (entries, deleted, bytes) = stream_entries(master, &items).map_err(|m| Fail::Bad {
            at: lp_at,
            kind: ErrorKind::Corrupt(m),
        })?;
        self.stream_deleted += deleted;
        let n = entries.len();
        if let Value::Stream { entries: e, .. } = &mut self.batch {
            e.extend(entries);
        }
        self.count(n, bytes);
        Ok(())
    }

    /// The stream metadata tail (§3.6.6), read whole.
    fn stream_meta(&self, r: &mut Reader<'_>) -> RResult<StreamMeta> {
        let t = self.rdb_type;
        let v2 = t != TYPE_STREAM_LISTPACKS;
        let max = self.max_str();
        let max_el = self.max_el();
        let mut m = StreamMeta {
            length: r.pu()?,
            last_id: StreamId {
                ms: r.pu()?,
                seq: r.pu()?,
            },
            ..StreamMeta::default()
        };
        if v2 {
            m.first_id = Some(StreamId {
                ms: r.pu()?,
                seq: r.pu()?,
            });
            m.max_deleted_id = Some(StreamId {
                ms: r.pu()?,
                seq: r.pu()?,
            });
            m.entries_added = Some(r.pu()?);
        }
        let groups = r.len("stream group count", max_el)?;
        for _ in 0..groups {
            let name = r.rdb_str(max)?.into_vec();
            let last_id = StreamId {
                ms: r.pu()?,
                seq: r.pu()?,
            };
            let entries_read = if v2 { Some(r.pu()?) } else { None };
            let pel_n = r.len("stream group PEL size", max_el)?;
            // Each PEL entry is 25+ bytes: never reserve more than the input can hold.
            let mut pending = Vec::with_capacity((pel_n as usize).min(r.remaining() / 17));
            for _ in 0..pel_n {
                let id = raw_id(r)?;
                let delivery_time_ms = r.i64le()?;
                let delivery_count = r.pu()?;
                pending.push(StreamPending {
                    id,
                    delivery_time_ms,
                    delivery_count,
                });
            }
            let cons_n = r.len("stream consumer count", max_el)?;
            let mut consumers = Vec::with_capacity((cons_n as usize).min(r.remaining() / 10));
            for _ in 0..cons_n {
                let name = r.rdb_str(max)?.into_vec();
                let seen_time_ms = r.i64le()?;
                let active_time_ms = if t == TYPE_STREAM_LISTPACKS_3 {
                    Some(r.i64le()?)
                } else {
                    None
                };
                let n = r.len("stream consumer PEL size", max_el)?;
                let mut ids = Vec::with_capacity((n as usize).min(r.remaining() / 16));
                for _ in 0..n {
                    ids.push(raw_id(r)?);
                }
                consumers.push(StreamConsumer {
                    name,
                    seen_time_ms,
                    active_time_ms,
                    pending: ids,
                });
            }
            m.groups.push(StreamGroup {
                name,
                last_id,
                entries_read,
                pending,
                consumers,
            });
        }
        Ok(m)
    }
}

/// A 16-byte raw stream id (u64be ms, u64be seq).
fn raw_id(r: &mut Reader<'_>) -> RResult<StreamId> {
    Ok(StreamId {
        ms: r.u64be()?,
        seq: r.u64be()?,
    })
}

fn push_elem(b: &mut Blobs, e: Elem<'_>) {
    match e {
        Elem::Str(s) => b.push(s),
        Elem::Int(v) => b.push_int(v),
    }
}

/// Maps an error inside a blob string to the position of the string in the stream (the blob's
/// own offsets mean nothing to a reader of the stream, and LZF output has no stream position).
fn inner_err(e: Fail, at: usize, _s: &RdbStr<'_>) -> Fail {
    match e {
        Fail::Bad { kind, .. } => Fail::Bad { at, kind },
        Fail::Short => Fail::Bad {
            at,
            kind: ErrorKind::Truncated("blob"),
        },
    }
}

/// Decodes the entries of one stream listpack (Redis `t_stream.c`, "stream listpack
/// format"): the master entry (count, deleted, field count, field names, 0), then per entry
/// flags, ms-diff, seq-diff, [field count, fields and values | values], lp-count.
fn stream_entries(
    master: StreamId,
    items: &[Elem<'_>],
) -> Result<(Vec<StreamEntry>, u64, usize), &'static str> {
    let mut it = items.iter();
    let int = |it: &mut std::slice::Iter<'_, Elem<'_>>| -> Result<i64, &'static str> {
        it.next()
            .ok_or("stream listpack ends early")?
            .as_int()
            .ok_or("stream listpack integer expected")
    };
    let count = int(&mut it)?;
    let deleted = int(&mut it)?;
    let nfields = int(&mut it)?;
    if count < 0 || deleted < 0 || nfields < 0 || nfields as usize > items.len() {
        return Err("stream listpack master entry out of range");
    }
    let master_fields: Vec<Elem<'_>> = it.by_ref().take(nfields as usize).copied().collect();
    if master_fields.len() != nfields as usize {
        return Err("stream listpack ends in the master fields");
    }
    if int(&mut it)? != 0 {
        return Err("stream listpack master entry not terminated by 0");
    }
    let mut entries = Vec::with_capacity((count as usize).min(items.len()));
    let mut deleted_seen = 0u64;
    let mut bytes = 0usize;
    while it.len() > 0 {
        let flags = int(&mut it)?;
        let ms_diff = int(&mut it)?;
        let seq_diff = int(&mut it)?;
        let id = StreamId {
            ms: master.ms.wrapping_add(ms_diff as u64),
            seq: master.seq.wrapping_add(seq_diff as u64),
        };
        let mut fields;
        if flags & STREAM_ITEM_FLAG_SAMEFIELDS != 0 {
            // Sized once: the fields are the master's, the values about as long (an integer
            // element is at most 20 digits).
            let bytes: usize = master_fields.iter().map(|f| 2 * f.text_len()).sum();
            fields = Blobs::with_capacity(2 * master_fields.len(), bytes);
            for f in &master_fields {
                let v = it.next().ok_or("stream listpack ends in an entry")?;
                push_elem(&mut fields, *f);
                push_elem(&mut fields, *v);
            }
        } else {
            let n = int(&mut it)?;
            if n < 0 || n as usize > items.len() {
                return Err("stream entry field count out of range");
            }
            fields = Blobs::with_capacity(2 * n as usize, 0);
            for _ in 0..n {
                let f = it.next().ok_or("stream listpack ends in an entry")?;
                let v = it.next().ok_or("stream listpack ends in an entry")?;
                push_elem(&mut fields, *f);
                push_elem(&mut fields, *v);
            }
        }
        int(&mut it)?; // lp-count
        if flags & STREAM_ITEM_FLAG_DELETED != 0 {
            deleted_seen += 1;
        } else {
            bytes += fields.data_len() + 16;
            entries.push(StreamEntry { id, fields });
        }
    }
    if entries.len() as i64 != count || deleted_seen as i64 != deleted {
        return Err("stream listpack counts differ from its entries");
    }
    Ok((entries, deleted_seen, bytes))
}
