//! Reading the backing redis-server's keyspace for a snapshot: SCAN every non-empty db, then
//! TYPE + PEXPIRETIME and the type's read command for each key, pipelined in batches, grouped
//! by shard. The caller holds the write lock, so the result is a point-in-time copy.

use std::collections::HashSet;
use std::io;

use super::backend::Backend;
use super::proto::Value;
use super::rdbenc::{Consumer, Group, StreamId, StreamVal, Val};

/// One key of the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    /// Database.
    pub db: u32,
    /// Key.
    pub key: Vec<u8>,
    /// Absolute expiry (unix ms), if any.
    pub expire_ms: Option<i64>,
    /// Value.
    pub val: Val,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("backend reply: {what}"))
}

/// The non-empty databases, from `INFO keyspace`.
pub fn nonempty_dbs(be: &mut Backend) -> io::Result<Vec<u32>> {
    let info = be.call(&["INFO", "keyspace"])?;
    let text = info.as_bytes().ok_or_else(|| bad("INFO keyspace"))?;
    let mut dbs: Vec<u32> = String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect();
    dbs.sort_unstable();
    Ok(dbs)
}

/// All keys of the current db.
pub fn scan_keys(be: &mut Backend) -> io::Result<Vec<Vec<u8>>> {
    let mut cursor = b"0".to_vec();
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    loop {
        let r = be.call(&[b"SCAN".as_slice(), &cursor, b"COUNT", b"1000"])?;
        let arr = r.as_array().ok_or_else(|| bad("SCAN"))?;
        let (Some(c), Some(list)) = (
            arr.first().and_then(Value::as_bytes),
            arr.get(1).and_then(Value::as_array),
        ) else {
            return Err(bad("SCAN shape"));
        };
        cursor = c.to_vec();
        for k in list.iter().filter_map(Value::as_bytes) {
            if seen.insert(k.to_vec()) {
                keys.push(k.to_vec());
            }
        }
        if cursor == b"0" {
            return Ok(keys);
        }
    }
}

fn bytes_list(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_bytes().map(<[u8]>::to_vec))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_id(b: &[u8]) -> Option<StreamId> {
    let s = std::str::from_utf8(b).ok()?;
    let (a, c) = s.split_once('-')?;
    Some((a.parse().ok()?, c.parse().ok()?))
}

/// Looks a field up in a flat `[name, value, …]` array.
fn field<'a>(arr: &'a [Value], name: &str) -> Option<&'a Value> {
    arr.chunks(2)
        .find(|p| p.first().and_then(Value::as_bytes) == Some(name.as_bytes()))
        .and_then(|p| p.get(1))
}

fn id_field(arr: &[Value], name: &str) -> StreamId {
    field(arr, name)
        .and_then(Value::as_bytes)
        .and_then(parse_id)
        .unwrap_or((0, 0))
}

/// Builds a stream value from `XRANGE k - +` and `XINFO STREAM k FULL`.
fn stream_val(range: &Value, info: &Value) -> io::Result<StreamVal> {
    let mut s = StreamVal::default();
    for e in range.as_array().unwrap_or(&[]) {
        let Some([id, fv]) = e.as_array().and_then(|a| <&[Value; 2]>::try_from(a).ok()) else {
            return Err(bad("XRANGE entry"));
        };
        let id = id
            .as_bytes()
            .and_then(parse_id)
            .ok_or_else(|| bad("XRANGE id"))?;
        let fv = bytes_list(fv);
        let pairs = fv
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        s.entries.push((id, pairs));
    }
    let info = info.as_array().ok_or_else(|| bad("XINFO STREAM FULL"))?;
    s.last_id = id_field(info, "last-generated-id");
    s.max_deleted = id_field(info, "max-deleted-entry-id");
    s.first_id = id_field(info, "recorded-first-entry-id");
    s.entries_added = field(info, "entries-added")
        .and_then(Value::as_int)
        .unwrap_or(s.entries.len() as i64) as u64;
    for g in field(info, "groups")
        .and_then(Value::as_array)
        .unwrap_or(&[])
    {
        let Some(g) = g.as_array() else { continue };
        let mut grp = Group {
            name: field(g, "name")
                .and_then(Value::as_bytes)
                .unwrap_or_default()
                .to_vec(),
            last_id: id_field(g, "last-delivered-id"),
            entries_read: field(g, "entries-read")
                .and_then(Value::as_int)
                .map(|v| v as u64)
                .unwrap_or(u64::MAX),
            ..Group::default()
        };
        for p in field(g, "pending").and_then(Value::as_array).unwrap_or(&[]) {
            let Some(p) = p.as_array() else { continue };
            let id = p
                .first()
                .and_then(Value::as_bytes)
                .and_then(parse_id)
                .unwrap_or((0, 0));
            let t = p.get(2).and_then(Value::as_int).unwrap_or(0);
            let n = p.get(3).and_then(Value::as_int).unwrap_or(1) as u64;
            grp.pel.push((id, t, n));
        }
        for c in field(g, "consumers")
            .and_then(Value::as_array)
            .unwrap_or(&[])
        {
            let Some(c) = c.as_array() else { continue };
            let seen = field(c, "seen-time").and_then(Value::as_int).unwrap_or(0);
            let mut cons = Consumer {
                name: field(c, "name")
                    .and_then(Value::as_bytes)
                    .unwrap_or_default()
                    .to_vec(),
                seen_time: seen,
                active_time: field(c, "active-time")
                    .and_then(Value::as_int)
                    .unwrap_or(seen),
                pel: Vec::new(),
            };
            for p in field(c, "pending").and_then(Value::as_array).unwrap_or(&[]) {
                if let Some(id) = p
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_bytes)
                    .and_then(parse_id)
                {
                    cons.pel.push(id);
                }
            }
            grp.consumers.push(cons);
        }
        s.groups.push(grp);
    }
    Ok(s)
}

fn parse_score(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Reads `keys` of the current db (`db`) with their values; keys that vanished are skipped.
pub fn read_values(be: &mut Backend, db: u32, keys: &[Vec<u8>]) -> io::Result<Vec<KeyEntry>> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(256) {
        let mut cmds: Vec<Vec<&[u8]>> = Vec::with_capacity(batch.len() * 2);
        for k in batch {
            cmds.push(vec![b"TYPE", k]);
            cmds.push(vec![b"PEXPIRETIME", k]);
        }
        let meta = be.pipeline(&cmds)?;
        let mut reads: Vec<Vec<&[u8]>> = Vec::new();
        let mut kinds = Vec::new();
        for (i, k) in batch.iter().enumerate() {
            let t = meta.get(2 * i).and_then(Value::as_bytes).unwrap_or(b"none");
            let kind: &'static [u8] = match t {
                b"string" => b"string",
                b"list" => b"list",
                b"set" => b"set",
                b"zset" => b"zset",
                b"hash" => b"hash",
                b"stream" => b"stream",
                _ => continue,
            };
            match kind {
                b"string" => reads.push(vec![b"GET", k]),
                b"list" => reads.push(vec![b"LRANGE", k, b"0", b"-1"]),
                b"set" => reads.push(vec![b"SMEMBERS", k]),
                b"zset" => reads.push(vec![b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]),
                b"hash" => reads.push(vec![b"HGETALL", k]),
                _ => {
                    reads.push(vec![b"XRANGE", k, b"-", b"+"]);
                    reads.push(vec![b"XINFO", b"STREAM", k, b"FULL"]);
                }
            }
            let ttl = meta
                .get(2 * i + 1)
                .and_then(Value::as_int)
                .filter(|t| *t >= 0);
            kinds.push((k, kind, ttl));
        }
        let vals = be.pipeline(&reads)?;
        let mut it = vals.into_iter();
        for (k, kind, ttl) in kinds {
            let v = it.next().ok_or_else(|| bad("missing reply"))?;
            let val = match kind {
                b"string" => match v {
                    Value::Bulk(Some(b)) => Val::Str(b),
                    _ => continue, // vanished (expired) between TYPE and GET
                },
                b"list" => Val::List(bytes_list(&v)),
                b"set" => Val::Set(bytes_list(&v)),
                b"zset" => {
                    let flat = bytes_list(&v);
                    Val::ZSet(
                        flat.chunks(2)
                            .filter(|c| c.len() == 2)
                            .map(|c| (c[0].clone(), parse_score(&c[1]).unwrap_or(0.0)))
                            .collect(),
                    )
                }
                b"hash" => {
                    let flat = bytes_list(&v);
                    Val::Hash(
                        flat.chunks(2)
                            .filter(|c| c.len() == 2)
                            .map(|c| (c[0].clone(), c[1].clone()))
                            .collect(),
                    )
                }
                _ => {
                    let info = it.next().ok_or_else(|| bad("missing XINFO reply"))?;
                    if info.is_error() {
                        continue;
                    }
                    Val::Stream(Box::new(stream_val(&v, &info)?))
                }
            };
            out.push(KeyEntry {
                db,
                key: k.clone(),
                expire_ms: ttl,
                val,
            });
        }
    }
    Ok(out)
}

/// The whole keyspace, split by `shard_of`, db by db. Leaves the connection on db 0.
pub fn read_keyspace(
    be: &mut Backend,
    shards: usize,
    shard_of: impl Fn(&[u8]) -> usize,
) -> io::Result<Vec<Vec<KeyEntry>>> {
    let mut per: Vec<Vec<KeyEntry>> = vec![Vec::new(); shards];
    for db in nonempty_dbs(be)? {
        be.call(&[b"SELECT".to_vec(), db.to_string().into_bytes()])?;
        let keys = scan_keys(be)?;
        for e in read_values(be, db, &keys)? {
            let s = shard_of(&e.key);
            if let Some(v) = per.get_mut(s) {
                v.push(e);
            }
        }
    }
    be.call(&["SELECT", "0"])?;
    Ok(per)
}
