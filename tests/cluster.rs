//! Integration tests: a real 3-master Redis Cluster comes up through the harness, and
//! topology discovery sees 3 masters and all 16384 slots from any seed, through
//! `CLUSTER SHARDS` and through the `CLUSTER SLOTS` fallback; a standalone server is one node.

use std::collections::BTreeSet;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::Conn;
use df2redis_sync::resp::{ErrorKind, NextAction};
use df2redis_sync::target::topology::{discover, Topology, SLOT_COUNT};

use crate::support::{RedisCluster, RedisServer};

fn check_three_masters(t: &Topology, c: &RedisCluster) {
    assert!(t.cluster);
    assert_eq!(t.masters.len(), 3, "{t:?}");
    assert_eq!(t.covered_slots(), usize::from(SLOT_COUNT));
    let addrs: BTreeSet<String> = c.nodes().iter().map(|n| n.addr()).collect();
    for m in &t.masters {
        assert!(addrs.contains(&m.addr), "{} not a harness node", m.addr);
        assert_eq!(m.id.len(), 40, "{m:?}");
    }
    for slot in [0, 5460, 5461, 10922, 10923, SLOT_COUNT - 1] {
        assert!(t.owner(slot).is_some(), "slot {slot} has no owner");
    }
}

#[test]
fn three_master_cluster_discovered_from_any_seed() {
    let c = RedisCluster::start();
    let first = discover(&c.endpoint(0)).unwrap();
    check_three_masters(&first, &c);
    for i in 1..c.nodes().len() {
        assert_eq!(discover(&c.endpoint(i)).unwrap(), first, "seed {i}");
    }
    // The owner discovery names really owns the slot: a write there succeeds without MOVED.
    let slot_of_foo = 12182; // CLUSTER KEYSLOT foo
    assert_eq!(c.nodes()[0].cli(&["CLUSTER", "KEYSLOT", "foo"]), "12182");
    let owner = first.owner(slot_of_foo).unwrap();
    let mut conn = Conn::connect(&c.endpoint(0).with_addr(owner.addr.clone())).unwrap();
    let r = conn.request(&Cmd::from_args(["SET", "foo", "1"])).unwrap();
    assert!(r.is_ok(), "{r:?}");

    // The CLUSTER SLOTS fallback parses the real reply to the same masters and slots.
    let mut seed = Conn::connect(&c.endpoint(1)).unwrap();
    let slots = seed
        .request_ok(&Cmd::from_args(["CLUSTER", "SLOTS"]))
        .unwrap();
    let via_slots = Topology::from_slots(&slots, &c.nodes()[1].addr()).unwrap();
    assert_eq!(via_slots, first);
}

#[test]
fn cluster_with_replicas_lists_them_and_sees_a_failover() {
    let c = RedisCluster::builder().masters(3).replicas(1).start();
    let t = discover(&c.endpoint(4)).unwrap();
    check_three_masters(&t, &c);
    for m in &t.masters {
        assert_eq!(m.replicas.len(), 1, "{m:?}");
    }

    // Promote the replica of the node owning key "foo"; discovery then names it as the owner
    // and the old master as its replica.
    let foo = 12182; // CLUSTER KEYSLOT foo
    let old = t.owner(foo).unwrap().clone();
    let old_idx = c.nodes().iter().position(|n| n.addr() == old.addr).unwrap();
    let rep = c.replica_of(old_idx).expect("a replica");
    assert_eq!(old.replicas, vec![c.nodes()[rep].addr()]);
    c.failover(rep);
    let after = discover(&c.endpoint(old_idx)).unwrap();
    assert_eq!(after.covered_slots(), usize::from(SLOT_COUNT));
    let new_owner = after.owner(foo).unwrap();
    assert_eq!(new_owner.addr, c.nodes()[rep].addr());
    assert_eq!(new_owner.slots, old.slots);
    assert_eq!(new_owner.replicas, vec![old.addr.clone()]);

    // The demoted node redirects writes: MOVED, classified with the new owner's address.
    let mut demoted = Conn::connect(&c.endpoint(old_idx)).unwrap();
    let r = demoted
        .request(&Cmd::from_args(["SET", "foo", "1"]))
        .unwrap();
    let e = r.server_error().expect("an error reply");
    assert_eq!(
        e.kind,
        ErrorKind::Moved {
            slot: foo,
            addr: new_owner.addr.clone()
        }
    );
    assert_eq!(e.next_action(), NextAction::Redirect);
}

/// Error replies from real servers land in the right class.
#[test]
fn real_server_errors_are_classified() {
    let master = RedisServer::builder()
        .args(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])
        .start();
    let port = master.port().to_string();
    let replica = RedisServer::builder()
        .args(&["--replicaof", "127.0.0.1", &port])
        .start();
    let mut c = Conn::connect(&replica.endpoint()).unwrap();
    let r = c.request(&Cmd::from_args(["SET", "k", "v"])).unwrap();
    assert_eq!(
        r.server_error().map(|e| e.kind),
        Some(ErrorKind::ReadOnly),
        "{r:?}"
    );

    let mut m = Conn::connect(&master.endpoint()).unwrap();
    let r = m.request(&Cmd::from_args(["LPUSH", "l", "x"])).unwrap();
    assert_eq!(r.as_int(), Some(1), "{r:?}");
    let r = m.request(&Cmd::from_args(["GET", "l"])).unwrap();
    let e = r.server_error().expect("WRONGTYPE");
    assert_eq!((e.kind.clone(), e.code()), (ErrorKind::Other, "WRONGTYPE"));
    assert_eq!(e.next_action(), NextAction::CommandFailed);

    // Fill past maxmemory (2 MiB): some write of 1 MiB values gets OOM.
    let big = vec![b'x'; 1 << 20];
    let oom = (0..10).find_map(|i| {
        let mut set = Cmd::from_args(["SET"]);
        set.arg(format!("big{i}").as_bytes()).arg(&big);
        m.request(&set).unwrap().server_error()
    });
    assert_eq!(oom.map(|e| e.kind), Some(ErrorKind::Oom));

    let locked = RedisServer::builder().password("pw").start();
    let mut anon = locked.endpoint();
    anon.password = None;
    let mut a = Conn::connect(&anon).unwrap();
    let r = a.request(&Cmd::from_args(["GET", "k"])).unwrap();
    assert_eq!(
        r.server_error().map(|e| e.kind),
        Some(ErrorKind::Auth),
        "{r:?}"
    );
}

#[test]
fn tls_cluster_discovered_with_tls_ports() {
    let c = RedisCluster::builder().tls().start();
    let ep = c.endpoint(2);
    assert!(ep.tls.is_some());
    let t = discover(&ep).unwrap();
    check_three_masters(&t, &c);
    // Every discovered address is a TLS port we can connect to with the seed's settings.
    for m in &t.masters {
        let mut conn = Conn::connect(&ep.with_addr(m.addr.clone())).unwrap();
        let r = conn.request(&Cmd::new("PING")).unwrap();
        assert_eq!(r.as_str(), Some("PONG"));
    }
}

#[test]
fn standalone_is_one_node_with_every_slot() {
    let s = RedisServer::builder().password("pw").start();
    let t = discover(&s.endpoint()).unwrap();
    assert!(!t.cluster);
    assert_eq!(t.masters.len(), 1);
    assert_eq!(t.masters[0].addr, s.addr());
    assert_eq!(t.covered_slots(), usize::from(SLOT_COUNT));
}
