//! Integration tests: a real 3-master Redis Cluster comes up through the harness, and
//! topology discovery sees 3 masters and all 16384 slots from any seed, through
//! `CLUSTER SHARDS` and through the `CLUSTER SLOTS` fallback; a standalone server is one node.

use std::collections::BTreeSet;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::Conn;
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
fn cluster_with_replicas_lists_them() {
    let c = RedisCluster::builder().masters(3).replicas(1).start();
    let t = discover(&c.endpoint(4)).unwrap();
    check_three_masters(&t, &c);
    for m in &t.masters {
        assert_eq!(m.replicas.len(), 1, "{m:?}");
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
