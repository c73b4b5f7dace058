//! The replicate engine end to end: recorded Dragonfly sessions served by the replay master
//! (`support::replay`) replicated into a real redis-server; plus the replay master's own
//! self-test with a hand-driven replica.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Conn, Endpoint};

use crate::support::emu::{
    spawn_replica, spawn_work, start_emulator, wait_check_equal, write_config, Emulator, Proc,
};
use crate::support::replay::{RecordedSession, ReplayMaster};
use crate::support::synthetic;
use crate::support::RedisServer;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata")).join(rel)
}

fn endpoint(addr: &str) -> Endpoint {
    let mut ep = Endpoint::plain(addr);
    ep.connect_timeout = Duration::from_secs(5);
    ep.io_timeout = Some(Duration::from_secs(10));
    ep
}

/// The replay master answers a hand-driven replica with the recorded handshake and pushes each
/// flow's recorded bytes, split at the STARTSTABLE moment; ACKs get no reply and are recorded.
#[test]
fn replay_master_serves_a_recording() {
    let dir = testdata("dragonfly-v1.40.1/s2-plain-3shards/capture");
    let rec = RecordedSession::load(&dir);
    assert_eq!(rec.flows.len(), 3);
    assert_eq!(rec.version, "df-v1.40.1");
    let m = ReplayMaster::serve(rec.clone());
    let mut main = Conn::connect(&endpoint(m.addr())).unwrap();
    let info = main
        .request_ok(&Cmd::from_args(["INFO", "SERVER"]))
        .unwrap();
    let info = String::from_utf8_lossy(info.as_bytes().unwrap()).into_owned();
    assert!(info.contains("dragonfly_version:df-v1.40.1"), "{info}");
    let capa = main
        .request_ok(&Cmd::from_args(["REPLCONF", "capa", "dragonfly"]))
        .unwrap();
    let elems = capa.as_array().unwrap();
    assert_eq!(elems[0].as_str(), Some(rec.replid.as_str()));
    assert_eq!(elems[2].as_int(), Some(3));
    let mut flows = Vec::new();
    for f in &rec.flows {
        let mut c = Conn::connect(&endpoint(m.addr())).unwrap();
        let id = f.id.to_string();
        let r = c
            .request_ok(&Cmd::from_args([
                "DFLY",
                "FLOW",
                &rec.replid,
                &rec.sync_id,
                id.as_str(),
            ]))
            .unwrap();
        assert_eq!(r.as_array().unwrap()[0].as_str(), Some("FULL"));
        flows.push(c);
    }
    main.request_ok(&Cmd::from_args(["DFLY", "SYNC", &rec.sync_id]))
        .unwrap();
    // Read each flow's pre-split bytes, then switch to stable and read the rest.
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); 3];
    for (i, c) in flows.iter_mut().enumerate() {
        let want = rec.flows[i].split;
        got[i].resize(want, 0);
        c.read_exact(&mut got[i]).unwrap();
    }
    main.request_ok(&Cmd::from_args(["DFLY", "STARTSTABLE", &rec.sync_id]))
        .unwrap();
    for (i, c) in flows.iter_mut().enumerate() {
        let f = &rec.flows[i];
        let mut rest = vec![0u8; f.data.len() - f.split];
        c.read_exact(&mut rest).unwrap();
        got[i].extend_from_slice(&rest);
        assert_eq!(got[i], f.data, "flow {i}");
        c.send(&Cmd::from_args(["REPLCONF", "ACK", "7"])).unwrap();
    }
    assert!(m.wait_acks(&[7, 7, 7], Duration::from_secs(5)));
    assert!(m.all_sent());
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    // A second STARTSTABLE is a violation.
    let r = main
        .request(&Cmd::from_args(["DFLY", "STARTSTABLE", &rec.sync_id]))
        .unwrap();
    assert!(r.is_error());
    assert_eq!(m.violations().len(), 1);
}

use crate::recordings::{keyspace, redis};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use df2redis_sync::checkpoint::{FlowState, Store};
use df2redis_sync::config::Config;
use df2redis_sync::pipeline::{self, Options};

/// A config for the replay master at `src`, the redis-server on `port`, checkpoints in `dir`.
fn config(src: &str, port: u16, dir: &std::path::Path) -> Config {
    config_with(src, port, dir, "")
}

/// [`config`] plus extra YAML sections.
fn config_with(src: &str, port: u16, dir: &std::path::Path, extra: &str) -> Config {
    let yaml = yaml(src, &format!("127.0.0.1:{port}"), dir, "200ms", extra);
    Config::from_yaml_str(&yaml, "test").unwrap()
}

/// A replicate config: checkpoints in `ckpt` every `interval`, the source, and last the target
/// `addr`, so that `extra` may go on with more target keys (indented by two spaces) before
/// sections of its own.
fn yaml(src: &str, target: &str, ckpt: &std::path::Path, interval: &str, extra: &str) -> String {
    format!(
        "checkpoint:\n  dir: {}\n  interval: {interval}\nsource:\n  addr: {src}\n\
         target:\n  addr: {target}\n{extra}",
        ckpt.display()
    )
}

/// [`yaml`] written to `dir/replicate.yaml`; returns its path.
fn write_yaml(
    dir: &std::path::Path,
    src: &str,
    target: &str,
    ckpt: &std::path::Path,
    interval: &str,
    extra: &str,
) -> PathBuf {
    let cfg = dir.join("replicate.yaml");
    std::fs::write(&cfg, yaml(src, target, ckpt, interval, extra)).unwrap();
    cfg
}

/// The pipeline settings that make the target the bottleneck at once (one command per batch,
/// one batch in each queue).
const TINY_PIPELINE: &str =
    "pipeline:\n  batch_commands: 1\n  channel_capacity: 1\n  inflight_batches: 1\n";

/// The real binary, quiet, replicating with `cfg` (`bin`: another build, for figures).
fn spawn_binary(bin: &str, cfg: &std::path::Path) -> std::process::Child {
    std::process::Command::new(bin)
        .args(["-q", "replicate", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGTERM to `child`, then its exit status.
fn term_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    signal("-TERM", &child.id().to_string());
    child.wait().unwrap()
}

/// `kill <sig> <pid>`, which must succeed.
#[track_caller]
fn signal(sig: &str, pid: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success(),
        "kill {sig} {pid}"
    );
}

/// Stops an in-process engine (like SIGTERM) and checks the master saw nothing a correct
/// replica must not do.
#[track_caller]
fn stop_clean(engine: Engine, m: &ReplayMaster) {
    engine.stop().unwrap();
    assert!(m.violations().is_empty(), "{:?}", m.violations());
}

/// How many `DFLY SYNC` (full syncs) the master received.
fn full_syncs(m: &ReplayMaster) -> usize {
    m.observed()
        .main_commands
        .iter()
        .filter(|c| c.starts_with("DFLY SYNC"))
        .count()
}

/// Waits (20 s at most) until the target holds more than `keys` keys: the full sync is
/// writing (the owner marker alone is set before any writer starts).
#[track_caller]
fn wait_full_sync_writing(probe: &mut redis::Conn, keys: i64) {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while probe.cmd(&[b"DBSIZE"]).int().unwrap_or(0) <= keys {
        assert!(
            std::time::Instant::now() < end,
            "the full sync never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Freezes the target (SIGSTOP) until the guard is dropped.
fn freeze(server: &RedisServer) -> Stopped {
    let pid = server.pid().to_string();
    signal("-STOP", &pid);
    Stopped(pid)
}

fn test_options() -> Options {
    Options {
        stall_limit: Duration::from_secs(5),
        progress_interval: Duration::from_secs(2),
        backoff: Duration::from_millis(100),
        max_failures: 3,
        ..Options::default()
    }
}

/// The engine running in-process on its own thread, stopped like a SIGTERM would.
struct Engine {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), pipeline::Error>>>,
}

impl Engine {
    fn start(cfg: Config, opts: Options) -> Engine {
        // Engine logs in the test output (RUST_LOG=debug to see them).
        let _ = env_logger::builder().is_test(true).try_init();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || pipeline::run(&cfg, &opts, &s));
        Engine {
            stop,
            handle: Some(handle),
        }
    }

    /// Panics with the engine's result if it ended on its own.
    fn assert_running(&mut self, ctx: &str) {
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            let r = self.handle.take().unwrap().join();
            panic!("{ctx}: the engine ended early: {r:?}");
        }
    }

    /// Waits (bounded) for the engine to end on its own, without asking it to stop.
    fn stop_when_done(mut self, limit: Duration) -> Result<(), pipeline::Error> {
        let h = self.handle.take().unwrap();
        let end = std::time::Instant::now() + limit;
        while !h.is_finished() {
            assert!(
                std::time::Instant::now() < end,
                "the engine did not end within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        h.join().unwrap()
    }

    fn stop(mut self) -> Result<(), pipeline::Error> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Waits until the replica ACKed on every flow what the recorded replica ACKed last (its final
/// `next`), i.e. everything the recording holds was applied and acknowledged.
fn wait_caught_up(m: &ReplayMaster, engine: &mut Engine, ctx: &str) {
    let want = m.session().final_acks();
    let end = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < end {
        if m.wait_acks(&want, Duration::from_millis(200)) {
            return;
        }
        engine.assert_running(ctx);
    }
    panic!(
        "{ctx}: ACKs {:?} never reached the recorded replica's final ACKs {want:?}; violations {:?}",
        m.last_acks(),
        m.violations()
    );
}

/// The target's keyspace against the recording's manifest: types plain Redis cannot hold must
/// be absent, everything else equal (values, dbs, absolute TTLs to the millisecond).
fn assert_manifest(rec_dir: &std::path::Path, server: &RedisServer) {
    let manifest = keyspace::load_manifest(&rec_dir.join("manifest.json")).unwrap();
    let skipped: BTreeSet<(u32, Vec<u8>)> = manifest
        .iter()
        .filter(|(_, st)| matches!(st.value, keyspace::Value::Unholdable(_)))
        .map(|(k, _)| k.clone())
        .collect();
    let mut conn = redis::Conn::connect(server.port()).unwrap();
    let mut got = keyspace::dump_redis(&mut conn).unwrap();
    // The engine's own position markers live in db 0 under the configured prefix.
    got.retain(|(_, k), _| !k.starts_with(b"df2redis-sync:ckpt:"));
    let diffs = keyspace::compare(&manifest, &got, &skipped, 0);
    assert!(
        diffs.is_empty(),
        "{}: {} difference(s):\n{}",
        rec_dir.display(),
        diffs.len(),
        diffs.join("\n")
    );
}

/// Serves one recording's first session and replicates it into an empty redis-server; the
/// run is stopped like a SIGTERM once caught up. Returns the checkpoint store.
fn replicate_first_session(rel: &str, server: &RedisServer, dir: &std::path::Path) {
    replicate_first_session_with(rel, server, dir, "")
}

fn replicate_first_session_with(
    rel: &str,
    server: &RedisServer,
    dir: &std::path::Path,
    extra: &str,
) {
    let rec_dir = testdata(rel);
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let cfg = config_with(m.addr(), server.port(), dir, extra);
    let mut engine = Engine::start(cfg, test_options());
    wait_caught_up(&m, &mut engine, rel);
    engine.stop().unwrap();
    assert!(m.violations().is_empty(), "{rel}: {:?}", m.violations());
    let obs = m.observed();
    let main = obs.main_commands.join(" | ");
    assert!(main.contains("INFO SERVER"), "{rel}: {main}");
    assert!(main.contains("REPLCONF CLIENT-VERSION 4"), "{rel}: {main}");
    // The checkpoint holds exactly the recorded replica's final positions, all stable.
    let cp = Store::new(dir).load().unwrap().expect("checkpoint saved");
    assert_eq!(cp.master_replid, m.session().replid, "{rel}");
    let lsns: Vec<u64> = cp.flows.iter().map(|f| f.next_lsn).collect();
    assert_eq!(lsns, m.session().final_acks(), "{rel}");
    assert!(
        cp.flows.iter().all(|f| f.state == FlowState::Stable),
        "{rel}"
    );
}

fn full_sync_matches_manifest(rel: &str) {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    replicate_first_session(rel, &server, dir.path());
    assert_manifest(&testdata(rel), &server);
}

/// Three flows over two writer connections with tiny batches and windows: per-key order holds
/// (a flow always uses the same connection) and the FLUSHDB barrier of the workload is applied
/// once after every flow's earlier writes on both connections.
#[test]
fn replicate_s2_two_writer_connections_tiny_batches() {
    let rel = "dragonfly-v1.40.1/s2-plain-3shards";
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    replicate_first_session_with(
        rel,
        &server,
        dir.path(),
        "pipeline:\n  connections_per_node: 2\n  batch_commands: 3\n  channel_capacity: 1\n  \
         inflight_batches: 2\n",
    );
    assert_manifest(&testdata(rel), &server);
}

#[test]
fn replicate_s1_lz4_2shards() {
    full_sync_matches_manifest("dragonfly-v1.40.1/s1-lz4-2shards");
}

#[test]
fn replicate_s2_plain_3shards() {
    full_sync_matches_manifest("dragonfly-v1.40.1/s2-plain-3shards");
}

#[test]
fn replicate_s3_zstd_contiguous_chunks() {
    full_sync_matches_manifest("dragonfly-v1.40.1/s3-zstd-contiguous-chunks");
}

#[test]
fn replicate_x1_writes_around_sync() {
    full_sync_matches_manifest("dragonfly-v1.40.1/x1-writes-around-sync-dfmask");
}

#[test]
fn replicate_x3_lzf_3shards() {
    full_sync_matches_manifest("dragonfly-v1.40.1/x3-lzf-3shards");
}

#[test]
fn replicate_s5_v134() {
    full_sync_matches_manifest("dragonfly-v1.34.2/s5-lz4-2shards");
}

/// Partial resume: the first session replicated and stopped (SIGTERM path), then the resumed
/// session served: the engine must ask `DFLY FLOW … <lsn>` with the recorded LSNs (checked by
/// the replay master), follow the release's procedure (v1.35+: no `DFLY SYNC`; v1.34: `DFLY
/// SYNC` after PARTIAL) and end at the manifest.
fn partial_resume(rel: &str, expect_sync: bool) {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    replicate_first_session(rel, &server, dir.path());
    let rec_dir = testdata(rel);
    let m = ReplayMaster::start(&rec_dir.join("capture-resume"));
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    wait_caught_up(&m, &mut engine, rel);
    stop_clean(engine, &m);
    let obs = m.observed();
    let wanted: Vec<Option<u64>> = m.session().flows.iter().map(|f| f.requested_lsn).collect();
    let asked: Vec<Option<u64>> = obs.flow_lsns.values().copied().collect();
    assert_eq!(asked, wanted, "{rel}: resumed with the recorded LSNs");
    let synced = obs.main_commands.iter().any(|c| c.starts_with("DFLY SYNC"));
    assert_eq!(synced, expect_sync, "{rel}: {:?}", obs.main_commands);
    assert_manifest(&rec_dir, &server);
}

#[test]
fn partial_resume_s4_v140() {
    partial_resume("dragonfly-v1.40.1/s4-partial-resume", false);
}

#[test]
fn partial_resume_s6_v134() {
    partial_resume("dragonfly-v1.34.2/s6-partial-resume", true);
}

/// Runs the real binary on one capture of `rec_dir` until it ACKed the recorded replica's
/// final positions, then sends `signal`; checks the exit and that every master connection got
/// closed. Returns what the replay master observed.
fn run_binary(
    rec_dir: &std::path::Path,
    capture: &str,
    server: &RedisServer,
    dir: &std::path::Path,
    interval: &str,
    signal: &str,
) -> crate::support::replay::Observed {
    let m = ReplayMaster::start(&rec_dir.join(capture));
    let cfg = write_yaml(
        dir,
        m.addr(),
        &server.addr(),
        &dir.join("ckpt"),
        interval,
        "",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(["replicate", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let caught_up = m.wait_acks(&m.session().final_acks(), Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    self::signal(signal, &child.id().to_string());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{capture}: no exit 15 s after {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(caught_up, "{capture}: never caught up; log:\n{stderr}");
    if signal == "-TERM" {
        assert_eq!(status.code(), Some(0), "{capture}: log:\n{stderr}");
    } else {
        assert_eq!(status.code(), None, "{capture}: killed by a signal");
    }
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while m.observed().closed < m.observed().connections && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let obs = m.observed();
    assert_eq!(
        obs.closed, obs.connections,
        "{capture}: connections left open"
    );
    obs
}

/// Checks that a session resumed with exactly the recorded LSNs and no `DFLY SYNC` (v1.40).
fn assert_resumed_partial(rec_dir: &std::path::Path, obs: &crate::support::replay::Observed) {
    assert!(
        !obs.main_commands.iter().any(|c| c.starts_with("DFLY SYNC")),
        "{:?}",
        obs.main_commands
    );
    let asked: Vec<Option<u64>> = obs.flow_lsns.values().copied().collect();
    let session = RecordedSession::load(&rec_dir.join("capture-resume"));
    let wanted: Vec<Option<u64>> = session.flows.iter().map(|f| f.requested_lsn).collect();
    assert_eq!(asked, wanted);
}

/// The real binary, stopped by SIGTERM during stable sync: it exits 0 after draining, leaves a
/// checkpoint at the recorded replica's final positions, closes every master connection; a
/// restart resumes PARTIAL from there (the recorded resume LSNs, no `DFLY SYNC` on v1.40) and
/// ends at the manifest.
#[test]
fn sigterm_in_stable_sync_then_restart_resumes_partial() {
    let rec_dir = testdata("dragonfly-v1.40.1/s4-partial-resume");
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let first = run_binary(&rec_dir, "capture", &server, dir.path(), "200ms", "-TERM");
    assert!(first
        .main_commands
        .iter()
        .any(|c| c.starts_with("DFLY SYNC")));
    let session = RecordedSession::load(&rec_dir.join("capture"));
    let cp = Store::new(dir.path().join("ckpt"))
        .load()
        .unwrap()
        .expect("checkpoint written at shutdown");
    let lsns: Vec<u64> = cp.flows.iter().map(|f| f.next_lsn).collect();
    assert_eq!(lsns, session.final_acks());
    assert!(cp.flows.iter().all(|f| f.state == FlowState::Stable));
    let resumed = run_binary(
        &rec_dir,
        "capture-resume",
        &server,
        dir.path(),
        "200ms",
        "-TERM",
    );
    assert_resumed_partial(&rec_dir, &resumed);
    assert_manifest(&rec_dir, &server);
}

/// kill -9 in stable sync before any checkpoint file was written (interval 1 h): the restart
/// resumes from the position markers committed in the target with each batch, exactly at the
/// recorded LSNs, and ends at the manifest (no entry applied twice: the INCR/APPEND/LPUSH keys
/// of the workload compare equal).
#[test]
fn kill_9_in_stable_sync_resumes_from_target_markers() {
    let rec_dir = testdata("dragonfly-v1.40.1/s4-partial-resume");
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    run_binary(&rec_dir, "capture", &server, dir.path(), "1h", "-KILL");
    assert!(
        Store::new(dir.path().join("ckpt"))
            .load()
            .unwrap()
            .is_none(),
        "no checkpoint file may exist: the point is resuming from the markers"
    );
    let resumed = run_binary(
        &rec_dir,
        "capture-resume",
        &server,
        dir.path(),
        "1h",
        "-TERM",
    );
    assert_resumed_partial(&rec_dir, &resumed);
    assert_manifest(&rec_dir, &server);
}

/// Resumes a `kill -STOP`ped process when dropped (also when the test fails).
struct Stopped(String);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// A target that stops answering in the middle of a full sync (redis-server frozen with
/// SIGSTOP): the flows keep their sockets and stop cleanly once blocked for the stall limit —
/// far below the master's 30 s replication timeout — with a checkpoint written and every master
/// connection closed; the error says why. (With `max_failures: 0` the engine gives up instead
/// of reconnecting, so the test can observe the stop.)
#[test]
fn frozen_target_stops_cleanly_before_the_master_timeout() {
    let rec_dir = testdata("dragonfly-v1.40.1/s2-plain-3shards");
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let extra = format!("  io_timeout: 60s\n{TINY_PIPELINE}");
    let yaml = yaml(m.addr(), &server.addr(), dir.path(), "200ms", &extra);
    let cfg = Config::from_yaml_str(&yaml, "test").unwrap();
    let opts = Options {
        stall_limit: Duration::from_millis(1500),
        max_failures: 0,
        ..test_options()
    };
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    let engine = Engine::start(cfg, opts);
    // Freeze the target once the full sync is writing.
    wait_full_sync_writing(&mut probe, 1);
    let frozen = freeze(&server);
    let t0 = std::time::Instant::now();
    let r = engine.stop_when_done(Duration::from_secs(20));
    let took = t0.elapsed();
    drop(frozen);
    let err = r.expect_err("the engine must give up on a frozen target");
    let text = err.to_string();
    assert!(text.contains("has not taken a batch"), "{text}");
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}, must be well below the master's 30 s"
    );
    let obs = m.observed();
    assert_eq!(obs.closed, obs.connections, "master connections left open");
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    let cp = Store::new(dir.path()).load().unwrap().expect("checkpoint");
    assert!(cp.flows.iter().all(|f| f.state == FlowState::FullSync));
}

/// Two-stage stop: the first SIGTERM starts draining, which cannot finish while the target is
/// frozen; the second signal exits 130 at once.
#[test]
fn second_signal_exits_130_at_once() {
    let rec_dir = testdata("dragonfly-v1.40.1/s2-plain-3shards");
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let ckpt = dir.path().join("ckpt");
    let cfg = write_yaml(
        dir.path(),
        m.addr(),
        &server.addr(),
        &ckpt,
        "5s",
        TINY_PIPELINE,
    );
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    let mut child = spawn_binary(env!("CARGO_BIN_EXE_df2redis-sync"), &cfg);
    wait_full_sync_writing(&mut probe, 1);
    let _frozen = freeze(&server);
    let me = child.id().to_string();
    signal("-TERM", &me);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "draining into a frozen target cannot be done yet"
    );
    signal("-TERM", &me);
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no exit after the second signal"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130));
}

/// §3.9 / §5.4 #9: a FLUSHALL inside a journal blob during the full sync cannot be ordered
/// against the other flows' snapshot entries: the engine drops the session and starts a new
/// full sync, which (served the clean recording) ends at the manifest. The flush itself is
/// never applied.
#[test]
fn flush_in_journal_blob_during_full_sync_restarts_the_sync() {
    let rec_dir = testdata("dragonfly-v1.40.1/s2-plain-3shards");
    let clean = RecordedSession::load(&rec_dir.join("capture"));
    let mut bad = clean.clone();
    // JOURNAL_BLOB (D2), 1 item, str(entry): SELECT 0, COMMAND txid 700 shard_cnt 1, 1 arg of
    // 8 bytes: FLUSHALL (the §8.2 example's bytes).
    let mut entry = vec![0x06, 0x00, 0x0A, 0x42, 0xBC, 0x01, 0x01, 0x08, 0x08];
    entry.extend_from_slice(b"FLUSHALL");
    let mut blob = vec![0xD2, 0x01, entry.len() as u8];
    blob.extend_from_slice(&entry);
    let f0 = &mut bad.flows[0];
    let end = memchr::memmem::find(&f0.data, &[0xC8, 0, 0, 0, 0, 0, 0, 0, 0])
        .expect("s2 is uncompressed: FULLSYNC_END is visible");
    assert!(end < f0.split);
    f0.data.splice(end..end, blob.iter().copied());
    f0.split += blob.len();

    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve_sequence(vec![bad, clean]);
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    wait_caught_up(&m, &mut engine, "s2 with a FLUSHALL blob");
    stop_clean(engine, &m);
    assert_eq!(full_syncs(&m), 2, "one full sync abandoned, one completed");
    assert_manifest(&rec_dir, &server);
}

/// A pre-v1.21 master journals a multi-shard transaction as MULTI_COMMAND entries closed by
/// EXEC; the flow collects the group and ships it whole at the EXEC. When that EXEC is the last
/// byte the master sent (no PING or write after it yet), the group is applied and acknowledged
/// at once, not when more bytes arrive.
#[test]
fn atomic_group_ending_the_stream_is_applied_at_once() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve(synthetic::journal_session(&[
        &["SET", "before", "1"],
        &["MULTI", "SET", "a", "1"],
        &["MULTI", "INCRBY", "n", "5"],
        &["EXEC"],
    ]));
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    // ACK 5: the next LSN after the EXEC, reported only once the target applied the group.
    let want = m.session().final_acks();
    assert_eq!(want, [5]);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while !m.wait_acks(&want, Duration::from_millis(200)) {
        engine.assert_running("group at the end of the stream");
        assert!(
            std::time::Instant::now() < end,
            "the group was not acknowledged within 20 s: ACKs {:?}",
            m.last_acks()
        );
    }
    assert_eq!(server.cli(&["MGET", "before", "a", "n"]), "1\n1\n5");
    stop_clean(engine, &m);
    let cp = Store::new(dir.path())
        .load()
        .unwrap()
        .expect("checkpoint saved");
    assert_eq!(cp.flows[0].next_lsn, 5);
}

/// A pre-v1.21 group still open when a session ends (its EXEC not received yet) must leave
/// the flow's position at the group's first entry: its commands wait in the flow for the EXEC,
/// so a position past them would make a resume skip them. The first session ends with `SET
/// before`, `MULTI SET a 1` (the ACK stays 2); the resume asks for LSN 2 and gets the whole
/// group again.
#[test]
fn open_atomic_group_holds_the_position_at_its_start() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut first =
        synthetic::journal_session(&[&["SET", "before", "1"], &["MULTI", "SET", "a", "1"]]);
    first.flows[0].acks = vec![2];
    let group: &[&[&str]] = &[
        &["MULTI", "SET", "a", "1"],
        &["MULTI", "INCRBY", "n", "5"],
        &["EXEC"],
    ];
    let resume = synthetic::partial_journal_session(2, group);
    let m = ReplayMaster::serve_sequence(vec![first, resume]);
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    assert!(
        m.wait_acks(&[2], Duration::from_secs(20)),
        "ACKs {:?}",
        m.last_acks()
    );
    // Idle, the flow ACKs every second: time for a position past the open group to show.
    std::thread::sleep(Duration::from_millis(2500));
    engine.assert_running("first session");
    assert_eq!(
        m.last_acks(),
        [Some(2)],
        "the ACK moved past the open group"
    );
    // What came before the group is applied; the group is not.
    assert_eq!(server.cli(&["GET", "before"]), "1");
    assert_eq!(server.cli(&["EXISTS", "a"]), "0");
    m.close_all();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while m.session().final_acks() != [5] || !m.wait_acks(&[5], Duration::from_millis(100)) {
        assert!(
            std::time::Instant::now() < end,
            "never resumed: {:?} {:?}",
            m.observed(),
            m.violations()
        );
        engine.assert_running("resumed session");
    }
    assert_eq!(server.cli(&["MGET", "before", "a", "n"]), "1\n1\n5");
    stop_clean(engine, &m);
    assert_eq!(
        m.observed().flow_lsns.values().copied().collect::<Vec<_>>(),
        [Some(2)]
    );
}

/// Throughput of the real binary (the one cargo built for this test run, or `DF2REDIS_BIN`) on
/// a synthetic session: full sync keys/s and MB/s, stable sync entries/s, peak RSS. Checks the
/// result (every key, the journal's last writes) and prints the figures.
#[test]
fn throughput_figures_on_a_synthetic_session() {
    let keys: u64 = std::env::var("DF2REDIS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sets = keys;
    let session = synthetic::string_session(2, keys, 100, sets);
    let snapshot_bytes: usize = session.flows.iter().map(|f| f.split).sum();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve(session);
    let ckpt = dir.path().join("ckpt");
    let cfg = write_yaml(dir.path(), m.addr(), &server.addr(), &ckpt, "5s", "");
    let bin = std::env::var("DF2REDIS_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_df2redis-sync").to_string());
    let t0 = std::time::Instant::now();
    let mut child = spawn_binary(&bin, &cfg);
    let pid = child.id();
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    let end = t0 + Duration::from_secs(600);
    // The journal overwrites keys: DBSIZE reaches `keys` when the snapshot is applied.
    while probe.cmd(&[b"DBSIZE"]).int().unwrap_or(0) < keys as i64 {
        assert!(std::time::Instant::now() < end, "full sync too slow");
        assert!(child.try_wait().unwrap().is_none(), "the tool exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    let full = t0.elapsed();
    let want = m.session().final_acks();
    assert!(
        m.wait_acks(&want, Duration::from_secs(600)),
        "stable sync never caught up"
    );
    let total = t0.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    assert_eq!(term_and_wait(&mut child).code(), Some(0));
    assert_eq!(
        probe.cmd(&[b"DBSIZE"]).int(),
        Some(keys as i64 + 3),
        "keys + 2 flow markers + the owner marker"
    );
    let last = sets - 1;
    let got = probe.cmd(&[b"GET", format!("key:{}", last % keys).as_bytes()]);
    assert_eq!(got.bytes(), Some(format!("j{last}").as_bytes()));
    let stable = total - full;
    eprintln!(
        "throughput ({bin}): full sync {keys} keys, {:.1} MB in {:.2}s = {:.0} keys/s, {:.1} MB/s; \
         stable sync {sets} SETs in {:.2}s = {:.0} entries/s; peak RSS {hwm}",
        snapshot_bytes as f64 / 1e6,
        full.as_secs_f64(),
        keys as f64 / full.as_secs_f64(),
        snapshot_bytes as f64 / 1e6 / full.as_secs_f64(),
        stable.as_secs_f64(),
        sets as f64 / stable.as_secs_f64().max(1e-6),
    );
}

/// The master drops every connection in stable sync (as on a network cut): the engine
/// reconnects with backoff, asks PARTIAL with exactly the positions it had applied (the
/// recorded resume LSNs), and ends at the manifest.
#[test]
fn lost_source_connection_reconnects_and_resumes_partial() {
    let rec_dir = testdata("dragonfly-v1.40.1/s4-partial-resume");
    let first = RecordedSession::load(&rec_dir.join("capture"));
    let resume = RecordedSession::load(&rec_dir.join("capture-resume"));
    let first_acks = first.final_acks();
    let resume_acks = resume.final_acks();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve_sequence(vec![first, resume]);
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    assert!(m.wait_acks(&first_acks, Duration::from_secs(60)));
    engine.assert_running("first session");
    m.close_all();
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while m.session().final_acks() != resume_acks
        || !m.wait_acks(&resume_acks, Duration::from_millis(100))
    {
        assert!(
            std::time::Instant::now() < end,
            "never resumed: {:?}",
            m.observed()
        );
        engine.assert_running("resumed session");
    }
    stop_clean(engine, &m);
    let obs = m.observed();
    assert_eq!(
        obs.flow_lsns.values().copied().collect::<Vec<_>>(),
        vec![Some(166), Some(278)],
        "the second session asked PARTIAL at the recorded LSNs"
    );
    assert_manifest(&rec_dir, &server);
}

/// The target drops the writer's connection in the middle of the full sync: the session ends,
/// the engine reconnects (a full sync again, since no position was committed yet) and ends at
/// the manifest — nothing lost, nothing duplicated (delete-then-write).
#[test]
fn lost_target_connection_during_full_sync_converges() {
    let rec_dir = testdata("dragonfly-v1.40.1/s2-plain-3shards");
    let rec = RecordedSession::load(&rec_dir.join("capture"));
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve_sequence(vec![rec.clone(), rec]);
    let cfg = config_with(
        m.addr(),
        server.port(),
        dir.path(),
        "pipeline:\n  batch_commands: 4\n  channel_capacity: 2\n  inflight_batches: 2\n",
    );
    let mut engine = Engine::start(cfg, test_options());
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    wait_full_sync_writing(&mut probe, 1);
    let killed = probe.cmd(&[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"]);
    assert!(killed.int().unwrap_or(0) >= 1, "{killed:?}");
    wait_caught_up(&m, &mut engine, "after the target connection loss");
    stop_clean(engine, &m);
    assert_eq!(full_syncs(&m), 2, "the interrupted full sync was redone");
    assert_manifest(&rec_dir, &server);
}

/// `cpu.flow_threads` / `cpu.writer_threads` pin the named threads of the real binary
/// (checked in `/proc/<pid>/task/*/status` while it sits in stable sync; a separate process,
/// so the threads of tests running in parallel do not interfere).
#[test]
fn cpu_pinning_from_the_config() {
    let rec_dir = testdata("dragonfly-v1.40.1/s1-lz4-2shards");
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let cpu = "cpu:\n  flow_threads: [1]\n  writer_threads: [0]\n";
    let cfg = write_yaml(dir.path(), m.addr(), &server.addr(), dir.path(), "5s", cpu);
    let mut child = spawn_binary(env!("CARGO_BIN_EXE_df2redis-sync"), &cfg);
    let caught_up = m.wait_acks(&m.session().final_acks(), Duration::from_secs(60));
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
        let p = task.unwrap().path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        let comm = comm.trim();
        if comm.starts_with("flow-") || comm.starts_with("writer-") {
            seen.push((comm.to_string(), cpus));
        }
    }
    assert_eq!(term_and_wait(&mut child).code(), Some(0));
    assert!(caught_up);
    let flows: Vec<_> = seen
        .iter()
        .filter(|(c, _)| c.starts_with("flow-"))
        .collect();
    let writers: Vec<_> = seen
        .iter()
        .filter(|(c, _)| c.starts_with("writer-"))
        .collect();
    assert_eq!(flows.len(), 2, "{seen:?}");
    assert_eq!(writers.len(), 1, "{seen:?}");
    assert!(flows.iter().all(|(_, c)| c == "1"), "{seen:?}");
    assert!(writers.iter().all(|(_, c)| c == "0"), "{seen:?}");
}

/// A PARTIAL request answered FULL (the position left the master's backlog): the engine says
/// so, resyncs fully, and the target ends exactly as after the first sync of the same data.
/// (A synthetic session whose journal only SETs: re-serving a recording with INCRs would not
/// be what a real master sends on a second full sync, whose snapshot holds the current values.)
#[test]
fn partial_request_answered_full_resyncs_exactly() {
    let rec = synthetic::string_session(2, 2000, 32, 3000);
    let acks = rec.final_acks();
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve_sequence(vec![rec.clone(), rec]);
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    assert!(m.wait_acks(&acks, Duration::from_secs(60)));
    engine.assert_running("first session");
    let mut conn = redis::Conn::connect(server.port()).unwrap();
    let before = keyspace::dump_redis(&mut conn).unwrap();
    m.close_all();
    // The second session asks PARTIAL at the applied LSNs; the recording answers FULL.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = m.observed();
        if full_syncs(&m) == 2 && m.wait_acks(&acks, Duration::from_millis(100)) && m.all_sent() {
            let lsns: Vec<_> = o.flow_lsns.values().copied().collect();
            assert_eq!(lsns, acks.iter().map(|a| Some(*a)).collect::<Vec<_>>());
            break;
        }
        assert!(std::time::Instant::now() < end, "no full resync: {o:?}");
        engine.assert_running("second session");
    }
    // Wait until the second sync's markers are back (its last batch acknowledged).
    std::thread::sleep(Duration::from_millis(500));
    stop_clean(engine, &m);
    let after = keyspace::dump_redis(&mut conn).unwrap();
    let diffs = keyspace::compare(&before, &after, &BTreeSet::new(), 0);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// kill -9 during the full sync: the restart does a full sync again (no position was
/// committed) and ends at the manifest.
#[test]
fn kill_9_during_full_sync_then_restart_converges() {
    let rec_dir = testdata("dragonfly-v1.40.1/s2-plain-3shards");
    let rec = RecordedSession::load(&rec_dir.join("capture"));
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve_sequence(vec![rec.clone(), rec]);
    let ckpt = dir.path().join("ckpt");
    let write_cfg =
        |extra: &str| write_yaml(dir.path(), m.addr(), &server.addr(), &ckpt, "100ms", extra);
    let bin = env!("CARGO_BIN_EXE_df2redis-sync");
    let cfg =
        write_cfg("pipeline:\n  batch_commands: 2\n  channel_capacity: 1\n  inflight_batches: 1\n");
    let mut child = spawn_binary(bin, &cfg);
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    wait_full_sync_writing(&mut probe, 9);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !m.all_sent() || m.last_acks().iter().all(Option::is_none),
        "killed mid full sync"
    );
    let mut child = spawn_binary(bin, &write_cfg(""));
    let ok = m.wait_acks(&m.session().final_acks(), Duration::from_secs(60));
    let st = term_and_wait(&mut child);
    assert!(ok, "the restart never caught up: {:?}", m.observed());
    assert_eq!(st.code(), Some(0));
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    assert_manifest(&rec_dir, &server);
}

/// A TLS target with a password: the mio writer drives rustls over the non-blocking socket;
/// the recording ends at its manifest.
#[test]
fn tls_target_with_password() {
    let rec_dir = testdata("dragonfly-v1.40.1/s1-lz4-2shards");
    let server = RedisServer::builder().tls().password("s3cret").start();
    let ca = server.certs().unwrap().ca.clone();
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let tls = format!("  password: s3cret\n  tls:\n    ca: {}\n", ca.display());
    let yaml = yaml(m.addr(), &server.addr(), dir.path(), "5s", &tls);
    let mut engine = Engine::start(
        Config::from_yaml_str(&yaml, "test").unwrap(),
        test_options(),
    );
    wait_caught_up(&m, &mut engine, "s1 over TLS");
    stop_clean(engine, &m);
    // The comparator's client is plain TCP and the server is TLS-only: compare the key count
    // of every db with the manifest through redis-cli (the value checks are the other tests').
    let manifest = keyspace::load_manifest(&rec_dir.join("manifest.json")).unwrap();
    for db in 0..16u32 {
        let want = manifest
            .iter()
            .filter(|((d, _), st)| *d == db && !matches!(st.value, keyspace::Value::Unholdable(_)))
            .count()
            + usize::from(db == 0) * 3; // two position markers and the owner marker
        let got: usize = server
            .cli(&["-n", &db.to_string(), "DBSIZE"])
            .parse()
            .unwrap();
        assert_eq!(got, want, "db {db}");
    }
}

/// The same frozen target, but the engine is allowed to reconnect: it stops the session
/// cleanly after the stall limit, reconnects once the target answers again (a full sync,
/// since the frozen one never committed a position) and ends at the manifest.
#[test]
fn frozen_target_stop_then_resume_converges() {
    let rec_dir = testdata("dragonfly-v1.40.1/s2-plain-3shards");
    let rec = RecordedSession::load(&rec_dir.join("capture"));
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Four sessions, not two: on a loaded machine the 1.5 s stall limit can also end the
    // second session (a starved redis-server, not a frozen one), and the replay master serves
    // a repeated last session from where it stopped, which never converges.
    let m = ReplayMaster::serve_sequence(vec![rec.clone(), rec.clone(), rec.clone(), rec]);
    let cfg = config_with(m.addr(), server.port(), dir.path(), TINY_PIPELINE);
    let opts = Options {
        stall_limit: Duration::from_millis(1500),
        ..test_options()
    };
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    let mut engine = Engine::start(cfg, opts);
    wait_full_sync_writing(&mut probe, 1);
    let frozen = freeze(&server);
    // The first session ends (every connection of it closed) while the target is frozen.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while m.observed().closed < 4 {
        assert!(
            std::time::Instant::now() < end,
            "the session did not stop: {:?}",
            m.observed()
        );
        engine.assert_running("frozen target");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(frozen);
    wait_caught_up(&m, &mut engine, "after the target came back");
    stop_clean(engine, &m);
    assert_manifest(&rec_dir, &server);
}

/// Runs the Dragonfly emulator (h4) with its dataset loaded (`scale`), starts the replica
/// (before the workload when `replica_first`), runs the workload of every supported command at
/// 3,000 ops/s, kills the replica with SIGKILL after each delay in `kills` (restarting it each
/// time), then requires `df2redis-sync check --mode full` to find source and target equal.
/// The replica stays down a second after each kill, or with `down_past` until every shard's
/// journal has grown by more than that many entries (so a backlog that size no longer holds
/// the replica's position, however slowly a loaded machine runs the workload).
fn emulator_scenario(
    scale: &str,
    replica_first: bool,
    kills: &[Duration],
    emu_args: &[&str],
    down_past: Option<u64>,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), emu_args, scale);
    let server = RedisServer::start();
    let cfg = emulator_config(dir.path(), &emu_addr, &server.addr());
    let log = dir.path().join("replica.log");
    let mut r = if replica_first {
        let r = spawn_replica(&cfg, &log);
        std::thread::sleep(Duration::from_secs(2));
        Some(r)
    } else {
        None
    };
    let work = spawn_work(&emu_addr, "3000", "30000");
    if r.is_none() {
        std::thread::sleep(Duration::from_millis(500));
        r = Some(spawn_replica(&cfg, &log));
    }
    for (i, d) in kills.iter().enumerate() {
        if replica_first {
            // The callers count partial resumes: each kill must hit a replica that reached
            // stable sync (its full sync, then each resume), however slow the machine is.
            crate::support::emu::wait_log_count(&log, "stable sync: following the journal", i + 1);
        }
        std::thread::sleep(*d);
        if let Some(mut c) = r.take() {
            c.0.kill().unwrap();
            c.0.wait().unwrap();
        }
        // Down for a second (or past the backlog) while the workload goes on.
        let before = down_past.map(|_| emulator_lsns(&emu_addr));
        std::thread::sleep(Duration::from_secs(1));
        if let (Some(n), Some(before)) = (down_past, before) {
            let end = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let now = emulator_lsns(&emu_addr);
                if now.iter().zip(&before).all(|(a, b)| *a > b + n) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "the journal did not grow by {n} entries on every shard: {before:?} -> {now:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        r = Some(spawn_replica(&cfg, &log));
    }
    assert!(work.join().unwrap(), "dfly-emulator work");
    // Let the replica catch up, then compare with the check subcommand (exit 0 = equal).
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 30) {
        panic!("source and target never compared equal:\n{last}");
    }
    drop(r);
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// The emulator's next LSN per shard (`master_lsns` in `INFO replication`).
fn emulator_lsns(addr: &str) -> Vec<u64> {
    let port: u16 = port_of(addr).parse().unwrap();
    let info = redis::Conn::connect(port)
        .unwrap()
        .cmd(&[b"INFO", b"replication"])
        .text();
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("master_lsns:"))
        .unwrap_or_else(|| panic!("no master_lsns in {info}"));
    line.trim()
        .split(',')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("master_lsns: {line}")))
        .collect()
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Against the emulator: live workload at 3,000 ops/s while the replica is killed with
/// SIGKILL twice in stable sync and restarted (PARTIAL from the target's markers); the check
/// finds source and target equal — nothing lost, nothing applied twice (INCR/APPEND/LPUSH…).
#[test]
fn emulator_workload_with_two_kill_9_converges() {
    let log = emulator_scenario(
        "1",
        true,
        &[Duration::from_secs(2), Duration::from_secs(2)],
        &[],
        None,
    );
    assert_eq!(count(&log, "partial sync: stable sync resumed"), 2, "{log}");
}

/// The same against the emulator presenting v1.34.2: every resume uses the old procedure
/// (`DFLY SYNC` after PARTIAL, RDB-framed backlog).
#[test]
fn emulator_v134_workload_with_kills_converges() {
    let log = emulator_scenario(
        "1",
        true,
        &[Duration::from_secs(2), Duration::from_secs(2)],
        &["--version", "1.34"],
        None,
    );
    assert_eq!(count(&log, "partial sync (≤ v1.34 procedure)"), 2, "{log}");
}

/// Against the emulator: the replica starts while the workload runs (writes during the full
/// sync, as journal blobs), is killed with SIGKILL early (in the handshake or the full sync,
/// depending on timing) and later in stable sync; the check finds source and target equal.
#[test]
fn emulator_writes_during_full_sync_and_kills_converge() {
    let log = emulator_scenario(
        "4",
        false,
        &[Duration::from_millis(300), Duration::from_secs(3)],
        &[],
        None,
    );
    assert!(count(&log, "full sync started") >= 1, "{log}");
}

/// A target frozen for 5 s under a live workload, with the emulator's replication timeout at
/// 6 s and the engine's stall limit at 2 s: the engine ends the session itself (the emulator
/// logs "closed by the replica", never a timeout), reconnects once the target answers, resumes
/// and converges.
#[test]
fn emulator_timeout_never_fires_under_a_frozen_target() {
    let dir = tempfile::tempdir().unwrap();
    let emu_proc = Emulator::start(dir.path(), &["--shards", "3", "--repl-timeout", "6"]);
    let emu_log = emu_proc.log_path().to_path_buf();
    let emu_addr = emu_proc.addr().to_string();
    let emu = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args(args)
            .args(["--target", &emu_addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    };
    assert!(emu(&["load", "--scale", "1"]).success());
    let server = RedisServer::start();
    let extra = format!("  io_timeout: 60s\n{TINY_PIPELINE}");
    let ckpt = dir.path().join("ckpt");
    let cfg_path = write_yaml(
        dir.path(),
        &emu_addr,
        &server.addr(),
        &ckpt,
        "500ms",
        &extra,
    );
    let yaml = std::fs::read_to_string(&cfg_path).unwrap();
    let opts = Options {
        stall_limit: Duration::from_secs(2),
        max_failures: 5,
        ..test_options()
    };
    let engine = Engine::start(Config::from_yaml_str(&yaml, "test").unwrap(), opts);
    std::thread::sleep(Duration::from_secs(2));
    let addr = emu_addr.clone();
    let work = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args([
                "work", "--target", &addr, "--rate", "3000", "--ops", "30000",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(1));
    let frozen = freeze(&server);
    std::thread::sleep(Duration::from_secs(5));
    drop(frozen);
    assert!(work.join().unwrap().success());
    let res = wait_check_equal(&cfg_path, dir.path(), 20);
    engine.stop().unwrap();
    let log = std::fs::read_to_string(&emu_log).unwrap_or_default();
    if let Err(last) = res {
        panic!("never equal:\n{last}\nemulator log:\n{log}");
    }
    let cancels: Vec<&str> = log.lines().filter(|l| l.contains("cancelled")).collect();
    assert!(
        !cancels.is_empty(),
        "the engine never stopped a session: {log}"
    );
    assert!(
        cancels.iter().all(|l| l.contains("closed by the replica")),
        "a session ended by the master's timeout: {cancels:#?}"
    );
}

/// Writes `dir/replicate.yaml` for the emulator at `emu_addr` and the target at `target`
/// (checkpoints every second in `dir/ckpt`).
fn emulator_config(dir: &std::path::Path, emu_addr: &str, target: &str) -> PathBuf {
    write_config(dir, emu_addr, &format!("  addr: {target}\n"), "")
}

/// `redis-cli -p port <args>` output (RESP2 text, raw).
fn cli_at(port: &str, args: &[&str]) -> String {
    let out = crate::support::run_bounded(
        std::process::Command::new(crate::support::program("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", port, "--raw"])
            .args(args),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "redis-cli {args:?} on {port}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

/// redis-benchmark (set, incr, lpush, rpush, sadd, hset, spop, lpop, rpop, mset over 1,000
/// random keys) together with the emulator's scripted mix, both through the emulator while the
/// replica runs: `check --mode full` finds source and target equal, and the counters (INCR's
/// `counter:*`, the mix's `w:cnt:*` and `w:app:*`, LPUSH/RPUSH's lists) read on both sides
/// hold exactly the same values — nothing lost, nothing applied twice.
#[test]
fn emulator_redis_benchmark_and_scripted_mix_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let server = RedisServer::start();
    let cfg = emulator_config(dir.path(), &emu_addr, &server.addr());
    let log = dir.path().join("replica.log");
    let r = spawn_replica(&cfg, &log);
    std::thread::sleep(Duration::from_secs(2));
    let work = spawn_work(&emu_addr, "2000", "8000");
    let bench = crate::support::run_bounded(
        std::process::Command::new(crate::support::program("redis-benchmark"))
            .args(["-h", "127.0.0.1", "-p", port_of(&emu_addr)])
            .args(["-n", "3000", "-r", "1000", "-c", "4", "-q", "-t"])
            .arg("set,incr,lpush,rpush,sadd,hset,spop,lpop,rpop,mset"),
        // A bound against a hang only: on a loaded machine (load 40 on 2 cores) the 30,000
        // requests have taken over 40 s.
        Duration::from_secs(300),
    );
    assert!(
        bench.status.success(),
        "redis-benchmark: {}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(work.join().unwrap(), "dfly-emulator work");
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 20) {
        panic!(
            "never equal:\n{last}\nreplica log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let src_port: u16 = port_of(&emu_addr).parse().unwrap();
    let mut src = redis::Conn::connect(src_port).unwrap();
    let mut dst = redis::Conn::connect(server.port()).unwrap();
    let mut compared = 0;
    for pattern in ["counter:*", "w:cnt:*", "w:app:*", "mylist*", "w:list:*"] {
        let keys = cli_at(&src_port.to_string(), &["--scan", "--pattern", pattern]);
        let reads: Vec<Cmd> = keys
            .lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                let list = pattern.contains("list");
                let args: Vec<&[u8]> = if list {
                    vec![b"LRANGE", k.as_bytes(), b"0", b"-1"]
                } else {
                    vec![b"GET", k.as_bytes()]
                };
                Cmd::from_args(args)
            })
            .collect();
        let (a, b) = (src.pipeline(&reads), dst.pipeline(&reads));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                !matches!(x, redis::Reply::Error(_)),
                "{pattern} #{i}: {x:?}"
            );
            assert_eq!(x, y, "{pattern} #{i}");
        }
        compared += reads.len();
    }
    assert!(compared > 100, "only {compared} counters compared");
    drop(r);
}

/// A redis-server on `port` with its files in `dir` (AOF with fsync on every write when
/// `aof`, else no persistence at all), started and answering as itself (its `process_id`:
/// another test's server may have taken the port). `Err` with the tail of its log otherwise.
fn target_on(port: u16, dir: &std::path::Path, aof: bool) -> Result<Proc, String> {
    let persist: &[&str] = if aof {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    let log = dir.join("redis.log");
    let mut child = Proc(
        std::process::Command::new(crate::support::program("redis-server"))
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(persist)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.0.try_wait() {
            return Err(format!(
                "redis-server on {port} exited with {st}:\n{}",
                crate::support::emu::log_tail(&log, 15)
            ));
        }
        match crate::support::redis_process_id(port) {
            Some(p) if p == pid => return Ok(child),
            Some(p) => return Err(format!("port {port} is served by process {p}, not ours")),
            None => {}
        }
        if std::time::Instant::now() > end {
            return Err(format!(
                "redis-server on {port} not ready after 30 s:\n{}",
                crate::support::emu::log_tail(&log, 15)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`target_on`] a free port, another one (5 at most) when the port turned out taken.
fn target_on_free_port(dir: &std::path::Path, aof: bool) -> (u16, Proc) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = crate::support::free_port(false);
        match target_on(port, dir, aof) {
            Ok(c) => return (port, c),
            Err(e) => last = e,
        }
    }
    panic!("no target redis-server after 5 ports: {last}")
}

/// In stable sync with the scripted mix running, the target redis-server is killed (SIGKILL)
/// and a new one started on the same port and dir; with `aof` its data (markers included)
/// survives and the engine resumes PARTIAL, without it the markers are gone and the engine must
/// full-sync again. Either way `check --mode full` ends equal. Returns the replica's log.
fn target_restarted_mid_stream(aof: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let tdir = dir.path().join("target");
    std::fs::create_dir_all(&tdir).unwrap();
    let (port, mut target) = target_on_free_port(&tdir, aof);
    let cfg = emulator_config(dir.path(), &emu_addr, &format!("127.0.0.1:{port}"));
    let log = dir.path().join("replica.log");
    let r = spawn_replica(&cfg, &log);
    // The assertions count full syncs: the target must die in stable sync, not before.
    crate::support::emu::wait_log_count(&log, "stable sync: following the journal", 1);
    let work = spawn_work(&emu_addr, "2000", "12000");
    std::thread::sleep(Duration::from_secs(2));
    target.0.kill().unwrap();
    target.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // The same port (the engine's config names it): it is free again unless another process
    // took it in the meantime, which the error would say.
    target = target_on(port, &tdir, aof).unwrap_or_else(|e| panic!("restart: {e}"));
    assert!(work.join().unwrap(), "dfly-emulator work");
    let res = wait_check_equal(&cfg, dir.path(), 25);
    drop(r);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(last) = res {
        panic!("never equal:\n{last}\nreplica log:\n{text}");
    }
    drop(target);
    text
}

/// Target restarted with AOF (`appendfsync always`): every acknowledged batch and its marker
/// survived, so the engine resumes PARTIAL (no second full sync) and converges.
#[test]
fn target_restarted_with_aof_resumes_partial_and_converges() {
    let log = target_restarted_mid_stream(true);
    assert_eq!(count(&log, "full sync started"), 1, "{log}");
    assert!(
        count(&log, "partial sync: stable sync resumed") >= 1,
        "{log}"
    );
}

/// Target restarted without persistence: the markers are gone with the data, so the engine
/// must full-sync again (a second "full sync started") and converges.
#[test]
fn target_restarted_empty_full_syncs_again_and_converges() {
    let log = target_restarted_mid_stream(false);
    assert!(count(&log, "full sync started") >= 2, "{log}");
    assert!(count(&log, "the target lost its data") >= 1, "{log}");
}

/// `EMULATOR FAULT CLOSE-FLOW 0 BYTES <n>` in stable sync, with `n` a little past what flow 0
/// has already been sent: the emulator drops flow 0 (and with it the session) in the middle of
/// the journal; the engine reconnects and resumes PARTIAL inside the backlog — exactly one full
/// sync in its log, a "stable sync resumed" after the drop — and converges (`check --mode
/// full`). The fault is cleared once the resume happened, so the new session is not cut too.
#[test]
fn flow_dropped_by_the_emulator_resumes_partial_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let server = RedisServer::start();
    let cfg = emulator_config(dir.path(), &emu_addr, &server.addr());
    let log = dir.path().join("replica.log");
    let r = spawn_replica(&cfg, &log);
    let emu_port: u16 = port_of(&emu_addr).parse().unwrap();
    let mut admin = redis::Conn::connect(emu_port).unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // Stable sync: the first session resumed nothing and its flows are online.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while !admin
        .cmd(&[b"INFO", b"replication"])
        .text()
        .contains("state=online")
    {
        assert!(
            std::time::Instant::now() < end,
            "never online:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let work = spawn_work(&emu_addr, "2000", "12000");
    std::thread::sleep(Duration::from_secs(1));
    let info = admin.cmd(&[b"INFO", b"replication"]).text();
    let sent: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("slave0_bytes_sent:"))
        .and_then(|v| v.trim().split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no slave0_bytes_sent in {info}"));
    let limit = (sent + 3000).to_string();
    let reply = admin.cmd(&[
        b"EMULATOR",
        b"FAULT",
        b"CLOSE-FLOW",
        b"0",
        b"BYTES",
        limit.as_bytes(),
    ]);
    assert_eq!(reply, redis::Reply::Status("OK".into()));
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while count(&read_log(), "partial sync: stable sync resumed") == 0 {
        assert!(
            std::time::Instant::now() < end,
            "never resumed:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        admin.cmd(&[b"EMULATOR", b"FAULT", b"CLEAR"]),
        redis::Reply::Status("OK".into())
    );
    assert!(work.join().unwrap(), "dfly-emulator work");
    let res = wait_check_equal(&cfg, dir.path(), 25);
    drop(r);
    let text = read_log();
    let emu_log = std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default();
    if let Err(last) = res {
        panic!("never equal:\n{last}\nreplica log:\n{text}");
    }
    // The master ended the session (the engine notices whichever flow it reads first: flow 0
    // cut at the limit, or another one closed by the teardown); when it was flow 0, exactly
    // where the emulator cut it.
    assert_eq!(
        count(&text, "the master closed the connection after"),
        1,
        "{text}\nemulator log:\n{emu_log}"
    );
    assert!(
        !text.contains("flow 0: the master closed the connection")
            || text.contains(&format!(
                "flow 0: the master closed the connection after {limit} bytes"
            )),
        "{text}"
    );
    assert_eq!(count(&text, "full sync started"), 1, "{text}");
    assert!(
        count(&text, "partial sync: stable sync resumed") >= 1,
        "{text}"
    );
    assert_eq!(count(&text, "answered FULL"), 0, "{text}");
}

/// `target.flush_before_full_sync`: the first sync into a target holding keys df2redis-sync
/// never wrote leaves them alone by default (`auto`) and removes them with `always`; either
/// way the recording's keys end exactly at its manifest.
#[test]
fn first_full_sync_keeps_foreign_keys_unless_policy_is_always() {
    let rec_dir = testdata("dragonfly-v1.40.1/s1-lz4-2shards");
    for (policy, survives) in [("auto", true), ("always", false)] {
        let server = RedisServer::start();
        let mut conn = redis::Conn::connect(server.port()).unwrap();
        conn.cmd(&[b"SELECT", b"9"]);
        conn.cmd(&[b"SET", b"foreign:key", b"not ours"]);
        let dir = tempfile::tempdir().unwrap();
        let m = ReplayMaster::start(&rec_dir.join("capture"));
        let policy_yaml = format!("  flush_before_full_sync: {policy}\n");
        let yaml = yaml(m.addr(), &server.addr(), dir.path(), "200ms", &policy_yaml);
        let mut engine = Engine::start(
            Config::from_yaml_str(&yaml, "test").unwrap(),
            test_options(),
        );
        wait_caught_up(&m, &mut engine, policy);
        engine.stop().unwrap();
        conn.cmd(&[b"SELECT", b"9"]);
        let exists = conn.cmd(&[b"EXISTS", b"foreign:key"]).int().unwrap();
        assert_eq!(exists == 1, survives, "policy {policy}");
        conn.cmd(&[b"DEL", b"foreign:key"]);
        // The owner marker says the target now holds data of this tool.
        conn.cmd(&[b"SELECT", b"0"]);
        assert_eq!(
            conn.cmd(&[b"EXISTS", b"df2redis-sync:ckpt:owner"]).int(),
            Some(1)
        );
        assert_manifest(&rec_dir, &server);
    }
}

/// The tool is stopped, the master restarts with a new id, keys are deleted meanwhile: the new
/// id forces a full sync, and since the target holds data of the earlier run it is flushed
/// first (`flush_before_full_sync: auto`) — without that the deleted keys would stay in the
/// target, and writes to those names later would merge into them.
#[test]
fn full_sync_after_master_restart_flushes_what_the_master_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], "1");
    let emu_port = port_of(&emu_addr).to_string();
    for i in 0..20 {
        let k = format!("stale:set:{i}");
        cli_at(&emu_port, &["SADD", &k, "a", "b", "c"]);
    }
    let server = RedisServer::start();
    let cfg = emulator_config(dir.path(), &emu_addr, &server.addr());
    let log = dir.path().join("replica.log");
    let r = spawn_replica(&cfg, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(last) = wait_check_equal(&cfg, dir.path(), 30) {
        panic!("first run never equal:\n{last}\n{}", read_log());
    }
    drop(r); // SIGTERM: stopped with a final checkpoint
    assert_eq!(
        cli_at(&emu_port, &["EMULATOR", "FAULT", "RESTART"]).trim(),
        "OK"
    );
    for i in 0..20 {
        cli_at(&emu_port, &["DEL", &format!("stale:set:{i}")]);
    }
    let work = spawn_work(&emu_addr, "2000", "4000");
    let r = spawn_replica(&cfg, &log);
    // Re-create some of the deleted names while the new full sync runs: they must hold only
    // the new members, never the stale a/b/c.
    for i in 0..10 {
        cli_at(&emu_port, &["SADD", &format!("stale:set:{i}"), "new"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(work.join().unwrap(), "dfly-emulator work");
    let res = wait_check_equal(&cfg, dir.path(), 30);
    drop(r);
    let text = read_log();
    if let Err(last) = res {
        panic!("never equal after the restart:\n{last}\nreplica log:\n{text}");
    }
    assert_eq!(count(&text, "resuming from the per-flow LSNs"), 0, "{text}");
    assert_eq!(count(&text, "flushing the target (FLUSHALL)"), 1, "{text}");
    let mut t = redis::Conn::connect(server.port()).unwrap();
    for i in 0..20 {
        let k = format!("stale:set:{i}");
        let n = t.cmd(&[b"SCARD", k.as_bytes()]).int().unwrap();
        assert_eq!(n, i64::from(i < 10), "{k}");
    }
}

/// A backlog of only 200 entries per shard: the replica killed for longer than the backlog
/// covers gets FULL on its PARTIAL request, resyncs fully, and still converges.
#[test]
fn emulator_position_outside_the_backlog_resyncs_fully() {
    let log = emulator_scenario(
        "1",
        true,
        &[Duration::from_secs(2)],
        &["--backlog-entries", "200"],
        Some(200),
    );
    // The replica stays down until every shard's journal outgrew the 200-entry backlog, so
    // the resume after the kill is answered FULL: at least once, more often when a loaded
    // machine makes the engine reconnect again. Each full sync into a target holding our data flushes it first
    // (a full sync interrupted by the small backlog flushes on the next one too).
    let fulls = count(&log, "answered FULL to the partial-sync request");
    assert!(fulls >= 1, "{log}");
    assert!(
        count(&log, "flushing the target (FLUSHALL)") >= fulls,
        "{log}"
    );
}

/// A writer connection left open by an earlier session (named like ours) is closed before the
/// markers are read, so nothing it still has queued can run after that read; other clients
/// of the target are left alone.
#[test]
fn leftover_writer_connections_are_closed_before_reading_markers() {
    use std::io::Write;
    let rec_dir = testdata("dragonfly-v1.40.1/s1-lz4-2shards");
    let server = RedisServer::start();
    let name = |n: &str| {
        format!(
            "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n${}\r\n{n}\r\n",
            n.len()
        )
    };
    let mut ours = std::net::TcpStream::connect(server.addr()).unwrap();
    ours.write_all(name("df2redis-sync-writer:df2redis-sync:ckpt:").as_bytes())
        .unwrap();
    let mut other = std::net::TcpStream::connect(server.addr()).unwrap();
    other.write_all(name("someone-else").as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    for s in [&mut ours, &mut other] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"+OK\r\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let mut engine = Engine::start(config(m.addr(), server.port(), dir.path()), test_options());
    wait_caught_up(&m, &mut engine, "leftover");
    engine.stop().unwrap();
    // Ours was killed: EOF. The other one still answers.
    assert_eq!(
        ours.read(&mut buf).unwrap_or(0),
        0,
        "our leftover connection is closed"
    );
    other.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let n = other.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"+PONG\r\n");
    assert_manifest(&rec_dir, &server);
}
