//! Target topology discovery: which masters exist, at which addresses, owning which slots.
//!
//! [`discover`] asks any seed node `CLUSTER SHARDS` (Redis 7+), falls back to `CLUSTER SLOTS`
//! for older servers, and treats "cluster support disabled" as a standalone server (one node
//! owning every slot). The result is a plain snapshot ([`Topology`]); routing keys to slots
//! lives in `route`, and refreshing after `MOVED` is the writer's business.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::Cmd;
use crate::net::{self, join_host_port, Conn, Endpoint};
use crate::resp::Value;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// An inclusive range of slots. Invariant: `start <= end < SLOT_COUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
}

impl SlotRange {
    /// Checks the invariant.
    pub fn new(start: u16, end: u16) -> Option<SlotRange> {
        (start <= end && end < SLOT_COUNT).then_some(SlotRange { start, end })
    }

    /// Number of slots in the range.
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }

    /// Always false: a range holds at least one slot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True when `slot` is in the range.
    pub fn contains(&self, slot: u16) -> bool {
        self.start <= slot && slot <= self.end
    }
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One master and what it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Cluster node id (40 hex chars); empty for a standalone server.
    pub id: String,
    /// `host:port` to connect to.
    pub addr: String,
    /// Owned slot ranges, sorted.
    pub slots: Vec<SlotRange>,
    /// `host:port` of its replicas (informational; writes go to masters only).
    pub replicas: Vec<String>,
}

impl Node {
    /// Number of slots this node owns.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(SlotRange::len).sum()
    }
}

/// A snapshot of the target's masters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// True for a Redis Cluster, false for a standalone server.
    pub cluster: bool,
    /// The masters, sorted by their first slot.
    pub masters: Vec<Node>,
}

impl Topology {
    /// A standalone server at `addr`: one node owning every slot.
    pub fn standalone(addr: &str) -> Topology {
        Topology {
            cluster: false,
            masters: vec![Node {
                id: String::new(),
                addr: addr.to_string(),
                slots: vec![SlotRange {
                    start: 0,
                    end: SLOT_COUNT - 1,
                }],
                replicas: Vec::new(),
            }],
        }
    }

    /// Number of slots with an owner (16384 when the cluster is fully covered).
    pub fn covered_slots(&self) -> usize {
        self.masters.iter().map(Node::slot_count).sum()
    }

    /// The master owning `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&Node> {
        self.masters
            .iter()
            .find(|n| n.slots.iter().any(|r| r.contains(slot)))
    }

    /// Builds a topology from a `CLUSTER SHARDS` reply (RESP2 flat arrays or RESP3 maps).
    /// `seed` supplies the host when a node does not announce one; `tls` picks `tls-port`.
    pub fn from_shards(reply: &Value, seed: &str, tls: bool) -> Result<Topology, String> {
        let shards = reply.as_array().ok_or("the reply is not an array")?;
        let mut masters = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            let fields = shard
                .to_pairs()
                .ok_or_else(|| format!("shard {i} is not a map"))?;
            let mut slots = Vec::new();
            let mut nodes: &[Value] = &[];
            for (k, v) in fields {
                match k.as_str() {
                    Some("slots") => {
                        let s = v
                            .as_array()
                            .ok_or_else(|| format!("shard {i}: slots is not an array"))?;
                        if s.len() % 2 != 0 {
                            return Err(format!("shard {i}: odd number of slot bounds"));
                        }
                        for p in s.chunks_exact(2) {
                            slots.push(range(&p[0], &p[1]).ok_or_else(|| {
                                format!("shard {i}: bad slot range {:?}-{:?}", p[0], p[1])
                            })?);
                        }
                    }
                    Some("nodes") => {
                        nodes = v
                            .as_array()
                            .ok_or_else(|| format!("shard {i}: nodes is not an array"))?;
                    }
                    _ => {}
                }
            }
            let mut master = None;
            let mut replicas = Vec::new();
            for (j, n) in nodes.iter().enumerate() {
                let f = ShardNode::parse(n, seed, tls)
                    .ok_or_else(|| format!("shard {i}: node {j} lacks id/address"))?;
                if f.role == "master" && f.health != "fail" {
                    master = Some(f);
                } else if f.role != "master" {
                    replicas.push(f.addr);
                }
            }
            // A shard without slots (a spare master) or without a healthy master (failover in
            // progress) owns nothing we can write to.
            let Some(m) = master else { continue };
            if slots.is_empty() {
                continue;
            }
            slots.sort();
            masters.push(Node {
                id: m.id,
                addr: m.addr,
                slots,
                replicas,
            });
        }
        finish(masters)
    }

    /// Builds a topology from a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, ...],
    /// replica...], ...]`.
    pub fn from_slots(reply: &Value, seed: &str) -> Result<Topology, String> {
        let entries = reply.as_array().ok_or("the reply is not an array")?;
        // Keyed by node id (or address when a server omits ids), in first-seen order.
        let mut by_key: BTreeMap<String, Node> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            let e = e
                .as_array()
                .ok_or_else(|| format!("entry {i} is not an array"))?;
            let [start, end, master, replicas @ ..] = e else {
                return Err(format!("entry {i} has fewer than 3 elements"));
            };
            let r = range(start, end).ok_or_else(|| format!("entry {i}: bad slot range"))?;
            let (addr, id) =
                slots_node(master, seed).ok_or_else(|| format!("entry {i}: bad master node"))?;
            let key = if id.is_empty() {
                addr.clone()
            } else {
                id.clone()
            };
            let node = by_key.entry(key).or_insert_with(|| Node {
                id,
                addr,
                slots: Vec::new(),
                replicas: Vec::new(),
            });
            node.slots.push(r);
            for rep in replicas {
                if let Some((a, _)) = slots_node(rep, seed) {
                    if !node.replicas.contains(&a) {
                        node.replicas.push(a);
                    }
                }
            }
        }
        let masters = by_key
            .into_values()
            .map(|mut n| {
                n.slots.sort();
                n
            })
            .collect();
        finish(masters)
    }
}

/// Sorts masters by first slot and rejects slots claimed twice.
fn finish(mut masters: Vec<Node>) -> Result<Topology, String> {
    masters.sort_by_key(|n| n.slots.first().map(|r| r.start));
    let mut all: Vec<(SlotRange, &str)> = masters
        .iter()
        .flat_map(|n| n.slots.iter().map(move |r| (*r, n.addr.as_str())))
        .collect();
    all.sort();
    for w in all.windows(2) {
        if let [(a, na), (b, nb)] = w {
            if b.start <= a.end {
                return Err(format!(
                    "slots {a} ({na}) and {b} ({nb}) overlap; the cluster is reconfiguring"
                ));
            }
        }
    }
    Ok(Topology {
        cluster: true,
        masters,
    })
}

fn slot(v: &Value) -> Option<u16> {
    u16::try_from(v.as_int()?).ok()
}

fn range(a: &Value, b: &Value) -> Option<SlotRange> {
    SlotRange::new(slot(a)?, slot(b)?)
}

/// A node host as announced, or the seed's host when it announces none (`""`, `"?"`).
fn host_or_seed<'a>(h: Option<&'a str>, seed: &'a str) -> &'a str {
    match h {
        Some(h) if !h.is_empty() && h != "?" => h,
        _ => net::host_of(seed),
    }
}

/// `[ip, port, id, ...]` from `CLUSTER SLOTS`.
fn slots_node(v: &Value, seed: &str) -> Option<(String, String)> {
    let a = v.as_array()?;
    let host = host_or_seed(a.first()?.as_str(), seed);
    let port = u16::try_from(a.get(1)?.as_int()?).ok()?;
    let id = a.get(2).and_then(Value::as_str).unwrap_or("").to_string();
    Some((join_host_port(host, port), id))
}

/// The fields of one node in a `CLUSTER SHARDS` reply that discovery uses.
struct ShardNode {
    id: String,
    addr: String,
    role: String,
    health: String,
}

impl ShardNode {
    fn parse(v: &Value, seed: &str, tls: bool) -> Option<ShardNode> {
        let mut id = None;
        let mut port = None;
        let mut tls_port = None;
        let mut ip = None;
        let mut endpoint = None;
        let mut role = String::new();
        let mut health = String::new();
        for (k, v) in v.to_pairs()? {
            match k.as_str()? {
                "id" => id = v.as_str(),
                "port" => port = v.as_int(),
                "tls-port" => tls_port = v.as_int(),
                "ip" => ip = v.as_str(),
                "endpoint" => endpoint = v.as_str(),
                "role" => role = v.as_str().unwrap_or("").to_string(),
                "health" => health = v.as_str().unwrap_or("").to_string(),
                _ => {}
            }
        }
        // A node listening only on TLS reports `port` 0 (and the reverse): zero = absent.
        let nonzero = |p: Option<i64>| p.filter(|p| *p != 0);
        let (port, tls_port) = (nonzero(port), nonzero(tls_port));
        let port = if tls {
            tls_port.or(port)
        } else {
            port.or(tls_port)
        };
        let port = u16::try_from(port?).ok()?;
        let host = match endpoint {
            Some(e) if !e.is_empty() && e != "?" => e,
            _ => host_or_seed(ip, seed),
        };
        Some(ShardNode {
            id: id?.to_string(),
            addr: join_host_port(host, port),
            role,
            health,
        })
    }
}

/// A discovery failure.
#[derive(Debug)]
pub enum Error {
    /// Connecting to or talking with the seed failed.
    Net(net::Error),
    /// The seed answered something discovery cannot use.
    Reply {
        /// The seed's address.
        addr: String,
        /// The command whose reply was unusable.
        command: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Net(e) => write!(f, "topology discovery: {e}"),
            Error::Reply {
                addr,
                command,
                detail,
            } => write!(f, "topology discovery: {addr}: {command}: {detail}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Net(e) => Some(e),
            Error::Reply { .. } => None,
        }
    }
}

impl From<net::Error> for Error {
    fn from(e: net::Error) -> Error {
        Error::Net(e)
    }
}

/// True for the errors a server without cluster mode gives to `CLUSTER ...`
/// (Redis: "This instance has cluster support disabled"; Dragonfly: "Cluster is disabled").
fn cluster_disabled(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("cluster support disabled") || m.contains("cluster is disabled")
}

/// True when the server does not know the subcommand (Redis before 7 for `SHARDS`).
fn unknown_subcommand(msg: &str) -> bool {
    msg.to_ascii_lowercase().contains("unknown")
}

/// Discovers the target behind `seed` (any node of a cluster, or a standalone server).
pub fn discover(seed: &Endpoint) -> Result<Topology, Error> {
    let mut c = Conn::connect(seed)?;
    discover_on(&mut c, seed.tls.is_some())
}

/// [`discover`] over an existing connection; `tls` picks the nodes' TLS ports.
pub fn discover_on(c: &mut Conn, tls: bool) -> Result<Topology, Error> {
    let addr = c.addr().to_string();
    let bad = |command, detail| Error::Reply {
        addr: addr.clone(),
        command,
        detail,
    };
    let shards = c.request(&Cmd::from_args(["CLUSTER", "SHARDS"]))?;
    match shards.server_error() {
        None => {
            return Topology::from_shards(&shards, &addr, tls).map_err(|d| bad("CLUSTER SHARDS", d))
        }
        Some(e) if cluster_disabled(&e.message) => return Ok(Topology::standalone(&addr)),
        Some(e) if unknown_subcommand(&e.message) => {
            log::debug!("{addr}: CLUSTER SHARDS unsupported ({e}); trying CLUSTER SLOTS");
        }
        Some(e) => return Err(bad("CLUSTER SHARDS", format!("server replied: {e}"))),
    }
    let slots = c.request(&Cmd::from_args(["CLUSTER", "SLOTS"]))?;
    match slots.server_error() {
        None => Topology::from_slots(&slots, &addr).map_err(|d| bad("CLUSTER SLOTS", d)),
        Some(e) if cluster_disabled(&e.message) => Ok(Topology::standalone(&addr)),
        Some(e) => Err(bad("CLUSTER SLOTS", format!("server replied: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn shard_node(id: &str, ip: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            b("id"),
            b(id),
            b("port"),
            Value::Int(port),
            b("ip"),
            b(ip),
            b("endpoint"),
            b(ip),
            b("role"),
            b(role),
            b("health"),
            b(health),
        ])
    }

    #[test]
    fn shards_resp2() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                b("slots"),
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(99),
                    Value::Int(200),
                    Value::Int(16383),
                ]),
                b("nodes"),
                Value::Array(vec![
                    shard_node("a", "10.0.0.1", 7000, "master", "online"),
                    shard_node("r", "10.0.0.2", 7003, "replica", "online"),
                ]),
            ]),
            Value::Array(vec![
                b("slots"),
                Value::Array(vec![Value::Int(100), Value::Int(199)]),
                b("nodes"),
                Value::Array(vec![shard_node("b", "", 7001, "master", "online")]),
            ]),
        ]);
        let t = Topology::from_shards(&reply, "seed.host:1", false).unwrap();
        assert_eq!(t.masters.len(), 2);
        assert_eq!(t.covered_slots(), 16384);
        assert_eq!(t.masters[0].addr, "10.0.0.1:7000");
        assert_eq!(t.masters[0].replicas, vec!["10.0.0.2:7003".to_string()]);
        // No announced host: the seed's host.
        assert_eq!(t.masters[1].addr, "seed.host:7001");
        assert_eq!(t.owner(150).map(|n| n.id.as_str()), Some("b"));
    }

    #[test]
    fn slots_reply_groups_ranges_by_node() {
        let n = |ip: &str, port, id: &str| Value::Array(vec![b(ip), Value::Int(port), b(id)]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(10), n("h", 1, "x")]),
            Value::Array(vec![
                Value::Int(11),
                Value::Int(20),
                n("h", 2, "y"),
                n("h", 3, "z"),
            ]),
            Value::Array(vec![Value::Int(21), Value::Int(30), n("h", 1, "x")]),
        ]);
        let t = Topology::from_slots(&reply, "s:1").unwrap();
        assert_eq!(t.masters.len(), 2);
        assert_eq!(t.masters[0].slots.len(), 2);
        assert_eq!(t.masters[1].replicas, vec!["h:3".to_string()]);
        assert_eq!(t.covered_slots(), 31);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for r in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                b("slots"),
                Value::Array(vec![Value::Int(5)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                b("slots"),
                Value::Array(vec![Value::Int(5), Value::Int(16384)]),
            ])]),
        ] {
            assert!(Topology::from_shards(&r, "s:1", false).is_err(), "{r:?}");
        }
        let overlap = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(10),
                Value::Array(vec![b("h"), Value::Int(1), b("x")]),
            ]),
            Value::Array(vec![
                Value::Int(5),
                Value::Int(20),
                Value::Array(vec![b("h"), Value::Int(2), b("y")]),
            ]),
        ]);
        let e = Topology::from_slots(&overlap, "s:1").unwrap_err();
        assert!(e.contains("overlap"), "{e}");
    }
}
