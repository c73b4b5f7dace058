//! A comparable model of a whole keyspace, built either from a recording's `manifest.json`
//! (format in `../shared/testdata/dragonfly-v1.40.1/README.md`) or from a live redis-server
//! (SCAN, TYPE, PEXPIRETIME and each type's read commands), and the comparison of the two as a
//! list of (db, key, what differs).

use super::redis::{Conn, Reply};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A stream entry's fields.
pub type Fields = BTreeMap<Vec<u8>, Vec<u8>>;

/// A key's value, as far as the manifest describes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// Members in rank order with their exact scores.
    Zset(Vec<(Vec<u8>, f64)>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Stream {
        entries: Vec<(String, Fields)>,
        groups: Vec<Group>,
    },
    /// A type a plain Redis cannot hold (JSON, bloom filter …): the manifest's type name.
    Unholdable(String),
}

/// The consumer-group fields that must match. `entries-read` and `lag` are derived by each
/// server and are deliberately not compared (testdata README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: Vec<u8>,
    pub consumers: i64,
    pub pending: i64,
    pub last_delivered_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// Absolute expiry in unix ms, -1 without TTL.
    pub pexpiretime: i64,
    pub value: Value,
}

/// (db, key) → state.
pub type Keyspace = BTreeMap<(u32, Vec<u8>), KeyState>;

/// The types plain Redis holds; anything else in a manifest is "unholdable".
const HOLDABLE: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

/// Standard base64 (with padding) to bytes.
pub fn b64(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return Err(format!("bad base64 {s:?}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Decodes the manifest's `enc()` form: a string, or `{"b64": …}`.
fn enc(v: &serde_json::Value) -> Result<Vec<u8>, String> {
    match v {
        serde_json::Value::String(s) => Ok(s.as_bytes().to_vec()),
        serde_json::Value::Object(o) => match o.get("b64") {
            Some(serde_json::Value::String(s)) => b64(s),
            _ => Err(format!("bad encoded bytes {v}")),
        },
        _ => Err(format!("bad encoded bytes {v}")),
    }
}

/// Decodes a key or field name stored as `json.dumps(enc(x))`.
fn enc_json(s: &str) -> Result<Vec<u8>, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("{s:?}: {e}"))?;
    enc(&v)
}

fn list(v: &serde_json::Value) -> Result<&Vec<serde_json::Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected an array, got {v}"))
}

fn field_map(v: &serde_json::Value) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("expected an object, got {v}"))?;
    o.iter().map(|(f, x)| Ok((enc_json(f)?, enc(x)?))).collect()
}

fn parse_score(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|e| format!("bad score {s:?}: {e}"))
}

/// Loads a manifest file.
pub fn load_manifest(path: &Path) -> Result<Keyspace, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dbs = root.as_object().ok_or("manifest root is not an object")?;
    let mut out = Keyspace::new();
    for (db, keys) in dbs {
        let db: u32 = db.parse().map_err(|_| format!("bad db {db:?}"))?;
        let keys = keys.as_object().ok_or("db is not an object")?;
        for (k, st) in keys {
            let key = enc_json(k)?;
            let ctx = |e: String| format!("db {db} key {k}: {e}");
            let ty = st["type"].as_str().ok_or_else(|| ctx("no type".into()))?;
            let pexpiretime = st["pexpiretime"]
                .as_i64()
                .ok_or_else(|| ctx("no pexpiretime".into()))?;
            let v = &st["value"];
            let value = match ty {
                "string" => Value::String(enc(v).map_err(ctx)?),
                "list" => Value::List(
                    list(v)
                        .map_err(ctx)?
                        .iter()
                        .map(enc)
                        .collect::<Result<_, _>>()
                        .map_err(ctx)?,
                ),
                "set" => Value::Set(
                    list(v)
                        .map_err(ctx)?
                        .iter()
                        .map(enc)
                        .collect::<Result<_, _>>()
                        .map_err(ctx)?,
                ),
                "zset" => Value::Zset(
                    list(v)
                        .map_err(ctx)?
                        .iter()
                        .map(|p| {
                            let m = enc(&p[0])?;
                            let s = p[1].as_str().ok_or("score is not a string")?;
                            Ok((m, parse_score(s)?))
                        })
                        .collect::<Result<_, String>>()
                        .map_err(ctx)?,
                ),
                "hash" => Value::Hash(field_map(v).map_err(ctx)?),
                "stream" => {
                    let entries = list(&v["entries"])
                        .map_err(ctx)?
                        .iter()
                        .map(|e| {
                            let id = e[0].as_str().ok_or("entry id is not a string")?.to_string();
                            Ok((id, field_map(&e[1])?))
                        })
                        .collect::<Result<_, String>>()
                        .map_err(ctx)?;
                    let groups = list(&v["groups"])
                        .map_err(ctx)?
                        .iter()
                        .map(|g| {
                            Ok(Group {
                                name: g["name"].as_str().ok_or("group name")?.as_bytes().to_vec(),
                                consumers: g["consumers"].as_i64().ok_or("group consumers")?,
                                pending: g["pending"].as_i64().ok_or("group pending")?,
                                last_delivered_id: g["last-delivered-id"]
                                    .as_str()
                                    .ok_or("group last-delivered-id")?
                                    .to_string(),
                            })
                        })
                        .collect::<Result<_, String>>()
                        .map_err(ctx)?;
                    Value::Stream { entries, groups }
                }
                other => Value::Unholdable(other.to_string()),
            };
            out.insert((db, key), KeyState { pexpiretime, value });
        }
    }
    Ok(out)
}

/// Reads a reply that is a flat [k1, v1, k2, v2 …] array (HGETALL, XRANGE fields, XINFO).
fn pairs(r: &Reply) -> Vec<(Vec<u8>, Reply)> {
    r.array()
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].bytes().unwrap_or_default().to_vec(), c[1].clone()))
        .collect()
}

fn bulk_list(r: &Reply) -> Vec<Vec<u8>> {
    r.array()
        .iter()
        .map(|x| x.bytes().unwrap_or_default().to_vec())
        .collect()
}

/// Dumps every database (0..16) of a live Redis.
pub fn dump_redis(conn: &mut Conn) -> Result<Keyspace, String> {
    let mut out = Keyspace::new();
    for db in 0..16u32 {
        let sel = conn.cmd(&[b"SELECT", db.to_string().as_bytes()]);
        if let Reply::Error(e) = sel {
            return Err(format!("SELECT {db}: {e}"));
        }
        let mut cursor = b"0".to_vec();
        loop {
            let r = conn.cmd(&[b"SCAN", &cursor, b"COUNT", b"1000"]);
            let a = r.array();
            if a.len() != 2 {
                return Err(format!("db {db}: bad SCAN reply {r:?}"));
            }
            cursor = a[0].bytes().unwrap_or(b"0").to_vec();
            for key in bulk_list(&a[1]) {
                let st = read_key(conn, &key).map_err(|e| format!("db {db} key {key:?}: {e}"))?;
                out.insert((db, key), st);
            }
            if cursor == b"0" {
                break;
            }
        }
    }
    Ok(out)
}

fn read_key(conn: &mut Conn, key: &[u8]) -> Result<KeyState, String> {
    let ty = conn.cmd(&[b"TYPE", key]).text();
    let pexpiretime = conn
        .cmd(&[b"PEXPIRETIME", key])
        .int()
        .ok_or("PEXPIRETIME")?;
    let value = match ty.as_str() {
        "string" => Value::String(
            conn.cmd(&[b"GET", key])
                .bytes()
                .unwrap_or_default()
                .to_vec(),
        ),
        "list" => Value::List(bulk_list(&conn.cmd(&[b"LRANGE", key, b"0", b"-1"]))),
        "set" => Value::Set(
            bulk_list(&conn.cmd(&[b"SMEMBERS", key]))
                .into_iter()
                .collect(),
        ),
        "zset" => {
            let r = conn.cmd(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]);
            let mut v = Vec::new();
            for (m, s) in pairs(&r) {
                v.push((m, parse_score(&s.text())?));
            }
            Value::Zset(v)
        }
        "hash" => Value::Hash(
            pairs(&conn.cmd(&[b"HGETALL", key]))
                .into_iter()
                .map(|(f, v)| (f, v.bytes().unwrap_or_default().to_vec()))
                .collect(),
        ),
        "stream" => {
            let r = conn.cmd(&[b"XRANGE", key, b"-", b"+"]);
            let entries = r
                .array()
                .iter()
                .map(|e| {
                    let a = e.array();
                    let id = a.first().map(|x| x.text()).unwrap_or_default();
                    let fields = a
                        .get(1)
                        .map(|f| {
                            pairs(f)
                                .into_iter()
                                .map(|(k, v)| (k, v.bytes().unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    (id, fields)
                })
                .collect();
            let g = conn.cmd(&[b"XINFO", b"GROUPS", key]);
            let groups = g
                .array()
                .iter()
                .map(|gr| {
                    let m: BTreeMap<Vec<u8>, Reply> = pairs(gr).into_iter().collect();
                    let get = |k: &str| m.get(k.as_bytes()).cloned().unwrap_or(Reply::Bulk(None));
                    Group {
                        name: get("name").bytes().unwrap_or_default().to_vec(),
                        consumers: get("consumers").int().unwrap_or(-1),
                        pending: get("pending").int().unwrap_or(-1),
                        last_delivered_id: get("last-delivered-id").text(),
                    }
                })
                .collect();
            Value::Stream { entries, groups }
        }
        other => Value::Unholdable(other.to_string()),
    };
    Ok(KeyState { pexpiretime, value })
}

fn show(k: &[u8]) -> String {
    df2redis_sync::model::escape_bytes(k)
}

/// Describes the first difference between two values, or None when equal.
fn value_diff(want: &Value, got: &Value) -> Option<String> {
    if want == got {
        return None;
    }
    Some(match (want, got) {
        (Value::String(a), Value::String(b)) => format!(
            "string value: manifest {} ({} bytes), redis {} ({} bytes)",
            show(&a[..a.len().min(40)]),
            a.len(),
            show(&b[..b.len().min(40)]),
            b.len()
        ),
        (Value::List(a), Value::List(b)) => {
            let i = a
                .iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            format!(
                "list: manifest {} elements, redis {}, first difference at index {i}",
                a.len(),
                b.len()
            )
        }
        (Value::Set(a), Value::Set(b)) => format!(
            "set: manifest {} members, redis {}; missing {:?}; extra {:?}",
            a.len(),
            b.len(),
            a.difference(b).take(3).map(|m| show(m)).collect::<Vec<_>>(),
            b.difference(a).take(3).map(|m| show(m)).collect::<Vec<_>>()
        ),
        (Value::Zset(a), Value::Zset(b)) => {
            let i = a
                .iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            format!(
                "zset: manifest {} members, redis {}; first difference at rank {i}: {:?} vs {:?}",
                a.len(),
                b.len(),
                a.get(i).map(|(m, s)| (show(m), s)),
                b.get(i).map(|(m, s)| (show(m), s))
            )
        }
        (Value::Hash(a), Value::Hash(b)) => {
            let diff: Vec<String> = a
                .iter()
                .filter(|(f, v)| b.get(*f) != Some(v))
                .map(|(f, _)| show(f))
                .chain(b.keys().filter(|f| !a.contains_key(*f)).map(|f| show(f)))
                .take(3)
                .collect();
            format!(
                "hash: manifest {} fields, redis {}; differing fields {diff:?}",
                a.len(),
                b.len()
            )
        }
        (
            Value::Stream {
                entries: ea,
                groups: ga,
            },
            Value::Stream {
                entries: eb,
                groups: gb,
            },
        ) => {
            if ea != eb {
                let i = ea
                    .iter()
                    .zip(eb)
                    .position(|(x, y)| x != y)
                    .unwrap_or(ea.len().min(eb.len()));
                format!(
                    "stream entries: manifest {}, redis {}; first difference at {i}: {:?} vs {:?}",
                    ea.len(),
                    eb.len(),
                    ea.get(i).map(|e| &e.0),
                    eb.get(i).map(|e| &e.0)
                )
            } else {
                format!("stream groups: manifest {ga:?}, redis {gb:?}")
            }
        }
        _ => format!(
            "type: manifest {}, redis {}",
            type_name(want),
            type_name(got)
        ),
    })
}

fn type_name(v: &Value) -> &str {
    match v {
        Value::String(_) => "string",
        Value::List(_) => "list",
        Value::Set(_) => "set",
        Value::Zset(_) => "zset",
        Value::Hash(_) => "hash",
        Value::Stream { .. } => "stream",
        Value::Unholdable(t) => t,
    }
}

/// Compares a manifest with what a Redis holds. TTLs match when within `ttl_tolerance_ms`.
/// `skipped` is the set of (db, key) the rewrite reported as not writable to plain Redis: they
/// must be exactly the manifest's unholdable keys, and absent from Redis.
pub fn compare(
    manifest: &Keyspace,
    redis: &Keyspace,
    skipped: &BTreeSet<(u32, Vec<u8>)>,
    ttl_tolerance_ms: i64,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for ((db, key), want) in manifest {
        let id = format!("db {db} key {}", show(key));
        let got = redis.get(&(*db, key.clone()));
        if let Value::Unholdable(t) = &want.value {
            if !HOLDABLE.contains(&t.as_str()) {
                if got.is_some() {
                    diffs.push(format!(
                        "{id}: type {t} cannot be held by plain Redis but is present"
                    ));
                }
                if !skipped.contains(&(*db, key.clone())) {
                    diffs.push(format!("{id}: type {t} was not reported as skipped"));
                }
                continue;
            }
        }
        let Some(got) = got else {
            diffs.push(format!("{id}: missing in redis"));
            continue;
        };
        let ttl_ok = if want.pexpiretime < 0 || got.pexpiretime < 0 {
            want.pexpiretime == got.pexpiretime
        } else {
            (want.pexpiretime - got.pexpiretime).abs() <= ttl_tolerance_ms
        };
        if !ttl_ok {
            diffs.push(format!(
                "{id}: pexpiretime manifest {}, redis {}",
                want.pexpiretime, got.pexpiretime
            ));
        }
        if let Some(d) = value_diff(&want.value, &got.value) {
            diffs.push(format!("{id}: {d}"));
        }
    }
    for (db, key) in redis.keys() {
        if !manifest.contains_key(&(*db, key.clone())) {
            diffs.push(format!(
                "db {db} key {}: in redis but not in the manifest",
                show(key)
            ));
        }
    }
    for (db, key) in skipped {
        let unholdable = matches!(
            manifest.get(&(*db, key.clone())).map(|s| &s.value),
            Some(Value::Unholdable(_))
        );
        if !unholdable {
            diffs.push(format!(
                "db {db} key {}: reported skipped but the manifest holds it as a plain type",
                show(key)
            ));
        }
    }
    diffs
}
