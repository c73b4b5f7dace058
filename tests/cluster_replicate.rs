//! The replicate engine into a real 3-master Redis Cluster: the emulator (a Dragonfly master
//! over redis-server) with a db-0 dataset of every type and its live workload of every
//! specially journaled command, replicated by the real binary; `check --mode full` must find
//! source and target equal. Scenarios: plain, a `CLUSTER FAILOVER` during stable sync (no tool
//! restart), `kill -9` of the tool mid-stream (exact counts after the restart).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Conn, Endpoint};

use crate::support::emu::Proc;
use crate::support::{run_bounded, RedisCluster};

fn plain(addr: &str) -> Endpoint {
    let mut ep = Endpoint::plain(addr);
    ep.io_timeout = Some(Duration::from_secs(20));
    ep
}

/// Writes a db-0 dataset of every type through the emulator (a cluster has only db 0):
/// strings (with and without TTL, integers, binary), lists, sets, sorted sets, hashes, a
/// stream with consumer groups, HyperLogLog, big keys the snapshot splits into chunks, and
/// hashtag keys sharing a slot. Returns the number of keys.
fn load_every_type(addr: &str, scale: usize) -> usize {
    let mut c = Conn::connect(&plain(addr)).unwrap();
    let mut cmds: Vec<Cmd> = Vec::new();
    let mut keys = 0;
    for i in 0..(200 * scale) {
        cmds.push(Cmd::from_args(["SET", &format!("s:{i}"), &format!("v{i}")]));
        cmds.push(Cmd::from_args([
            "SET",
            &format!("t:{i}"),
            &i.to_string(),
            "EX",
            "100000",
        ]));
        let mut b = Cmd::new("SET");
        b.arg(format!("b:{i}").as_bytes())
            .arg(&[0u8, 255, b'\r', b'\n', (i % 256) as u8]);
        cmds.push(b);
        keys += 3;
    }
    for i in 0..(40 * scale) {
        let n = 1 + i % 17;
        let mut l = Cmd::from_args(["RPUSH", &format!("l:{i}")]);
        let mut st = Cmd::from_args(["SADD", &format!("set:{i}")]);
        let mut z = Cmd::from_args(["ZADD", &format!("z:{i}")]);
        let mut h = Cmd::from_args(["HSET", &format!("h:{i}")]);
        for j in 0..n {
            l.arg(format!("e{j}").as_bytes());
            st.arg(
                if i % 2 == 0 {
                    j.to_string().into_bytes()
                } else {
                    format!("m{j}").into_bytes()
                }
                .as_slice(),
            );
            z.arg(format!("{}", j as f64 / 3.0).as_bytes())
                .arg(format!("zm{j}").as_bytes());
            h.arg(format!("f{j}").as_bytes())
                .arg(format!("v{}", j * i).as_bytes());
        }
        cmds.extend([l, st, z, h]);
        cmds.push(Cmd::from_args([
            "SET",
            &format!("{{user{i}}}:name"),
            &format!("n{i}"),
        ]));
        cmds.push(Cmd::from_args([
            "HSET",
            &format!("{{user{i}}}:profile"),
            "age",
            &i.to_string(),
        ]));
        keys += 6;
    }
    // Big keys: split into several snapshot chunks.
    for chunk in 0..(10 * scale) {
        let mut h = Cmd::from_args(["HSET", "big:hash"]);
        let mut st = Cmd::from_args(["SADD", "big:set"]);
        let mut z = Cmd::from_args(["ZADD", "big:zset"]);
        for j in 0..500 {
            let k = chunk * 500 + j;
            h.arg(format!("field:{k}").as_bytes())
                .arg(format!("value:{k}").as_bytes());
            st.arg(format!("member:{k}").as_bytes());
            z.arg(k.to_string().as_bytes())
                .arg(format!("zm:{k}").as_bytes());
        }
        cmds.extend([h, st, z]);
        cmds.push(Cmd::from_args([
            "RPUSH".to_string(),
            "big:list".into(),
            "x".repeat(9000),
        ]));
    }
    keys += 4;
    for i in 0..(100 * scale) {
        cmds.push(Cmd::from_args([
            "XADD",
            "stream:main",
            &format!("{}-0", 1000 + i),
            "f",
            &i.to_string(),
        ]));
    }
    cmds.push(Cmd::from_args([
        "XGROUP",
        "CREATE",
        "stream:main",
        "g1",
        "0",
    ]));
    cmds.push(Cmd::from_args([
        "XREADGROUP",
        "GROUP",
        "g1",
        "c1",
        "COUNT",
        "5",
        "STREAMS",
        "stream:main",
        ">",
    ]));
    cmds.push(Cmd::from_args(["PFADD", "hll", "a", "b", "c"]));
    cmds.push(Cmd::from_args([
        "ZADD", "z:inf", "-inf", "a", "inf", "b", "1e-7", "c",
    ]));
    keys += 3;
    for chunk in cmds.chunks(200) {
        c.send_all(chunk.iter()).unwrap();
        for cmd in chunk {
            let r = c.read_reply().unwrap();
            assert!(!r.is_error(), "{cmd:?}: {r:?}");
        }
    }
    keys
}

/// `dir/replicate.yaml`: the emulator into the cluster (seed: node 0).
fn cluster_config(dir: &Path, emu: &str, seed: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {emu}\ntarget:\n  type: redis-cluster\n  seeds: [{seed}]\n\
             checkpoint:\n  dir: {}\n  interval: 1s\n{extra}",
            dir.join("ckpt").display()
        ),
    )
    .unwrap();
    cfg
}

fn spawn_replica(cfg: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
            .args(["replicate", cfg.to_str().unwrap(), "--log-file"])
            .arg(log)
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_TEST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log.with_extension("stderr"))
                    .unwrap(),
            )
            .spawn()
            .unwrap(),
    )
}

fn spawn_work(addr: &str, rate: &str, ops: &str) -> std::thread::JoinHandle<bool> {
    let (addr, rate, ops) = (addr.to_string(), rate.to_string(), ops.to_string());
    std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args(["work", "--target", &addr, "--rate", &rate, "--ops", &ops])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    })
}

/// `check --mode full` once a second for up to `secs` s until it says equal.
fn wait_check_equal(cfg: &Path, dir: &Path, secs: u32) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let out = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
                .args(["-q", "check", cfg.to_str().unwrap(), "--mode", "full"])
                .args(["--rounds", "1", "--result-dir"])
                .arg(dir.join("check")),
            Duration::from_secs(30),
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(0) {
            assert!(last.contains("result: equal"), "{last}");
            return Ok(());
        }
    }
    Err(last)
}

/// Sum over the cluster's masters of `DBSIZE`.
fn cluster_keys(c: &RedisCluster) -> usize {
    c.nodes()
        .iter()
        .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
        .map(|n| n.cli(&["DBSIZE"]).parse::<usize>().unwrap_or(0))
        .sum()
}

/// The replica's log file.
fn log_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The replica's log file and, after it, its stderr (panics, the final error line).
fn all_output(p: &Path) -> String {
    let mut s = log_text(p);
    s.push_str("\n--- stderr ---\n");
    s.push_str(&std::fs::read_to_string(p.with_extension("stderr")).unwrap_or_default());
    s
}

/// `check --mode full` says equal within `secs` seconds; otherwise panics with `what`, the last
/// report and the replica's output.
fn assert_equal_within(cfg: &Path, dir: &Path, secs: u32, what: &str, log: &Path) {
    if let Err(last) = wait_check_equal(cfg, dir, secs) {
        panic!("{what}:\n{last}\n{}", all_output(log));
    }
}

/// Every type arrives exactly in the cluster, spread over all three masters, and the live
/// workload (INCR, APPEND, LPUSH, SPOP, MSET/DEL across slots, SMOVE, LMOVE, MULTI/EXEC, …)
/// converges: `check --mode full` finds source and target equal.
#[test]
fn cluster_target_every_type_and_live_workload_converge() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (_emu, emu) = crate::support::emu::start_empty_emulator(dir.path(), &[]);
    let keys = load_every_type(&emu, 1);
    let cfg = cluster_config(dir.path(), &emu, &cluster.nodes()[0].addr(), "");
    let log = dir.path().join("replica.log");
    let _r = spawn_replica(&cfg, &log);
    assert_equal_within(&cfg, dir.path(), 30, "full sync never equal", &log);
    // Data on every master, not all on one.
    for n in cluster.nodes() {
        let k: usize = n.cli(&["DBSIZE"]).parse().unwrap();
        assert!(k > keys / 10, "{} holds only {k} keys", n.addr());
    }
    let work = spawn_work(&emu, "3000", "9000");
    // RENAME/COPY across slots: those within one Dragonfly shard are journaled as they are and
    // run as read-then-write transfers; the others arrive as DEL + RESTORE.
    let mut c = Conn::connect(&plain(&emu)).unwrap();
    for i in 0..60 {
        let r = c
            .request(&Cmd::from_args([
                "RENAME",
                &format!("s:{i}"),
                &format!("renamed:{i}"),
            ]))
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        let r = c
            .request(&Cmd::from_args([
                "COPY",
                &format!("h:{}", i % 40),
                &format!("copied:{i}"),
            ]))
            .unwrap();
        assert_eq!(r.as_int(), Some(1), "{r:?}");
    }
    assert!(work.join().unwrap());
    assert_equal_within(&cfg, dir.path(), 30, "never equal after the workload", &log);
    let text = log_text(&log);
    assert!(text.contains("target cluster: 3 masters"), "{text}");
    assert!(
        text.contains("ran as single-slot DUMP/RESTORE/DEL"),
        "{text}"
    );
    assert!(!text.contains("replication session ended"), "{text}");
    assert!(cluster_keys(&cluster) >= keys, "{}", cluster_keys(&cluster));
}

/// A replica promoted with `CLUSTER FAILOVER` while the workload runs in stable sync: the
/// writers follow the `MOVED`s, the slot map is refreshed and the new master gets a writer,
/// all without a restart of the tool or of the replication session; source and target end
/// equal.
#[test]
fn cluster_failover_during_stable_sync_converges_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::builder().masters(3).replicas(1).start();
    let (_emu, emu) = crate::support::emu::start_empty_emulator(dir.path(), &[]);
    load_every_type(&emu, 1);
    let cfg = cluster_config(dir.path(), &emu, &cluster.nodes()[0].addr(), "");
    let log = dir.path().join("replica.log");
    let _r = spawn_replica(&cfg, &log);
    assert_equal_within(&cfg, dir.path(), 30, "full sync never equal", &log);
    let work = spawn_work(&emu, "3000", "15000");
    std::thread::sleep(Duration::from_millis(1500));
    let rep = cluster.replica_of(0).expect("node 0 has a replica");
    cluster.failover(rep);
    assert!(work.join().unwrap());
    assert_equal_within(&cfg, dir.path(), 40, "never equal after the failover", &log);
    let text = log_text(&log);
    assert!(text.contains("target topology changed"), "{text}");
    assert!(
        text.contains(&format!("new master {}", cluster.nodes()[rep].addr())),
        "{text}"
    );
    assert!(!text.contains("replication session ended"), "{text}");
}

/// `kill -9` of the tool twice in stable sync under the workload, each time restarted: the
/// restart resumes PARTIAL from the low-water positions and skips what the slot markers show
/// applied, so the INCR/APPEND/LPUSH results are exact (`check --mode full` compares every
/// value).
#[test]
fn cluster_kill_9_mid_stream_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let (_emu, emu) = crate::support::emu::start_empty_emulator(dir.path(), &[]);
    load_every_type(&emu, 1);
    let cfg = cluster_config(dir.path(), &emu, &cluster.nodes()[1].addr(), "");
    let log = dir.path().join("replica.log");
    let mut r = spawn_replica(&cfg, &log);
    let work = spawn_work(&emu, "3000", "24000");
    for i in 0..2 {
        // Each kill hits a run in stable sync (the full sync, then each resume, done: a
        // restart still reading its slot markers would make no partial resume to count).
        crate::support::emu::wait_log_count(&log, "stable sync: following the journal", i + 1);
        std::thread::sleep(Duration::from_secs(2));
        r.kill9();
        std::thread::sleep(Duration::from_secs(1));
        r = spawn_replica(&cfg, &log);
    }
    assert!(work.join().unwrap());
    assert_equal_within(&cfg, dir.path(), 40, "never equal after kill -9", &log);
    let text = log_text(&log);
    assert_eq!(
        text.matches("partial sync: stable sync resumed").count(),
        2,
        "{text}"
    );
    assert!(text.contains("skipped as already applied"), "{text}");
    drop(r);
}
