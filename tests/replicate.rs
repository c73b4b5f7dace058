//! The replicate engine end to end: recorded Dragonfly sessions served by the replay master
//! (`support::replay`) replicated into a real redis-server; plus the replay master's own
//! self-test with a hand-driven replica.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Conn, Endpoint};

use crate::support::replay::{RecordedSession, ReplayMaster};
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
    let yaml = format!(
        "source:\n  addr: {src}\ntarget:\n  addr: 127.0.0.1:{port}\n\
         checkpoint:\n  dir: {}\n  interval: 200ms\n",
        dir.display()
    );
    Config::from_yaml_str(&yaml, "test").unwrap()
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
    let rec_dir = testdata(rel);
    let m = ReplayMaster::start(&rec_dir.join("capture"));
    let mut engine = Engine::start(config(m.addr(), server.port(), dir), test_options());
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
    engine.stop().unwrap();
    assert!(m.violations().is_empty(), "{rel}: {:?}", m.violations());
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
    let cfg = dir.join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {}\ntarget:\n  addr: {}\ncheckpoint:\n  dir: {}\n  interval: {interval}\n",
            m.addr(),
            server.addr(),
            dir.join("ckpt").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(["replicate", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let caught_up = m.wait_acks(&m.session().final_acks(), Duration::from_secs(60));
    let t0 = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
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
    let yaml = format!(
        "source:\n  addr: {}\ntarget:\n  addr: {}\n  io_timeout: 60s\n\
         checkpoint:\n  dir: {}\n  interval: 200ms\n\
         pipeline:\n  batch_commands: 1\n  channel_capacity: 1\n  inflight_batches: 1\n",
        m.addr(),
        server.addr(),
        dir.path().display()
    );
    let cfg = Config::from_yaml_str(&yaml, "test").unwrap();
    let opts = Options {
        stall_limit: Duration::from_millis(1500),
        max_failures: 0,
        ..test_options()
    };
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    let info = probe.cmd(&[b"INFO", b"server"]).text();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_string();
    let engine = Engine::start(cfg, opts);
    // Freeze the target once the full sync is writing.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = probe.cmd(&[b"DBSIZE"]).int().unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the full sync never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let frozen = Stopped(pid);
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
    let cfg = dir.path().join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {}\ntarget:\n  addr: {}\ncheckpoint:\n  dir: {}\n\
             pipeline:\n  batch_commands: 1\n  channel_capacity: 1\n  inflight_batches: 1\n",
            m.addr(),
            server.addr(),
            dir.path().join("ckpt").display()
        ),
    )
    .unwrap();
    let mut probe = redis::Conn::connect(server.port()).unwrap();
    let info = probe.cmd(&[b"INFO", b"server"]).text();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(["replicate", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while probe.cmd(&[b"DBSIZE"]).int().unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < end,
            "the full sync never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let kill = |sig: &str, pid: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success())
    };
    kill("-STOP", &pid);
    let _frozen = Stopped(pid);
    let me = child.id().to_string();
    kill("-TERM", &me);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "draining into a frozen target cannot be done yet"
    );
    kill("-TERM", &me);
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
    engine.stop().unwrap();
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    let syncs = m
        .observed()
        .main_commands
        .iter()
        .filter(|c| c.starts_with("DFLY SYNC"))
        .count();
    assert_eq!(syncs, 2, "one full sync abandoned, one completed");
    assert_manifest(&rec_dir, &server);
}
