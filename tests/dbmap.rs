//! Database mapping end to end (`databases.key_prefix` / `databases.map`, see
//! `docs/cluster-commands.md`): the emulator's dataset lives in dbs 0, 1, 3 and 7; the real
//! binary replicates it, snapshot and live journal (writes, `MOVE` between dbs, `FLUSHDB` of
//! one db) into a target where dbs share db 0 through key prefixes, and `check --mode full`
//! finds source and target equal. A source whose dbs the mapping cannot keep apart is refused
//! at start with a message that names the dbs.

use std::time::Duration;

use df2redis_sync::resp::Value;

use crate::support::emu::{
    call, connect, spawn_replica, spawn_work, start_empty_emulator, start_emulator,
    wait_check_equal, wait_log_count, write_config,
};
use crate::support::{RedisCluster, RedisServer};

/// Live writes in dbs 1, 3 and 7 of the emulator: plain writes, a multi-key MSET/DEL, a
/// same-db RENAME, a MOVE from db 1 to db 3 (and one that fails: the key exists there), and
/// FLUSHDB of db 7.
fn db_writes(addr: &str) {
    let mut c = connect(addr);
    call(&mut c, &["SELECT", "1"]);
    call(&mut c, &["SET", "live:a", "1"]);
    call(
        &mut c,
        &["MSET", "live:b", "2", "live:c", "3", "live:d", "4"],
    );
    call(&mut c, &["DEL", "live:c", "live:d", "nosuch"]);
    call(&mut c, &["RENAME", "live:b", "live:renamed"]);
    call(&mut c, &["SET", "live:mv", "x", "PX", "3600000"]);
    call(&mut c, &["RPUSH", "live:mvlist", "a", "b"]);
    assert_eq!(call(&mut c, &["MOVE", "live:mv", "3"]), Value::Int(1));
    call(&mut c, &["SELECT", "3"]);
    call(&mut c, &["SET", "live:taken", "db3"]);
    call(&mut c, &["SELECT", "1"]);
    call(&mut c, &["SET", "live:taken", "db1"]);
    assert_eq!(call(&mut c, &["MOVE", "live:taken", "3"]), Value::Int(0));
    assert_eq!(call(&mut c, &["MOVE", "live:mvlist", "3"]), Value::Int(1));
    call(&mut c, &["SELECT", "7"]);
    call(&mut c, &["FLUSHDB"]);
    call(&mut c, &["SET", "after:flush", "7"]);
    call(&mut c, &["SELECT", "3"]);
    call(&mut c, &["HSET", "live:h", "f", "v"]);
}

/// Dbs 1, 3 and 7 share the standalone target's db 0 with db 0 through key prefixes, while the
/// emulator's workload runs in db 0: snapshot and journal of every db arrive prefixed, MOVE
/// becomes RENAMENX between prefixes, FLUSHDB of db 7 deletes only `db7:` keys.
#[test]
fn emulator_dbs_share_one_standalone_db_through_key_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let server = RedisServer::start();
    let cfg = write_config(
        dir.path(),
        &emu_addr,
        &format!("  addr: {}\n", server.addr()),
        "databases:\n  map: {1: 0, 3: 0, 7: 0}\n  key_prefix: {1: \"db1:\", 3: \"db3:\", 7: \"db7:\"}\n",
    );
    let log = dir.path().join("replica.log");
    let _r = spawn_replica(&cfg, &log);
    let work = spawn_work(&emu_addr, "2000", "6000");
    wait_log_count(&log, "stable sync: following the journal", 1);
    db_writes(&emu_addr);
    assert!(work.join().unwrap());
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 30) {
        panic!(
            "never equal:\n{last}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // Spot checks on the target itself: everything is in db 0, with the prefixes.
    let info = server.cli(&["INFO", "keyspace"]);
    assert!(
        info.contains("db0:") && !info.contains("db1:") && !info.contains("db3:"),
        "{info}"
    );
    assert_eq!(server.cli(&["GET", "db1:live:a"]), "1");
    assert_eq!(server.cli(&["GET", "db1:live:renamed"]), "2");
    assert_eq!(server.cli(&["GET", "db3:live:mv"]), "x");
    assert_eq!(server.cli(&["EXISTS", "db1:live:mv"]), "0");
    assert_eq!(server.cli(&["GET", "db3:live:taken"]), "db3");
    assert_eq!(server.cli(&["GET", "db1:live:taken"]), "db1");
    assert_eq!(server.cli(&["LLEN", "db3:live:mvlist"]), "2");
    let ttl: i64 = server.cli(&["PTTL", "db3:live:mv"]).parse().unwrap();
    assert!(ttl > 3_000_000, "{ttl}");
    // FLUSHDB of db 7 removed its snapshot keys only; db 0 and the other dbs kept theirs.
    assert_eq!(server.cli(&["KEYS", "db7:*"]), "db7:after:flush");
    assert_ne!(server.cli(&["RANDOMKEY"]), "");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!log_text.contains(" ERROR "), "{log_text}");
}

/// A source whose dbs 1 and 3 both hold keys while the mapping sends db 1 into target db 3
/// (unprefixed): replicate refuses at start (exit 1) and names both dbs; nothing is written.
#[test]
fn colliding_source_dbs_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let server = RedisServer::start();
    let cfg = write_config(
        dir.path(),
        &emu_addr,
        &format!("  addr: {}\n", server.addr()),
        "databases:\n  map: {1: 3}\n",
    );
    let out = crate::support::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
            .args(["replicate", cfg.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("db 1 and db 3 both land in target db 3"),
        "{err}"
    );
    assert_eq!(server.cli(&["DBSIZE"]), "0");
}

fn cluster_target(c: &RedisCluster) -> String {
    format!(
        "  type: redis-cluster\n  seeds: [\"{}\"]\n",
        c.nodes()[0].addr()
    )
}

/// A cluster target and a source with keys in dbs 1, 3 and 7 but no key prefixes: replicate
/// refuses at start (exit 1), names the dbs and the config to add; nothing is written.
#[test]
fn cluster_target_refuses_unmapped_source_dbs_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let cluster = RedisCluster::start();
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), "");
    let out = crate::support::run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
            .args(["replicate", cfg.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the source has keys in db 1, 3, 7 but the target is a Redis Cluster")
            && err.contains("databases.key_prefix"),
        "{err}"
    );
    for n in cluster.nodes() {
        assert_eq!(n.cli(&["DBSIZE"]), "0");
    }
}

/// A db that gets keys only after the start (cluster target, no mapping for it): the flow
/// stops at its first entry with the mapping error, nothing of it is written, and the restart
/// is refused at start with the keyspace message: the tool exits 1.
#[test]
fn entry_of_an_unmapped_db_arriving_later_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_empty_emulator(dir.path(), &[]);
    let mut c = connect(&emu_addr);
    call(&mut c, &["SET", "in:db0", "1"]);
    let cluster = RedisCluster::start();
    let cfg = write_config(dir.path(), &emu_addr, &cluster_target(&cluster), "");
    let log = dir.path().join("replica.log");
    let mut r = spawn_replica(&cfg, &log);
    wait_log_count(&log, "stable sync: following the journal", 1);
    call(&mut c, &["SELECT", "2"]);
    call(&mut c, &["SET", "in:db2", "x"]);
    let end = std::time::Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(st) = r.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < end,
            "replicate did not stop: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("source db 2 is not replicated"), "{text}");
    let keys: Vec<String> = cluster
        .nodes()
        .iter()
        .flat_map(|n| {
            n.cli(&["KEYS", "in:*"])
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(keys, vec!["in:db0".to_string()]);
}
