//! Snapshot key pieces → native Redis commands (the type table of `docs/rewrite.md`).
//!
//! First piece: `DEL key` (or a replacing `SET`), then the elements; later pieces: the
//! elements only; last piece: `PEXPIREAT` with the absolute expiry. Scores are written as the
//! exact text Dragonfly sent, or as the shortest text that parses back to the same binary64.

use crate::model::Cmd;
use crate::rdb::consts::{TYPE_JSON, TYPE_JSON_OLD};
use crate::rdb::{Piece, Score, StreamEntry, StreamGroup, StreamId, StreamMeta, StringRef, Value};
use crate::wire::Blobs;

use super::{Options, Rewritten, Skip, SkipReason};

/// Appends `ms-seq` to a command.
pub(crate) fn arg_id(c: &mut Cmd, id: StreamId) {
    let mut buf = itoa::Buffer::new();
    let mut s = Vec::with_capacity(41);
    s.extend_from_slice(buf.format(id.ms).as_bytes());
    s.push(b'-');
    s.extend_from_slice(buf.format(id.seq).as_bytes());
    c.arg(&s);
}

/// The exact score text: as sent when it came as text, else the shortest round-trip form of
/// the binary64 (Rust's `{:?}` prints the shortest digits that read back identically, with an
/// exponent for very large or small values, and `inf` / `-inf`, which Redis's `strtod`
/// accepts).
pub(crate) fn score_text(s: &Score) -> Vec<u8> {
    match &s.text {
        Some(t) => t.clone(),
        None => format!("{:?}", s.value).into_bytes(),
    }
}

fn key_cmd(name: &str, key: &[u8]) -> Cmd {
    let mut c = Cmd::new(name);
    c.arg(key);
    c
}

/// A command `NAME key a1 a2 …` over a list of strings, or None when the list is empty.
fn variadic(name: &str, key: &[u8], items: impl Iterator<Item = impl AsRef<[u8]>>) -> Option<Cmd> {
    let mut c = key_cmd(name, key);
    for a in items {
        c.arg(a.as_ref());
    }
    (c.len() > 2).then_some(c)
}

/// `SET key value [PXAT ms]`, built in one allocation per buffer: SET replaces any type,
/// and clears or sets the TTL in the same command.
fn set_cmd(key: &[u8], value: &[u8], expire_ms: Option<i64>) -> Cmd {
    let (args, extra) = if expire_ms.is_some() {
        (5, 4 + 20)
    } else {
        (3, 0)
    };
    let mut c = Cmd::with_capacity(args, 3 + key.len() + value.len() + extra);
    c.arg(b"SET").arg(key).arg(value);
    if let Some(ms) = expire_ms {
        c.arg(b"PXAT").arg_int(ms);
    }
    c
}

/// The rewrite of a whole string key borrowed from the decoder (the fast path of
/// [`crate::rdb::SnapshotDecoder::step_ref`]): exactly what [`rewrite_piece`] gives for its
/// owned piece.
pub(crate) fn rewrite_string(s: &StringRef<'_>, opts: &Options) -> Rewritten {
    if matches!(s.expire_ms, Some(e) if e <= opts.now_ms) {
        let mut out = Rewritten::skip(s.db, Some(s.key), SkipReason::Expired);
        out.cmds.push(key_cmd("DEL", s.key));
        return out;
    }
    Rewritten {
        db: s.db,
        cmds: vec![set_cmd(s.key, s.value, s.expire_ms)],
        ..Rewritten::default()
    }
}

/// The rewrite of one piece.
pub(crate) fn rewrite_piece(p: &Piece, opts: &Options) -> Rewritten {
    let db = p.db;
    let key = p.key.as_slice();
    // Only a whole value can be dropped for being expired: a key split in pieces is written
    // and then given its (past) PEXPIREAT, which makes the target delete it, so a decision
    // taken on one piece can never leave half a key behind.
    if p.is_whole() && p.is_expired_at(opts.now_ms) {
        let mut out = Rewritten::skip(db, Some(key), SkipReason::Expired);
        out.cmds.push(key_cmd("DEL", key));
        return out;
    }
    let mut out = Rewritten {
        db,
        ..Rewritten::default()
    };
    let mut skip: Option<SkipReason> = None;
    let first_del = |out: &mut Rewritten| {
        if p.first {
            out.cmds.push(key_cmd("DEL", key));
        }
    };
    match &p.value {
        Value::String(v) => {
            out.cmds.push(set_cmd(key, v, p.expire_ms));
            return out;
        }
        Value::List(items) => {
            first_del(&mut out);
            out.cmds.extend(variadic("RPUSH", key, items.iter()));
        }
        Value::Set(items) => {
            first_del(&mut out);
            out.cmds.extend(variadic("SADD", key, items.iter()));
        }
        Value::SetWithExpiry {
            members,
            expire_unix_s,
        } => {
            first_del(&mut out);
            let mut dropped = 0;
            let live = members.iter().enumerate().filter_map(|(i, m)| {
                match expire_unix_s.get(i).copied().flatten() {
                    Some(s) if s.saturating_mul(1000) <= opts.now_ms => None,
                    Some(_) => {
                        dropped += 1;
                        Some(m)
                    }
                    None => Some(m),
                }
            });
            out.cmds
                .extend(variadic("SADD", key, live.collect::<Vec<_>>().into_iter()));
            if dropped > 0 {
                skip = Some(SkipReason::MemberTtlDropped { members: dropped });
            }
        }
        Value::ZSet { members, scores } => {
            first_del(&mut out);
            let mut c = key_cmd("ZADD", key);
            for (m, s) in members.iter().zip(scores) {
                c.arg(&score_text(s)).arg(m);
            }
            if c.len() > 2 {
                out.cmds.push(c);
            }
        }
        Value::Hash(fields) => {
            first_del(&mut out);
            out.cmds.extend(hset(key, fields, |_| true));
        }
        Value::HashWithExpiry {
            fields,
            expire_unix_s,
        } => {
            first_del(&mut out);
            let ttl = |i: usize| expire_unix_s.get(i).copied().flatten();
            let live =
                |i: usize| !matches!(ttl(i), Some(s) if s.saturating_mul(1000) <= opts.now_ms);
            out.cmds.extend(hset(key, fields, live));
            let mut dropped = 0;
            for (i, (f, _)) in fields.pairs().enumerate() {
                match ttl(i) {
                    Some(s) if live(i) => {
                        if opts.target_field_ttl {
                            let mut c = key_cmd("HPEXPIREAT", key);
                            c.arg_int(s.saturating_mul(1000))
                                .arg(b"FIELDS")
                                .arg(b"1")
                                .arg(f);
                            out.cmds.push(c);
                        } else {
                            dropped += 1;
                        }
                    }
                    _ => {}
                }
            }
            if dropped > 0 {
                skip = Some(SkipReason::FieldTtlDropped { fields: dropped });
            }
        }
        Value::Stream { entries, meta } => {
            first_del(&mut out);
            let dropped = stream(&mut out.cmds, key, p.is_whole(), entries, meta.as_deref());
            if dropped > 0 {
                skip = Some(SkipReason::PendingEntriesDropped { count: dropped });
            }
        }
        Value::Json(text) => {
            if !opts.target_json {
                return skip_first(p, SkipReason::JsonWithoutModule);
            }
            first_del(&mut out);
            let mut c = key_cmd("JSON.SET", key);
            c.arg(b"$").arg(text);
            out.cmds.push(c);
        }
        Value::Opaque(_) => {
            let reason = if p.rdb_type == TYPE_JSON || p.rdb_type == TYPE_JSON_OLD {
                SkipReason::JsonWithoutModule
            } else {
                SkipReason::UnsupportedType {
                    rdb_type: p.rdb_type,
                }
            };
            return skip_first(p, reason);
        }
    }
    if p.last {
        if let Some(ms) = p.expire_ms {
            let mut c = key_cmd("PEXPIREAT", key);
            c.arg_int(ms);
            out.cmds.push(c);
        }
    }
    out.skipped = skip.map(|reason| Skip {
        key: Some(key.to_vec()),
        reason,
    });
    out
}

/// A key that cannot be written: the first piece clears the key on the target and reports it
/// (once per key); later pieces give nothing.
fn skip_first(p: &Piece, reason: SkipReason) -> Rewritten {
    if !p.first {
        return Rewritten::empty(p.db);
    }
    let mut out = Rewritten::skip(p.db, Some(&p.key), reason);
    out.cmds.push(key_cmd("DEL", &p.key));
    out
}

/// `HSET key f v …` with the pairs whose index passes `keep`, or None when none does.
fn hset(key: &[u8], fields: &Blobs, keep: impl Fn(usize) -> bool) -> Option<Cmd> {
    let mut c = key_cmd("HSET", key);
    for (i, (f, v)) in fields.pairs().enumerate() {
        if keep(i) {
            c.arg(f).arg(v);
        }
    }
    (c.len() > 2).then_some(c)
}

fn xadd(key: &[u8], e: &StreamEntry) -> Cmd {
    let mut c = key_cmd("XADD", key);
    arg_id(&mut c, e.id);
    for f in e.fields.iter() {
        c.arg(f);
    }
    c
}

/// The placeholder entry added for a pending entry whose stream entry was deleted, so that
/// `XCLAIM … FORCE` can re-create it; deleted again right after.
fn xadd_placeholder(key: &[u8], id: StreamId) -> Cmd {
    let mut c = key_cmd("XADD", key);
    arg_id(&mut c, id);
    c.arg(b"df2redis-placeholder").arg(b"");
    c
}

/// Writes stream entries, and when `meta` is there (last piece) the stream's metadata:
/// consumer groups, consumers, pending entries, last id, entries-added, max-deleted-id.
/// Returns how many pending entries could not be restored.
///
/// Pending entries are re-created with `XCLAIM key group consumer 0 id TIME t RETRYCOUNT n
/// FORCE JUSTID`, which Redis accepts only for ids present in the stream. A pending entry
/// whose stream entry was deleted (XDEL, XTRIM) therefore needs a placeholder entry with its
/// id, added in id order among the real entries and deleted after the claims. That is
/// possible only when the whole stream is in this piece (`whole`); for a stream that arrived
/// in several pieces the earlier entries are already written, and such pending entries are
/// reported as dropped.
fn stream(
    cmds: &mut Vec<Cmd>,
    key: &[u8],
    whole: bool,
    entries: &[StreamEntry],
    meta: Option<&StreamMeta>,
) -> usize {
    let Some(meta) = meta else {
        cmds.extend(entries.iter().map(|e| xadd(key, e)));
        return 0;
    };
    // Pending ids with no live entry.
    let mut missing: Vec<StreamId> = meta
        .groups
        .iter()
        .flat_map(|g| g.pending.iter().map(|p| p.id))
        .filter(|id| entries.binary_search_by(|e| e.id.cmp(id)).is_err())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let mut dropped_ids: Vec<StreamId> = Vec::new();
    let placeholders: Vec<StreamId> = if whole {
        missing
    } else {
        // Entries of earlier pieces all have ids below this piece's first entry; the ones
        // above it and not in this piece are surely deleted, and so are the ones below the
        // stream's first live id. Between, an id may live in an earlier piece: claim it, the
        // target ignores it if it does not exist.
        let lowest_here = entries.first().map(|e| e.id);
        for id in &missing {
            let below_first = meta.first_id.is_some_and(|f| *id < f);
            let in_this_range = lowest_here.is_some_and(|l| *id > l);
            if below_first || in_this_range || meta.length == 0 {
                dropped_ids.push(*id);
            }
        }
        Vec::new()
    };

    // Entries and placeholders in id order.
    let mut ph = placeholders.iter().peekable();
    for e in entries {
        while let Some(&&id) = ph.peek() {
            if id < e.id {
                cmds.push(xadd_placeholder(key, id));
                ph.next();
            } else {
                break;
            }
        }
        cmds.push(xadd(key, e));
    }
    for &id in ph {
        cmds.push(xadd_placeholder(key, id));
    }
    if meta.length == 0 && entries.is_empty() && placeholders.is_empty() && whole {
        // An empty stream still exists (Dragonfly sends it, §3.5): create it with one entry
        // trimmed away at once; XSETID below sets its real ids.
        let mut c = key_cmd("XADD", key);
        c.arg(b"MAXLEN").arg(b"0");
        let id = if meta.last_id > StreamId::default() {
            meta.last_id
        } else {
            StreamId { ms: 0, seq: 1 }
        };
        arg_id(&mut c, id);
        c.arg(b"df2redis-placeholder").arg(b"");
        cmds.push(c);
    }
    for g in &meta.groups {
        group(cmds, key, g, &dropped_ids);
    }
    if !placeholders.is_empty() {
        let mut c = key_cmd("XDEL", key);
        for &id in &placeholders {
            arg_id(&mut c, id);
        }
        cmds.push(c);
    }
    let mut c = key_cmd("XSETID", key);
    arg_id(&mut c, meta.last_id);
    if let Some(n) = meta.entries_added {
        c.arg(b"ENTRIESADDED").arg_int(n);
    }
    if let Some(id) = meta.max_deleted_id {
        c.arg(b"MAXDELETEDID");
        arg_id(&mut c, id);
    }
    cmds.push(c);
    meta.groups
        .iter()
        .flat_map(|g| g.pending.iter())
        .filter(|p| dropped_ids.contains(&p.id))
        .count()
}

/// One consumer group: create it at its last id (with its entries-read when known), create
/// every consumer, then claim each pending entry for its owner with its exact delivery time
/// and count.
fn group(cmds: &mut Vec<Cmd>, key: &[u8], g: &StreamGroup, skip_ids: &[StreamId]) {
    let mut c = key_cmd("XGROUP", b"CREATE");
    c.arg(key).arg(&g.name);
    arg_id(&mut c, g.last_id);
    // u64::MAX is Redis's "unknown" (SCG_INVALID_ENTRIES_READ): leaving ENTRIESREAD out gives
    // the same state.
    if let Some(n) = g
        .entries_read
        .filter(|&n| n != u64::MAX && n <= i64::MAX as u64)
    {
        c.arg(b"ENTRIESREAD").arg_int(n);
    }
    cmds.push(c);
    for consumer in &g.consumers {
        let mut c = key_cmd("XGROUP", b"CREATECONSUMER");
        c.arg(key).arg(&g.name).arg(&consumer.name);
        cmds.push(c);
    }
    for p in &g.pending {
        if skip_ids.contains(&p.id) {
            continue;
        }
        let Some(owner) = g.consumers.iter().find(|c| c.pending.contains(&p.id)) else {
            continue;
        };
        let mut c = key_cmd("XCLAIM", key);
        c.arg(&g.name).arg(&owner.name).arg(b"0");
        arg_id(&mut c, p.id);
        c.arg(b"TIME").arg_int(p.delivery_time_ms);
        c.arg(b"RETRYCOUNT").arg_int(p.delivery_count);
        c.arg(b"FORCE").arg(b"JUSTID");
        cmds.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_exact() {
        let s = |v: f64| {
            score_text(&Score {
                value: v,
                text: None,
            })
        };
        assert_eq!(s(1e-7), b"1e-7");
        assert_eq!(s(1.0 / 3.0), b"0.3333333333333333");
        assert_eq!(s(f64::INFINITY), b"inf");
        assert_eq!(s(f64::NEG_INFINITY), b"-inf");
        assert_eq!(s(42.0), b"42.0");
        assert_eq!(s(f64::MAX), b"1.7976931348623157e308");
        for v in [
            1e-7,
            1.0 / 3.0,
            0.1,
            2.5e-300,
            123456789.125,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            let t = String::from_utf8(s(v)).unwrap();
            assert_eq!(t.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{t}");
        }
        let text = Score {
            value: 42.0,
            text: Some(b"42".to_vec()),
        };
        assert_eq!(score_text(&text), b"42");
    }
}
