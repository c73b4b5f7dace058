//! Write commands: run on the backing server, then turned into the journal items Dragonfly
//! would write (§4.6, §4.8 of the protocol document): absolute expiry (`PEXPIREAT`, `SET …
//! PXAT`), per-shard `MSET`/`DEL`, `SPOP` → `SREM`, `SMOVE` → `SREM` + `SADD`, `LMOVE` → pop +
//! push, `*STORE` → `DEL` + `SADD`/`ZADD`, cross-shard `RENAME`/`COPY` → `DEL` + `RESTORE …
//! ABSTTL` with a Dragonfly DUMP blob, `XADD`/`XTRIM` with exact ids, blocking pops as plain
//! pops, one `FLUSHALL`/`FLUSHDB` per shard, `XREADGROUP` by effect (`XGROUP CREATECONSUMER`,
//! `XCLAIM … FORCE JUSTID LASTID`, `XGROUP SETID`), `INCRBYFLOAT`/`HINCRBYFLOAT` computed in
//! double as Dragonfly does. Everything else is journaled as sent, upper-cased.
//!
//! Lua scripts are replicated by effect in Dragonfly; a proxy cannot see the effects, so the
//! emulator journals the final state of the script's declared KEYS (`RESTORE … REPLACE ABSTTL`
//! or `DEL`). The keyspace ends the same; the journal bytes differ from Dragonfly's.

use std::io;
use std::time::Duration;

use super::backend::Backend;
use super::journal::OP_COMMAND;
use super::proto::Value;
use super::rdbenc::{put_str, Compression, FrameOpts, SnapWriter};
use super::server::{CmdSpec, Master};
use super::snapshot;
use super::Ver;

/// The backend connections a write runs on: `main` executes the client's command (its reply
/// goes back to the client, in the client's protocol), `side` (a RESP2 connection, only for
/// RESP3 clients) serves the reads the journaling needs.
pub struct Conns<'a> {
    /// The client's own connection.
    pub main: &'a mut Backend,
    /// A RESP2 connection on the same db, when `main` speaks RESP3.
    pub side: Option<&'a mut Backend>,
}

impl Conns<'_> {
    fn primary(&mut self) -> &mut Backend {
        self.main
    }

    fn aux(&mut self) -> &mut Backend {
        match &mut self.side {
            Some(s) => s,
            None => self.main,
        }
    }
}

/// One journal item to append.
#[derive(Debug, Clone)]
pub struct JItem {
    /// Shard.
    pub shard: usize,
    /// Database.
    pub db: u32,
    /// Journal opcode.
    pub op: u8,
    /// Command and arguments.
    pub args: Vec<Vec<u8>>,
    /// Keys touched (for snapshot ordering).
    pub keys: Vec<Vec<u8>>,
    /// Draws a transaction id even on one shard (multi-key and global commands).
    pub tx: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn up(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

struct Items<'a> {
    m: &'a Master,
    db: u32,
    v: Vec<JItem>,
}

impl Items<'_> {
    fn push<A: AsRef<[u8]>>(&mut self, key: &[u8], args: &[A], tx: bool) {
        self.v.push(JItem {
            shard: self.m.shard(key),
            db: self.db,
            op: OP_COMMAND,
            args: args.iter().map(|a| a.as_ref().to_vec()).collect(),
            keys: vec![key.to_vec()],
            tx,
        });
    }

    /// `NAME k1 … ` split per shard (each part only with its shard's keys / pairs).
    fn per_shard(&mut self, name: &[u8], keys_and_vals: &[Vec<u8>], stride: usize) {
        // (shard, command args, keys)
        type Part = (usize, Vec<Vec<u8>>, Vec<Vec<u8>>);
        let mut shards: Vec<Part> = Vec::new();
        for group in keys_and_vals.chunks(stride) {
            let s = self.m.shard(&group[0]);
            let idx = match shards.iter().position(|x| x.0 == s) {
                Some(i) => i,
                None => {
                    shards.push((s, vec![name.to_vec()], Vec::new()));
                    shards.len() - 1
                }
            };
            shards[idx].1.extend(group.iter().cloned());
            shards[idx].2.push(group[0].clone());
        }
        let tx = shards.len() > 1;
        for (s, args, keys) in shards {
            self.v.push(JItem {
                shard: s,
                db: self.db,
                op: OP_COMMAND,
                args,
                keys,
                tx,
            });
        }
    }
}

/// Commands that block; the emulator polls their non-blocking form.
pub fn is_blocking(name: &[u8]) -> bool {
    matches!(
        name,
        b"BLPOP"
            | b"BRPOP"
            | b"BLMOVE"
            | b"BRPOPLPUSH"
            | b"BLMPOP"
            | b"BZPOPMIN"
            | b"BZPOPMAX"
            | b"BZMPOP"
    )
}

/// A float argument or stored value as Dragonfly reads it (`inf`/`nan` rejected later by the
/// finiteness check of the result).
fn parse_f64(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// A double in Dragonfly's reply/storage form (`src/facade/reply_builder.cc`, FormatDouble via
/// double-conversion's shortest mode): the fewest digits that read back as the same value, in
/// plain decimal when the decimal exponent is within -6..=20, else `1e-7` / `1.5e+21`.
pub fn format_double(x: f64) -> String {
    let sci = format!("{x:e}");
    let exp: i32 = sci
        .rsplit_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if x == 0.0 {
        "0".to_string()
    } else if (-6..=20).contains(&exp) {
        format!("{x}")
    } else if exp > 0 {
        sci.replacen('e', "e+", 1)
    } else {
        sci
    }
}

/// Commands without the `write` flag that still change data (scripts, SCRIPT LOAD).
pub fn is_special(name: &[u8]) -> bool {
    matches!(name, b"EVAL" | b"EVALSHA" | b"FCALL" | b"SCRIPT")
}

/// The timeout of a blocking command (`None` = forever).
pub fn blocking_timeout(name: &[u8], args: &[Vec<u8>]) -> Option<Duration> {
    let t = match name {
        b"BLMPOP" | b"BZMPOP" => args.get(1),
        _ => args.last(),
    };
    let secs: f64 = t
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    if secs <= 0.0 {
        None
    } else {
        Some(Duration::from_secs_f64(secs.min(1e9)))
    }
}

/// Runs the non-blocking form of a blocking pop once: `None` when nothing was popped.
pub fn execute_blocking_once(
    m: &Master,
    cx: &mut Conns<'_>,
    db: u32,
    name: &[u8],
    args: &[Vec<u8>],
) -> io::Result<Option<(Value, Vec<JItem>)>> {
    let mut it = Items {
        m,
        db,
        v: Vec::new(),
    };
    match name {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" => {
            let pop: &[u8] = match name {
                b"BLPOP" => b"LPOP",
                b"BRPOP" => b"RPOP",
                b"BZPOPMIN" => b"ZPOPMIN",
                _ => b"ZPOPMAX",
            };
            let keys = args.get(1..args.len().saturating_sub(1)).unwrap_or(&[]);
            for k in keys {
                let r = cx.primary().call(&[pop, k.as_slice()])?;
                if r.is_error() {
                    return Ok(Some((r, Vec::new())));
                }
                let got: Vec<Value> = match r {
                    Value::Bulk(Some(b)) => vec![Value::bulk(b)],
                    Value::Array(Some(a)) if !a.is_empty() => a,
                    _ => continue,
                };
                it.push(k, &[pop, k.as_slice()], false);
                let mut reply = vec![Value::bulk(k.clone())];
                reply.extend(got);
                return Ok(Some((Value::Array(Some(reply)), it.v)));
            }
            Ok(None)
        }
        b"BLMOVE" | b"BRPOPLPUSH" => {
            let nb: Vec<Vec<u8>> = if name == b"BLMOVE" {
                let mut v = vec![b"LMOVE".to_vec()];
                v.extend(args.get(1..5).unwrap_or(&[]).iter().cloned());
                v
            } else {
                let mut v = vec![b"RPOPLPUSH".to_vec()];
                v.extend(args.get(1..3).unwrap_or(&[]).iter().cloned());
                v
            };
            let (r, items) = lmove(m, cx, db, &nb)?;
            if matches!(r, Value::Bulk(None) | Value::Null) {
                Ok(None)
            } else {
                Ok(Some((r, items)))
            }
        }
        b"BLMPOP" | b"BZMPOP" => {
            let mut nb = vec![if name == b"BLMPOP" {
                b"LMPOP".to_vec()
            } else {
                b"ZMPOP".to_vec()
            }];
            nb.extend(args.get(2..).unwrap_or(&[]).iter().cloned());
            let (r, items) = mpop(m, cx, db, &nb)?;
            if matches!(r, Value::Array(None) | Value::Null) {
                Ok(None)
            } else {
                Ok(Some((r, items)))
            }
        }
        _ => Ok(Some((Value::err("not a blocking command"), Vec::new()))),
    }
}

fn lmove(
    m: &Master,
    cx: &mut Conns<'_>,
    db: u32,
    args: &[Vec<u8>],
) -> io::Result<(Value, Vec<JItem>)> {
    let mut it = Items {
        m,
        db,
        v: Vec::new(),
    };
    let r = cx.primary().call(args)?;
    if let (Some(elem), Some(s), Some(d)) = (r.as_bytes(), args.get(1), args.get(2)) {
        let (from, to) = if up(&args[0]) == b"RPOPLPUSH" {
            (b"RIGHT".to_vec(), b"LEFT".to_vec())
        } else {
            (
                args.get(3).map(|a| up(a)).unwrap_or_default(),
                args.get(4).map(|a| up(a)).unwrap_or_default(),
            )
        };
        let pop: &[u8] = if from == b"LEFT" { b"LPOP" } else { b"RPOP" };
        let push: &[u8] = if to == b"LEFT" { b"LPUSH" } else { b"RPUSH" };
        it.push(s, &[pop, s.as_slice()], true);
        it.push(d, &[push, d.as_slice(), elem], true);
    }
    Ok((r, it.v))
}

fn mpop(
    m: &Master,
    cx: &mut Conns<'_>,
    db: u32,
    args: &[Vec<u8>],
) -> io::Result<(Value, Vec<JItem>)> {
    let mut it = Items {
        m,
        db,
        v: Vec::new(),
    };
    let r = cx.primary().call(args)?;
    if let Some([k, elems]) = r.as_array().and_then(|a| <&[Value; 2]>::try_from(a).ok()) {
        let (Some(k), Some(elems)) = (k.as_bytes(), elems.as_array()) else {
            return Ok((r, it.v));
        };
        let is_list = up(&args[0]) == b"LMPOP";
        let dir = args
            .iter()
            .skip(2)
            .map(|a| up(a))
            .find(|a| matches!(a.as_slice(), b"LEFT" | b"RIGHT" | b"MIN" | b"MAX"));
        let pop: &[u8] = match dir.as_deref() {
            Some(b"LEFT") => b"LPOP",
            Some(b"RIGHT") => b"RPOP",
            Some(b"MAX") => b"ZPOPMAX",
            _ => b"ZPOPMIN",
        };
        let n = elems.len().to_string().into_bytes();
        if is_list && elems.len() == 1 {
            it.push(k, &[pop, k], false);
        } else {
            it.push(k, &[pop, k, &n], false);
        }
    }
    Ok((r, it.v))
}

/// Redis's CRC-64 (Jones, reflected), as used by DUMP payloads.
pub fn crc64(data: &[u8]) -> u64 {
    let mut crc: u64 = 0;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x95AC_9329_AC4B_C9B5
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A Dragonfly DUMP blob of a value: type byte, value (§3.6), u16le RDB version 9, CRC-64.
pub fn dump_payload(val: &super::rdbenc::Val) -> Vec<u8> {
    let mut w = SnapWriter::new(FrameOpts {
        compression: Compression::None,
        tagged: false,
        chunk_size: 0,
        flush_size: usize::MAX,
    });
    w.entry(0, b"k", None, val);
    w.end_db();
    let bytes = w.take();
    // Strip the SELECTDB (FE 00) and the key `str("k")` (01 6B) that follow the type byte.
    let mut key = Vec::new();
    put_str(&mut key, b"k");
    let mut out = Vec::with_capacity(bytes.len() + 10);
    if let Some(body) = bytes.get(2..) {
        if let Some((&t, rest)) = body.split_first() {
            out.push(t);
            out.extend_from_slice(rest.get(key.len()..).unwrap_or(&[]));
        }
    }
    out.extend_from_slice(&9u16.to_le_bytes());
    let crc = crc64(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Journals the current state of `key` as `RESTORE key <abs ms|0> <dump> REPLACE ABSTTL`, or
/// `DEL key` when it does not exist.
fn restore_item(it: &mut Items<'_>, be: &mut Backend, key: &[u8], tx: bool) -> io::Result<()> {
    let vals = snapshot::read_values(be, it.db, &[key.to_vec()])?;
    match vals.into_iter().next() {
        Some(e) => {
            let ttl = e.expire_ms.unwrap_or(0).to_string().into_bytes();
            let dump = dump_payload(&e.val);
            it.push(
                key,
                &[
                    b"RESTORE".as_slice(),
                    key,
                    &ttl,
                    &dump,
                    b"REPLACE",
                    b"ABSTTL",
                ],
                tx,
            );
        }
        None => it.push(key, &[b"DEL".as_slice(), key], tx),
    }
    Ok(())
}

/// Parses an expiry option pair into absolute ms.
fn abs_ms(opt: &[u8], val: &[u8]) -> Option<i64> {
    let v = int(val)?;
    match opt {
        b"EX" => Some(now_ms() + v.checked_mul(1000)?),
        b"PX" => Some(now_ms() + v),
        b"EXAT" => v.checked_mul(1000),
        b"PXAT" => Some(v),
        _ => None,
    }
}

/// Executes one write (write lock held) and returns the client reply and the journal items.
pub fn execute(
    m: &Master,
    cx: &mut Conns<'_>,
    db: u32,
    name: &[u8],
    args: &[Vec<u8>],
    spec: &CmdSpec,
) -> io::Result<(Value, Vec<JItem>)> {
    let mut it = Items {
        m,
        db,
        v: Vec::new(),
    };
    let a = |i: usize| args.get(i).map(Vec::as_slice).unwrap_or(&[]);
    match name {
        b"SET" if args.len() >= 3 => {
            let (k, v) = (a(1), a(2));
            let mut expire = None;
            let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
            let mut i = 3;
            while i < args.len() {
                let o = up(a(i));
                match o.as_slice() {
                    b"NX" => nx = true,
                    b"XX" => xx = true,
                    b"GET" => get = true,
                    b"KEEPTTL" => keepttl = true,
                    b"EX" | b"PX" | b"EXAT" | b"PXAT" if i + 1 < args.len() => {
                        match abs_ms(&o, a(i + 1)) {
                            Some(t) if int(a(i + 1)).is_some_and(|x| x > 0) => expire = Some(t),
                            _ => return Ok((cx.primary().call(args)?, Vec::new())),
                        }
                        i += 1;
                    }
                    _ => return Ok((cx.primary().call(args)?, Vec::new())),
                }
                i += 1;
            }
            let mut cmd: Vec<Vec<u8>> = vec![b"SET".to_vec(), k.to_vec(), v.to_vec()];
            if let Some(t) = expire {
                cmd.push(b"PXAT".to_vec());
                cmd.push(t.to_string().into_bytes());
            }
            if nx {
                cmd.push(b"NX".to_vec());
            }
            if xx {
                cmd.push(b"XX".to_vec());
            }
            if get {
                cmd.push(b"GET".to_vec());
            }
            if keepttl {
                cmd.push(b"KEEPTTL".to_vec());
            }
            let r = cx.primary().call(&cmd)?;
            let done = match (&r, get) {
                (Value::Error(_), _) => false,
                (_, false) => r.as_bytes() == Some(b"OK"),
                (Value::Bulk(None) | Value::Null, true) => !xx,
                (_, true) => !nx,
            };
            if done {
                if expire.is_some_and(|t| t <= now_ms()) {
                    it.push(k, &[b"DEL".as_slice(), k], false);
                } else {
                    let mut j: Vec<Vec<u8>> = vec![b"SET".to_vec(), k.to_vec(), v.to_vec()];
                    if let Some(t) = expire {
                        j.push(b"PXAT".to_vec());
                        j.push(t.to_string().into_bytes());
                    }
                    if keepttl {
                        j.push(b"KEEPTTL".to_vec());
                    }
                    it.push(k, &j, false);
                }
            }
            Ok((r, it.v))
        }
        b"INCRBYFLOAT" | b"HINCRBYFLOAT"
            if args.len() == if name == b"HINCRBYFLOAT" { 4 } else { 3 } =>
        {
            // Dragonfly adds in double and stores the shortest text that reads back as the
            // same double (0.1 + 0.2 = 0.30000000000000004); Redis adds in long double and
            // would store 0.3. Computed here (the write lock makes GET + SET atomic for every
            // emulator client) so the backing keyspace holds what Dragonfly holds.
            let hash = name == b"HINCRBYFLOAT";
            let k = a(1);
            let incr = a(args.len() - 1);
            let cur = if hash {
                cx.aux().call(&[b"HGET".as_slice(), k, a(2)])?
            } else {
                cx.aux().call(&[b"GET".as_slice(), k])?
            };
            let base = match &cur {
                Value::Error(_) => return Ok((cur, Vec::new())),
                Value::Bulk(Some(b)) => match parse_f64(b) {
                    Some(x) => x,
                    None => return Ok((Value::err("value is not a valid float"), Vec::new())),
                },
                _ => 0.0,
            };
            let Some(inc) = parse_f64(incr) else {
                return Ok((Value::err("value is not a valid float"), Vec::new()));
            };
            let sum = base + inc;
            if !sum.is_finite() {
                let e = "increment would produce NaN or Infinity";
                return Ok((Value::err(e), Vec::new()));
            }
            let text = format_double(sum).into_bytes();
            let r = if hash {
                cx.primary().call(&[b"HSET".as_slice(), k, a(2), &text])?
            } else {
                cx.primary()
                    .call(&[b"SET".as_slice(), k, &text, b"KEEPTTL"])?
            };
            if r.is_error() {
                return Ok((r, Vec::new()));
            }
            let mut j: Vec<Vec<u8>> = args.to_vec();
            j[0] = name.to_vec();
            it.push(k, &j, false);
            Ok((Value::bulk(text), it.v))
        }
        b"XREADGROUP" if args.len() >= 7 => {
            // Dragonfly journals a group read by its effect (recorded in x1): `XGROUP
            // CREATECONSUMER`, one `XCLAIM key group consumer 0 id TIME ms RETRYCOUNT 1 FORCE
            // JUSTID LASTID id` per delivered entry (none with NOACK), then `XGROUP SETID key
            // group last-id` (the recording adds ENTRIESREAD, which is derived and left out).
            let r = cx.primary().call(args)?;
            let (group, consumer) = (a(2), a(3));
            let noack = args.iter().any(|x| up(x) == b"NOACK");
            let mut pairs: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
            let mut add = |k: &Value, entries: &Value| {
                let (Some(k), Some(es)) = (k.as_bytes(), entries.as_array()) else {
                    return;
                };
                let ids = es
                    .iter()
                    .filter_map(|e| e.as_array()?.first()?.as_bytes().map(<[u8]>::to_vec))
                    .collect();
                pairs.push((k.to_vec(), ids));
            };
            match &r {
                Value::Map(m) => m.iter().for_each(|(k, v)| add(k, v)),
                v => {
                    for s in v.as_array().unwrap_or(&[]) {
                        if let Some([k, e]) = s.as_array() {
                            add(k, e);
                        }
                    }
                }
            }
            let now = now_ms().to_string().into_bytes();
            for (k, ids) in pairs {
                let Some(last) = ids.last().cloned() else {
                    continue;
                };
                it.push(
                    &k,
                    &[b"XGROUP".as_slice(), b"CREATECONSUMER", &k, group, consumer],
                    false,
                );
                if !noack {
                    for id in &ids {
                        let claim: [&[u8]; 14] = [
                            b"XCLAIM",
                            &k,
                            group,
                            consumer,
                            b"0",
                            id,
                            b"TIME",
                            &now,
                            b"RETRYCOUNT",
                            b"1",
                            b"FORCE",
                            b"JUSTID",
                            b"LASTID",
                            id,
                        ];
                        it.push(&k, &claim, false);
                    }
                }
                it.push(
                    &k,
                    &[b"XGROUP".as_slice(), b"SETID", &k, group, &last],
                    false,
                );
            }
            Ok((r, it.v))
        }
        b"SETEX" | b"PSETEX" if args.len() == 4 => {
            let opt: &[u8] = if name == b"SETEX" { b"EX" } else { b"PX" };
            match abs_ms(opt, a(2)) {
                Some(t) if int(a(2)).is_some_and(|x| x > 0) => {
                    let ts = t.to_string().into_bytes();
                    let cmd = [b"SET".as_slice(), a(1), a(3), b"PXAT", &ts];
                    let r = cx.primary().call(&cmd)?;
                    if !r.is_error() {
                        it.push(a(1), &cmd, false);
                    }
                    Ok((r, it.v))
                }
                _ => Ok((cx.primary().call(args)?, Vec::new())),
            }
        }
        b"GETEX" if args.len() >= 2 => {
            let k = a(1);
            let o = up(a(2));
            let r;
            match o.as_slice() {
                b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                    let Some(t) = abs_ms(&o, a(3)) else {
                        return Ok((cx.primary().call(args)?, Vec::new()));
                    };
                    let ts = t.to_string().into_bytes();
                    r = cx.primary().call(&[b"GETEX".as_slice(), k, b"PXAT", &ts])?;
                    if matches!(r, Value::Bulk(Some(_))) {
                        if t <= now_ms() {
                            it.push(k, &[b"DEL".as_slice(), k], false);
                        } else {
                            it.push(k, &[b"PEXPIREAT".as_slice(), k, &ts], false);
                        }
                    }
                }
                b"PERSIST" => {
                    r = cx.primary().call(args)?;
                    if matches!(r, Value::Bulk(Some(_))) {
                        it.push(k, &[b"PERSIST".as_slice(), k], false);
                    }
                }
                _ => r = cx.primary().call(args)?,
            }
            Ok((r, it.v))
        }
        b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT" | b"PEXPIREAT" if args.len() >= 3 => {
            let k = a(1);
            let opt: &[u8] = match name {
                b"EXPIRE" => b"EX",
                b"PEXPIRE" => b"PX",
                b"EXPIREAT" => b"EXAT",
                _ => b"PXAT",
            };
            let Some(t) = abs_ms(opt, a(2)) else {
                return Ok((cx.primary().call(args)?, Vec::new()));
            };
            let ts = t.to_string().into_bytes();
            let mut cmd = vec![b"PEXPIREAT".to_vec(), k.to_vec(), ts.clone()];
            cmd.extend(args[3..].iter().cloned());
            let r = cx.primary().call(&cmd)?;
            if r.as_int() == Some(1) {
                if t <= now_ms() {
                    it.push(k, &[b"DEL".as_slice(), k], false);
                } else {
                    it.push(k, &[b"PEXPIREAT".as_slice(), k, &ts], false);
                }
            }
            Ok((r, it.v))
        }
        b"SPOP" if args.len() >= 2 => {
            let k = a(1);
            let r = cx.primary().call(args)?;
            let popped: Vec<Vec<u8>> = match &r {
                Value::Bulk(Some(b)) => vec![b.clone()],
                other => other
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|e| e.as_bytes().map(<[u8]>::to_vec))
                    .collect(),
            };
            if !popped.is_empty() {
                if cx.aux().call(&[b"EXISTS".as_slice(), k])?.as_int() == Some(0) {
                    it.push(k, &[b"DEL".as_slice(), k], false);
                } else {
                    let mut j = vec![b"SREM".to_vec(), k.to_vec()];
                    j.extend(popped);
                    it.push(k, &j, false);
                }
            }
            Ok((r, it.v))
        }
        b"SMOVE" if args.len() == 4 => {
            let r = cx.primary().call(args)?;
            if r.as_int() == Some(1) {
                it.push(a(1), &[b"SREM".as_slice(), a(1), a(3)], true);
                it.push(a(2), &[b"SADD".as_slice(), a(2), a(3)], true);
            }
            Ok((r, it.v))
        }
        b"SDIFFSTORE" | b"SINTERSTORE" | b"SUNIONSTORE" if args.len() >= 3 => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let d = a(1);
                let members = cx.aux().call(&[b"SMEMBERS".as_slice(), d])?;
                it.push(d, &[b"DEL".as_slice(), d], true);
                let ms: Vec<&[u8]> = members
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(Value::as_bytes)
                    .collect();
                if !ms.is_empty() {
                    let mut j: Vec<&[u8]> = vec![b"SADD", d];
                    j.extend(ms);
                    it.push(d, &j, true);
                }
            }
            Ok((r, it.v))
        }
        b"ZDIFFSTORE" | b"ZINTERSTORE" | b"ZUNIONSTORE" | b"ZRANGESTORE" if args.len() >= 3 => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let d = a(1);
                let flat = cx
                    .aux()
                    .call(&[b"ZRANGE".as_slice(), d, b"0", b"-1", b"WITHSCORES"])?;
                it.push(d, &[b"DEL".as_slice(), d], true);
                let f: Vec<&[u8]> = flat
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(Value::as_bytes)
                    .collect();
                if !f.is_empty() {
                    let mut j: Vec<&[u8]> = vec![b"ZADD", d];
                    for p in f.chunks(2) {
                        if let [mem, score] = p {
                            j.push(score);
                            j.push(mem);
                        }
                    }
                    it.push(d, &j, true);
                }
            }
            Ok((r, it.v))
        }
        b"LMOVE" | b"RPOPLPUSH" => lmove(m, cx, db, args),
        b"LMPOP" | b"ZMPOP" => mpop(m, cx, db, args),
        b"BITOP" | b"PFMERGE" if args.len() >= 3 => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let d = if name == b"BITOP" { a(2) } else { a(1) };
                match cx.aux().call(&[b"GET".as_slice(), d])? {
                    Value::Bulk(Some(v)) => it.push(d, &[b"SET".as_slice(), d, &v], true),
                    _ => it.push(d, &[b"DEL".as_slice(), d], true),
                }
            }
            Ok((r, it.v))
        }
        b"RENAME" | b"RENAMENX" | b"COPY" if args.len() >= 3 => {
            let (s, d) = (a(1), a(2));
            let r = cx.primary().call(args)?;
            let ok = r.as_bytes() == Some(b"OK") || r.as_int() == Some(1);
            let other_db = name == b"COPY" && args.iter().any(|x| up(x) == b"DB");
            if ok && !other_db {
                if m.shard(s) == m.shard(d) {
                    let mut j = vec![up(a(0))];
                    j.extend(args[1..].iter().cloned());
                    it.push(s, &j, false);
                } else {
                    if name != b"COPY" {
                        it.push(s, &[b"DEL".as_slice(), s], true);
                    }
                    restore_item(&mut it, cx.aux(), d, true)?;
                }
            } else if ok {
                let mut j = vec![up(a(0))];
                j.extend(args[1..].iter().cloned());
                it.push(s, &j, true);
            }
            Ok((r, it.v))
        }
        b"XADD" if args.len() >= 5 => {
            let k = a(1);
            let mut i = 2;
            let mut nomk = false;
            let mut trim = false;
            loop {
                let o = up(a(i));
                match o.as_slice() {
                    b"NOMKSTREAM" => {
                        nomk = true;
                        i += 1;
                    }
                    b"MAXLEN" | b"MINID" => {
                        trim = true;
                        i += 1;
                        if matches!(a(i), b"=" | b"~") {
                            i += 1;
                        }
                        i += 1;
                        if up(a(i)) == b"LIMIT" {
                            i += 2;
                        }
                    }
                    _ => break,
                }
                if i >= args.len() {
                    break;
                }
            }
            let r = cx.primary().call(args)?;
            if let Value::Bulk(Some(id)) = &r {
                let mut j: Vec<Vec<u8>> = vec![b"XADD".to_vec(), k.to_vec()];
                if nomk {
                    j.push(b"NOMKSTREAM".to_vec());
                }
                if trim {
                    j.extend(trim_args(cx.aux(), k)?);
                }
                j.push(id.clone());
                j.extend(args.get(i + 1..).unwrap_or(&[]).iter().cloned());
                it.push(k, &j, false);
            }
            Ok((r, it.v))
        }
        b"XTRIM" if args.len() >= 4 => {
            let k = a(1);
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let mut j: Vec<Vec<u8>> = vec![b"XTRIM".to_vec(), k.to_vec()];
                j.extend(trim_args(cx.aux(), k)?);
                it.push(k, &j, false);
            }
            Ok((r, it.v))
        }
        b"MSET" | b"MSETNX" if args.len() >= 3 && args.len() % 2 == 1 => {
            let r = cx.primary().call(args)?;
            if r.as_bytes() == Some(b"OK") || r.as_int() == Some(1) {
                it.per_shard(b"MSET", &args[1..], 2);
            }
            Ok((r, it.v))
        }
        b"DEL" | b"UNLINK" if args.len() >= 2 => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let jname: &[u8] = if m.cfg.version == Ver::V1_40 {
                    b"DEL"
                } else {
                    name
                };
                it.per_shard(jname, &args[1..], 1);
            }
            Ok((r, it.v))
        }
        b"HDEL" if args.len() >= 3 => {
            let k = a(1);
            let r = cx.primary().call(args)?;
            if r.as_int().is_some_and(|n| n > 0) {
                if cx.aux().call(&[b"EXISTS".as_slice(), k])?.as_int() == Some(0) {
                    it.push(k, &[b"DEL".as_slice(), k], false);
                }
                let mut j = vec![b"HDEL".to_vec()];
                j.extend(args[1..].iter().cloned());
                it.push(k, &j, false);
            }
            Ok((r, it.v))
        }
        b"FLUSHALL" | b"FLUSHDB" => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                for s in 0..m.cfg.shards {
                    it.v.push(JItem {
                        shard: s,
                        db,
                        op: OP_COMMAND,
                        args: vec![name.to_vec()],
                        keys: Vec::new(),
                        tx: true,
                    });
                }
            }
            Ok((r, it.v))
        }
        b"EVAL" | b"EVALSHA" | b"FCALL" if args.len() >= 3 => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let nk = int(a(2)).unwrap_or(0).clamp(0, args.len() as i64) as usize;
                for k in args.iter().skip(3).take(nk) {
                    restore_item(&mut it, cx.aux(), k, false)?;
                }
            }
            Ok((r, it.v))
        }
        b"SCRIPT" => {
            let r = cx.primary().call(args)?;
            if !r.is_error() && args.get(1).is_some_and(|s| up(s) == b"LOAD") {
                let mut j = vec![b"SCRIPT".to_vec(), b"LOAD".to_vec()];
                j.extend(args[2..].iter().cloned());
                it.v.push(JItem {
                    shard: 0,
                    db,
                    op: OP_COMMAND,
                    args: j,
                    keys: Vec::new(),
                    tx: false,
                });
            }
            Ok((r, it.v))
        }
        _ => {
            let r = cx.primary().call(args)?;
            if !r.is_error() {
                let keys = spec.keys(args);
                let mut j = vec![up(a(0))];
                j.extend(args[1..].iter().cloned());
                let shard = keys.first().map(|k| m.shard(k)).unwrap_or(0);
                let multi = keys.iter().any(|k| m.shard(k) != shard);
                it.v.push(JItem {
                    shard,
                    db,
                    op: OP_COMMAND,
                    args: j,
                    keys: keys.iter().map(|k| k.to_vec()).collect(),
                    tx: multi,
                });
            }
            Ok((r, it.v))
        }
    }
}

/// The exact trim Dragonfly journals: `MINID <first id>`, or `MAXLEN 0` for an empty stream.
fn trim_args(be: &mut Backend, k: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let first = be.call(&[b"XRANGE".as_slice(), k, b"-", b"+", b"COUNT", b"1"])?;
    let id = first
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(Value::as_bytes)
        .map(<[u8]>::to_vec);
    Ok(match id {
        Some(id) => vec![b"MINID".to_vec(), id],
        None => vec![b"MAXLEN".to_vec(), b"0".to_vec()],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn doubles_are_formatted_like_dragonfly() {
        use super::format_double;
        // Values from the x1 recording's manifest and Dragonfly's FormatDouble rules.
        assert_eq!(format_double(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_double(1e20), "100000000000000000000");
        assert_eq!(format_double(1e21), "1e+21");
        assert_eq!(format_double(1e-7), "1e-7");
        assert_eq!(format_double(1.5e-6), "0.0000015");
        assert_eq!(format_double(-2.5), "-2.5");
        assert_eq!(format_double(0.0), "0");
        assert_eq!(format_double(3.0), "3");
    }

    use super::*;

    #[test]
    fn crc64_jones_check_value() {
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn dump_of_a_string_matches_the_recorded_layout() {
        // Recorded: RESTORE w:renamed 0 <00 02 "v2" 09 00 + CRC>.
        let d = dump_payload(&super::super::rdbenc::Val::Str(b"v2".to_vec()));
        assert_eq!(&d[..6], b"\x00\x02v2\x09\x00");
        assert_eq!(d.len(), 14);
        assert_eq!(
            u64::from_le_bytes(d[6..14].try_into().unwrap()),
            crc64(&d[..6])
        );
    }
}
