//! Cross-slot rules: where the keys of every command the rewrite can emit are, and how a
//! command whose keys span several cluster slots is sent to a Redis Cluster.
//!
//! Pure: no I/O. [`split`] classifies one command ([`Routed`]); [`prefix_keys`] puts a
//! database's key prefix in front of every key (same key table); [`Transfer`] is the exact
//! read-then-write emulation of a cross-slot `RENAME`/`RENAMENX`/`COPY`, run through a
//! caller-supplied executor ([`Transfer::run`], [`TransferIo`]). The rules and the reasons behind them
//! (what Dragonfly journals for each multi-key command, per version) are in
//! `docs/cluster-commands.md`.
//!
//! Why so few commands need more than [`Routed::Split`]: Dragonfly journals a multi-shard
//! command per shard with that shard's keys only, and rewrites the moving and storing
//! commands (`SMOVE`, `LMOVE`, `*STORE`, `BITOP`, `PFMERGE`, cross-shard `RENAME`/`COPY`)
//! into single-key commands before journaling (protocol document §4.6, §4.8). What remains is
//! what one Dragonfly shard may hold together while Redis puts it in two slots: multi-key
//! `DEL`/`UNLINK`/`MSET` (split exactly), a same-shard `RENAME`/`RENAMENX` (journaled as is,
//! `dragonfly src/server/generic_family.cc (RenameGeneric)`: emulated by [`Transfer`]), and
//! commands that only older masters journal as sent (refused with a named rule).

use crate::model::Cmd;
use crate::resp::Value;

use super::Slot;

/// How one command goes to a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// No key (`SCRIPT LOAD`, `FUNCTION LOAD`, `FLUSHALL`, `FLUSHDB`): not bound to a slot.
    /// Scripts and functions belong on every master; flushes are global (barrier) commands.
    Keyless,
    /// Every key is in this slot: send the command as it is.
    Single(Slot),
    /// The keys span several slots and the command splits exactly into single-slot commands
    /// of the same name (`MSET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH`, `JSON.MSET`): one per slot,
    /// in the order each slot first appears, each keeping its keys' relative order.
    Split(Vec<(Slot, Cmd)>),
    /// `RENAME` / `RENAMENX` / `COPY` across slots: exact only as a read-then-write sequence,
    /// see [`Transfer::run`].
    Transfer(Transfer),
    /// The keys span several slots and no exact single-slot form exists without reading the
    /// target: count it under `rule` and report the command (see `docs/cluster-commands.md`).
    Refused {
        /// Stable name of the rule, for counters and logs.
        rule: &'static str,
    },
}

/// Where a command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// No key.
    None,
    /// One key at this argument index.
    At(usize),
    /// Keys at `first`, `first + step`, … to the end (`DEL` 1/1, `MSET` 1/2, `JSON.MSET` 1/3).
    Every { first: usize, step: usize },
    /// Every argument from `first` to the end but `skip_last` (`BITOP op dst k…`: 2/0;
    /// `JSON.MGET k… path`: 1/1).
    Tail { first: usize, skip_last: usize },
    /// Two keys at fixed places (`RENAME s d`, `SMOVE s d m`, `ZRANGESTORE d s …`).
    Two(usize, usize),
    /// Optional key `dst`, then `numkeys` at `count_at` and that many keys after it
    /// (`ZUNIONSTORE d n k…`, `LMPOP n k…`, `EVAL body n k…`).
    Counted { dst: Option<usize>, count_at: usize },
}

/// What to do when the keys span several slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cross {
    /// Split per slot, `group` arguments per key (key included).
    Split { group: usize },
    /// Emulate with [`Transfer`].
    Transfer,
    /// Refuse under this rule.
    Refuse(&'static str),
}

/// Rule names (stable: counters and docs use them).
pub mod rule {
    /// `MSETNX` across slots: all-or-nothing cannot be split (modern masters journal MSET).
    pub const MSETNX: &str = "msetnx-cross-slot";
    /// `SMOVE`, `LMOVE`, `RPOPLPUSH` across slots (masters journal them as pop + push).
    pub const MOVE_ELEMENT: &str = "move-element-cross-slot";
    /// `*STORE`, `BITOP`, `PFMERGE` reading keys of other slots (masters journal the result).
    pub const STORE: &str = "store-cross-slot";
    /// `LMPOP` / `ZMPOP` over keys of several slots (masters journal the single pop).
    pub const MPOP: &str = "mpop-cross-slot";
    /// `EVAL` whose keys span slots (the rewrite only emits one-key scripts).
    pub const EVAL: &str = "eval-cross-slot";
    /// A command the key table does not know: never guessed.
    pub const UNKNOWN: &str = "unknown-key-positions";
    /// A command without the key its name requires (malformed).
    pub const MISSING_KEY: &str = "missing-key";
}

/// Upper-cases a command name into a stack buffer; names longer than the buffer are not in
/// the table anyway.
fn upper(name: &[u8]) -> Option<([u8; 20], usize)> {
    let mut buf = [0u8; 20];
    let dst = buf.get_mut(..name.len())?;
    for (d, s) in dst.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some((buf, name.len()))
}

/// The key table: every command the rewrite can emit (`src/rewrite`: the pass-through list,
/// the commands it builds, the Dragonfly-only commands it translates) plus the read-only
/// multi-key commands the brief names. `None` for an unknown command.
fn spec(name: &[u8]) -> Option<(Keys, Cross)> {
    use Cross::{Refuse, Split};
    use Keys::*;
    let (buf, n) = upper(name)?;
    let name = &buf[..n];
    let one = Some((At(1), Refuse(rule::UNKNOWN)));
    if name.starts_with(b"JSON.") {
        return match name {
            b"JSON.MSET" => Some((Every { first: 1, step: 3 }, Split { group: 3 })),
            b"JSON.MGET" => Some((
                Tail {
                    first: 1,
                    skip_last: 1,
                },
                Refuse(rule::STORE),
            )),
            _ => one,
        };
    }
    Some(match name {
        // Keyless: scripts, functions, global flushes.
        b"SCRIPT" | b"FUNCTION" | b"FLUSHALL" | b"FLUSHDB" | b"PING" => {
            (None, Refuse(rule::UNKNOWN))
        }
        // Variadic keys, split exactly.
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => {
            (Every { first: 1, step: 1 }, Split { group: 1 })
        }
        b"MSET" => (Every { first: 1, step: 2 }, Split { group: 2 }),
        b"MSETNX" => (Every { first: 1, step: 2 }, Refuse(rule::MSETNX)),
        // Two keys.
        b"RENAME" | b"RENAMENX" | b"COPY" => (Two(1, 2), Cross::Transfer),
        b"SMOVE" | b"LMOVE" | b"RPOPLPUSH" => (Two(1, 2), Refuse(rule::MOVE_ELEMENT)),
        b"ZRANGESTORE" | b"GEOSEARCHSTORE" => (Two(1, 2), Refuse(rule::STORE)),
        // Stores over many keys.
        b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"PFMERGE" => (
            Tail {
                first: 1,
                skip_last: 0,
            },
            Refuse(rule::STORE),
        ),
        b"BITOP" => (
            Tail {
                first: 2,
                skip_last: 0,
            },
            Refuse(rule::STORE),
        ),
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => (
            Counted {
                dst: Some(1),
                count_at: 2,
            },
            Refuse(rule::STORE),
        ),
        b"LMPOP" | b"ZMPOP" => (
            Counted {
                dst: Option::None,
                count_at: 1,
            },
            Refuse(rule::MPOP),
        ),
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => (
            Counted {
                dst: Option::None,
                count_at: 2,
            },
            Refuse(rule::EVAL),
        ),
        // Stream groups: the key follows the subcommand.
        b"XGROUP" => (At(2), Refuse(rule::UNKNOWN)),
        // One key at argument 1.
        b"SET" | b"SETNX" | b"SETEX" | b"PSETEX" | b"APPEND" | b"SETRANGE" | b"INCR"
        | b"INCRBY" | b"INCRBYFLOAT" | b"DECR" | b"DECRBY" | b"GETSET" | b"GETDEL" | b"GETEX"
        | b"SETBIT" | b"BITFIELD" | b"PFADD" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT"
        | b"PEXPIREAT" | b"PERSIST" | b"MOVE" | b"RESTORE" | b"LPUSH" | b"RPUSH" | b"LPUSHX"
        | b"RPUSHX" | b"LPOP" | b"RPOP" | b"LSET" | b"LTRIM" | b"LINSERT" | b"LREM" | b"SADD"
        | b"SREM" | b"SPOP" | b"ZADD" | b"ZINCRBY" | b"ZREM" | b"ZREMRANGEBYSCORE"
        | b"ZREMRANGEBYRANK" | b"ZREMRANGEBYLEX" | b"ZPOPMIN" | b"ZPOPMAX" | b"GEOADD"
        | b"HSET" | b"HSETNX" | b"HMSET" | b"HDEL" | b"HINCRBY" | b"HINCRBYFLOAT" | b"HEXPIRE"
        | b"HPEXPIRE" | b"HEXPIREAT" | b"HPEXPIREAT" | b"HPERSIST" | b"XADD" | b"XDEL"
        | b"XTRIM" | b"XACK" | b"XCLAIM" | b"XAUTOCLAIM" | b"XSETID" => {
            (At(1), Refuse(rule::UNKNOWN))
        }
        _ => return Option::None,
    })
}

/// Argument indices of the keys of `cmd`, or the rule that stops it (unknown command,
/// missing key). A bounded `numkeys` larger than what follows is a missing key, never a panic.
fn key_indices(cmd: &Cmd) -> Result<(Vec<usize>, Cross), &'static str> {
    let (keys, cross) = spec(cmd.name()).ok_or(rule::UNKNOWN)?;
    let n = cmd.len();
    let need = |i: usize| if i < n { Ok(i) } else { Err(rule::MISSING_KEY) };
    let v = match keys {
        Keys::None => Vec::new(),
        Keys::At(i) => vec![need(i)?],
        Keys::Two(a, b) => vec![need(a)?, need(b)?],
        Keys::Every { first, step } => {
            need(first)?;
            if (n - first) % step != 0 {
                return Err(rule::MISSING_KEY);
            }
            (first..n).step_by(step).collect()
        }
        Keys::Tail { first, skip_last } => {
            let end = n.saturating_sub(skip_last);
            if end <= first {
                return Err(rule::MISSING_KEY);
            }
            (first..end).collect()
        }
        Keys::Counted { dst, count_at } => {
            let count: usize = cmd
                .get(count_at)
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.parse().ok())
                .ok_or(rule::MISSING_KEY)?;
            let end = (count_at + 1)
                .checked_add(count)
                .filter(|&e| e <= n)
                .ok_or(rule::MISSING_KEY)?;
            let mut v: Vec<usize> = dst.into_iter().map(need).collect::<Result<_, _>>()?;
            v.extend(count_at + 1..end);
            v
        }
    };
    Ok((v, cross))
}

/// Every key `cmd` reads or writes (by the command table's key positions); empty for a
/// command without keys or one the table does not know. One-key commands: no table walk.
pub fn keys(cmd: &Cmd) -> Vec<&[u8]> {
    if let Some((Keys::At(i), _)) = spec(cmd.name()) {
        return cmd.get(i).into_iter().collect();
    }
    key_indices(cmd)
        .map(|(idx, _)| idx.iter().filter_map(|&i| cmd.get(i)).collect())
        .unwrap_or_default()
}

/// The one slot of a command all of whose keys hash to one slot; `None` when it has no key
/// or its keys span slots (or it is unknown). Cheap: no allocation for one-key commands.
pub fn single_slot(cmd: &Cmd) -> Option<Slot> {
    match split(cmd) {
        Routed::Single(s) => Some(s),
        _ => None,
    }
}

/// Classifies one command for a cluster target (see [`Routed`]).
pub fn split(cmd: &Cmd) -> Routed {
    // Fast path for the common one-key commands: no allocation.
    if let Some((Keys::At(i), _)) = spec(cmd.name()) {
        return match cmd.get(i) {
            Some(k) => Routed::Single(Slot::of_key(k)),
            None => Routed::Refused {
                rule: rule::MISSING_KEY,
            },
        };
    }
    let (idx, cross) = match key_indices(cmd) {
        Ok(x) => x,
        Err(rule) => return Routed::Refused { rule },
    };
    let slot_of = |i: usize| Slot::of_key(cmd.get(i).unwrap_or_default());
    let Some(&first) = idx.first() else {
        return Routed::Keyless;
    };
    let first_slot = slot_of(first);
    if idx.iter().all(|&i| slot_of(i) == first_slot) {
        return Routed::Single(first_slot);
    }
    match cross {
        Cross::Refuse(rule) => Routed::Refused { rule },
        Cross::Transfer => match Transfer::from_cmd(cmd) {
            Some(t) => Routed::Transfer(t),
            None => Routed::Refused {
                rule: rule::MISSING_KEY,
            },
        },
        Cross::Split { group } => {
            let mut parts: Vec<(Slot, Cmd)> = Vec::new();
            for &i in &idx {
                let s = slot_of(i);
                let pos = match parts.iter().position(|(ps, _)| *ps == s) {
                    Some(p) => p,
                    None => {
                        parts.push((s, Cmd::new(&String::from_utf8_lossy(cmd.name()))));
                        parts.len() - 1
                    }
                };
                if let Some((_, c)) = parts.get_mut(pos) {
                    for j in i..i + group {
                        c.arg(cmd.get(j).unwrap_or_default());
                    }
                }
            }
            Routed::Split(parts)
        }
    }
}

/// Why [`prefix_keys`] cannot prefix a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprefixable {
    /// The command name, escaped.
    pub command: String,
    /// The rule (unknown command, missing key).
    pub rule: &'static str,
}

impl std::fmt::Display for Unprefixable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot put a key prefix on {}: {}",
            self.command, self.rule
        )
    }
}

impl std::error::Error for Unprefixable {}

/// `cmd` with `prefix` in front of every key (same key table as [`split`]); keyless commands
/// come back unchanged. Arguments that are not keys (values, members, numkeys) never change.
pub fn prefix_keys(cmd: &Cmd, prefix: &[u8]) -> Result<Cmd, Unprefixable> {
    let (idx, _) = key_indices(cmd).map_err(|rule| Unprefixable {
        command: crate::model::escape_bytes(cmd.name()),
        rule,
    })?;
    let mut out = Cmd::with_capacity(cmd.len(), cmd.payload_len() + idx.len() * prefix.len());
    let mut next_key = idx.iter().peekable();
    let mut key = Vec::new();
    for (i, a) in cmd.args().enumerate() {
        if next_key.peek() == Some(&&i) {
            next_key.next();
            key.clear();
            key.extend_from_slice(prefix);
            key.extend_from_slice(a);
            out.arg(&key);
        } else {
            out.arg(a);
        }
    }
    Ok(out)
}

/// A value moved or copied from one key to a key in another slot: `RENAME`/`RENAMENX`
/// (delete the source), `COPY` (keep it; `REPLACE` or not), and `MOVE` between two
/// databases that share one target database through key prefixes (a `RENAMENX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Source key.
    pub src: Vec<u8>,
    /// Destination key.
    pub dst: Vec<u8>,
    /// Delete the source afterwards (RENAME, RENAMENX, MOVE).
    pub delete_src: bool,
    /// Do nothing when the destination exists (RENAMENX, MOVE, COPY without REPLACE).
    pub only_if_dst_absent: bool,
}

/// What a [`Transfer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The value was written to the destination (and the source deleted when asked).
    Done,
    /// The source does not exist on the target: nothing to do (the master's command failed
    /// or found nothing too, since the target mirrors it).
    NoSource,
    /// The destination exists and the command does not overwrite: nothing to do.
    DestinationExists,
}

impl Transfer {
    /// The transfer for `RENAME s d`, `RENAMENX s d`, `COPY s d [REPLACE]`; `None` for other
    /// commands or a missing key. (`COPY … DB n` never reaches a cluster: db mapping refuses it.)
    pub fn from_cmd(cmd: &Cmd) -> Option<Transfer> {
        let (buf, n) = upper(cmd.name())?;
        let (src, dst) = (cmd.get(1)?.to_vec(), cmd.get(2)?.to_vec());
        let replace = cmd
            .args()
            .skip(3)
            .any(|a| a.eq_ignore_ascii_case(b"REPLACE"));
        let (delete_src, only_if_dst_absent) = match &buf[..n] {
            b"RENAME" => (true, false),
            b"RENAMENX" => (true, true),
            b"COPY" => (false, !replace),
            _ => return None,
        };
        Some(Transfer {
            src,
            dst,
            delete_src,
            only_if_dst_absent,
        })
    }

    /// Runs the transfer with single-slot commands only, through `io` (which must send
    /// everything **after every earlier write of the same flow has been applied**, and handle
    /// redirects). Steps:
    /// 1. source slot, read: `DUMP src`, `PEXPIRETIME src` (nil dump or expired:
    ///    [`TransferOutcome::NoSource`]);
    /// 2. if `only_if_dst_absent`, destination slot, read: `EXISTS dst` (1:
    ///    [`TransferOutcome::DestinationExists`]);
    /// 3. destination slot, committed: `RESTORE dst <abs ms or 0> <dump> REPLACE ABSTTL` (a
    ///    past expiry makes Redis drop the key, as the master's rename of an expiring key
    ///    would);
    /// 4. source slot, committed: `DEL src` when `delete_src`, else nothing — this last
    ///    commit ends every outcome, the no-op ones too.
    ///
    /// Each commit is one atomic step that also records the flow's position in that slot
    /// (the caller's slot marker). So after a crash the slot markers tell which steps ran:
    /// the source slot's commit means the transfer is complete; the destination's alone means
    /// step 3 ran and step 4 did not, and [`Transfer::finish`] (not `run`) must complete it —
    /// running it again from step 1 would find its own restored destination and, for
    /// `RENAMENX`/`MOVE`, leave the source key behind for good.
    ///
    /// Exact, including the TTL and every stream/consumer-group detail the DUMP format holds,
    /// provided nothing else writes these keys meanwhile (the flow is paused; per-key order
    /// puts every write of `src` and `dst` on this flow, because a same-shard RENAME is the
    /// only one journaled as is).
    pub fn run(&self, io: &mut impl TransferIo) -> Result<TransferOutcome, String> {
        let (ss, ds) = (Slot::of_key(&self.src), Slot::of_key(&self.dst));
        let dump = Cmd::from_args([&b"DUMP"[..], &self.src]);
        let ttl = Cmd::from_args([&b"PEXPIRETIME"[..], &self.src]);
        let r = io.read(ss, &[dump, ttl])?;
        let (payload, at) = match r.as_slice() {
            [Value::Nil, _] => return self.end(io, TransferOutcome::NoSource),
            [Value::Bulk(p), Value::Int(t)] => (p, *t),
            other => return Err(format!("DUMP/PEXPIRETIME of the source: {other:?}")),
        };
        if at == -2 {
            // Expired between the two commands.
            return self.end(io, TransferOutcome::NoSource);
        }
        if self.only_if_dst_absent {
            let r = io.read(ds, &[Cmd::from_args([&b"EXISTS"[..], &self.dst])])?;
            match r.as_slice() {
                [Value::Int(0)] => {}
                [Value::Int(_)] => return self.end(io, TransferOutcome::DestinationExists),
                other => return Err(format!("EXISTS of the destination: {other:?}")),
            }
        }
        let mut restore = Cmd::new("RESTORE");
        restore
            .arg(&self.dst)
            .arg_int(at.max(0))
            .arg(payload)
            .arg(b"REPLACE")
            .arg(b"ABSTTL");
        let r = io
            .commit(ds, &[restore])
            .map_err(|e| format!("RESTORE of the destination: {e}"))?;
        if !matches!(r.as_slice(), [v] if v.is_ok()) {
            return Err(format!("RESTORE of the destination: {r:?}"));
        }
        self.finish(io)
    }

    /// Completes a transfer whose destination step (3 of [`Transfer::run`]) was committed
    /// and whose source step (4) was not: `DEL src` when `delete_src`, committed in the
    /// source slot.
    pub fn finish(&self, io: &mut impl TransferIo) -> Result<TransferOutcome, String> {
        let ss = Slot::of_key(&self.src);
        if self.delete_src {
            let r = io
                .commit(ss, &[Cmd::from_args([&b"DEL"[..], &self.src])])
                .map_err(|e| format!("DEL of the source: {e}"))?;
            if !matches!(r.as_slice(), [Value::Int(_)]) {
                return Err(format!("DEL of the source: {r:?}"));
            }
        } else {
            io.commit(ss, &[])
                .map_err(|e| format!("the source slot's marker: {e}"))?;
        }
        Ok(TransferOutcome::Done)
    }

    /// Ends a transfer that writes nothing: the source slot's commit (marker only) still
    /// records that it ran.
    fn end(
        &self,
        io: &mut impl TransferIo,
        outcome: TransferOutcome,
    ) -> Result<TransferOutcome, String> {
        io.commit(Slot::of_key(&self.src), &[])
            .map_err(|e| format!("the source slot's marker: {e}"))?;
        Ok(outcome)
    }
}

/// How a [`Transfer`] reaches the cluster.
pub trait TransferIo {
    /// Sends read-only `cmds` (pipelined, in order) to the owner of `slot`; one reply each.
    fn read(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String>;
    /// Applies `cmds` (possibly none) on the owner of `slot` as one atomic step that also
    /// records the flow's position in that slot (a replication session wraps them in
    /// `MULTI … ZADD <slot marker> … EXEC`); one reply per command of `cmds`.
    fn commit(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String>;
}

/// Every command name of the key table (for tests and docs).
#[cfg(test)]
fn table_names() -> Vec<&'static str> {
    vec![
        "SCRIPT",
        "FUNCTION",
        "FLUSHALL",
        "FLUSHDB",
        "DEL",
        "UNLINK",
        "EXISTS",
        "TOUCH",
        "MSET",
        "MSETNX",
        "RENAME",
        "RENAMENX",
        "COPY",
        "SMOVE",
        "LMOVE",
        "RPOPLPUSH",
        "ZRANGESTORE",
        "GEOSEARCHSTORE",
        "SINTERSTORE",
        "SUNIONSTORE",
        "SDIFFSTORE",
        "PFMERGE",
        "BITOP",
        "ZUNIONSTORE",
        "ZINTERSTORE",
        "ZDIFFSTORE",
        "LMPOP",
        "ZMPOP",
        "EVAL",
        "XGROUP",
        "JSON.SET",
        "JSON.MSET",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(args: &[&str]) -> Cmd {
        Cmd::from_args(args)
    }

    fn strs(cmd: &Cmd) -> Vec<String> {
        cmd.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// Two keys known to be in different slots, and a third in the first one's slot.
    const A: &str = "foo"; // 12182
    const B: &str = "bar"; // 5061
    const A2: &str = "{foo}x";

    #[test]
    fn keys_lists_every_key_read_or_written() {
        let k = |args: &[&str]| -> Vec<String> {
            keys(&c(args))
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        assert_eq!(k(&["SET", A, "1"]), [A]);
        assert_eq!(k(&["MSET", A, "1", A2, "2"]), [A, A2]);
        assert_eq!(k(&["SUNIONSTORE", A, A2, B]), [A, A2, B]);
        assert_eq!(k(&["EVAL", "return 1", "2", A, A2, "arg"]), [A, A2]);
        assert_eq!(k(&["SCRIPT", "LOAD", "return 1"]), Vec::<String>::new());
        assert_eq!(k(&["NOSUCH", A]), Vec::<String>::new());
        assert_eq!(k(&["SET"]), Vec::<String>::new());
    }

    #[test]
    fn every_rewrite_command_has_key_positions() {
        for name in crate::rewrite::PASS_THROUGH {
            assert!(spec(name.as_bytes()).is_some(), "{name} not in the table");
        }
        for name in [
            "HSETNX",
            "HPEXPIREAT",
            "HPERSIST",
            "HEXPIRE",
            "HPEXPIRE",
            "HEXPIREAT",
            "EVAL",
            "SCRIPT",
            "FUNCTION",
            "FLUSHALL",
            "FLUSHDB",
            "JSON.SET",
            "JSON.DEL",
            "RESTORE",
        ] {
            assert!(spec(name.as_bytes()).is_some(), "{name} not in the table");
        }
        for name in table_names() {
            assert!(spec(name.as_bytes()).is_some());
        }
        assert_eq!(spec(b"NOSUCH"), None);
        assert_eq!(spec(b"A_VERY_LONG_COMMAND_NAME_INDEED"), None);
    }

    #[test]
    fn one_key_commands() {
        let s = Slot::of_key(A.as_bytes());
        assert_eq!(split(&c(&["SET", A, "v"])), Routed::Single(s));
        assert_eq!(split(&c(&["set", A, "v"])), Routed::Single(s));
        assert_eq!(
            split(&c(&["XGROUP", "CREATE", A, "g", "$"])),
            Routed::Single(s)
        );
        assert_eq!(
            split(&c(&["EVAL", "return 1", "1", A, "0.5"])),
            Routed::Single(s)
        );
        assert_eq!(
            split(&c(&["SET"])),
            Routed::Refused {
                rule: rule::MISSING_KEY
            }
        );
        assert_eq!(split(&c(&["SCRIPT", "LOAD", "return 1"])), Routed::Keyless);
        assert_eq!(split(&c(&["FLUSHDB"])), Routed::Keyless);
        assert_eq!(
            split(&c(&["NOSUCH", A])),
            Routed::Refused {
                rule: rule::UNKNOWN
            }
        );
    }

    #[test]
    fn same_slot_multi_key_commands_go_as_they_are() {
        let s = Slot::of_key(A.as_bytes());
        for args in [
            vec!["MSET", A, "1", A2, "2"],
            vec!["DEL", A, A2],
            vec!["RENAME", A, A2],
            vec!["SMOVE", A, A2, "m"],
            vec!["SUNIONSTORE", A, A2, A],
            vec!["ZUNIONSTORE", A, "2", A2, A, "WEIGHTS", "1", "2"],
            vec!["BITOP", "AND", A, A2],
            vec!["MSETNX", A, "1", A2, "2"],
        ] {
            assert_eq!(split(&c(&args)), Routed::Single(s), "{args:?}");
        }
    }

    #[test]
    fn splits_keep_order() {
        let r = split(&c(&["MSET", A, "1", B, "2", A2, "3", A, "4"]));
        let Routed::Split(parts) = r else {
            panic!("{r:?}")
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, Slot::of_key(A.as_bytes()));
        assert_eq!(strs(&parts[0].1), ["MSET", A, "1", A2, "3", A, "4"]);
        assert_eq!(strs(&parts[1].1), ["MSET", B, "2"]);
        let Routed::Split(parts) = split(&c(&["UNLINK", B, A])) else {
            panic!()
        };
        assert_eq!(strs(&parts[0].1), ["UNLINK", B]);
        assert_eq!(strs(&parts[1].1), ["UNLINK", A]);
        let Routed::Split(parts) = split(&c(&["JSON.MSET", A, "$", "1", B, "$", "2"])) else {
            panic!()
        };
        assert_eq!(strs(&parts[1].1), ["JSON.MSET", B, "$", "2"]);
    }

    #[test]
    fn refusals_and_transfers() {
        for (args, rule) in [
            (vec!["MSETNX", A, "1", B, "2"], rule::MSETNX),
            (vec!["SMOVE", A, B, "m"], rule::MOVE_ELEMENT),
            (vec!["LMOVE", A, B, "LEFT", "RIGHT"], rule::MOVE_ELEMENT),
            (vec!["SINTERSTORE", A, B], rule::STORE),
            (vec!["ZINTERSTORE", A, "1", B], rule::STORE),
            (vec!["BITOP", "OR", A, B], rule::STORE),
            (vec!["LMPOP", "2", A, B, "LEFT"], rule::MPOP),
            (vec!["EVAL", "x", "2", A, B], rule::EVAL),
            (vec!["EVAL", "x", "3", A, B], rule::MISSING_KEY),
            (vec!["EVAL", "x", "-1", A], rule::MISSING_KEY),
            (vec!["MSET", A, "1", B], rule::MISSING_KEY),
        ] {
            assert_eq!(split(&c(&args)), Routed::Refused { rule }, "{args:?}");
        }
        assert_eq!(
            split(&c(&["RENAMENX", A, B])),
            Routed::Transfer(Transfer {
                src: A.into(),
                dst: B.into(),
                delete_src: true,
                only_if_dst_absent: true
            })
        );
        let Routed::Transfer(t) = split(&c(&["COPY", A, B, "REPLACE"])) else {
            panic!()
        };
        assert!(!t.delete_src && !t.only_if_dst_absent);
    }

    /// An in-memory stand-in for the cluster: keys (value, absolute expiry) and the slots
    /// whose step was committed; `fail_commit_in` makes the commits of one slot fail, as a
    /// `kill -9` between two steps would leave them.
    #[derive(Default)]
    struct FakeCluster {
        keys: std::collections::HashMap<Vec<u8>, Vec<u8>>,
        committed: Vec<Slot>,
        fail_commit_in: Option<Slot>,
    }

    impl FakeCluster {
        fn apply(&mut self, c: &Cmd) -> Value {
            let key = c.get(1).unwrap_or_default().to_vec();
            match c.name() {
                b"DUMP" => self.keys.get(&key).cloned().map_or(Value::Nil, Value::Bulk),
                b"PEXPIRETIME" => Value::Int(if self.keys.contains_key(&key) { -1 } else { -2 }),
                b"EXISTS" => Value::Int(i64::from(self.keys.contains_key(&key))),
                b"RESTORE" => {
                    self.keys.insert(key, c.get(3).unwrap_or_default().to_vec());
                    Value::Simple(b"OK".to_vec())
                }
                b"DEL" => Value::Int(i64::from(self.keys.remove(&key).is_some())),
                _ => Value::Error(b"ERR unknown".to_vec()),
            }
        }
    }

    impl TransferIo for FakeCluster {
        fn read(&mut self, _: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
            Ok(cmds.iter().map(|c| self.apply(c)).collect())
        }
        fn commit(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
            if self.fail_commit_in == Some(slot) {
                return Err("connection lost".into());
            }
            self.committed.push(slot);
            Ok(cmds.iter().map(|c| self.apply(c)).collect())
        }
    }

    #[test]
    fn transfer_steps_commit_per_slot_and_an_interrupted_one_finishes() {
        let renamenx = Transfer::from_cmd(&c(&["RENAMENX", A, B])).unwrap();
        let (sa, sb) = (Slot::of_key(A.as_bytes()), Slot::of_key(B.as_bytes()));
        // Uninterrupted: RESTORE committed in B, then DEL in A (the source commit is last).
        let mut io = FakeCluster::default();
        io.keys.insert(A.into(), b"v".to_vec());
        assert_eq!(renamenx.run(&mut io), Ok(TransferOutcome::Done));
        assert_eq!(io.committed, [sb, sa]);
        assert_eq!(io.keys.get(B.as_bytes()), Some(&b"v".to_vec()));
        assert!(!io.keys.contains_key(A.as_bytes()));
        // The outcomes that write nothing still commit in the source slot.
        let mut io = FakeCluster::default();
        assert_eq!(renamenx.run(&mut io), Ok(TransferOutcome::NoSource));
        assert_eq!(io.committed, [sa]);
        let mut io = FakeCluster::default();
        io.keys.insert(A.into(), b"v".to_vec());
        io.keys.insert(B.into(), b"w".to_vec());
        assert_eq!(
            renamenx.run(&mut io),
            Ok(TransferOutcome::DestinationExists)
        );
        assert_eq!(io.committed, [sa]);
        assert_eq!(io.keys.get(A.as_bytes()), Some(&b"v".to_vec()));
        // Interrupted after the RESTORE: only B committed.
        let mut io = FakeCluster {
            fail_commit_in: Some(sa),
            ..FakeCluster::default()
        };
        io.keys.insert(A.into(), b"v".to_vec());
        assert!(renamenx.run(&mut io).is_err());
        assert_eq!(io.committed, [sb]);
        io.fail_commit_in = None;
        // Running it again from the start finds its own destination and keeps the source:
        // the bug a resume must not make.
        let mut again = FakeCluster {
            keys: io.keys.clone(),
            ..FakeCluster::default()
        };
        assert_eq!(
            renamenx.run(&mut again),
            Ok(TransferOutcome::DestinationExists)
        );
        assert!(again.keys.contains_key(A.as_bytes()));
        // Finishing it deletes the source, committed in A.
        assert_eq!(renamenx.finish(&mut io), Ok(TransferOutcome::Done));
        assert_eq!(io.committed, [sb, sa]);
        assert!(!io.keys.contains_key(A.as_bytes()));
        assert_eq!(io.keys.get(B.as_bytes()), Some(&b"v".to_vec()));
        // A COPY finishes with a marker-only commit in the source slot, the source kept.
        let copy = Transfer::from_cmd(&c(&["COPY", A, B])).unwrap();
        let mut io = FakeCluster::default();
        io.keys.insert(A.into(), b"v".to_vec());
        assert_eq!(copy.run(&mut io), Ok(TransferOutcome::Done));
        assert_eq!(io.committed, [sb, sa]);
        assert_eq!(io.keys.len(), 2);
    }

    #[test]
    fn prefixes_only_keys() {
        let p = b"db1:";
        let t = |args: &[&str]| strs(&prefix_keys(&c(args), p).unwrap());
        assert_eq!(
            t(&["SET", "k", "v", "PXAT", "1"]),
            ["SET", "db1:k", "v", "PXAT", "1"]
        );
        assert_eq!(
            t(&["MSET", "a", "a", "b", "b"]),
            ["MSET", "db1:a", "a", "db1:b", "b"]
        );
        assert_eq!(
            t(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            [
                "ZUNIONSTORE",
                "db1:d",
                "2",
                "db1:a",
                "db1:b",
                "WEIGHTS",
                "1",
                "2"
            ]
        );
        assert_eq!(
            t(&["EVAL", "body", "1", "k", "0.5", "f"]),
            ["EVAL", "body", "1", "db1:k", "0.5", "f"]
        );
        assert_eq!(
            t(&["XGROUP", "CREATE", "s", "g", "0"]),
            ["XGROUP", "CREATE", "db1:s", "g", "0"]
        );
        assert_eq!(
            t(&["BITOP", "AND", "d", "a"]),
            ["BITOP", "AND", "db1:d", "db1:a"]
        );
        assert_eq!(t(&["SCRIPT", "LOAD", "x"]), ["SCRIPT", "LOAD", "x"]);
        assert!(prefix_keys(&c(&["NOSUCH", "k"]), p).is_err());
        // A hashtag keeps its slot when the prefix has no brace.
        let k = prefix_keys(&c(&["SET", "{t}a", "v"]), p).unwrap();
        assert_eq!(split(&k), Routed::Single(Slot::of_key(b"{t}b")));
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z]{1,6}", "\\{[a-c]\\}[a-z]{0,3}", "[a-z{}]{0,5}",]
    }

    proptest! {
        /// Whatever the command and its arguments: never a panic; a split gives commands that
        /// are each single-slot, name kept, and together hold exactly the original arguments.
        #[test]
        fn splits_are_single_slot_and_complete(
            name in proptest::sample::select(vec![
                "MSET", "DEL", "UNLINK", "EXISTS", "TOUCH", "JSON.MSET", "RENAME", "SMOVE",
                "ZUNIONSTORE", "LMPOP", "EVAL", "BITOP", "SET", "XGROUP", "SCRIPT", "MSETNX",
                "COPY", "NOSUCH", "",
            ]),
            args in proptest::collection::vec(key_strategy(), 0..12),
        ) {
            let mut cmd = Cmd::new(name);
            for a in &args {
                cmd.arg(a.as_bytes());
            }
            match split(&cmd) {
                Routed::Split(parts) => {
                    prop_assert!(parts.len() >= 2);
                    let mut total = 0;
                    for (slot, p) in &parts {
                        prop_assert_eq!(p.name(), cmd.name());
                        prop_assert_eq!(split(p), Routed::Single(*slot));
                        total += p.len() - 1;
                    }
                    prop_assert_eq!(total, cmd.len() - 1);
                    let mut slots: Vec<Slot> = parts.iter().map(|(s, _)| *s).collect();
                    slots.dedup();
                    prop_assert_eq!(slots.len(), parts.len());
                }
                Routed::Single(s) => {
                    if let Ok((idx, _)) = key_indices(&cmd) {
                        for i in idx {
                            prop_assert_eq!(Slot::of_key(cmd.get(i).unwrap()), s);
                        }
                    }
                }
                Routed::Transfer(t) => {
                    prop_assert_ne!(Slot::of_key(&t.src), Slot::of_key(&t.dst));
                }
                Routed::Keyless | Routed::Refused { .. } => {}
            }
            if let Ok(p) = prefix_keys(&cmd, b"pre:") {
                prop_assert_eq!(p.len(), cmd.len());
            }
        }
    }
}
