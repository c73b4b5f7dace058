//! Journal commands → target commands (protocol document §4.6–§4.9).
//!
//! Most commands arrive already in a deterministic, Redis-ready form (the master rewrites
//! relative TTLs, pops, moves and stores before journaling, §4.8) and pass through. This module
//! handles the rest: Dragonfly-only tokens (`STICK`, `_MCFLAGS`), Dragonfly-only commands
//! (field/member TTLs, `STICK`, module families), `RESTORE` payloads (decoded and rebuilt
//! with native commands so any Redis ≥ 6.2 accepts them), the global flushes, and unknown
//! commands (error or counted skip by policy).

use crate::model::{Cmd, DbIndex};
use crate::rdb::{decode_dump_payload, KeyMask, Limits, Piece};

use super::value::rewrite_piece;
use super::{Global, Options, RewriteError, Rewritten, Skip, SkipReason, UnknownPolicy};

/// Redis (≥ 6.2) write commands that a Dragonfly journal can carry and that are replayed as
/// they are. Blocking commands are absent on purpose: the master journals their effect
/// (`LPOP`, `ZPOPMIN` …), and a blocking command must never reach the writer connection.
pub(crate) const PASS_THROUGH: &[&str] = &[
    // strings
    "SET",
    "SETNX",
    "MSET",
    "MSETNX",
    "APPEND",
    "SETRANGE",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "DECR",
    "DECRBY",
    "GETSET",
    "GETDEL",
    "SETBIT",
    "BITOP",
    "BITFIELD",
    "PFADD",
    "PFMERGE",
    // keys
    "DEL",
    "UNLINK",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "RENAME",
    "RENAMENX",
    "COPY",
    "MOVE",
    // lists
    "LPUSH",
    "RPUSH",
    "LPUSHX",
    "RPUSHX",
    "LPOP",
    "RPOP",
    "LSET",
    "LTRIM",
    "LINSERT",
    "LREM",
    "LMOVE",
    "RPOPLPUSH",
    "LMPOP",
    // sets
    "SADD",
    "SREM",
    "SMOVE",
    "SPOP",
    "SINTERSTORE",
    "SUNIONSTORE",
    "SDIFFSTORE",
    // sorted sets and geo
    "ZADD",
    "ZINCRBY",
    "ZREM",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYLEX",
    "ZPOPMIN",
    "ZPOPMAX",
    "ZUNIONSTORE",
    "ZINTERSTORE",
    "ZDIFFSTORE",
    "ZRANGESTORE",
    "ZMPOP",
    "GEOADD",
    "GEOSEARCHSTORE",
    // hashes
    "HSET",
    "HSETNX",
    "HMSET",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    // streams (XREADGROUP arrives as XGROUP CREATECONSUMER / XCLAIM / XGROUP SETID, §4.8)
    "XADD",
    "XDEL",
    "XTRIM",
    "XACK",
    "XCLAIM",
    "XAUTOCLAIM",
    "XGROUP",
    "XSETID",
];

/// Hash-field TTL commands of Redis ≥ 7.4, passed through only when the target has them.
const FIELD_TTL: &[&str] = &["HEXPIRE", "HPEXPIRE", "HEXPIREAT", "HPEXPIREAT", "HPERSIST"];

/// True when `name` (any case) is a command the rewrite replays as is.
pub fn is_known_write_command(name: &[u8]) -> bool {
    let upper = name.to_ascii_uppercase();
    PASS_THROUGH
        .iter()
        .any(|c| c.as_bytes() == upper.as_slice())
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn parse_i64(a: &[u8]) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

fn err(db: DbIndex, cmd: &Cmd, reason: impl Into<String>) -> RewriteError {
    let mut command = String::new();
    for (i, a) in cmd.args().take(6).enumerate() {
        if i > 0 {
            command.push(' ');
        }
        command.push_str(&crate::model::escape_bytes(&a[..a.len().min(64)]));
    }
    if cmd.len() > 6 {
        command.push_str(" …");
    }
    RewriteError {
        db,
        command,
        reason: reason.into(),
    }
}

fn one(db: DbIndex, c: Cmd) -> Rewritten {
    Rewritten {
        db,
        cmds: vec![c],
        ..Rewritten::default()
    }
}

/// Rewrites one journal command (a COMMAND or EXPIRED entry, or one command of a group). The
/// command is taken by value: one replayed as it is (the stable-sync hot path: `SET`, every
/// pass-through name) moves into the result without a copy, and its name is upper-cased on the
/// stack, not into an allocation.
pub(crate) fn rewrite_command(
    db: DbIndex,
    txid: u64,
    cmd: Cmd,
    opts: &Options,
) -> Result<Rewritten, RewriteError> {
    // Command names are short; a longer (or non-UTF-8) name is no command of any table and
    // takes the unknown-command path, as it did as a lossy string.
    let mut buf = [0u8; 64];
    let raw = cmd.name();
    let upper = match buf.get_mut(..raw.len()) {
        Some(b) => {
            b.copy_from_slice(raw);
            b.make_ascii_uppercase();
            std::str::from_utf8(b).unwrap_or("")
        }
        None => "",
    };
    let unsupported = |cmd: &Cmd, with_key: bool| {
        Rewritten::skip(
            db,
            cmd.get(1).filter(|_| with_key),
            SkipReason::UnsupportedCommand {
                name: cmd.name().to_ascii_uppercase(),
            },
        )
    };
    match upper {
        "FLUSHALL" | "FLUSHDB" => {
            return Ok(Rewritten {
                db,
                cmds: vec![cmd],
                global: Some(Global { txid }),
                ..Rewritten::default()
            })
        }
        "SET" => return Ok(one(db, strip_set_tokens(cmd))),
        "INCRBYFLOAT" | "HINCRBYFLOAT" => return incr_float(db, &cmd),
        "RESTORE" => return restore(db, &cmd, opts),
        "STICK" => return Ok(unsupported(&cmd, true)),
        "HSETEX" => return hsetex(db, &cmd, opts),
        "SADDEX" => return saddex(db, &cmd),
        "FIELDEXPIRE" | "HGETEX" => return field_ttl_command(db, &cmd, opts),
        "SCRIPT" => {
            // SCRIPT LOAD teaches the target the body (for EVALSHA by later clients);
            // SCRIPT FLAGS is Dragonfly-only.
            return Ok(match cmd.get(1) {
                Some(sub) if eq(sub, "LOAD") => one(db, cmd),
                _ => unsupported(&cmd, false),
            });
        }
        _ => {}
    }
    if upper.starts_with("JSON.") {
        return Ok(if opts.target_json {
            one(db, cmd)
        } else {
            Rewritten::skip(db, cmd.get(1), SkipReason::JsonWithoutModule)
        });
    }
    if ["BF.", "CF.", "CMS.", "TOPK."]
        .iter()
        .any(|p| upper.starts_with(p))
    {
        return Ok(unsupported(&cmd, true));
    }
    if upper.starts_with("FT.") || upper == "CL.THROTTLE" || upper == "DFLYCLUSTER" {
        return Ok(unsupported(&cmd, !upper.starts_with("FT.")));
    }
    if FIELD_TTL.contains(&upper) {
        return field_ttl_command(db, &cmd, opts);
    }
    if PASS_THROUGH.contains(&upper) {
        return Ok(one(db, cmd));
    }
    match opts.unknown {
        UnknownPolicy::Error => Err(err(db, &cmd, "unknown command (policy: error)")),
        UnknownPolicy::Skip => Ok(Rewritten::skip(
            db,
            cmd.get(1),
            SkipReason::UnknownCommand {
                name: cmd.name().to_ascii_uppercase(),
            },
        )),
    }
}

/// `SET k v [PXAT t] [KEEPTTL] [STICK] [_MCFLAGS n]` without the Dragonfly-only tokens
/// (§4.9): sticky keys and memcached flags mean nothing to Redis.
fn strip_set_tokens(cmd: Cmd) -> Cmd {
    if !cmd
        .args()
        .skip(3)
        .any(|a| eq(a, "STICK") || eq(a, "_MCFLAGS"))
    {
        return cmd;
    }
    let mut out = Cmd::with_capacity(cmd.len(), cmd.payload_len());
    let mut args = cmd.args().enumerate();
    while let Some((i, a)) = args.next() {
        if i >= 3 && eq(a, "STICK") {
            continue;
        }
        if i >= 3 && eq(a, "_MCFLAGS") {
            args.next();
            continue;
        }
        out.arg(a);
    }
    out
}

/// Formats a double the way Dragonfly stores the result of `INCRBYFLOAT` / `HINCRBYFLOAT`
/// (`dragonfly src/facade/reply_builder.cc (FormatDouble)`, double-conversion's shortest
/// form): the fewest digits that read back as the same double, plain decimal when the
/// decimal exponent is in -6..=20, else `d.ddde±x` (`1e-7`, `1.1111111111111111e+21`).
/// Lua numbers are doubles, so the addition is Dragonfly's too (Redis adds in long double).
const FLOAT_LUA: &str = r#"
local function fmt(v)
  if v ~= v or v == math.huge or v == -math.huge then return nil end
  if v == 0 then return "0" end
  local s
  for p = 0, 16 do
    s = string.format("%." .. p .. "e", v)
    if tonumber(s) == v then break end
  end
  local sign, d1, frac, ex = string.match(s, "^(-?)(%d)%.?(%d*)e([-+]%d+)$")
  local digits = string.gsub(d1 .. frac, "0+$", "")
  if digits == "" then digits = "0" end
  local e = tonumber(ex)
  local n = string.len(digits)
  local out
  if e >= -6 and e <= 20 then
    if e >= n - 1 then
      out = digits .. string.rep("0", e - (n - 1))
    elseif e >= 0 then
      out = string.sub(digits, 1, e + 1) .. "." .. string.sub(digits, e + 2)
    else
      out = "0." .. string.rep("0", -e - 1) .. digits
    end
  else
    out = string.sub(digits, 1, 1)
    if n > 1 then out = out .. "." .. string.sub(digits, 2) end
    if e > 0 then out = out .. "e+" .. e else out = out .. "e" .. e end
  end
  return sign .. out
end
local field = ARGV[2]
local cur
if field then cur = redis.call("HGET", KEYS[1], field) else cur = redis.call("GET", KEYS[1]) end
local base = 0
if cur then
  base = tonumber(cur)
  if base == nil then return redis.error_reply("ERR value is not a valid float") end
end
local incr = tonumber(ARGV[1])
if incr == nil then return redis.error_reply("ERR value is not a valid float") end
local r = fmt(base + incr)
if r == nil then return redis.error_reply("ERR increment would produce NaN or Infinity") end
if field then redis.call("HSET", KEYS[1], field, r) else redis.call("SET", KEYS[1], r, "KEEPTTL") end
return r
"#;

/// `INCRBYFLOAT key incr` / `HINCRBYFLOAT key field incr`, journaled as sent (§4.8 notes):
/// replayed as a script that adds in double and formats like Dragonfly, so the target stores
/// the master's exact text (`0.1` + `0.2` = `0.30000000000000004`, where Redis would store
/// `0.3`). Written as `EVAL <script> 1 key incr [field]`: one key, routable like any command.
fn incr_float(db: DbIndex, cmd: &Cmd) -> Result<Rewritten, RewriteError> {
    let args: Vec<&[u8]> = cmd.args().collect();
    let hash = eq(cmd.name(), "HINCRBYFLOAT");
    let (key, incr, field) = match (hash, args.as_slice()) {
        (false, [_, k, i]) => (*k, *i, None),
        (true, [_, k, f, i]) => (*k, *i, Some(*f)),
        _ => return Err(err(db, cmd, "wrong number of arguments")),
    };
    let mut c = Cmd::new("EVAL");
    c.arg(FLOAT_LUA.as_bytes()).arg(b"1").arg(key).arg(incr);
    if let Some(f) = field {
        c.arg(f);
    }
    Ok(one(db, c))
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f] [STICK]`: the payload is
/// a Dragonfly DUMP blob (§4.8 notes), which a Redis target may not accept (types ≥ 30, stream
/// type 21 before Redis 7.2). Decode it and rebuild the key with native commands, replacing
/// it as RESTORE … REPLACE would.
fn restore(db: DbIndex, cmd: &Cmd, opts: &Options) -> Result<Rewritten, RewriteError> {
    let (Some(key), Some(ttl), Some(payload)) = (cmd.get(1), cmd.get(2), cmd.get(3)) else {
        return Err(err(db, cmd, "RESTORE needs key, ttl and payload"));
    };
    let ttl = parse_i64(ttl).ok_or_else(|| err(db, cmd, "RESTORE ttl is not an integer"))?;
    let abs = cmd.args().skip(4).any(|a| eq(a, "ABSTTL"));
    let dump = decode_dump_payload(payload, Limits::default())
        .map_err(|e| err(db, cmd, format!("RESTORE payload: {e}")))?;
    let expire_ms = match ttl {
        t if t <= 0 => None,
        t if abs => Some(t),
        t => Some(opts.now_ms.saturating_add(t)),
    };
    let piece = Piece {
        db,
        key: key.to_vec(),
        rdb_type: dump.rdb_type,
        expire_ms,
        mask: KeyMask::default(),
        first: true,
        last: true,
        value: dump.value,
    };
    Ok(rewrite_piece(&piece, opts))
}

/// Absolute expiry in ms from a TTL option word and its argument (`EX s`, `PX ms`, `EXAT s`,
/// `PXAT ms`), with relative times taken from the rewrite's clock.
fn abs_expiry(opt: &[u8], n: i64, now_ms: i64) -> Option<i64> {
    let up = opt.to_ascii_uppercase();
    match up.as_slice() {
        b"EX" => Some(now_ms.saturating_add(n.saturating_mul(1000))),
        b"PX" => Some(now_ms.saturating_add(n)),
        b"EXAT" => Some(n.saturating_mul(1000)),
        b"PXAT" => Some(n),
        _ => None,
    }
}

/// `HPEXPIREAT key ms FIELDS n f…`.
fn hpexpireat<'a>(key: &[u8], ms: i64, fields: impl Iterator<Item = &'a [u8]>) -> Cmd {
    let fields: Vec<&[u8]> = fields.collect();
    let mut c = Cmd::new("HPEXPIREAT");
    c.arg(key).arg_int(ms).arg(b"FIELDS").arg_int(fields.len());
    for f in fields {
        c.arg(f);
    }
    c
}

/// Dragonfly's `HSETEX`, in both syntaxes:
/// * before 2026: `HSETEX key [NX] [KEEPTTL] seconds field value …` (NX: per field, like
///   HSETNX);
/// * Redis-8 compatible: `HSETEX key [FNX|FXX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] FIELDS n
///   field value …` (FNX/FXX are all-or-nothing conditions plain commands cannot express:
///   skipped, counted).
///
/// Written as `HSET` (or `HSETNX` per field), then `HPEXPIREAT` when the target has field
/// TTLs; otherwise the TTLs are dropped and counted.
fn hsetex(db: DbIndex, cmd: &Cmd, opts: &Options) -> Result<Rewritten, RewriteError> {
    let args: Vec<&[u8]> = cmd.args().collect();
    let key = *args
        .get(1)
        .ok_or_else(|| err(db, cmd, "HSETEX needs a key"))?;
    let mut i = 2;
    let mut nx = false;
    let mut expire: Option<i64> = None;
    let pairs: &[&[u8]];
    if let Some(fpos) = args
        .iter()
        .skip(2)
        .position(|a| eq(a, "FIELDS"))
        .map(|p| p + 2)
    {
        while i < fpos {
            let a = args[i];
            if eq(a, "FNX") || eq(a, "FXX") {
                return Ok(Rewritten::skip(
                    db,
                    Some(key),
                    SkipReason::UnsupportedCommand {
                        name: b"HSETEX".to_vec(),
                    },
                ));
            } else if eq(a, "KEEPTTL") {
                i += 1;
            } else {
                let n = args.get(i + 1).and_then(|x| parse_i64(x));
                expire = n.and_then(|n| abs_expiry(a, n, opts.now_ms));
                if expire.is_none() {
                    return Err(err(db, cmd, "HSETEX: bad expiry option"));
                }
                i += 2;
            }
        }
        let n = args
            .get(fpos + 1)
            .and_then(|x| parse_i64(x))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| err(db, cmd, "HSETEX: bad FIELDS count"))?;
        pairs = args
            .get(fpos + 2..)
            .filter(|p| p.len() == n.saturating_mul(2))
            .ok_or_else(|| err(db, cmd, "HSETEX: FIELDS count does not match"))?;
    } else {
        while let Some(a) = args.get(i) {
            if eq(a, "NX") {
                nx = true;
            } else if !eq(a, "KEEPTTL") {
                break;
            }
            i += 1;
        }
        let secs = args
            .get(i)
            .and_then(|x| parse_i64(x))
            .ok_or_else(|| err(db, cmd, "HSETEX: bad seconds"))?;
        expire = Some(opts.now_ms.saturating_add(secs.saturating_mul(1000)));
        pairs = &args[(i + 1).min(args.len())..];
    }
    if pairs.is_empty() || pairs.len() % 2 != 0 {
        return Err(err(db, cmd, "HSETEX: fields and values do not pair up"));
    }
    let mut out = Rewritten {
        db,
        ..Rewritten::default()
    };
    if nx {
        for p in pairs.chunks(2) {
            out.cmds
                .push(Cmd::from_args([&b"HSETNX"[..], key, p[0], p[1]]));
        }
    } else {
        let mut c = Cmd::new("HSET");
        c.arg(key);
        pairs.iter().for_each(|a| {
            c.arg(a);
        });
        out.cmds.push(c);
    }
    if let Some(ms) = expire {
        if opts.target_field_ttl {
            out.cmds
                .push(hpexpireat(key, ms, pairs.iter().step_by(2).copied()));
        } else {
            out.skipped = Some(Skip {
                key: Some(key.to_vec()),
                reason: SkipReason::FieldTtlDropped {
                    fields: pairs.len() / 2,
                },
            });
        }
    }
    Ok(out)
}

/// Dragonfly's `SADDEX key [KEEPTTL] seconds member …`: written as `SADD`; Redis has no
/// member TTL, so the TTLs are dropped and counted.
fn saddex(db: DbIndex, cmd: &Cmd) -> Result<Rewritten, RewriteError> {
    let args: Vec<&[u8]> = cmd.args().collect();
    let key = *args
        .get(1)
        .ok_or_else(|| err(db, cmd, "SADDEX needs a key"))?;
    let mut i = 2;
    if args.get(i).is_some_and(|a| eq(a, "KEEPTTL")) {
        i += 1;
    }
    if args.get(i).and_then(|x| parse_i64(x)).is_none() {
        return Err(err(db, cmd, "SADDEX: bad seconds"));
    }
    let members = args.get(i + 1..).unwrap_or_default();
    if members.is_empty() {
        return Err(err(db, cmd, "SADDEX: no member"));
    }
    let mut c = Cmd::new("SADD");
    c.arg(key);
    members.iter().for_each(|m| {
        c.arg(m);
    });
    Ok(Rewritten {
        db,
        cmds: vec![c],
        skipped: Some(Skip {
            key: Some(key.to_vec()),
            reason: SkipReason::MemberTtlDropped {
                members: members.len(),
            },
        }),
        ..Rewritten::default()
    })
}

/// Field-TTL commands: Redis 7.4's `HEXPIRE`/`HPEXPIRE`/`HEXPIREAT`/`HPEXPIREAT`/`HPERSIST`
/// (relative forms turned absolute), Dragonfly's `FIELDEXPIRE key seconds field …` and the
/// TTL part of `HGETEX key [EX|PX|EXAT|PXAT n | PERSIST] FIELDS n f …`. Written when the
/// target has field TTLs, otherwise dropped and counted.
fn field_ttl_command(db: DbIndex, cmd: &Cmd, opts: &Options) -> Result<Rewritten, RewriteError> {
    let args: Vec<&[u8]> = cmd.args().collect();
    let name = cmd.name().to_ascii_uppercase();
    let key = *args
        .get(1)
        .ok_or_else(|| err(db, cmd, "field TTL command needs a key"))?;
    let fields_after = |from: usize| -> Vec<&[u8]> {
        match args.iter().skip(from).position(|a| eq(a, "FIELDS")) {
            Some(p) => args.get(from + p + 2..).unwrap_or_default().to_vec(),
            None => Vec::new(),
        }
    };
    let (fields, out_cmd): (Vec<&[u8]>, Option<Cmd>) = match name.as_slice() {
        b"FIELDEXPIRE" => {
            let secs = args
                .get(2)
                .and_then(|x| parse_i64(x))
                .ok_or_else(|| err(db, cmd, "FIELDEXPIRE: bad seconds"))?;
            let fields = args.get(3..).unwrap_or_default().to_vec();
            let ms = opts.now_ms.saturating_add(secs.saturating_mul(1000));
            let c = hpexpireat(key, ms, fields.iter().copied());
            (fields, Some(c))
        }
        b"HGETEX" => {
            let fields = fields_after(2);
            let opt = args.get(2).copied().unwrap_or_default();
            if eq(opt, "FIELDS") {
                // A plain read: nothing to replay.
                return Ok(Rewritten {
                    db,
                    ..Rewritten::default()
                });
            }
            let c = if eq(opt, "PERSIST") {
                let mut c = Cmd::new("HPERSIST");
                c.arg(key).arg(b"FIELDS").arg_int(fields.len());
                fields.iter().for_each(|f| {
                    c.arg(f);
                });
                c
            } else {
                let n = args
                    .get(3)
                    .and_then(|x| parse_i64(x))
                    .ok_or_else(|| err(db, cmd, "HGETEX: bad expiry"))?;
                let ms = abs_expiry(opt, n, opts.now_ms)
                    .ok_or_else(|| err(db, cmd, "HGETEX: bad expiry option"))?;
                hpexpireat(key, ms, fields.iter().copied())
            };
            (fields, Some(c))
        }
        b"HEXPIRE" | b"HPEXPIRE" => {
            let n = args
                .get(2)
                .and_then(|x| parse_i64(x))
                .ok_or_else(|| err(db, cmd, "bad field TTL"))?;
            let ms = if name.as_slice() == b"HEXPIRE" {
                opts.now_ms.saturating_add(n.saturating_mul(1000))
            } else {
                opts.now_ms.saturating_add(n)
            };
            let mut c = Cmd::new("HPEXPIREAT");
            c.arg(key).arg_int(ms);
            cmd.args().skip(3).for_each(|a| {
                c.arg(a);
            });
            (fields_after(3), Some(c))
        }
        _ => (fields_after(2), Some(cmd.clone())),
    };
    if opts.target_field_ttl {
        return Ok(Rewritten {
            db,
            cmds: out_cmd.into_iter().collect(),
            ..Rewritten::default()
        });
    }
    Ok(Rewritten::skip(
        db,
        Some(key),
        SkipReason::FieldTtlDropped {
            fields: fields.len(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn rw(args: &[&str]) -> Result<Rewritten, RewriteError> {
        let opts = Options {
            now_ms: 1_000_000,
            ..Options::default()
        };
        rewrite_command(DbIndex(2), 7, Cmd::from_args(args), &opts)
    }

    #[test]
    fn names_are_matched_in_any_case_and_pass_through_moves_unchanged() {
        // Every pass-through name, in both cases, is replayed exactly as it came (the two
        // float increments are rewritten: `incr_float`).
        for n in PASS_THROUGH {
            if *n == "INCRBYFLOAT" || *n == "HINCRBYFLOAT" {
                continue;
            }
            for name in [n.to_string(), n.to_ascii_lowercase()] {
                let args = [name.as_str(), "k", "v"];
                let r = rw(&args).unwrap_or_else(|e| panic!("{args:?}: {e:?}"));
                assert_eq!(r.cmds, vec![Cmd::from_args(args)], "{args:?}");
                assert!(r.skipped.is_none(), "{args:?}");
            }
        }
        // The special names are recognised in lower case too (same outcome kind as upper).
        for n in [
            "restore",
            "stick",
            "hsetex",
            "saddex",
            "fieldexpire",
            "hgetex",
            "script",
            "json.set",
            "bf.add",
            "ft.create",
            "hexpire",
            "flushdb",
        ] {
            let lower = rw(&[n, "k", "v"]);
            let upper = rw(&[&n.to_ascii_uppercase(), "k", "v"]);
            assert_eq!(lower.is_ok(), upper.is_ok(), "{n}");
            if let (Ok(l), Ok(u)) = (lower, upper) {
                assert_eq!(l.skipped, u.skipped, "{n}");
                assert_eq!(l.cmds.len(), u.cmds.len(), "{n}");
            }
        }
        // Unknown names (near misses, empty, longer than any command) are refused under the
        // default policy (error), never passed through.
        let long = "X".repeat(100);
        for n in ["NOSUCH", "Se", "SETX", "", long.as_str()] {
            assert!(rw(&[n, "k", "v"]).is_err(), "{n:?}");
        }
        // SET moves unchanged without Dragonfly tokens and loses them otherwise (any case).
        let r = rw(&["set", "k", "v", "PXAT", "5"]).unwrap();
        assert_eq!(r.cmds, vec![Cmd::from_args(["set", "k", "v", "PXAT", "5"])]);
        let r = rw(&["set", "k", "v", "stick", "_mcflags", "3"]).unwrap();
        assert_eq!(r.cmds, vec![Cmd::from_args(["set", "k", "v"])]);
    }

    fn cmds(r: &Rewritten) -> Vec<Vec<String>> {
        r.cmds
            .iter()
            .map(|c| {
                c.args()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn set_drops_dragonfly_tokens() {
        let r = rw(&["SET", "k", "v", "PXAT", "123", "STICK", "_MCFLAGS", "777"]).unwrap();
        assert_eq!(cmds(&r), vec![vec!["SET", "k", "v", "PXAT", "123"]]);
        assert_eq!(r.db, DbIndex(2));
        assert!(r.skipped.is_none());
        // A value equal to a token is kept.
        let r = rw(&["SET", "k", "STICK"]).unwrap();
        assert_eq!(cmds(&r), vec![vec!["SET", "k", "STICK"]]);
    }

    #[test]
    fn flushes_are_global() {
        let r = rw(&["FLUSHDB"]).unwrap();
        assert_eq!(r.global, Some(Global { txid: 7 }));
        assert_eq!(cmds(&r), vec![vec!["FLUSHDB"]]);
        assert_eq!(rw(&["FLUSHALL"]).unwrap().global, Some(Global { txid: 7 }));
        assert_eq!(rw(&["SET", "a", "b"]).unwrap().global, None);
    }

    #[test]
    fn dragonfly_ttl_commands() {
        let r = rw(&["HSETEX", "h", "100", "f1", "v1", "f2", "v2"]).unwrap();
        assert_eq!(cmds(&r), vec![vec!["HSET", "h", "f1", "v1", "f2", "v2"]]);
        assert_eq!(
            r.skipped.unwrap().reason,
            SkipReason::FieldTtlDropped { fields: 2 }
        );
        let opts = Options {
            now_ms: 1_000_000,
            target_field_ttl: true,
            ..Options::default()
        };
        let c = Cmd::from_args(["HSETEX", "h", "PX", "500", "FIELDS", "1", "f", "v"]);
        let r = rewrite_command(DbIndex(0), 0, c.clone(), &opts).unwrap();
        assert_eq!(
            cmds(&r),
            vec![
                vec!["HSET", "h", "f", "v"],
                vec!["HPEXPIREAT", "h", "1000500", "FIELDS", "1", "f"]
            ]
        );
        let r = rw(&["HSETEX", "h", "NX", "10", "f", "v"]).unwrap();
        assert_eq!(cmds(&r), vec![vec!["HSETNX", "h", "f", "v"]]);
        let r = rw(&["SADDEX", "s", "100", "m1", "m2"]).unwrap();
        assert_eq!(cmds(&r), vec![vec!["SADD", "s", "m1", "m2"]]);
        assert_eq!(
            r.skipped.unwrap().reason,
            SkipReason::MemberTtlDropped { members: 2 }
        );
        let r = rw(&["FIELDEXPIRE", "h", "10", "a", "b"]).unwrap();
        assert!(r.cmds.is_empty());
        assert_eq!(
            r.skipped.unwrap().reason,
            SkipReason::FieldTtlDropped { fields: 2 }
        );
        let r = rewrite_command(
            DbIndex(0),
            0,
            Cmd::from_args(["HEXPIRE", "h", "10", "NX", "FIELDS", "1", "a"]),
            &opts,
        )
        .unwrap();
        assert_eq!(
            cmds(&r),
            vec![vec!["HPEXPIREAT", "h", "1010000", "NX", "FIELDS", "1", "a"]]
        );
        assert!(rw(&["HSETEX", "h", "10", "f"]).is_err());
        assert!(rw(&["HSETEX"]).is_err());
    }

    #[test]
    fn modules_and_unknown() {
        let r = rw(&["JSON.SET", "j", "$", "1"]).unwrap();
        assert!(r.cmds.is_empty());
        assert_eq!(
            r.skipped.as_ref().unwrap().reason,
            SkipReason::JsonWithoutModule
        );
        assert_eq!(r.skipped.unwrap().key.unwrap(), b"j");
        let opts = Options {
            target_json: true,
            ..Options::default()
        };
        let c = Cmd::from_args(["JSON.SET", "j", "$", "1"]);
        assert_eq!(
            rewrite_command(DbIndex(0), 0, c.clone(), &opts)
                .unwrap()
                .cmds,
            vec![c]
        );
        let r = rw(&["BF.ADD", "b", "x"]).unwrap();
        assert!(matches!(
            r.skipped.unwrap().reason,
            SkipReason::UnsupportedCommand { .. }
        ));
        let r = rw(&["FT.CREATE", "idx", "SCHEMA"]).unwrap();
        assert_eq!(r.skipped.unwrap().key, None);
        assert!(rw(&["STICK", "k"]).unwrap().cmds.is_empty());
        assert_eq!(cmds(&rw(&["SCRIPT", "LOAD", "return 1"]).unwrap()).len(), 1);
        let e = rw(&["NOSUCHCMD", "k"]).unwrap_err();
        assert!(e.to_string().contains("NOSUCHCMD"), "{e}");
        assert!(
            rw(&["BLPOP", "k", "0"]).is_err(),
            "blocking commands never pass"
        );
        let opts = Options {
            unknown: UnknownPolicy::Skip,
            ..Options::default()
        };
        let r = rewrite_command(DbIndex(0), 0, Cmd::from_args(["NOSUCHCMD", "k"]), &opts).unwrap();
        assert_eq!(
            r.skipped.unwrap().reason,
            SkipReason::UnknownCommand {
                name: b"NOSUCHCMD".to_vec()
            }
        );
    }

    #[test]
    fn pass_through_keeps_bytes() {
        for args in [
            vec!["PEXPIREAT", "k", "1924992000522"],
            vec!["XADD", "s", "MINID", "5-0", "9000-0", "f", "v"],
            vec![
                "XCLAIM",
                "s",
                "g",
                "c",
                "0",
                "1-1",
                "TIME",
                "5",
                "RETRYCOUNT",
                "2",
                "FORCE",
                "JUSTID",
                "LASTID",
                "1-1",
            ],
            vec!["MSET", "a", "1", "b", "2"],
            vec!["DEL", "k"],
            vec!["UNLINK", "k"],
        ] {
            assert_eq!(cmds(&rw(&args).unwrap()), vec![args.clone()]);
        }
    }

    proptest::proptest! {
        /// Journal commands come from the network: whatever their arguments, the rewrite
        /// returns a result or an error, never panics.
        #[test]
        fn never_panics_on_any_arguments(
            name in proptest::sample::select(vec![
                "HSETEX", "SADDEX", "FIELDEXPIRE", "HGETEX", "HEXPIRE", "HPEXPIRE", "HPERSIST",
                "RESTORE", "INCRBYFLOAT", "HINCRBYFLOAT", "SET", "SCRIPT", "FLUSHDB", "JSON.SET",
                "BF.ADD", "XADD", "NOSUCH", "",
            ]),
            args in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        "NX", "FIELDS", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "PERSIST", "FNX",
                        "STICK", "_MCFLAGS", "ABSTTL", "1", "0", "-1", "2", "99999999999999999999",
                    ]).prop_map(|s| s.as_bytes().to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                ],
                0..9,
            ),
            field_ttl: bool,
        ) {
            let mut c = Cmd::new(name);
            for a in &args {
                c.arg(a);
            }
            let opts = Options {
                now_ms: 1_700_000_000_000,
                target_field_ttl: field_ttl,
                unknown: UnknownPolicy::Skip,
                ..Options::default()
            };
            let _ = rewrite_command(DbIndex(0), 1, c.clone(), &opts);
        }
    }
}
