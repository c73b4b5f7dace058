//! Cluster change and multi-key scenarios, end to end: the emulator (3 shards) with its
//! dataset in dbs 0, 1, 3 and 7 (dbs 1/3/7 mapped into the cluster's db 0 by key prefixes),
//! the real `replicate` binary into a real Redis Cluster, and `check --mode full` equal at the
//! end, with no restart of the tool:
//! * slots migrated between masters (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while
//!   the full sync runs, and again during stable sync under the live workload;
//! * a new master added and given slots during stable sync;
//! * a journal mix of multi-key commands (MSET/DEL/UNLINK over many slots, same-shard RENAME,
//!   RENAMENX, COPY, SMOVE, LMOVE, *STORE, BITOP, PFMERGE, MOVE between prefixed dbs, FLUSHDB of
//!   a prefixed db) and MULTI/EXEC transactions across slots.

use std::path::PathBuf;
use std::time::Duration;

use df2redis_sync::net::Conn;

use crate::support::cluster_ops::MigrateOpts;
use crate::support::emu::{
    call, connect, spawn_replica, spawn_work, start_empty_emulator, start_emulator,
    wait_check_equal, wait_log, wait_log_count, write_config, Emulator, Proc,
};
use crate::support::RedisCluster;

/// The `databases` section that maps the emulator's dbs into the cluster's db 0.
const PREFIXES: &str = "databases:\n  key_prefix: {1: \"db1:\", 3: \"db3:\", 7: \"db7:\"}\n";

fn cluster_target(c: &RedisCluster) -> String {
    format!(
        "  type: redis-cluster\n  seeds: [\"{}\", \"{}\"]\n",
        c.nodes()[0].addr(),
        c.nodes()[1].addr()
    )
}

fn assert_equal(cfg: &std::path::Path, dir: &std::path::Path, log: &std::path::Path) {
    if let Err(last) = wait_check_equal(cfg, dir, 40) {
        panic!(
            "source and target never compared equal:\n{last}\nreplica log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains("not applied"),
        "commands were refused:\n{text}"
    );
    // One session from start to end: no restart, no second full sync.
    assert_eq!(
        text.matches("stable sync: following the journal").count(),
        1,
        "{text}"
    );
}

/// Slots move from one master to another while the full sync writes the snapshot (slow
/// migration: the slots stay MIGRATING/IMPORTING for seconds, writes meet ASK and MOVED), then
/// other slots move during stable sync under the emulator's workload.
#[test]
fn slots_migrated_during_full_sync_and_stable_sync_converge() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "2");
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), PREFIXES);
    let log = dir.path().join("replica.log");
    let a = cluster.owner_of(0).unwrap();
    let b = (a + 1) % 3;
    let _r = std::thread::scope(|s| {
        let mig = s.spawn(|| {
            cluster.migrate_slots(
                0..=399,
                a,
                b,
                MigrateOpts {
                    keys_per_batch: 5,
                    pause: Duration::from_millis(8),
                },
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let r = spawn_replica(&cfg, &log);
        assert!(mig.join().unwrap() > 0, "no key moved during the full sync");
        r
    });
    wait_log_count(&log, "stable sync: following the journal", 1);
    // Stable sync: workload and multi-key mix (cross-slot transfers meet ASK redirects) while
    // another range moves the other way round.
    let work = spawn_work(&emu_addr, "2000", "8000");
    let mix = {
        let addr = emu_addr.clone();
        std::thread::spawn(move || multi_key_mix(&addr, 30))
    };
    let c = (b + 1) % 3;
    let first_of_c = *cluster.master_slots(c)[0].start();
    let moved = cluster.migrate_slots(
        first_of_c..=first_of_c + 299,
        c,
        a,
        MigrateOpts {
            keys_per_batch: 3,
            pause: Duration::from_millis(5),
        },
    );
    assert!(moved > 0);
    mix.join().unwrap();
    assert!(work.join().unwrap());
    cluster.wait_ok(Duration::from_secs(30));
    assert_equal(&cfg, dir.path(), &log);
}

/// A fourth master joins during stable sync and takes 500 slots (with their keys) while the
/// workload runs: the tool picks the new node up without a restart.
#[test]
fn new_master_given_slots_during_stable_sync_converges() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), PREFIXES);
    let log = dir.path().join("replica.log");
    let _r = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 1);
    let work = spawn_work(&emu_addr, "2000", "8000");
    let new = cluster.add_master();
    let from = cluster.owner_of(16383).unwrap();
    let moved = cluster.migrate_slots(
        15884..=16383,
        from,
        new,
        MigrateOpts {
            keys_per_batch: 10,
            pause: Duration::from_millis(2),
        },
    );
    assert!(moved > 0);
    assert!(work.join().unwrap());
    cluster.wait_ok(Duration::from_secs(30));
    assert_equal(&cfg, dir.path(), &log);
    // The new master really holds replicated keys.
    let keys: u64 = cluster.nodes()[new].cli(&["DBSIZE"]).parse().unwrap();
    assert!(keys > 0);
}

/// Multi-key commands and cross-slot transactions written to the emulator during stable sync.
fn multi_key_mix(addr: &str, rounds: usize) {
    let mut c = connect(addr);
    for r in 0..rounds {
        let k = |n: usize| format!("mx:{r}:{n}");
        // MSET / DEL / UNLINK over keys of many slots.
        let mut mset = vec!["MSET".to_string()];
        for n in 0..12 {
            mset.push(k(n));
            mset.push(format!("v{n}"));
        }
        call(&mut c, &mset.iter().map(String::as_str).collect::<Vec<_>>());
        call(&mut c, &["DEL", &k(0), &k(1), &k(2), "mx:nosuch"]);
        call(&mut c, &["UNLINK", &k(3), &k(4)]);
        // Renames: same shard or not, same slot or not (the emulator journals a same-shard
        // rename as is: across slots it runs as a transfer).
        call(&mut c, &["SET", &k(20), "ttl", "PX", "3600000"]);
        call(&mut c, &["RENAME", &k(20), &k(21)]);
        call(&mut c, &["RPUSH", &k(22), "a", "b", "c"]);
        call(&mut c, &["RENAME", &k(22), &k(23)]);
        call(&mut c, &["RENAMENX", &k(5), &k(6)]); // k(6) exists: no-op
        call(&mut c, &["RENAMENX", &k(7), &k(24)]);
        call(&mut c, &["COPY", &k(8), &k(25)]);
        call(&mut c, &["COPY", &k(9), &k(8), "REPLACE"]);
        call(&mut c, &["HSET", &k(26), "f", "1", "g", "2"]);
        call(&mut c, &["RENAME", &k(26), &format!("{{mx{r}}}h")]);
        // Moves and stores (journaled as single-key commands).
        call(&mut c, &["SADD", &k(30), "a", "b", "c"]);
        call(&mut c, &["SMOVE", &k(30), &k(31), "b"]);
        call(&mut c, &["SUNIONSTORE", &k(32), &k(30), &k(31)]);
        call(&mut c, &["ZADD", &k(33), "1", "x", "2.5", "y"]);
        call(&mut c, &["ZUNIONSTORE", &k(34), "2", &k(33), &k(33)]);
        call(&mut c, &["LMOVE", &k(23), &k(35), "LEFT", "RIGHT"]);
        call(&mut c, &["SET", &k(36), "ab"]);
        call(&mut c, &["BITOP", "OR", &k(37), &k(36), &k(10)]);
        call(&mut c, &["PFADD", &k(38), "a", "b"]);
        call(&mut c, &["PFMERGE", &k(39), &k(38)]);
        // A transaction over several slots.
        call(&mut c, &["MULTI"]);
        for n in 40..45 {
            call(&mut c, &["INCRBY", &k(n), "3"]);
        }
        call(&mut c, &["LPUSH", &k(45), "t"]);
        call(&mut c, &["DEL", &k(11), &k(41)]);
        call(&mut c, &["EXEC"]);
        // Between prefixed dbs: MOVE becomes RENAMENX across the prefixes (a transfer).
        call(&mut c, &["SELECT", "1"]);
        call(&mut c, &["SET", &k(50), "moved"]);
        call(&mut c, &["MOVE", &k(50), "3"]);
        call(&mut c, &["MSET", &k(51), "1", &k(52), "2"]);
        call(&mut c, &["SELECT", "0"]);
    }
    // FLUSHDB of one prefixed db: only its keys go, on every master.
    call(&mut c, &["SELECT", "7"]);
    call(&mut c, &["FLUSHDB"]);
    call(&mut c, &["SET", "after:flush", "7"]);
    call(&mut c, &["SELECT", "0"]);
}

/// A journal mix of multi-key commands and cross-slot transactions (with the workload running)
/// converges exactly on a cluster.
#[test]
fn multi_key_commands_and_cross_slot_transactions_converge() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), PREFIXES);
    let log = dir.path().join("replica.log");
    let _r = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 1);
    let work = spawn_work(&emu_addr, "1000", "3000");
    multi_key_mix(&emu_addr, 40);
    assert!(work.join().unwrap());
    assert_equal(&cfg, dir.path(), &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("ran as single-slot DUMP/RESTORE/DEL"),
        "no cross-slot rename ran as a transfer: {text}"
    );
    // Spot checks through the cluster: the prefixed MOVE and the FLUSHDB of db 7.
    let mut cl = crate::cluster_split::SlotClient::new(&cluster);
    let get = |cl: &mut crate::cluster_split::SlotClient, k: &str| {
        let s = df2redis_sync::route::Slot::of_key(k.as_bytes());
        cl.exec(s, &[df2redis_sync::model::Cmd::from_args(["GET", k])])
            .unwrap()
            .remove(0)
    };
    assert_eq!(get(&mut cl, "db3:mx:0:50").as_bytes(), Some(&b"moved"[..]));
    assert_eq!(get(&mut cl, "db7:after:flush").as_bytes(), Some(&b"7"[..]));
    let db7: usize = cluster
        .nodes()
        .iter()
        .map(|n| {
            n.cli(&["KEYS", "db7:*"])
                .lines()
                .filter(|l| !l.is_empty())
                .count()
        })
        .sum();
    assert_eq!(db7, 1, "FLUSHDB of db 7 left keys");
}

/// `kill -9` of the tool twice while the multi-key mix (cross-slot renames run as transfers,
/// MULTI/EXEC with INCRBY, MSET/DEL over many slots) and the workload run: each restart resumes
/// PARTIAL, and nothing is lost or applied twice (`check --mode full` compares every value).
#[test]
fn kill_9_during_transfers_and_multi_key_mix_converges_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), PREFIXES);
    let log = dir.path().join("replica.log");
    let mut r = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 1);
    let work = spawn_work(&emu_addr, "1000", "6000");
    let mix = {
        let addr = emu_addr.clone();
        std::thread::spawn(move || multi_key_mix(&addr, 400))
    };
    for i in 0..2 {
        // Kill once this run follows the journal again and has had time to apply a part of
        // the mix, while the mix still runs.
        wait_log_count(&log, "stable sync: following the journal", i + 1);
        std::thread::sleep(Duration::from_millis(700));
        assert!(!mix.is_finished(), "the mix ended before kill {i}");
        let _ = r.0.kill();
        let _ = r.0.wait();
        std::thread::sleep(Duration::from_millis(300));
        r = spawn_replica(&cfg, &log);
    }
    mix.join().unwrap();
    assert!(work.join().unwrap());
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 40) {
        panic!(
            "never equal after kill -9:\n{last}\nreplica log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.matches("partial sync: stable sync resumed").count(),
        2,
        "{text}"
    );
    assert!(!text.contains("not applied"), "{text}");
}

/// A cross-slot transfer interrupted between the `RESTORE` of its destination and the `DEL` of
/// its source (the window a `kill -9` can hit) must be completed by the resume, not judged
/// done nor run again from the start. The interruption is made deterministic by taking `DEL`
/// away from the target user (ACL) while `MOVE k 3` from db 1 (a `RENAMENX db1:k db3:k`
/// across slots, run as DUMP/EXISTS/RESTORE/DEL) is replayed: the session fails on the source
/// `DEL` after the destination was restored, and resumes PARTIAL once `DEL` is allowed again.
/// Re-running the whole `RENAMENX` finds its own destination and does nothing, which left the
/// source key behind on the target: the `db 1 key mx:59:50` CI saw after two `kill -9`s.
#[test]
fn transfer_interrupted_after_restore_is_completed_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (_emu, emu_addr) = start_empty_emulator(dir.path(), &[]);
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), PREFIXES);
    let log = dir.path().join("replica.log");
    let mut c = connect(&emu_addr);
    call(&mut c, &["SELECT", "1"]);
    call(&mut c, &["SET", "seed", "1"]);
    let _r = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 1);
    // Values to move, and time for a low-water position past them.
    for k in ["mv:a", "mv:b", "mv:c"] {
        call(&mut c, &["SET", k, k, "PX", "3600000"]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let acl = |rule: &str| {
        for n in cluster.nodes() {
            let r = n.cli(&["ACL", "SETUSER", "default", rule]);
            assert!(r.trim() == "OK", "ACL SETUSER default {rule}: {r}");
        }
    };
    acl("-del");
    call(&mut c, &["MOVE", "mv:a", "3"]);
    let failed = wait_log(&log, "DEL of the source", 30);
    acl("+del");
    assert!(
        failed,
        "the transfer did not stop at the source DEL: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Later writes of the same flow and slots: they must follow the completed transfer.
    call(&mut c, &["MOVE", "mv:b", "3"]);
    call(&mut c, &["SET", "mv:z", "later"]);
    call(&mut c, &["SELECT", "3"]);
    call(&mut c, &["APPEND", "mv:a", "+"]);
    call(&mut c, &["SELECT", "0"]);
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 40) {
        panic!(
            "never equal after the interrupted transfer:\n{last}\nreplica log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // The resume was PARTIAL (a full sync would flush the target and hide the fault).
    assert!(
        text.contains("partial sync: stable sync resumed"),
        "no partial resume: {text}"
    );
    assert_eq!(
        text.matches("full sync started").count(),
        1,
        "a second full sync: {text}"
    );
    // The resumes completed the transfer from its destination step on (not from the start).
    assert!(
        text.contains("completed the source step a previous session left undone"),
        "{text}"
    );
}

/// Two keys of one slot that the emulator (3 shards) journals on the same flow.
fn same_slot_same_flow_keys() -> (String, String) {
    let shard = |k: &str| df2redis_sync::emulator::server::shard_of(k.as_bytes(), 3);
    let first = "{eo}k0".to_string();
    let second = (1..1000)
        .map(|n| format!("{{eo}}k{n}"))
        .find(|k| shard(k) == shard(&first))
        .expect("a second key on the same shard");
    (first, second)
}

/// The start of the two slot-migration scenarios: a 3-master cluster, the emulator, a replica
/// in stable sync, two keys of one slot and one flow, the slot's owner `a` and another master
/// `b`, and a connection to the emulator (`c`).
struct MigrationScene {
    dir: tempfile::TempDir,
    cluster: RedisCluster,
    _emu: Emulator,
    c: Conn,
    cfg: PathBuf,
    log: PathBuf,
    replica: Proc,
    k1: String,
    k2: String,
    slot: u16,
    a: usize,
    b: usize,
}

fn migration_scene() -> MigrationScene {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (emu, emu_addr) = start_empty_emulator(dir.path(), &[]);
    let cfg = write_config(
        dir.path(),
        &emu_addr,
        &cluster_target(&cluster),
        "logging:\n  level: debug\n",
    );
    let log = dir.path().join("replica.log");
    let (k1, k2) = same_slot_same_flow_keys();
    let slot = df2redis_sync::route::Slot::of_key(k1.as_bytes()).get();
    let a = cluster.owner_of(slot).unwrap();
    let b = (a + 1) % 3;
    let mut c = connect(&emu_addr);
    call(&mut c, &["SET", "seed", "1"]);
    let replica = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 1);
    MigrationScene {
        dir,
        cluster,
        _emu: emu,
        c,
        cfg,
        log,
        replica,
        k1,
        k2,
        slot,
        a,
        b,
    }
}

/// The half-migrated slot window (issue 6): one slot is MIGRATING with one of its keys already
/// moved; the journal writes the moved key, then a key still on the source node, of the same
/// slot and the same flow, in two batches that reach the node together (the node is paused
/// meanwhile, so both are on the wire before it runs either). The first group is refused
/// (`ASK`; the resend meets `TRYAGAIN` on the importing node while the slot marker is still on
/// the source) while the second one runs with its slot marker. The tool is killed with
/// SIGKILL in that state, the migration finished, the tool restarted: the resume must apply
/// the refused write (exact `INCR` counts), not skip it as the second group's marker
/// suggests.
#[test]
fn kill_9_while_a_slot_migrates_loses_no_refused_group() {
    let MigrationScene {
        dir,
        cluster,
        _emu,
        mut c,
        cfg,
        log,
        replica: mut r,
        k1,
        k2,
        slot,
        a,
        b,
    } = migration_scene();
    // GET on one node, with ASKING (an importing node answers for its slot only then).
    let get = |node: usize, k: &str| {
        let mut n = cluster.conn(node);
        n.request(&df2redis_sync::model::Cmd::new("ASKING"))
            .unwrap();
        let v = n
            .request(&df2redis_sync::model::Cmd::from_args(["GET", k]))
            .unwrap();
        match v.as_bytes() {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => format!("{v:?}"),
        }
    };
    // Journal writes of the slot: its marker now lives on the source node `a`.
    call(&mut c, &["INCR", &k1]);
    call(&mut c, &["INCR", &k2]);
    let until = |what: &str, secs: u64, f: &dyn Fn() -> bool| {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                std::time::Instant::now() < end,
                "{what} not within {secs} s; replica log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until("both keys at 1 on the source node", 30, &|| {
        get(a, &k1) == "1" && get(a, &k2) == "1"
    });
    // Let a low-water position pass them (written every 500 ms).
    std::thread::sleep(Duration::from_millis(1500));
    cluster.open_migration(slot, a, b);
    cluster.migrate_keys(a, b, &[&k1]);
    // Hold the source node's writes while the two journal batches reach it.
    let paused = cluster.nodes()[a].cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    assert_eq!(paused.trim(), "OK");
    call(&mut c, &["INCR", &k1]);
    std::thread::sleep(Duration::from_millis(300));
    call(&mut c, &["INCR", &k2]);
    // The second group ran on the source node; the first one is being resent.
    until("the second group applied on the source node", 30, &|| {
        get(a, &k2) == "2"
    });
    until("the first group refused and resent", 30, &|| {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("TRYAGAIN"))
    });
    assert_eq!(get(b, &k1), "1", "the refused group was applied already");
    // The group that ran while an earlier one of its slot was unacknowledged recorded its own
    // range in the slot marker instead of raising the high-water position past the other.
    let tag = String::from_utf8_lossy(df2redis_sync::target::cluster::slot_tag(slot)).into_owned();
    let marker = cluster.nodes()[a].cli(&[
        "ZRANGE",
        &format!("df2redis-sync:ckpt:{{{tag}}}"),
        "0",
        "-1",
        "WITHSCORES",
    ]);
    assert!(
        marker.lines().any(|l| l.ends_with(":s0")) && marker.lines().any(|l| l.ends_with(":e0")),
        "no applied range in the slot marker: {marker}"
    );
    r.kill9();
    // Finish the migration (the rest of the slot's keys, its marker included, move to `b`).
    cluster.migrate_slots(slot..=slot, a, b, MigrateOpts::default());
    cluster.wait_ok(Duration::from_secs(30));
    let _r = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 2);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("partial sync: stable sync resumed"),
        "no partial resume: {text}"
    );
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 20) {
        panic!(
            "a write was lost across the kill -9 during the migration:\n{last}\n\
             {k1} on the target: {:?}\nreplica log:\n{text}",
            get(b, &k1)
        );
    }
    assert_eq!((get(b, &k1), get(b, &k2)), ("2".into(), "2".into()));
}

/// Per-key order in the half-migrated slot window (no crash): an `MSET` of the moved key *and*
/// a key still on the source node (one slot, one group) is refused (`TRYAGAIN`: some of its
/// keys are gone, until the whole slot moved); a later `SET` of the second key, pipelined
/// behind it while the source node is paused, would run first and then be overwritten by the
/// refused group's resend (the target ended with `first` where the source had `second`). The
/// flow now waits for a group of several keys to be acknowledged before it sends a later write
/// of one of its keys (`FlowRouting::must_wait`).
#[test]
fn a_refused_two_key_group_is_not_overtaken_during_a_migration() {
    let MigrationScene {
        dir,
        cluster,
        _emu,
        mut c,
        cfg,
        log,
        replica: _r,
        k1,
        k2,
        slot,
        a,
        b,
    } = migration_scene();
    call(&mut c, &["SET", &k1, "0"]);
    call(&mut c, &["SET", &k2, "start"]);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.open_migration(slot, a, b);
    cluster.migrate_keys(a, b, &[&k1]);
    let paused = cluster.nodes()[a].cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    assert_eq!(paused.trim(), "OK");
    call(&mut c, &["MSET", &k1, "1", &k2, "first"]);
    std::thread::sleep(Duration::from_millis(300));
    call(&mut c, &["SET", &k2, "second"]);
    std::thread::sleep(Duration::from_millis(2500));
    cluster.migrate_slots(slot..=slot, a, b, MigrateOpts::default());
    cluster.wait_ok(Duration::from_secs(30));
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 20) {
        panic!(
            "per-key order lost during the migration:\n{last}\nreplica log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("TRYAGAIN"),
        "the group was never refused: {text}"
    );
    let get = |k: &str| cluster.nodes()[b].cli(&["GET", k]).trim().to_string();
    assert_eq!((get(&k1), get(&k2)), ("1".into(), "second".into()));
}
