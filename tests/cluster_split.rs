//! Integration tests of `route::split` against a real 3-master Redis Cluster: the same
//! multi-key command sequence applied as is to a standalone redis-server and, split per slot
//! (or run as a `Transfer`), to the cluster leaves the same keys with the same values and
//! expiries (compared as DUMP payloads and PEXPIRETIME, key by key), and the read commands
//! (`EXISTS`, `TOUCH`) add up to the same counts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::Conn;
use df2redis_sync::resp::Value;
use df2redis_sync::route::split::{split, Routed, TransferIo, TransferOutcome};
use df2redis_sync::route::Slot;
use df2redis_sync::target::topology::{discover, Topology};

use crate::support::{RedisCluster, RedisServer};

/// A minimal cluster client for the test: one connection per master, slot → master from
/// discovery (the cluster does not change during these tests, so no redirect handling).
pub struct SlotClient {
    topo: Topology,
    conns: BTreeMap<String, Conn>,
    seed: df2redis_sync::net::Endpoint,
}

impl SlotClient {
    pub fn new(c: &RedisCluster) -> SlotClient {
        let seed = c.endpoint(0);
        SlotClient {
            topo: discover(&seed).unwrap(),
            conns: BTreeMap::new(),
            seed,
        }
    }

    fn conn(&mut self, slot: Slot) -> &mut Conn {
        let addr = self
            .topo
            .owner(slot.get())
            .expect("slot owner")
            .addr
            .clone();
        let seed = self.seed.clone();
        self.conns
            .entry(addr.clone())
            .or_insert_with(|| Conn::connect(&seed.with_addr(addr)).unwrap())
    }

    /// Pipelines `cmds` to the owner of `slot`, one reply each.
    pub fn exec(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
        let c = self.conn(slot);
        c.send_all(cmds).map_err(|e| e.to_string())?;
        (0..cmds.len())
            .map(|_| c.read_reply().map_err(|e| e.to_string()))
            .collect()
    }

    /// Every master's connection, for whole-cluster reads.
    pub fn masters(&mut self) -> Vec<&mut Conn> {
        let seed = self.seed.clone();
        for m in &self.topo.masters {
            self.conns
                .entry(m.addr.clone())
                .or_insert_with(|| Conn::connect(&seed.with_addr(m.addr.clone())).unwrap());
        }
        self.conns.values_mut().collect()
    }

    /// Applies one command the way a cluster writer must: as is, per slot, or as a transfer.
    /// Returns the replies (one per piece) or the refusal rule.
    pub fn apply(&mut self, cmd: &Cmd) -> Result<Vec<Value>, &'static str> {
        match split(cmd) {
            Routed::Single(s) => Ok(self.exec(s, std::slice::from_ref(cmd)).unwrap()),
            Routed::Split(parts) => Ok(parts
                .iter()
                .flat_map(|(s, c)| self.exec(*s, std::slice::from_ref(c)).unwrap())
                .collect()),
            Routed::Transfer(t) => {
                let out = t.run(self).unwrap();
                Ok(vec![Value::Int(i64::from(out == TransferOutcome::Done))])
            }
            Routed::Keyless => {
                let mut out = Vec::new();
                for c in self.masters() {
                    out.push(c.request(cmd).unwrap());
                }
                Ok(out)
            }
            Routed::Refused { rule } => Err(rule),
        }
    }

    /// Every key of the cluster with its DUMP payload and PEXPIRETIME.
    pub fn snapshot(&mut self) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
        let mut keys = Vec::new();
        for c in self.masters() {
            keys.extend(all_keys(c));
        }
        let mut out = BTreeMap::new();
        for k in keys {
            let r = self
                .exec(
                    Slot::of_key(&k),
                    &[
                        Cmd::from_args([&b"DUMP"[..], &k]),
                        Cmd::from_args([&b"PEXPIRETIME"[..], &k]),
                    ],
                )
                .unwrap();
            out.insert(k, dump_pair(&r));
        }
        out
    }
}

fn all_keys(c: &mut Conn) -> Vec<Vec<u8>> {
    let r = c.request(&Cmd::from_args(["KEYS", "*"])).unwrap();
    r.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bytes().unwrap().to_vec())
        .collect()
}

fn dump_pair(r: &[Value]) -> (Vec<u8>, i64) {
    match r {
        [Value::Bulk(d), Value::Int(t)] => (d.clone(), *t),
        other => panic!("DUMP/PEXPIRETIME: {other:?}"),
    }
}

fn standalone_snapshot(c: &mut Conn) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    for k in all_keys(c) {
        c.send_all(&[
            Cmd::from_args([&b"DUMP"[..], &k]),
            Cmd::from_args([&b"PEXPIRETIME"[..], &k]),
        ])
        .unwrap();
        let r = [c.read_reply().unwrap(), c.read_reply().unwrap()];
        out.insert(k, dump_pair(&r));
    }
    out
}

fn cmd(args: &[&str]) -> Cmd {
    Cmd::from_args(args)
}

/// Sums integer replies (EXISTS / DEL / TOUCH counts).
fn int_sum(r: &[Value]) -> i64 {
    r.iter().map(|v| v.as_int().expect("integer reply")).sum()
}

#[test]
fn split_commands_on_a_cluster_equal_a_standalone_server() {
    let cluster = RedisCluster::start();
    let server = RedisServer::start();
    let mut sa = Conn::connect(&server.endpoint()).unwrap();
    let mut cl = SlotClient::new(&cluster);
    // Keys spread over all three masters, some sharing hashtags.
    let keys: Vec<String> = (0..40)
        .map(|i| {
            if i % 5 == 0 {
                format!("{{tag{}}}k{i}", i % 3)
            } else {
                format!("k{i}")
            }
        })
        .collect();
    let slots: BTreeSet<u16> = keys
        .iter()
        .map(|k| Slot::of_key(k.as_bytes()).get())
        .collect();
    assert!(slots.len() > 20, "the keys must span many slots");
    let far = 2_000_000_000_000i64; // PXAT far in the future
    let mut script: Vec<Cmd> = Vec::new();
    // MSET over every key, twice one key (last value wins on both sides).
    let mut mset = Cmd::new("MSET");
    for (i, k) in keys.iter().enumerate() {
        mset.arg(k.as_bytes()).arg_int(i);
    }
    mset.arg(keys[3].as_bytes()).arg(b"again");
    script.push(mset);
    // Collections and TTLs to move around.
    script.push(cmd(&["RPUSH", "list:a", "1", "2", "3"]));
    script.push(cmd(&["HSET", "hash:a", "f", "v", "g", "w"]));
    script.push(cmd(&["SET", "ttl:a", "x", "PXAT", &far.to_string()]));
    script.push(cmd(&["XADD", "stream:a", "1-1", "f", "v"]));
    script.push(cmd(&["XADD", "stream:a", "2-1", "f", "w"]));
    script.push(cmd(&["XGROUP", "CREATE", "stream:a", "g", "0"]));
    script.push(cmd(&["ZADD", "zset:a", "1.5", "m", "-2", "n"]));
    // DEL and UNLINK over keys of many slots, with a missing key among them.
    let mut del = Cmd::new("DEL");
    for k in keys.iter().step_by(3) {
        del.arg(k.as_bytes());
    }
    del.arg(b"missing");
    script.push(del);
    let mut unlink = Cmd::new("UNLINK");
    for k in keys.iter().skip(1).step_by(7) {
        unlink.arg(k.as_bytes());
    }
    script.push(unlink);
    // Renames and copies across slots (Transfer), and a hashtag rename (Single).
    script.push(cmd(&["RENAME", "list:a", "list:b"]));
    script.push(cmd(&["RENAME", "ttl:a", "ttl:b"]));
    script.push(cmd(&["RENAME", "stream:a", "stream:b"]));
    script.push(cmd(&["RENAMENX", "hash:a", "k2"])); // k2 exists: nothing happens
    script.push(cmd(&["RENAMENX", "hash:a", "hash:b"]));
    script.push(cmd(&["COPY", "zset:a", "zset:b"]));
    script.push(cmd(&["COPY", "zset:a", "hash:b"])); // exists, no REPLACE: nothing
    script.push(cmd(&["COPY", "zset:a", "hash:b", "REPLACE"]));
    script.push(cmd(&["RENAME", "{tag1}k10", "{tag1}moved"]));
    script.push(cmd(&["RENAME", "nosuch", "k4"])); // error on both: no change
    let mut exists = Cmd::new("EXISTS");
    let mut touch = Cmd::new("TOUCH");
    for k in &keys {
        exists.arg(k.as_bytes());
        touch.arg(k.as_bytes());
    }

    // The renames and copies above really cross slots (they run as transfers).
    let transfers = script
        .iter()
        .filter(|c| matches!(split(c), Routed::Transfer(_)))
        .count();
    assert_eq!(transfers, 9);
    for c in &script {
        let expected = sa.request(c).unwrap();
        let got = cl
            .apply(c)
            .unwrap_or_else(|rule| panic!("{c:?} refused: {rule}"));
        // Integer replies (DEL, UNLINK, RENAMENX, COPY) add up to the standalone's.
        if let Some(n) = expected.as_int() {
            assert_eq!(int_sum(&got), n, "{c:?}");
        }
    }
    let n = sa.request(&exists).unwrap().as_int().unwrap();
    assert_eq!(int_sum(&cl.apply(&exists).unwrap()), n);
    assert!(n > 10 && n < 40, "{n}");
    let n = sa.request(&touch).unwrap().as_int().unwrap();
    assert_eq!(int_sum(&cl.apply(&touch).unwrap()), n);

    let want = standalone_snapshot(&mut sa);
    let got = cl.snapshot();
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "key {}", String::from_utf8_lossy(k));
    }
    assert!(want.contains_key(&b"stream:b"[..]) && !want.contains_key(&b"stream:a"[..]));
    assert_eq!(want[&b"ttl:b"[..]].1, far);

    // The refused ones are refused on the cluster (and would work on the standalone).
    for (c, rule) in [
        (cmd(&["MSETNX", "k1", "1", "k2", "2"]), "msetnx-cross-slot"),
        (
            cmd(&["SMOVE", "set:a", "set:b", "m"]),
            "move-element-cross-slot",
        ),
        (
            cmd(&["SUNIONSTORE", "set:c", "set:a", "set:b"]),
            "store-cross-slot",
        ),
    ] {
        assert_ne!(Slot::of_key(b"set:a"), Slot::of_key(b"set:b"));
        assert_eq!(cl.apply(&c), Err(rule), "{c:?}");
    }
}

/// The harness's cluster changes: slots migrate with their keys between masters (slot owner
/// and keys follow), and a new master joins and takes slots; every key stays readable at its
/// new owner and none is lost.
#[test]
fn harness_migrates_slots_and_adds_a_master() {
    use crate::support::cluster_ops::MigrateOpts;
    let mut cluster = RedisCluster::start();
    let mut cl = SlotClient::new(&cluster);
    let keys: Vec<String> = (0..3000).map(|i| format!("key:{i}")).collect();
    for chunk in keys.chunks(500) {
        let mut m = Cmd::new("MSET");
        for k in chunk {
            m.arg(k.as_bytes()).arg(k.as_bytes());
        }
        cl.apply(&m).unwrap();
    }
    let from = cluster.owner_of(0).unwrap();
    let to = (from + 1) % 3;
    let in_range = keys
        .iter()
        .filter(|k| Slot::of_key(k.as_bytes()).get() < 300)
        .count();
    let moved = cluster.migrate_slots(0..=299, from, to, MigrateOpts::default());
    assert_eq!(moved, in_range);
    assert_eq!(cluster.owner_of(0), Some(to));
    assert_eq!(cluster.owner_of(299), Some(to));
    cluster.wait_ok(Duration::from_secs(30));
    let new = cluster.add_master();
    assert_eq!(new, 3);
    assert!(cluster.master_slots(new).is_empty());
    let moved = cluster.migrate_slots(
        0..=99,
        to,
        new,
        MigrateOpts {
            keys_per_batch: 7,
            pause: Duration::from_millis(1),
        },
    );
    assert!(moved > 0);
    assert_eq!(cluster.master_slots(new), vec![0..=99]);
    cluster.wait_ok(Duration::from_secs(30));
    // A fresh client sees 4 masters and every key with its value.
    let mut cl = SlotClient::new(&cluster);
    assert_eq!(cl.topo.masters.len(), 4);
    for k in &keys {
        let r = cl
            .exec(Slot::of_key(k.as_bytes()), &[Cmd::from_args(["GET", k])])
            .unwrap();
        assert_eq!(r[0].as_bytes(), Some(k.as_bytes()), "{k}");
    }
}

/// Transfers without a replication session: no slot markers, the steps as plain commands.
impl TransferIo for SlotClient {
    fn read(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
        self.exec(slot, cmds)
    }
    fn commit(&mut self, slot: Slot, cmds: &[Cmd]) -> Result<Vec<Value>, String> {
        self.exec(slot, cmds)
    }
}
