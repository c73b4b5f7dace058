//! Cluster changes for tests, done the way `redis-cli --cluster reshard` / `add-node` do them
//! but over direct connections (fast enough to move hundreds of slots in a test):
//! * [`RedisCluster::migrate_slots`]: per slot, `CLUSTER SETSLOT s IMPORTING` on the
//!   destination, `MIGRATING` on the source, `CLUSTER GETKEYSINSLOT` + `MIGRATE … KEYS` until
//!   the slot is empty, then `CLUSTER SETSLOT s NODE <dest>` on both and on every other master.
//!   An optional pause between key batches keeps the slot in its migrating state for a while,
//!   so a writer meets `ASK` redirects.
//! * [`RedisCluster::add_master`]: a new empty node (same password / TLS), `CLUSTER MEET`, wait
//!   until every node knows it; give it slots with `migrate_slots`.
//! * [`RedisCluster::owner_of`], [`RedisCluster::master_slots`]: who owns what now.
//! * [`RedisCluster::open_migration`], [`RedisCluster::migrate_keys`]: the first steps of a
//!   migration only (the slot stays MIGRATING/IMPORTING with some keys moved), for tests that
//!   need the half-migrated state to hold while they act; `migrate_slots` finishes it.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use df2redis_sync::model::Cmd;
use df2redis_sync::net::Conn;
use df2redis_sync::resp::Value;

use super::{RedisCluster, RedisServer};

/// Sends one command, panics on a transport error or an error reply.
fn ok(c: &mut Conn, cmd: &Cmd) -> Value {
    let v = c
        .request(cmd)
        .unwrap_or_else(|e| panic!("{cmd:?} on {}: {e}", c.addr()));
    assert!(!v.is_error(), "{cmd:?} on {}: {v:?}", c.addr());
    v
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned()
}

/// How a slot migration runs.
#[derive(Debug, Clone, Copy)]
pub struct MigrateOpts {
    /// Keys per `MIGRATE … KEYS` call.
    pub keys_per_batch: usize,
    /// Sleep after each batch (and after marking each slot migrating): the window in which
    /// writers see `ASK` / `TRYAGAIN`.
    pub pause: Duration,
}

impl Default for MigrateOpts {
    fn default() -> MigrateOpts {
        MigrateOpts {
            keys_per_batch: 100,
            pause: Duration::ZERO,
        }
    }
}

impl RedisCluster {
    /// A connection to node `i` (password and TLS as the cluster has them).
    pub fn conn(&self, i: usize) -> Conn {
        let mut ep = self.endpoint(i);
        ep.io_timeout = Some(Duration::from_secs(30));
        Conn::connect(&ep).unwrap_or_else(|e| panic!("connect node {i}: {e}"))
    }

    /// The cluster node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        text(&ok(&mut self.conn(i), &Cmd::from_args(["CLUSTER", "MYID"])))
    }

    /// The slots node `i` owns, as it says itself (`myself` line of `CLUSTER NODES`).
    pub fn master_slots(&self, i: usize) -> Vec<RangeInclusive<u16>> {
        let nodes = text(&ok(
            &mut self.conn(i),
            &Cmd::from_args(["CLUSTER", "NODES"]),
        ));
        let Some(line) = nodes.lines().find(|l| l.contains("myself")) else {
            return Vec::new();
        };
        // <id> <addr> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
        line.split_whitespace()
            .skip(8)
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                None => {
                    let n: u16 = s.parse().ok()?;
                    Some(n..=n)
                }
            })
            .collect()
    }

    /// The index of the node that owns `slot` according to the node itself.
    pub fn owner_of(&self, slot: u16) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].cli(&["ROLE"]).starts_with("master")
                && self.master_slots(i).iter().any(|r| r.contains(&slot))
        })
    }

    /// Moves `slots` from master `from` to master `to` with their keys, like a reshard.
    /// Returns the number of keys moved. Every other master is told the new owner too, so the
    /// whole cluster agrees at once (no wait for gossip).
    pub fn migrate_slots(
        &self,
        slots: RangeInclusive<u16>,
        from: usize,
        to: usize,
        opts: MigrateOpts,
    ) -> usize {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let mut src = self.conn(from);
        let mut dst = self.conn(to);
        let masters: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| i != from && i != to)
            .filter(|&i| self.nodes[i].cli(&["ROLE"]).starts_with("master"))
            .collect();
        let mut others: Vec<Conn> = masters.iter().map(|&i| self.conn(i)).collect();
        let mut moved = 0;
        for slot in slots {
            let s = slot.to_string();
            open_slot(&mut src, &mut dst, &s, &from_id, &to_id);
            if !opts.pause.is_zero() {
                std::thread::sleep(opts.pause);
            }
            loop {
                let batch = opts.keys_per_batch.to_string();
                let keys = ok(
                    &mut src,
                    &Cmd::from_args(["CLUSTER", "GETKEYSINSLOT", &s, &batch]),
                );
                let keys: Vec<Vec<u8>> = keys
                    .as_array()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec))
                    .collect();
                if keys.is_empty() {
                    break;
                }
                ok(
                    &mut src,
                    &self.migrate_cmd(to, keys.iter().map(Vec::as_slice)),
                );
                moved += keys.len();
                if !opts.pause.is_zero() {
                    std::thread::sleep(opts.pause);
                }
            }
            let node = Cmd::from_args(["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            ok(&mut dst, &node);
            ok(&mut src, &node);
            for o in &mut others {
                ok(o, &node);
            }
        }
        moved
    }

    /// `CLUSTER SETSLOT slot IMPORTING` on `to`, then `MIGRATING` on `from`: the slot is open,
    /// every key still on `from`.
    pub fn open_migration(&self, slot: u16, from: usize, to: usize) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        open_slot(
            &mut self.conn(from),
            &mut self.conn(to),
            &slot.to_string(),
            &from_id,
            &to_id,
        );
    }

    /// `MIGRATE … KEYS <keys>` from node `from` to node `to` (a slot opened with
    /// [`RedisCluster::open_migration`]).
    pub fn migrate_keys(&self, from: usize, to: usize, keys: &[&str]) {
        let m = self.migrate_cmd(to, keys.iter().map(|k| k.as_bytes()));
        ok(&mut self.conn(from), &m);
    }

    /// `MIGRATE <to's host> <port> "" 0 10000 [AUTH pw] KEYS <keys>`.
    fn migrate_cmd<'a>(&self, to: usize, keys: impl IntoIterator<Item = &'a [u8]>) -> Cmd {
        let a = self.nodes[to].addr();
        let (host, port) = a.rsplit_once(':').unwrap();
        let mut m = Cmd::new("MIGRATE");
        m.arg(host.as_bytes())
            .arg(port.as_bytes())
            .arg(b"")
            .arg(b"0")
            .arg(b"10000");
        if let Some(p) = &self.password {
            m.arg(b"AUTH").arg(p.as_bytes());
        }
        m.arg(b"KEYS");
        for k in keys {
            m.arg(k);
        }
        m
    }

    /// Starts a new empty master (same password and TLS as the cluster), introduces it with
    /// `CLUSTER MEET`, waits until every node knows it. Returns its index; it owns no slot yet
    /// (the cluster stays ok), give it some with [`RedisCluster::migrate_slots`].
    pub fn add_master(&mut self) -> usize {
        let mut b = RedisServer::builder().cluster();
        if let Some(p) = &self.password {
            b = b.password(p).args(&["--masterauth", p]);
        }
        if let Some(c) = &self.certs {
            b = b.tls().certs(c.clone());
        }
        let node = b.start();
        let port = node.port().to_string();
        ok(
            &mut self.conn(0),
            &Cmd::from_args(["CLUSTER", "MEET", "127.0.0.1", &port]),
        );
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        let start = Instant::now();
        loop {
            let total = self.nodes.len();
            let known = (0..total).all(|j| {
                self.nodes[j]
                    .cli(&["CLUSTER", "INFO"])
                    .contains(&format!("cluster_known_nodes:{total}"))
            });
            if known {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "new node {} not known by every node after 30 s",
                self.nodes[i].addr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_ok(Duration::from_secs(60));
        i
    }
}

/// `CLUSTER SETSLOT <slot> IMPORTING <from>` on `dst`, then `MIGRATING <to>` on `src`.
fn open_slot(src: &mut Conn, dst: &mut Conn, slot: &str, from_id: &str, to_id: &str) {
    ok(
        dst,
        &Cmd::from_args(["CLUSTER", "SETSLOT", slot, "IMPORTING", from_id]),
    );
    ok(
        src,
        &Cmd::from_args(["CLUSTER", "SETSLOT", slot, "MIGRATING", to_id]),
    );
}
