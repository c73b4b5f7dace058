//! Comparing a batch of keys, pipelined: existence and type (plus expiry outside `outline`) of
//! every key in one round trip per side, then lengths (both on the allocation-free hot path of
//! [`super::fast`]), then (in `full`/`smart`) the values of small keys fetched whole
//! and compared through a digest of a canonical encoding. Big keys, streams and every digest
//! mismatch go to [`super::deep`], which walks them in chunks and names the first difference.
//!
//! A command that fails because the key changed under us (`WRONGTYPE` after a concurrent
//! write) is a difference "changed while being compared", which the next round re-checks; a
//! redirect (`MOVED`/`ASK`) means the cluster is being resharded and stops the check.

use super::deep;
use super::fast::{FastPool, Reply};
use super::keys::KeyMap;
use super::report::{Diff, DiffKind};
use super::side::{Expiry, Pool, Req, Side};
use super::util::Digest;
use super::{Error, Mode};
use crate::config::CheckConfig;
use crate::model::{escape_bytes, Cmd, DbIndex};
use crate::resp::{NextAction, Value};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

/// Target size of one pipeline of whole small values.
const SMALL_BATCH_BYTES: u64 = 8 << 20;
/// Assumed bytes per collection element when sizing that pipeline.
const ELEMENT_WEIGHT: u64 = 64;

/// What every worker shares.
pub struct Shared<'a> {
    /// Settings.
    pub opts: &'a CheckConfig,
    /// Key mapping.
    pub map: &'a KeyMap,
    /// Source side.
    pub src: &'a Side,
    /// Target side.
    pub tgt: &'a Side,
    /// Keys of types without a value comparison.
    pub unsupported: AtomicU64,
}

/// A Redis data type as `TYPE` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `string`
    String,
    /// `list`
    List,
    /// `set`
    Set,
    /// `zset`
    Zset,
    /// `hash`
    Hash,
    /// `stream`
    Stream,
    /// `none`: no such key.
    None,
    /// Anything else (module types such as `ReJSON-RL`).
    Other(String),
}

impl Kind {
    /// The kind a `TYPE` reply names (no allocation for the built-in types).
    pub fn from_name(s: &[u8]) -> Kind {
        match s {
            b"string" => Kind::String,
            b"list" => Kind::List,
            b"set" => Kind::Set,
            b"zset" => Kind::Zset,
            b"hash" => Kind::Hash,
            b"stream" => Kind::Stream,
            b"none" => Kind::None,
            other => Kind::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// The kind of a `TYPE` reply that arrived as a full value (a status or bulk string).
    fn of_reply(r: &Reply) -> Option<Kind> {
        match r {
            Reply::Type(k) => Some(k.clone()),
            Reply::Int(_) => None,
            Reply::Other(v) => v.as_bytes().map(Kind::from_name),
        }
    }

    /// The type name.
    pub fn name(&self) -> &str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::Zset => "zset",
            Kind::Hash => "hash",
            Kind::Stream => "stream",
            Kind::None => "none",
            Kind::Other(s) => s,
        }
    }

    fn len_cmd(&self) -> Option<&'static str> {
        Some(match self {
            Kind::String => "STRLEN",
            Kind::List => "LLEN",
            Kind::Set => "SCARD",
            Kind::Zset => "ZCARD",
            Kind::Hash => "HLEN",
            Kind::Stream => "XLEN",
            Kind::None | Kind::Other(_) => return None,
        })
    }

    fn unit(&self) -> &'static str {
        match self {
            Kind::String => "bytes",
            Kind::Hash => "fields",
            Kind::Set | Kind::Zset => "members",
            Kind::Stream => "entries",
            _ => "elements",
        }
    }
}

/// Where one key is on one side.
#[derive(Debug, Clone, Copy)]
pub struct Loc<'k> {
    /// Master index.
    pub node: usize,
    /// Database.
    pub db: DbIndex,
    /// Key name.
    pub key: &'k [u8],
}

/// A worker's connections to both sides.
pub struct Worker<'a> {
    /// Shared state.
    pub sh: &'a Shared<'a>,
    /// Source connections.
    pub src: Pool<'a>,
    /// Target connections.
    pub tgt: Pool<'a>,
    /// Source connections of the per-key hot path.
    fsrc: FastPool<'a>,
    /// Target connections of the per-key hot path.
    ftgt: FastPool<'a>,
    /// Reply buffers of the hot path, kept between batches.
    sv: Vec<Reply>,
    tv: Vec<Reply>,
}

/// Classifies an error reply on a key command: a redirect stops the check, anything else
/// means the key changed while being compared.
pub fn key_error(side: &Side, addr_hint: &str, v: &Value) -> Result<Option<String>, Error> {
    match v.server_error() {
        None => Ok(None),
        Some(e)
            if matches!(
                e.next_action(),
                NextAction::Redirect | NextAction::AskRedirect | NextAction::RefreshTopology
            ) =>
        {
            Err(Error::Reply {
                side: side.which.name(),
                addr: addr_hint.to_string(),
                command: "read".into(),
                detail: format!("the cluster changed during the check ({e}); run it again"),
            })
        }
        Some(e) if e.next_action() == NextAction::Fatal => Err(Error::Reply {
            side: side.which.name(),
            addr: addr_hint.to_string(),
            command: "read".into(),
            detail: e.to_string(),
        }),
        Some(e) => Ok(Some(format!("{} {e}", side.which.name()))),
    }
}

struct Pending<'k> {
    db: DbIndex,
    key: &'k [u8],
    tdb: DbIndex,
    /// Borrowed from `key` unless a key prefix renames it on the target.
    tkey: Cow<'k, [u8]>,
    sn: usize,
    tn: usize,
    kind: Kind,
    len: i64,
}

impl<'a> Worker<'a> {
    /// A worker with empty pools.
    pub fn new(sh: &'a Shared<'a>) -> Worker<'a> {
        Worker {
            sh,
            src: Pool::new(sh.src),
            tgt: Pool::new(sh.tgt),
            fsrc: FastPool::new(sh.src),
            ftgt: FastPool::new(sh.tgt),
            sv: Vec::new(),
            tv: Vec::new(),
        }
    }

    /// Sends both sides' requests, then reads both sides' replies, so the two servers work in
    /// parallel.
    pub fn both(&mut self, sreq: &[Req], treq: &[Req]) -> Result<(Vec<Value>, Vec<Value>), Error> {
        let s = self.src.send(sreq)?;
        let t = self.tgt.send(treq)?;
        let sv = self.src.recv(sreq.len(), s)?;
        let tv = self.tgt.recv(treq.len(), t)?;
        Ok((sv, tv))
    }

    /// Compares source keys of `db` with their images on the target: `TYPE` (and in the
    /// value modes the expiry) of every key on both sides in one pipelined round trip per
    /// side, on the hot-path connections ([`FastPool`]).
    pub fn forward(
        &mut self,
        db: DbIndex,
        keys: &[Vec<u8>],
        out: &mut Vec<Diff>,
    ) -> Result<(), Error> {
        let sh = self.sh;
        // Outline is existence and type (issue 7); expiries are compared by the modes that
        // compare values, so outline costs one command per key per side.
        let ttl = sh.opts.ttl && sh.opts.mode != Mode::Outline;
        let per = if ttl { 2 } else { 1 };
        let mut items: Vec<Pending> = Vec::with_capacity(keys.len());
        for k in keys {
            let (tdb, tkey) = sh.map.target_key(db, k);
            let sn = sh.src.node_of(k)?;
            let tn = sh.tgt.node_of(&tkey)?;
            self.fsrc.push(sn, db, [&b"TYPE"[..], k].into_iter())?;
            self.ftgt.push(tn, tdb, [&b"TYPE"[..], &tkey].into_iter())?;
            if ttl {
                self.fsrc
                    .push(sn, db, [sh.src.expiry_name(), &k[..]].into_iter())?;
                self.ftgt
                    .push(tn, tdb, [sh.tgt.expiry_name(), &tkey[..]].into_iter())?;
            }
            items.push(Pending {
                db,
                key: k,
                tdb,
                tkey,
                sn,
                tn,
                kind: Kind::None,
                len: 0,
            });
        }
        // Both sides work in parallel: send to both before reading either.
        self.fsrc.send()?;
        self.ftgt.send()?;
        let mut sv = std::mem::take(&mut self.sv);
        let mut tv = std::mem::take(&mut self.tv);
        let r = self
            .fsrc
            .recv(&mut sv)
            .and_then(|()| self.ftgt.recv(&mut tv))
            .and_then(|()| self.judge_types(items, &mut sv, &mut tv, per, out));
        self.sv = sv;
        self.tv = tv;
        r
    }

    /// The verdicts of [`Worker::forward`]'s replies; keys equal so far go on to lengths.
    fn judge_types<'k>(
        &mut self,
        items: Vec<Pending<'k>>,
        sv: &mut [Reply],
        tv: &mut [Reply],
        per: usize,
        out: &mut Vec<Diff>,
    ) -> Result<(), Error> {
        let sh = self.sh;
        let mut next: Vec<Pending> = Vec::new();
        for ((mut it, s), t) in items
            .into_iter()
            .zip(sv.chunks_mut(per))
            .zip(tv.chunks_mut(per))
        {
            let (Some(s_ty), Some(t_ty)) = (s.first(), t.first()) else {
                return Err(Error::Thread("a pipeline returned too few replies".into()));
            };
            if reply_error(sh.src, s_ty)?.is_some() || reply_error(sh.tgt, t_ty)?.is_some() {
                out.push(diff(
                    &it,
                    DiffKind::Value,
                    "TYPE failed: the key changed while being compared".into(),
                ));
                continue;
            }
            let Some(sk) = Kind::of_reply(s_ty) else {
                return Err(sh
                    .src
                    .bad_reply(self.fsrc.addr(it.sn), "TYPE", &s_ty.to_value()));
            };
            let Some(tk) = Kind::of_reply(t_ty) else {
                return Err(sh
                    .tgt
                    .bad_reply(self.ftgt.addr(it.tn), "TYPE", &t_ty.to_value()));
            };
            match (&sk, &tk) {
                (Kind::None, Kind::None) => continue,
                (Kind::None, _) => {
                    out.push(diff(
                        &it,
                        DiffKind::Extra,
                        format!(
                            "not on the source (deleted after the scan?); target has a {}",
                            tk.name()
                        ),
                    ));
                    continue;
                }
                (_, Kind::None) => {
                    out.push(diff(
                        &it,
                        DiffKind::Missing,
                        format!("source {} is not on the target", sk.name()),
                    ));
                    continue;
                }
                (a, b) if a != b => {
                    out.push(diff(
                        &it,
                        DiffKind::Type,
                        format!("source {}, target {}", a.name(), b.name()),
                    ));
                    continue;
                }
                _ => {}
            }
            if let (Some(se), Some(te)) = (s.get(1), t.get(1)) {
                let se = sh.src.expiry(&int_value(se));
                let te = sh.tgt.expiry(&int_value(te));
                if let Some(d) = ttl_diff(se, te, sh.opts.ttl_tolerance.as_millis() as i64) {
                    out.push(diff(&it, DiffKind::Ttl, d));
                }
            }
            if let Kind::Other(_) = sk {
                sh.unsupported.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if sh.opts.mode != Mode::Outline {
                it.kind = sk;
                next.push(it);
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        self.lengths(next, out)
    }

    fn lengths(&mut self, items: Vec<Pending>, out: &mut Vec<Diff>) -> Result<(), Error> {
        let sh = self.sh;
        for it in &items {
            let name = it.kind.len_cmd().unwrap_or("EXISTS").as_bytes();
            self.fsrc.push(it.sn, it.db, [name, it.key].into_iter())?;
            self.ftgt
                .push(it.tn, it.tdb, [name, &it.tkey[..]].into_iter())?;
        }
        self.fsrc.send()?;
        self.ftgt.send()?;
        let (mut sv, mut tv) = (Vec::new(), Vec::new());
        self.fsrc.recv(&mut sv)?;
        self.ftgt.recv(&mut tv)?;
        let mut small = Vec::new();
        let mut big = Vec::new();
        for ((mut it, s), t) in items.into_iter().zip(sv).zip(tv) {
            let changed = reply_error(sh.src, &s)?.or(reply_error(sh.tgt, &t)?);
            if let Some(e) = changed {
                out.push(diff(
                    &it,
                    DiffKind::Value,
                    format!("length read failed ({e}): the key changed while being compared"),
                ));
                continue;
            }
            let Some(sl) = s.as_int() else {
                return Err(sh
                    .src
                    .bad_reply(self.fsrc.addr(it.sn), "length", &s.to_value()));
            };
            let Some(tl) = t.as_int() else {
                return Err(sh
                    .tgt
                    .bad_reply(self.ftgt.addr(it.tn), "length", &t.to_value()));
            };
            if sl != tl {
                let u = it.kind.unit();
                out.push(diff(
                    &it,
                    DiffKind::Length,
                    format!("{}: source {sl} {u}, target {tl} {u}", it.kind.name()),
                ));
                continue;
            }
            it.len = sl;
            let limit = if it.kind == Kind::String {
                sh.opts.big_key_bytes
            } else {
                sh.opts.big_key_elements
            };
            let is_big = u64::try_from(sl).unwrap_or(u64::MAX) > limit;
            match (sh.opts.mode, &it.kind, is_big) {
                (Mode::Length | Mode::Outline, _, _) => {}
                (Mode::Smart, _, true) => {}
                (_, Kind::Stream, _) | (Mode::Full, _, true) => big.push(it),
                _ => small.push(it),
            }
        }
        // Whole values are fetched in sub-batches of about SMALL_BATCH_BYTES, so a batch of
        // 1000 strings of 1 MiB is not one 1 GiB pipeline. Strings weigh their length;
        // collections an estimate per element (their sizes are unknown until read).
        let mut part = Vec::new();
        let mut weight = 0u64;
        for it in small {
            let len = u64::try_from(it.len).unwrap_or(0);
            weight += if it.kind == Kind::String {
                len
            } else {
                len.saturating_mul(ELEMENT_WEIGHT)
            };
            part.push(it);
            if weight >= SMALL_BATCH_BYTES {
                self.small_values(std::mem::take(&mut part), &mut big, out)?;
                weight = 0;
            }
        }
        if !part.is_empty() {
            self.small_values(part, &mut big, out)?;
        }
        for it in big {
            self.deep(&it, out)?;
        }
        Ok(())
    }

    /// Fetches small values whole on both sides and compares digests; mismatches are walked
    /// by [`deep`] to name the difference.
    fn small_values<'k>(
        &mut self,
        items: Vec<Pending<'k>>,
        again: &mut Vec<Pending<'k>>,
        out: &mut Vec<Diff>,
    ) -> Result<(), Error> {
        let sh = self.sh;
        let fetch = |kind: &Kind, key: &[u8]| -> Cmd {
            match kind {
                Kind::String => Cmd::from_args([&b"GET"[..], key]),
                Kind::List => Cmd::from_args([&b"LRANGE"[..], key, b"0", b"-1"]),
                Kind::Set => Cmd::from_args([&b"SMEMBERS"[..], key]),
                Kind::Zset => Cmd::from_args([&b"ZRANGE"[..], key, b"0", b"-1", b"WITHSCORES"]),
                _ => Cmd::from_args([&b"HGETALL"[..], key]),
            }
        };
        let sreq: Vec<Req> = items
            .iter()
            .map(|it| Req {
                node: it.sn,
                db: it.db,
                cmd: fetch(&it.kind, it.key),
            })
            .collect();
        let treq: Vec<Req> = items
            .iter()
            .map(|it| Req {
                node: it.tn,
                db: it.tdb,
                cmd: fetch(&it.kind, &it.tkey),
            })
            .collect();
        let (sv, tv) = self.both(&sreq, &treq)?;
        for ((it, s), t) in items.into_iter().zip(sv).zip(tv) {
            let changed =
                key_error(sh.src, &sh.src.addr, &s)?.or(key_error(sh.tgt, &sh.tgt.addr, &t)?);
            if let Some(e) = changed {
                out.push(diff(
                    &it,
                    DiffKind::Value,
                    format!("value read failed ({e}): the key changed while being compared"),
                ));
                continue;
            }
            if digest(&it.kind, &s) != digest(&it.kind, &t) {
                again.push(it);
            }
        }
        Ok(())
    }

    fn deep(&mut self, it: &Pending, out: &mut Vec<Diff>) -> Result<(), Error> {
        let s = Loc {
            node: it.sn,
            db: it.db,
            key: it.key,
        };
        let t = Loc {
            node: it.tn,
            db: it.tdb,
            key: &it.tkey,
        };
        let r = deep::compare(self, &it.kind, s, t, it.len)?;
        if let Some((kind, detail)) = r {
            out.push(diff(it, kind, detail));
        }
        Ok(())
    }

    /// Checks target keys of `tdb` for existence on the source (extra keys).
    pub fn reverse(
        &mut self,
        tdb: DbIndex,
        tkeys: &[Vec<u8>],
        out: &mut Vec<Diff>,
    ) -> Result<(), Error> {
        let sh = self.sh;
        if self.all_exist_same_name(tdb, tkeys)? {
            return Ok(());
        }
        let mut reqs = Vec::new();
        // (target key, candidate (db, key) list, index of its first request)
        let mut cands: Vec<(&[u8], Candidates, usize)> = Vec::with_capacity(tkeys.len());
        for tk in tkeys {
            let Some(c) = sh.map.to_source(tdb, tk) else {
                continue;
            };
            let first = reqs.len();
            for (db, k) in &c {
                reqs.push(Req {
                    node: sh.src.node_of(k)?,
                    db: *db,
                    cmd: Cmd::from_args([&b"EXISTS"[..], k]),
                });
            }
            cands.push((tk, c, first));
        }
        if self.all_exist(&cands)? {
            return Ok(());
        }
        let v = self.src.pipeline(&reqs)?;
        for (tk, c, first) in cands {
            let mut exists = false;
            for j in 0..c.len() {
                let r = v.get(first + j).unwrap_or(&Value::Nil);
                if key_error(sh.src, &sh.src.addr, r)?.is_some() {
                    continue;
                }
                match r.as_int() {
                    Some(n) if n > 0 => exists = true,
                    Some(_) => {}
                    None => return Err(sh.src.bad_reply(&sh.src.addr, "EXISTS", r)),
                }
            }
            if !exists {
                let (db, key) = match c.first() {
                    Some((d, k)) => (Some(*d), k.clone()),
                    None => (None, tk.to_vec()),
                };
                out.push(Diff {
                    db,
                    key,
                    target_db: tdb,
                    target_key: tk.to_vec(),
                    kind: DiffKind::Extra,
                    detail: match db {
                        Some(d) => format!("on the target, not on the source ({d})"),
                        None => "on the target; no source db maps to it".into(),
                    },
                });
            }
        }
        Ok(())
    }
}

impl Worker<'_> {
    /// The commonest case, with no per-key work at all: a one-server source where every
    /// target key of `tdb` has the same name in one source db (no key prefix). One
    /// `EXISTS k1 k2 ...` counting every key (a duplicate counts twice) proves that none is
    /// extra. `false` = look closer.
    fn all_exist_same_name(&mut self, tdb: DbIndex, tkeys: &[Vec<u8>]) -> Result<bool, Error> {
        let sh = self.sh;
        if tkeys.is_empty() {
            return Ok(true);
        }
        let Some(db) = sh.map.same_name_source(tdb) else {
            return Ok(false);
        };
        if sh.src.topo.cluster {
            return Ok(false);
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(tkeys.len() + 1);
        args.push(b"EXISTS");
        let mut n = 0i64;
        for k in tkeys {
            if !sh.map.is_marker(k) {
                args.push(k);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(true);
        }
        self.fsrc.push(0, db, args.into_iter())?;
        self.fsrc.send()?;
        let mut v = std::mem::take(&mut self.sv);
        let r = self.fsrc.recv(&mut v);
        let all = matches!(v.first(), Some(Reply::Int(c)) if *c == n);
        self.sv = v;
        r.map(|()| all)
    }

    /// The common case of the reverse pass in one command: when the source is one server and
    /// every target key has one candidate in one db, `EXISTS k1 k2 ...` counting every key
    /// (a duplicate counts twice) proves that none is extra. `false` = look key by key.
    fn all_exist(&mut self, cands: &[(&[u8], Candidates, usize)]) -> Result<bool, Error> {
        let sh = self.sh;
        let Some(db) = cands.first().and_then(|c| c.1.first()).map(|c| c.0) else {
            return Ok(cands.is_empty());
        };
        if sh.src.topo.cluster || cands.iter().any(|c| c.1.len() != 1 || c.1[0].0 != db) {
            return Ok(false);
        }
        let mut cmd = Cmd::with_capacity(cands.len() + 1, cands.len() * 24);
        cmd.arg(b"EXISTS");
        for (_, c, _) in cands {
            cmd.arg(&c[0].1);
        }
        let v = self.src.request(0, db, cmd)?;
        Ok(v.as_int() == Some(cands.len() as i64))
    }
}

/// [`key_error`] for a hot-path reply (only a fully decoded reply can be an error).
fn reply_error(side: &Side, r: &Reply) -> Result<Option<String>, Error> {
    match r {
        Reply::Other(v) => key_error(side, &side.addr, v),
        Reply::Type(_) | Reply::Int(_) => Ok(None),
    }
}

/// An expiry reply as the value [`Side::expiry`] reads (anything but an integer is unknown).
fn int_value(r: &Reply) -> Value {
    r.as_int().map_or(Value::Nil, Value::Int)
}

/// Source keys a target key may have come from.
type Candidates = Vec<(DbIndex, Vec<u8>)>;

fn diff(it: &Pending, kind: DiffKind, detail: String) -> Diff {
    Diff {
        db: Some(it.db),
        key: it.key.to_vec(),
        target_db: it.tdb,
        target_key: it.tkey.to_vec(),
        kind,
        detail,
    }
}

/// Compares two expiries; `tol` in milliseconds.
pub fn ttl_diff(s: Expiry, t: Expiry, tol: i64) -> Option<String> {
    match (s, t) {
        (Expiry::At(a), Expiry::At(b)) if (a - b).abs() > tol => Some(format!(
            "source expires at {a} ms, target at {b} ms (off by {} ms, tolerance {tol} ms)",
            b - a
        )),
        (Expiry::At(a), Expiry::Never) => {
            Some(format!("source expires at {a} ms, target never expires"))
        }
        (Expiry::Never, Expiry::At(b)) => {
            Some(format!("source never expires, target expires at {b} ms"))
        }
        _ => None,
    }
}

/// The canonical score of a zset member: the exact double (so "1.5" and "1.50" agree, "1.5"
/// and "1.5000000001" do not); text that is not a number is kept as text.
pub fn score_bytes(s: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
    {
        Some(f) if !f.is_nan() => {
            // +0 and -0 are the same score in Redis.
            let f = if f == 0.0 { 0.0 } else { f };
            let mut v = b"f".to_vec();
            v.extend_from_slice(&f.to_bits().to_be_bytes());
            v
        }
        _ => {
            let mut v = b"t".to_vec();
            v.extend_from_slice(s);
            v
        }
    }
}

/// Digest of a whole value reply, in a canonical order: list order as is, sets sorted,
/// hashes and zsets sorted by field/member with exact scores.
pub fn digest(kind: &Kind, v: &Value) -> u128 {
    let mut d = Digest::new(kind.name().as_bytes());
    let bytes = |v: &Value| {
        v.as_bytes()
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| format!("{v:?}").into_bytes())
    };
    match (kind, v) {
        (Kind::String, v) => d.part(&bytes(v)),
        (Kind::List, v) => {
            for e in v.as_array().unwrap_or(&[]) {
                d.part(&bytes(e));
            }
        }
        (Kind::Set, v) => {
            let mut m: Vec<Vec<u8>> = v.as_array().unwrap_or(&[]).iter().map(bytes).collect();
            m.sort_unstable();
            for e in &m {
                d.part(e);
            }
        }
        (Kind::Zset | Kind::Hash, v) => {
            let pairs = match v {
                // RESP3 would send [[member, score], ...]; RESP2 sends a flat list.
                Value::Array(a)
                    if a.iter().all(|e| matches!(e, Value::Array(_))) && !a.is_empty() =>
                {
                    a.iter()
                        .filter_map(|e| match e.as_array() {
                            Some([k, s]) => Some((bytes(k), bytes(s))),
                            _ => None,
                        })
                        .collect()
                }
                _ => v
                    .to_pairs()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, s)| (bytes(k), bytes(s)))
                    .collect::<Vec<_>>(),
            };
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
                .into_iter()
                .map(|(k, s)| {
                    if *kind == Kind::Zset {
                        (k, score_bytes(&s))
                    } else {
                        (k, s)
                    }
                })
                .collect();
            pairs.sort_unstable();
            for (k, s) in &pairs {
                d.part(k);
                d.part(s);
            }
        }
        (_, v) => d.part(&bytes(v)),
    }
    d.finish()
}

/// A value for a detail message: escaped, at most 64 bytes shown.
pub fn show(b: &[u8]) -> String {
    if b.len() > 64 {
        format!("{}... ({} bytes)", escape_bytes(&b[..64]), b.len())
    } else {
        escape_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn canonical_digests_ignore_order_but_not_content() {
        let a = Value::Array(vec![bulk("f1"), bulk("v1"), bulk("f2"), bulk("v2")]);
        let b = Value::Array(vec![bulk("f2"), bulk("v2"), bulk("f1"), bulk("v1")]);
        let c = Value::Array(vec![bulk("f2"), bulk("v1"), bulk("f1"), bulk("v2")]);
        assert_eq!(digest(&Kind::Hash, &a), digest(&Kind::Hash, &b));
        assert_ne!(digest(&Kind::Hash, &a), digest(&Kind::Hash, &c));
        // Lists keep their order.
        assert_ne!(digest(&Kind::List, &a), digest(&Kind::List, &b));
        let z1 = Value::Array(vec![bulk("m"), bulk("1.5")]);
        let z2 = Value::Array(vec![bulk("m"), bulk("1.50")]);
        let z3 = Value::Array(vec![bulk("m"), bulk("1.5000000001")]);
        assert_eq!(digest(&Kind::Zset, &z1), digest(&Kind::Zset, &z2));
        assert_ne!(digest(&Kind::Zset, &z1), digest(&Kind::Zset, &z3));
        assert_ne!(
            digest(&Kind::Set, &Value::Array(vec![bulk("ab")])),
            digest(&Kind::Set, &Value::Array(vec![bulk("a"), bulk("b")]))
        );
    }

    #[test]
    fn ttl_tolerance() {
        assert_eq!(ttl_diff(Expiry::At(1000), Expiry::At(1500), 500), None);
        assert!(ttl_diff(Expiry::At(1000), Expiry::At(1501), 500).is_some());
        assert!(ttl_diff(Expiry::At(1000), Expiry::Never, 500)
            .unwrap()
            .contains("never"));
        assert!(ttl_diff(Expiry::Never, Expiry::At(1), 500).is_some());
        assert_eq!(ttl_diff(Expiry::Never, Expiry::Never, 0), None);
        assert_eq!(ttl_diff(Expiry::Unknown, Expiry::At(5), 0), None);
    }
}
