//! Comparing one key in chunks, never loading it whole, and naming the first difference.
//!
//! Lengths are already known equal when these run. Strings are compared in `GETRANGE`
//! windows and lists in `LRANGE` windows, side by side. Hashes, sets and sorted sets are
//! walked on the source with `HSCAN`/`SSCAN`/`ZSCAN` and each chunk is looked up on the target
//! (`HMGET`, `SMISMEMBER`, `ZMSCORE`): with equal lengths and unique fields, "every source
//! element is on the target with the same value" is equality, and a duplicate returned by a
//! SCAN during a rehash is only checked twice. Streams are compared entry by entry in `XRANGE`
//! windows, then their metadata (`XINFO STREAM`), groups (`XINFO GROUPS`), consumers and
//! pending entries (`XPENDING` windows); idle times are not compared (they differ by nature).
//!
//! Memory per call is one chunk per side: `chunk_elements` elements or `chunk_bytes` bytes.

use super::compare::{key_error, score_bytes, show, Kind, Loc, Worker};
use super::report::DiffKind;
use super::side::Req;
use super::Error;
use crate::model::{escape_bytes, Cmd};
use crate::resp::Value;

type Found = Option<(DiffKind, String)>;

/// Compares one key of type `kind` and length `len` on both sides.
pub fn compare(w: &mut Worker, kind: &Kind, s: Loc, t: Loc, len: i64) -> Result<Found, Error> {
    match kind {
        Kind::String => string(w, s, t, len),
        Kind::List => list(w, s, t, len),
        Kind::Hash | Kind::Set | Kind::Zset => scanned(w, kind, s, t, len),
        Kind::Stream => stream(w, s, t),
        Kind::None | Kind::Other(_) => Ok(None),
    }
}

fn value(detail: String) -> Found {
    Some((DiffKind::Value, detail))
}

/// One command on each side, replies checked for errors.
enum Pair {
    Ok(Value, Value),
    Changed(String),
}

fn both(w: &mut Worker, s: Loc, scmd: Cmd, t: Loc, tcmd: Cmd) -> Result<Pair, Error> {
    let sreq = [Req {
        node: s.node,
        db: s.db,
        cmd: scmd,
    }];
    let treq = [Req {
        node: t.node,
        db: t.db,
        cmd: tcmd,
    }];
    let (mut sv, mut tv) = w.both(&sreq, &treq)?;
    let (sv, tv) = (
        sv.pop().unwrap_or(Value::Nil),
        tv.pop().unwrap_or(Value::Nil),
    );
    if let Some(e) = key_error(w.sh.src, &w.sh.src.addr, &sv)? {
        return Ok(Pair::Changed(e));
    }
    if let Some(e) = key_error(w.sh.tgt, &w.sh.tgt.addr, &tv)? {
        return Ok(Pair::Changed(e));
    }
    Ok(Pair::Ok(sv, tv))
}

fn changed(e: String) -> Found {
    value(format!("the key changed while being compared ({e})"))
}

fn string(w: &mut Worker, s: Loc, t: Loc, len: i64) -> Result<Found, Error> {
    let chunk = i64::try_from(w.sh.opts.chunk_bytes)
        .unwrap_or(1 << 18)
        .max(1);
    let mut off = 0i64;
    while off < len {
        let end = (off + chunk).min(len) - 1;
        let (a, b) = (off.to_string(), end.to_string());
        let cmd = |k: &[u8]| Cmd::from_args([&b"GETRANGE"[..], k, a.as_bytes(), b.as_bytes()]);
        let (sv, tv) = match both(w, s, cmd(s.key), t, cmd(t.key))? {
            Pair::Ok(x, y) => (x, y),
            Pair::Changed(e) => return Ok(changed(e)),
        };
        let (x, y) = (sv.as_bytes().unwrap_or(&[]), tv.as_bytes().unwrap_or(&[]));
        if x != y {
            let at = x
                .iter()
                .zip(y)
                .position(|(p, q)| p != q)
                .unwrap_or(x.len().min(y.len()));
            return Ok(value(format!(
                "string differs from byte {} (window {off}..={end})",
                off + at as i64
            )));
        }
        off = end + 1;
    }
    Ok(None)
}

fn list(w: &mut Worker, s: Loc, t: Loc, len: i64) -> Result<Found, Error> {
    let chunk = i64::try_from(w.sh.opts.chunk_elements)
        .unwrap_or(1024)
        .max(1);
    let mut off = 0i64;
    while off < len {
        let end = (off + chunk).min(len) - 1;
        let (a, b) = (off.to_string(), end.to_string());
        let cmd = |k: &[u8]| Cmd::from_args([&b"LRANGE"[..], k, a.as_bytes(), b.as_bytes()]);
        let (sv, tv) = match both(w, s, cmd(s.key), t, cmd(t.key))? {
            Pair::Ok(x, y) => (x, y),
            Pair::Changed(e) => return Ok(changed(e)),
        };
        let (x, y) = (sv.as_array().unwrap_or(&[]), tv.as_array().unwrap_or(&[]));
        for i in 0..x.len().max(y.len()) {
            let (p, q) = (x.get(i), y.get(i));
            if p != q {
                let sh = |v: Option<&Value>| {
                    v.and_then(Value::as_bytes)
                        .map_or("(none)".to_string(), show)
                };
                return Ok(value(format!(
                    "list element {}: source {}, target {}",
                    off + i as i64,
                    sh(p),
                    sh(q)
                )));
            }
        }
        off = end + 1;
    }
    Ok(None)
}

/// The `[cursor, [items...]]` reply of a SCAN-family command.
fn scan_reply(v: &Value) -> Option<(Vec<u8>, &[Value])> {
    let a = v.as_array()?;
    let cursor = a.first()?.as_bytes()?.to_vec();
    let items = a.get(1)?.as_array()?;
    Some((cursor, items))
}

fn scanned(w: &mut Worker, kind: &Kind, s: Loc, t: Loc, len: i64) -> Result<Found, Error> {
    let count = w.sh.opts.chunk_elements.to_string();
    let (scan, lookup): (&[u8], &[u8]) = match kind {
        Kind::Hash => (b"HSCAN", b"HMGET"),
        Kind::Set => (b"SSCAN", b"SMISMEMBER"),
        _ => (b"ZSCAN", b"ZMSCORE"),
    };
    let pairs = *kind != Kind::Set;
    let mut cursor = b"0".to_vec();
    // A well-behaved server ends the walk long before this; a broken one must not loop us.
    let max_calls = 1000 + 4 * u64::try_from(len).unwrap_or(0);
    for _ in 0..max_calls {
        let sv = w.src.request(
            s.node,
            s.db,
            Cmd::from_args([scan, s.key, &cursor, b"COUNT", count.as_bytes()]),
        )?;
        if let Some(e) = key_error(w.sh.src, &w.sh.src.addr, &sv)? {
            return Ok(changed(e));
        }
        let Some((next, items)) = scan_reply(&sv) else {
            return Err(w.sh.src.bad_reply(&w.sh.src.addr, "SCAN-family", &sv));
        };
        let step = if pairs { 2 } else { 1 };
        if items.len() % step != 0 {
            return Err(w.sh.src.bad_reply(&w.sh.src.addr, "SCAN-family", &sv));
        }
        if !items.is_empty() {
            let mut cmd = Cmd::from_args([lookup, t.key]);
            for e in items.iter().step_by(step) {
                cmd.arg(e.as_bytes().unwrap_or(&[]));
            }
            let tv = w.tgt.request(t.node, t.db, cmd)?;
            if let Some(e) = key_error(w.sh.tgt, &w.sh.tgt.addr, &tv)? {
                return Ok(changed(e));
            }
            let got = tv.as_array().unwrap_or(&[]);
            if got.len() != items.len() / step {
                return Err(w.sh.tgt.bad_reply(&w.sh.tgt.addr, "lookup", &tv));
            }
            for (i, g) in got.iter().enumerate() {
                let name = items.get(i * step).and_then(Value::as_bytes).unwrap_or(&[]);
                let what = match kind {
                    Kind::Hash => "field",
                    _ => "member",
                };
                match kind {
                    Kind::Set => {
                        if g.as_int() != Some(1) {
                            return Ok(value(format!(
                                "set member {} is not on the target",
                                show(name)
                            )));
                        }
                    }
                    _ => {
                        let sval = items
                            .get(i * 2 + 1)
                            .and_then(Value::as_bytes)
                            .unwrap_or(&[]);
                        let Some(tval) = g.as_bytes() else {
                            return Ok(value(format!(
                                "{} {what} {} is not on the target",
                                kind.name(),
                                show(name)
                            )));
                        };
                        let same = if *kind == Kind::Zset {
                            score_bytes(sval) == score_bytes(tval)
                        } else {
                            sval == tval
                        };
                        if !same {
                            let label = if *kind == Kind::Zset {
                                "score"
                            } else {
                                "value"
                            };
                            return Ok(value(format!(
                                "{} {what} {}: {label} source {}, target {}",
                                kind.name(),
                                show(name),
                                show(sval),
                                show(tval)
                            )));
                        }
                    }
                }
            }
        }
        if next == b"0" {
            return Ok(None);
        }
        cursor = next;
    }
    Err(w.sh.src.bad_reply(
        &w.sh.src.addr,
        "SCAN-family",
        &Value::Simple(b"cursor never returned to 0".to_vec()),
    ))
}

/// The stream id after `id` (`ms-seq` + 1), for exclusive windows that work on servers
/// without the `(` syntax.
fn next_id(id: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(id).ok()?;
    let (ms, seq) = s.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(q) => format!("{ms}-{q}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

fn entry_id(v: &Value) -> Option<&[u8]> {
    v.as_array()?.first()?.as_bytes()
}

fn stream(w: &mut Worker, s: Loc, t: Loc) -> Result<Found, Error> {
    let count = w.sh.opts.chunk_elements.to_string();
    // 1. Entries, window by window.
    let mut start = "-".to_string();
    loop {
        let cmd = |k: &[u8]| {
            Cmd::from_args([
                &b"XRANGE"[..],
                k,
                start.as_bytes(),
                b"+",
                b"COUNT",
                count.as_bytes(),
            ])
        };
        let (sv, tv) = match both(w, s, cmd(s.key), t, cmd(t.key))? {
            Pair::Ok(x, y) => (x, y),
            Pair::Changed(e) => return Ok(changed(e)),
        };
        let (x, y) = (sv.as_array().unwrap_or(&[]), tv.as_array().unwrap_or(&[]));
        for i in 0..x.len().max(y.len()) {
            let (p, q) = (x.get(i), y.get(i));
            if p != q {
                let id = |v: Option<&Value>| {
                    v.and_then(entry_id)
                        .map_or("(none)".to_string(), escape_bytes)
                };
                let detail = if p.and_then(entry_id) == q.and_then(entry_id) {
                    format!("stream entry {}: fields differ", id(p))
                } else {
                    format!(
                        "stream entries differ: source has {}, target has {}",
                        id(p),
                        id(q)
                    )
                };
                return Ok(value(detail));
            }
        }
        match x.last().and_then(entry_id).and_then(next_id) {
            Some(n) if !x.is_empty() => start = n,
            _ => break,
        }
    }
    // 2. Stream metadata.
    let info = |k: &[u8]| Cmd::from_args([&b"XINFO"[..], b"STREAM", k]);
    if let Pair::Ok(sv, tv) = both(w, s, info(s.key), t, info(t.key))? {
        for field in ["last-generated-id", "max-deleted-entry-id", "entries-added"] {
            let (a, b) = (lookup(&sv, field), lookup(&tv, field));
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    return Ok(value(format!(
                        "stream metadata {field}: source {}, target {}",
                        render(a),
                        render(b)
                    )));
                }
            }
        }
    }
    // 3. Groups.
    let groups = |k: &[u8]| Cmd::from_args([&b"XINFO"[..], b"GROUPS", k]);
    let (sv, tv) = match both(w, s, groups(s.key), t, groups(t.key))? {
        Pair::Ok(x, y) => (x, y),
        Pair::Changed(e) => return Ok(changed(e)),
    };
    let sg = group_list(&sv);
    let tg = group_list(&tv);
    for g in &sg {
        let Some(other) = tg.iter().find(|o| o.name == g.name) else {
            return Ok(value(format!(
                "stream group {} is not on the target",
                show(&g.name)
            )));
        };
        for (field, a, b) in [
            (
                "last-delivered-id",
                &g.last_delivered,
                &other.last_delivered,
            ),
            ("pending", &g.pending, &other.pending),
            ("consumers", &g.consumers, &other.consumers),
        ] {
            if a != b {
                return Ok(value(format!(
                    "stream group {} {field}: source {}, target {}",
                    show(&g.name),
                    show(a),
                    show(b)
                )));
            }
        }
    }
    if let Some(g) = tg.iter().find(|o| !sg.iter().any(|g| g.name == o.name)) {
        return Ok(value(format!(
            "stream group {} is only on the target",
            show(&g.name)
        )));
    }
    // 4. Consumers and pending entries of each group.
    for g in &sg {
        let cons = |k: &[u8]| Cmd::from_args([&b"XINFO"[..], b"CONSUMERS", k, &g.name]);
        if let Pair::Ok(sv, tv) = both(w, s, cons(s.key), t, cons(t.key))? {
            let list = |v: &Value| -> Vec<(Vec<u8>, Vec<u8>)> {
                let mut l: Vec<_> = v
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .map(|c| {
                        let f = |n| lookup(c, n).map(render_bytes).unwrap_or_default();
                        (f("name"), f("pending"))
                    })
                    .collect();
                l.sort();
                l
            };
            let (a, b) = (list(&sv), list(&tv));
            if a != b {
                let first = a
                    .iter()
                    .zip(&b)
                    .find(|(x, y)| x != y)
                    .map(|(x, _)| x.0.clone());
                let who = first
                    .or_else(|| a.get(b.len()).or(b.get(a.len())).map(|x| x.0.clone()))
                    .unwrap_or_default();
                return Ok(value(format!(
                    "stream group {} consumers differ (first at consumer {})",
                    show(&g.name),
                    show(&who)
                )));
            }
        }
        let mut start = "-".to_string();
        loop {
            let pend = |k: &[u8]| {
                Cmd::from_args([
                    &b"XPENDING"[..],
                    k,
                    &g.name,
                    start.as_bytes(),
                    b"+",
                    count.as_bytes(),
                ])
            };
            let (sv, tv) = match both(w, s, pend(s.key), t, pend(t.key))? {
                Pair::Ok(x, y) => (x, y),
                Pair::Changed(e) => return Ok(changed(e)),
            };
            let (x, y) = (sv.as_array().unwrap_or(&[]), tv.as_array().unwrap_or(&[]));
            // [id, consumer, idle ms, deliveries]: idle is left out.
            let key = |e: &Value| -> Vec<Vec<u8>> {
                let a = e.as_array().unwrap_or(&[]);
                [a.first(), a.get(1), a.get(3)]
                    .iter()
                    .map(|v| v.map(render_bytes).unwrap_or_default())
                    .collect()
            };
            for i in 0..x.len().max(y.len()) {
                let (p, q) = (x.get(i).map(key), y.get(i).map(key));
                if p != q {
                    let desc = |v: &Option<Vec<Vec<u8>>>| match v {
                        Some(f) => format!(
                            "{} (consumer {}, delivered {})",
                            show(f.first().map_or(&[][..], |x| x)),
                            show(f.get(1).map_or(&[][..], |x| x)),
                            show(f.get(2).map_or(&[][..], |x| x))
                        ),
                        None => "(none)".into(),
                    };
                    return Ok(value(format!(
                        "stream group {} pending entries differ: source {}, target {}",
                        show(&g.name),
                        desc(&p),
                        desc(&q)
                    )));
                }
            }
            match x.last().and_then(entry_id).and_then(next_id) {
                Some(n) if !x.is_empty() => start = n,
                _ => break,
            }
        }
    }
    Ok(None)
}

struct Group {
    name: Vec<u8>,
    consumers: Vec<u8>,
    pending: Vec<u8>,
    last_delivered: Vec<u8>,
}

fn group_list(v: &Value) -> Vec<Group> {
    v.as_array()
        .unwrap_or(&[])
        .iter()
        .map(|g| {
            let f = |n| lookup(g, n).map(render_bytes).unwrap_or_default();
            Group {
                name: f("name"),
                consumers: f("consumers"),
                pending: f("pending"),
                last_delivered: f("last-delivered-id"),
            }
        })
        .collect()
}

/// The value of `field` in a `k1 v1 k2 v2...` reply (RESP2 array or RESP3 map).
fn lookup<'v>(v: &'v Value, field: &str) -> Option<&'v Value> {
    v.to_pairs()?
        .into_iter()
        .find(|(k, _)| k.as_bytes() == Some(field.as_bytes()))
        .map(|(_, v)| v)
}

fn render_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Int(n) => n.to_string().into_bytes(),
        Value::Nil => b"(nil)".to_vec(),
        other => other
            .as_bytes()
            .map_or_else(|| format!("{other:?}").into_bytes(), <[u8]>::to_vec),
    }
}

fn render(v: &Value) -> String {
    show(&render_bytes(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_advance() {
        assert_eq!(next_id(b"5-3").as_deref(), Some("5-4"));
        assert_eq!(next_id(b"5-18446744073709551615").as_deref(), Some("6-0"));
        assert_eq!(next_id(b"x"), None);
        assert_eq!(next_id(b"18446744073709551615-18446744073709551615"), None);
    }
}
