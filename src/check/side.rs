//! One side of the comparison (source or target): its masters, what its servers support,
//! its rate limit, and per-worker connection pools that pipeline requests to every master.
//!
//! Both sides are treated alike: a standalone server is a one-master topology, a Redis Cluster
//! is discovered with `CLUSTER SHARDS`/`SLOTS` and keys are routed by slot. Only standard read
//! commands are sent, so Redis, Redis Cluster, Dragonfly and the emulator all work.

use super::util::{now_ms, Limiter};
use super::Error;
use crate::model::{Cmd, DbIndex};
use crate::net::{Conn, Endpoint};
use crate::resp::Value;
use crate::route::Slot;
use crate::target::topology::{self, Topology};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The Dragonfly (or any) source.
    Source,
    /// The Redis target.
    Target,
}

impl Which {
    /// `source` or `target`.
    pub fn name(self) -> &'static str {
        match self {
            Which::Source => "source",
            Which::Target => "target",
        }
    }
}

/// A side, discovered and probed once, shared (read-only) by every thread.
pub struct Side {
    /// Which side this is.
    pub which: Which,
    /// The configured address (for messages and the report).
    pub addr: String,
    /// Masters and slots.
    pub topo: Topology,
    /// One endpoint per master, same order as `topo.masters`.
    pub endpoints: Vec<Endpoint>,
    /// `PEXPIRETIME` works (Redis 7+, Dragonfly); else `PTTL` + now.
    pub expiretime: bool,
    /// Commands per second for the whole side.
    pub limiter: Limiter,
    /// Reply bytes per second for the whole side.
    pub bandwidth: Limiter,
    /// Reply bytes read from this side.
    pub bytes: AtomicU64,
}

impl Side {
    /// Discovers the topology behind `seed` and probes `PEXPIRETIME`.
    pub fn open(which: Which, seed: &Endpoint, qps: u64, bandwidth: u64) -> Result<Side, Error> {
        let topo = topology::discover(seed).map_err(|e| Error::Topology {
            side: which.name(),
            source: e,
        })?;
        if topo.masters.is_empty() {
            return Err(Error::Reply {
                side: which.name(),
                addr: seed.addr.clone(),
                command: "CLUSTER SHARDS".into(),
                detail: "the cluster has no masters".into(),
            });
        }
        let endpoints: Vec<Endpoint> = topo
            .masters
            .iter()
            .map(|m| seed.with_addr(m.addr.clone()))
            .collect();
        let mut probe = Conn::connect(&endpoints[0]).map_err(|e| Error::net(which, e))?;
        let reply = probe
            .request(&Cmd::from_args([
                &b"PEXPIRETIME"[..],
                b"df2redis-sync:check:probe",
            ]))
            .map_err(|e| Error::net(which, e))?;
        let expiretime = matches!(reply, Value::Int(_));
        log::debug!(
            "{} {}: {} master(s), expiry read with {}",
            which.name(),
            seed.addr,
            topo.masters.len(),
            if expiretime { "PEXPIRETIME" } else { "PTTL" }
        );
        Ok(Side {
            which,
            addr: seed.addr.clone(),
            topo,
            endpoints,
            expiretime,
            limiter: Limiter::new(qps),
            bandwidth: Limiter::new(bandwidth),
            bytes: AtomicU64::new(0),
        })
    }

    /// The master index that owns `key`.
    pub fn node_of(&self, key: &[u8]) -> Result<usize, Error> {
        if !self.topo.cluster {
            return Ok(0);
        }
        let slot = Slot::of_key(key).get();
        self.topo
            .masters
            .iter()
            .position(|n| n.slots.iter().any(|r| r.contains(slot)))
            .ok_or_else(|| Error::Reply {
                side: self.which.name(),
                addr: self.addr.clone(),
                command: "CLUSTER SHARDS".into(),
                detail: format!("slot {slot} has no master (cluster not fully covered)"),
            })
    }

    /// Databases holding keys, from `INFO keyspace` on every master (a cluster has only db 0).
    pub fn dbs(&self) -> Result<Vec<DbIndex>, Error> {
        let mut dbs = std::collections::BTreeSet::new();
        for ep in &self.endpoints {
            let mut c = Conn::connect(ep).map_err(|e| Error::net(self.which, e))?;
            let v = c
                .request(&Cmd::from_args(["INFO", "keyspace"]))
                .map_err(|e| Error::net(self.which, e))?;
            let Some(text) = v.as_bytes() else {
                return Err(self.bad_reply(&ep.addr, "INFO keyspace", &v));
            };
            for line in String::from_utf8_lossy(text).lines() {
                // `db3:keys=10,expires=0,avg_ttl=0`
                let Some(rest) = line.strip_prefix("db") else {
                    continue;
                };
                let Some((n, _)) = rest.split_once(':') else {
                    continue;
                };
                if let Ok(n) = n.trim().parse::<u32>() {
                    dbs.insert(DbIndex(n));
                }
            }
        }
        if self.topo.cluster {
            dbs.retain(|d| d.0 == 0);
        }
        Ok(dbs.into_iter().collect())
    }

    /// The error for a reply of the wrong shape.
    pub fn bad_reply(&self, addr: &str, command: &str, v: &Value) -> Error {
        let mut shown = format!("{v:?}");
        if shown.len() > 200 {
            let mut cut = 200;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push_str("...");
        }
        Error::Reply {
            side: self.which.name(),
            addr: addr.to_string(),
            command: command.to_string(),
            detail: format!("unexpected reply {shown}"),
        }
    }

    /// The name of the command that reads a key's expiry on this side.
    pub fn expiry_name(&self) -> &'static [u8] {
        if self.expiretime {
            b"PEXPIRETIME"
        } else {
            b"PTTL"
        }
    }

    /// Turns the reply of the [`Side::expiry_name`] command into an absolute expiry.
    pub fn expiry(&self, v: &Value) -> Expiry {
        match v.as_int() {
            Some(-2) => Expiry::NoKey,
            Some(-1) => Expiry::Never,
            Some(n) if self.expiretime => Expiry::At(n),
            Some(n) => Expiry::At(now_ms().saturating_add(n)),
            None => Expiry::Unknown,
        }
    }
}

/// A key's expiry as an absolute time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No expiry.
    Never,
    /// Expires at this Unix time in milliseconds.
    At(i64),
    /// The key does not exist (any more).
    NoKey,
    /// The server answered something else (an error): not compared.
    Unknown,
}

/// One request of a pipeline: which master, which db, which command.
pub struct Req {
    /// Master index.
    pub node: usize,
    /// Database (always 0 on a cluster).
    pub db: DbIndex,
    /// The command.
    pub cmd: Cmd,
}

/// Requests written by [`Pool::send`], grouped per connection, waiting for their replies.
pub struct Sent(Vec<((usize, DbIndex), Vec<usize>)>);

/// A worker's connections to one side, opened on first use, one per (master, db).
pub struct Pool<'s> {
    /// The side.
    pub side: &'s Side,
    conns: HashMap<(usize, u32), Conn>,
}

impl<'s> Pool<'s> {
    /// An empty pool.
    pub fn new(side: &'s Side) -> Pool<'s> {
        Pool {
            side,
            conns: HashMap::new(),
        }
    }

    /// The connection to master `node` with `db` selected.
    pub fn conn(&mut self, node: usize, db: DbIndex) -> Result<&mut Conn, Error> {
        let side = self.side;
        let which = side.which;
        match self.conns.entry((node, db.0)) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                let ep = side.endpoints.get(node).ok_or_else(|| Error::Reply {
                    side: which.name(),
                    addr: side.addr.clone(),
                    command: "CLUSTER SHARDS".into(),
                    detail: format!("no master number {node}"),
                })?;
                let mut c = Conn::connect(ep).map_err(|e| Error::net(which, e))?;
                if db.0 != 0 {
                    let r = c
                        .request(&Cmd::from_args([
                            &b"SELECT"[..],
                            db.0.to_string().as_bytes(),
                        ]))
                        .map_err(|e| Error::net(which, e))?;
                    if !r.is_ok() {
                        return Err(side.bad_reply(&ep.addr, &format!("SELECT {}", db.0), &r));
                    }
                }
                Ok(v.insert(c))
            }
        }
    }

    /// Sends every request (grouped per connection, each group in one write), then reads the
    /// replies; returns them in request order. Error replies are returned as values.
    pub fn pipeline(&mut self, reqs: &[Req]) -> Result<Vec<Value>, Error> {
        let sent = self.send(reqs)?;
        self.recv(reqs.len(), sent)
    }

    /// First half of [`Pool::pipeline`]: writes the requests, one write per connection, and
    /// returns what [`Pool::recv`] needs to read the replies (so a caller can send to both
    /// sides before waiting for either).
    pub fn send(&mut self, reqs: &[Req]) -> Result<Sent, Error> {
        // Group request indices by connection, keeping order inside each group.
        let mut groups: Vec<((usize, DbIndex), Vec<usize>)> = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            match groups.iter_mut().find(|(k, _)| *k == (r.node, r.db)) {
                Some((_, v)) => v.push(i),
                None => groups.push(((r.node, r.db), vec![i])),
            }
        }
        let which = self.side.which;
        for ((node, db), idx) in &groups {
            self.side.limiter.pay(idx.len() as u64);
            let c = self.conn(*node, *db)?;
            c.send_all(idx.iter().map(|&i| &reqs[i].cmd))
                .map_err(|e| Error::net(which, e))?;
        }
        Ok(Sent(groups))
    }

    /// Second half of [`Pool::pipeline`]: reads the replies of `n` requests sent by
    /// [`Pool::send`], in request order.
    pub fn recv(&mut self, n: usize, sent: Sent) -> Result<Vec<Value>, Error> {
        let which = self.side.which;
        let mut out: Vec<Option<Value>> = (0..n).map(|_| None).collect();
        for ((node, db), idx) in &sent.0 {
            let c = self.conn(*node, *db)?;
            let before = c.consumed();
            for &i in idx {
                let v = c.read_reply().map_err(|e| Error::net(which, e))?;
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(v);
                }
            }
            let read = c.consumed().saturating_sub(before);
            self.side.bytes.fetch_add(read, Ordering::Relaxed);
            // Paid after the fact: the next request of this side waits off the debt.
            self.side.bandwidth.pay(read);
        }
        Ok(out.into_iter().map(|v| v.unwrap_or(Value::Nil)).collect())
    }

    /// One request, one reply.
    pub fn request(&mut self, node: usize, db: DbIndex, cmd: Cmd) -> Result<Value, Error> {
        let mut v = self.pipeline(&[Req { node, db, cmd }])?;
        Ok(v.pop().unwrap_or(Value::Nil))
    }
}
