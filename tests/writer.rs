//! The target writer against a real redis-server: journal batches that wait in its channel
//! together are committed as one `MULTI`/`EXEC` with every flow's marker (group commit), in
//! channel order, and each flow's applied position moves to its last batch's `next`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::bounded;
use df2redis_sync::model::{Cmd, DbIndex, FlowId, Lsn};
use df2redis_sync::target::writer::{Applied, Batch, BatchKind, Markers, Writer, WriterConfig};

use crate::support::RedisServer;

fn markers() -> Markers {
    Markers {
        prefix: "t:ckpt:".into(),
        replid: "r1".into(),
    }
}

fn writer(server: &RedisServer, applied: &Arc<Applied>) -> Writer {
    let cfg = WriterConfig {
        endpoint: server.endpoint(),
        window: 4,
        markers: markers(),
        reply_timeout: Duration::from_secs(10),
        hint: None,
    };
    Writer::connect(cfg, applied.clone()).expect("writer connects")
}

/// `n` commands `SET <prefix><i> <i>` (or `APPEND`, to see the order) in db 0.
fn cmds(name: &str, prefix: &str, n: usize) -> Vec<(DbIndex, Cmd)> {
    (0..n)
        .map(|i| {
            let mut c = Cmd::new(name);
            c.arg(format!("{prefix}{i}").as_bytes())
                .arg(i.to_string().as_bytes());
            (DbIndex(0), c)
        })
        .collect()
}

fn journal(flow: u32, cmds: Vec<(DbIndex, Cmd)>, next: u64) -> Batch {
    Batch {
        flow: FlowId(flow),
        cmds,
        kind: BatchKind::Journal { next: Lsn(next) },
    }
}

/// Runs a writer for `flows` flows (all at position 0) over `batches`, queued before it starts
/// (so what it merges is deterministic), until it has drained them; its counters.
fn drain(server: &RedisServer, flows: usize, batches: Vec<Batch>) -> Arc<Applied> {
    let applied = Arc::new(Applied::new(&vec![Lsn(0); flows]));
    let w = writer(server, &applied);
    let (tx, rx) = bounded::<Batch>(batches.len().max(1));
    for b in batches {
        tx.send(b).unwrap();
    }
    drop(tx);
    w.run(&rx, &AtomicBool::new(false)).expect("writer drains");
    applied
}

/// `ACL SETUSER default <rule>` on `server`.
fn acl(server: &RedisServer, rule: &str) {
    let r = server.cli(&["ACL", "SETUSER", "default", rule]);
    assert_eq!(r.trim(), "OK", "ACL SETUSER default {rule}");
}

/// Calls of one command since the server started (`INFO commandstats`).
fn calls(server: &RedisServer, cmd: &str) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]);
    let key = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn queued_journal_batches_are_committed_together_in_channel_order() {
    let server = RedisServer::start();
    let applied = Arc::new(Applied::new(&[Lsn(0), Lsn(0)]));
    let w = writer(&server, &applied);
    let (tx, rx) = bounded::<Batch>(16);
    // Everything is queued before the writer runs, so what it merges is deterministic:
    // [j0 j1 j0'] merge, the plain batch stops the merge and goes alone, [j1'] goes alone.
    tx.send(journal(0, cmds("APPEND", "a", 10), 10)).unwrap();
    tx.send(journal(1, cmds("SET", "b", 5), 5)).unwrap();
    tx.send(journal(0, cmds("APPEND", "a", 3), 20)).unwrap();
    tx.send(Batch {
        flow: FlowId(0),
        cmds: cmds("SET", "p", 2),
        kind: BatchKind::Plain,
    })
    .unwrap();
    tx.send(journal(1, cmds("SET", "c", 4), 7)).unwrap();
    drop(tx);
    let execs_before = calls(&server, "exec");
    w.run(&rx, &AtomicBool::new(false)).expect("writer drains");

    assert_eq!(calls(&server, "exec") - execs_before, 2, "two transactions");
    assert_eq!(
        calls(&server, "multi"),
        2 + 1,
        "two, plus the discarded MSET probe"
    );
    assert_eq!(calls(&server, "discard"), 1);
    assert_eq!(applied.get(FlowId(0)), Lsn(20));
    assert_eq!(applied.get(FlowId(1)), Lsn(7));
    assert_eq!(server.cli(&["GET", "t:ckpt:0"]), "r1:20");
    assert_eq!(server.cli(&["GET", "t:ckpt:1"]), "r1:7");
    // Order inside the merged transaction: flow 0's first batch, then its second.
    assert_eq!(server.cli(&["GET", "a0"]), "00");
    assert_eq!(server.cli(&["GET", "a2"]), "22");
    assert_eq!(server.cli(&["GET", "a9"]), "9");
    assert_eq!(server.cli(&["GET", "b4"]), "4");
    assert_eq!(server.cli(&["GET", "p1"]), "1");
    assert_eq!(server.cli(&["GET", "c3"]), "3");
}

#[test]
fn merged_transactions_stay_within_the_cap() {
    let server = RedisServer::start();
    // 10 batches of 512 commands: at most 1024 commands per transaction, so 5 × 2.
    let batches = (0..10u64)
        .map(|i| journal(0, cmds("SET", &format!("k{i}:"), 512), (i + 1) * 512))
        .collect();
    let applied = drain(&server, 1, batches);
    assert_eq!(calls(&server, "exec"), 5);
    // Each transaction's 1024 plain SETs of one db go as one MSET; the SETs are the markers.
    assert_eq!(calls(&server, "mset"), 5, "one MSET per transaction");
    assert_eq!(calls(&server, "set"), 5, "one marker per EXEC");
    assert_eq!(applied.commands.load(Ordering::Relaxed), 10 * 512);
    assert_eq!(applied.get(FlowId(0)), Lsn(5120));
    assert_eq!(server.cli(&["GET", "t:ckpt:0"]), "r1:5120");
    assert_eq!(server.cli(&["DBSIZE"]), (10 * 512 + 1).to_string());
}

/// A journal mix as the writer gets it: runs of plain `SET`s (any case, one db at a time) go as
/// one `MSET` each, in place; anything else (a `SET` with an option, another command, a db
/// change) ends a run and goes as it is. The result equals running every command alone, in
/// order, including a key set twice in one run and a `SET` over a key of another type with a
/// TTL (both drop type and TTL).
fn coalescing_mix() -> Vec<(DbIndex, Cmd)> {
    let c = |db: u32, args: &[&str]| (DbIndex(db), Cmd::from_args(args.iter().copied()));
    vec![
        c(0, &["SET", "a", "1"]),
        c(0, &["set", "b", "1"]),
        c(0, &["SET", "a", "2"]),
        c(0, &["SET", "t", "x", "PX", "100000"]),
        c(0, &["SET", "h", "now a string"]),
        c(0, &["APPEND", "a", "+"]),
        c(0, &["SET", "c", "1"]),
        c(1, &["SET", "a", "db1"]),
        c(1, &["SET", "b", "db1"]),
        c(0, &["SET", "d", "alone"]),
    ]
}

/// A fresh server holding a hash `h` with a TTL, which the mix overwrites with a string.
fn coalescing_target() -> RedisServer {
    let server = RedisServer::start();
    server.cli(&["HSET", "h", "f", "v"]);
    server.cli(&["EXPIRE", "h", "1000"]);
    server
}

fn check_coalescing_result(server: &RedisServer) {
    assert_eq!(server.cli(&["GET", "a"]), "2+");
    assert_eq!(server.cli(&["GET", "b"]), "1");
    assert_eq!(server.cli(&["GET", "c"]), "1");
    assert_eq!(server.cli(&["GET", "d"]), "alone");
    assert_eq!(server.cli(&["GET", "h"]), "now a string");
    assert_eq!(
        server.cli(&["TTL", "h"]),
        "-1",
        "the SET dropped the old TTL"
    );
    assert_ne!(
        server.cli(&["TTL", "t"]),
        "-1",
        "a SET with an option keeps it"
    );
    assert_eq!(server.cli(&["-n", "1", "GET", "a"]), "db1");
    assert_eq!(server.cli(&["-n", "1", "GET", "b"]), "db1");
}

#[test]
fn plain_set_runs_go_as_one_mset_with_the_same_result() {
    let server = coalescing_target();
    let applied = drain(&server, 1, vec![journal(0, coalescing_mix(), 10)]);
    check_coalescing_result(&server);
    // Runs: [a b a] (3), then SET PX alone, [h] alone (APPEND follows), APPEND, [c] alone
    // (db change follows), db 1 [a b] (2), db 0 [d] alone.
    assert_eq!(calls(&server, "mset"), 2);
    assert_eq!(
        calls(&server, "set"),
        4 + 1,
        "four SETs alone plus the marker"
    );
    assert_eq!(applied.commands.load(Ordering::Relaxed), 10);
    assert_eq!(applied.refused.load(Ordering::Relaxed), 0);
    assert_eq!(applied.get(FlowId(0)), Lsn(10));
}

/// A target user that may not run `MSET` (ACL) gets the same SETs one by one: the writer asks
/// at connect, in a discarded `MULTI`, and nothing of the question is written.
#[test]
fn without_mset_permission_the_sets_go_one_by_one() {
    let server = coalescing_target();
    acl(&server, "-mset");
    let applied = drain(&server, 1, vec![journal(0, coalescing_mix(), 10)]);
    acl(&server, "+mset");
    check_coalescing_result(&server);
    assert_eq!(calls(&server, "mset"), 0);
    assert_eq!(
        calls(&server, "set"),
        9 + 1,
        "every SET alone plus the marker"
    );
    assert_eq!(applied.refused.load(Ordering::Relaxed), 0);
    assert_eq!(server.cli(&["EXISTS", "t:ckpt:mset-probe"]), "0");
}

/// A full-sync (plain) batch coalesces the same way, without a transaction.
#[test]
fn plain_batches_coalesce_set_runs_too() {
    let server = coalescing_target();
    let plain = Batch {
        flow: FlowId(0),
        cmds: coalescing_mix(),
        kind: BatchKind::Plain,
    };
    let applied = drain(&server, 1, vec![plain]);
    check_coalescing_result(&server);
    assert_eq!(calls(&server, "mset"), 2);
    assert_eq!(
        calls(&server, "set"),
        4,
        "the four SETs that are not in a run"
    );
    assert_eq!(calls(&server, "exec"), 0);
    assert_eq!(applied.commands.load(Ordering::Relaxed), 10);
}

/// A user without `DISCARD`: the probe's transaction is ended with `EXEC` instead (which Redis
/// aborts, the refused `DISCARD` having marked the transaction: nothing is written), and the
/// writer works and coalesces as usual.
#[test]
fn without_discard_the_probe_ends_with_exec_and_the_writer_works() {
    let server = RedisServer::start();
    acl(&server, "-discard");
    let applied = drain(&server, 1, vec![journal(0, cmds("SET", "k", 10), 10)]);
    acl(&server, "+discard");
    assert_eq!(calls(&server, "mset"), 1, "the ten SETs as one");
    assert_eq!(server.cli(&["GET", "k9"]), "9");
    assert_eq!(server.cli(&["EXISTS", "t:ckpt:mset-probe"]), "0");
    assert_eq!(applied.get(FlowId(0)), Lsn(10));
}
