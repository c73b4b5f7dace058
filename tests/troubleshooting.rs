//! Integration tests: every message listed in `docs/troubleshooting.md` is produced here by the
//! real `df2redis-sync` binary (or, for the one retry-budget message, by the same engine
//! in-process with a shorter backoff) against real components: bad config files, a real
//! `redis-server` (plain, TLS, with a password, read-only, out of memory, frozen), the
//! `dfly-emulator`, the replay master serving real Dragonfly recordings (some with one field
//! altered to model a faulty master), and bare TCP listeners for the network faults.
//!
//! The doc is the single source of the expected text: each entry is a `### ` heading with an
//! id, followed by a `Match:` line whose code spans must all appear in the output. Producing
//! tests call [`expect`] / [`Proc::wait_msgs`] with the id, so doc and tests cannot drift:
//! `every_documented_message_is_produced` fails when an entry has no producing call here and
//! is not listed in [`ELSEWHERE`] (messages another test file already asserts).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::replay::{RecordedSession, ReplayMaster};
use crate::support::synthetic::{journal_session, journal_session_flows};
use crate::support::{self, RedisServer, TlsCerts};
use df2redis_sync::checkpoint::{Checkpoint, FlowCheckpoint, FlowState, Store, FORMAT_VERSION};
use df2redis_sync::config::Config;
use df2redis_sync::pipeline::{self, Options};

const DOC: &str = include_str!("../docs/troubleshooting.md");
const THIS: &str = include_str!("troubleshooting.rs");

/// Entries whose message another test already produces and asserts:
/// `(id, test file, test function)`. The coverage test checks that the function exists and
/// that the file contains every fragment of the entry.
const ELSEWHERE: &[(&str, &str, &str)] = &[
    (
        "target-stall",
        "tests/replicate.rs",
        "frozen_target_stops_cleanly_before_the_master_timeout",
    ),
    (
        "check-differ",
        "tests/check.rs",
        "binary_exit_codes_0_equal_1_different_2_error",
    ),
    (
        "metrics-bind",
        "tests/ops.rs",
        "metrics_address_in_use_exits_1",
    ),
    (
        "dry-target-type",
        "tests/cli.rs",
        "dry_run_type_mismatch_is_caught",
    ),
];

/// One documented message: its id and the fragments that identify it.
#[derive(Debug)]
struct Entry {
    id: String,
    fragments: Vec<String>,
}

/// Parses `docs/troubleshooting.md`: `### id — title` headings, each followed (before the next
/// heading) by one `Match:` line whose code spans are the fragments.
fn entries() -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in DOC.lines() {
        if let Some(rest) = line.strip_prefix("### ") {
            let id = rest
                .trim_start_matches('`')
                .split(|c: char| c == '`' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string();
            out.push(Entry {
                id,
                fragments: Vec::new(),
            });
        } else if let Some(m) = line.strip_prefix("Match:") {
            let e = out
                .last_mut()
                .unwrap_or_else(|| panic!("Match: line before any entry: {line}"));
            assert!(e.fragments.is_empty(), "{}: two Match: lines", e.id);
            e.fragments = m
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
        }
    }
    out
}

fn fragments(id: &str) -> Vec<String> {
    let all = entries();
    let e = all
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("docs/troubleshooting.md has no entry `{id}`"));
    assert!(!e.fragments.is_empty(), "{id}: no Match: fragments");
    e.fragments.clone()
}

fn has(text: &str, id: &str) -> bool {
    fragments(id).iter().all(|f| text.contains(f.as_str()))
}

/// Asserts that `text` shows the documented message `id`.
fn expect(text: &str, id: &str) {
    let missing: Vec<String> = fragments(id)
        .into_iter()
        .filter(|f| !text.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "message `{id}` not produced (missing {missing:?}) in:\n{text}"
    );
}

/// The doc parses, ids are unique, every entry has fragments, and every entry is produced by a
/// call in this file or by the test named in [`ELSEWHERE`].
#[test]
fn every_documented_message_is_produced() {
    let all = entries();
    assert!(all.len() >= 40, "only {} entries parsed", all.len());
    let mut seen = std::collections::BTreeSet::new();
    // This file without the ELSEWHERE table: an id must appear quoted in a producing call.
    let (head, rest) = THIS
        .split_once("const ELSEWHERE")
        .expect("the ELSEWHERE table");
    let tail = rest.split_once("];\n").map_or("", |(_, t)| t);
    let body = format!("{head}{tail}");
    let mut unproduced = Vec::new();
    for e in &all {
        assert!(
            e.id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !e.id.is_empty(),
            "bad id {:?}",
            e.id
        );
        assert!(seen.insert(e.id.clone()), "id {} listed twice", e.id);
        assert!(!e.fragments.is_empty(), "{}: no Match: line", e.id);
        if let Some((_, file, func)) = ELSEWHERE.iter().find(|(id, _, _)| *id == e.id) {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let src = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(
                src.contains(&format!("fn {func}(")),
                "{}: {file} has no test {func}",
                e.id
            );
            for f in &e.fragments {
                assert!(
                    src.contains(f.as_str()),
                    "{}: {file} never asserts {f:?}",
                    e.id
                );
            }
            continue;
        }
        let quoted = format!("\"{}\"", e.id);
        if !body.contains(&quoted) {
            unproduced.push(e.id.clone());
        }
    }
    assert!(
        unproduced.is_empty(),
        "documented but produced by no test: {unproduced:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_df2redis-sync"));
    c.env_remove("RUST_LOG");
    c
}

/// Runs the binary to completion (bounded); returns the exit code and stdout + stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = support::run_bounded(bin().args(args), Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs the binary with `args` (bounded); checks its exit code and that the output shows every
/// documented message in `ids`. Returns the output.
#[track_caller]
fn run_expect(args: &[&str], code: i32, ids: &[&str]) -> String {
    let (got, t) = run(args);
    assert_eq!(got, Some(code), "{args:?}: {t}");
    for id in ids {
        expect(&t, id);
    }
    t
}

/// [`run_expect`] of `replicate` with `yaml` written to `dir/name`.
#[track_caller]
fn replicate_expect(dir: &Path, name: &str, yaml: &str, code: i32, ids: &[&str]) -> String {
    run_expect(&["replicate", &write_cfg(dir, name, yaml)], code, ids)
}

/// Writes `dir/name` and returns its path as a string.
fn write_cfg(dir: &Path, name: &str, yaml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p.to_string_lossy().into_owned()
}

/// A long-running `df2redis-sync` with stdout and stderr in one file.
struct Proc {
    child: std::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], dir: &Path, name: &str) -> Proc {
        Proc::spawn_env(args, dir, name, &[])
    }

    /// [`Proc::spawn`] with extra environment variables (a failpoint).
    fn spawn_env(args: &[&str], dir: &Path, name: &str, env: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = bin()
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the output shows every message in `ids`; panics with the output when the
    /// process ends first or `limit` passes.
    fn wait_msgs(&mut self, ids: &[&str], limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let t = self.text();
            if ids.iter().all(|id| has(&t, id)) {
                for id in ids {
                    expect(&t, id);
                }
                return t;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > end {
                // Read once more: the last lines may have landed just before the exit.
                let t = self.text();
                for id in ids {
                    expect(&t, id);
                }
                return t;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the output contains `needle` (a progress line, not an entry).
    fn wait_text(&mut self, needle: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while !self.text().contains(needle) {
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < end,
                "never saw {needle:?} (exit {exited:?}):\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the exit; returns the code and the output.
    fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code(), self.text());
            }
            assert!(
                Instant::now() < end,
                "still running after {limit:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM (drain, checkpoint, exit 0), then the output.
    fn stop(&mut self) -> String {
        signal(self.child.id(), "TERM");
        let _ = self.wait_exit(Duration::from_secs(15));
        self.text()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// A loopback listener that, for each connection, answers every read with `reply` (or closes
/// at once when `reply` is `None`). Never accepts when `accept` is false (connects still
/// succeed through the backlog, replies never come).
fn fake_server(reply: Option<&'static [u8]>, accept: bool) -> (String, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    if accept {
        let l2 = l.try_clone().unwrap();
        std::thread::spawn(move || {
            for s in l2.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let Some(reply) = reply else { return };
                    let mut buf = [0u8; 4096];
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    (addr, l)
}

fn testdata(rel: &str) -> PathBuf {
    support::shared_dir()
        .join("testdata/dragonfly-v1.40.1")
        .join(rel)
}

/// `source:` + `target:` + a checkpoint dir under `dir`, plus `extra`.
fn replicate_yaml(source: &str, target: &str, dir: &Path, extra: &str) -> String {
    format!(
        "source:\n  addr: {source}\ntarget:\n  addr: {target}\ncheckpoint:\n  dir: {}\n  interval: 200ms\n{extra}",
        dir.join("ckpt").display()
    )
}

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Config files and the command line (no server needed).

#[test]
fn config_file_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    const SRC: &str = "source:\n  addr: 127.0.0.1:1\n";
    const TGT: &str = "target:\n  addr: 127.0.0.1:1\n";
    let both = |rest: &str| format!("{SRC}{TGT}{rest}");

    run_expect(
        &["replicate", "/definitely/not/here.yaml"],
        2,
        &["config-read"],
    );

    replicate_expect(dir, "yaml.yaml", "source: [\n", 2, &["config-yaml"]);

    replicate_expect(dir, "missing.yaml", TGT, 2, &["config-missing"]);

    let y = format!("source:\n  adr: 127.0.0.1:1\n{TGT}");
    replicate_expect(dir, "typo.yaml", &y, 2, &["config-unknown-key"]);

    let y = both("checkpoint:\n  interval: 0s\n");
    replicate_expect(dir, "range.yaml", &y, 2, &["config-bad-value"]);

    let y = format!("source:\n  addr: 127.0.0.1:1\n  password: ${{O2_TS_NOT_SET}}\n{TGT}");
    replicate_expect(dir, "env.yaml", &y, 2, &["config-env"]);

    // Several problems at once, each of its own kind.
    let y = format!(
        "{SRC}target:\n  type: cluster\n  seeds: [\"127.0.0.1:1\"]\ndatabases:\n  map: {{1: 3}}\n\
         conflict:\n  policy: panic\ncheckpoint:\n  interval: 5s\n  intervalSeconds: 5\n"
    );
    replicate_expect(
        dir,
        "many.yaml",
        &y,
        2,
        &[
            "config-many",
            "config-conflict",
            "config-unsupported-value",
            "config-cluster-db",
        ],
    );

    let cert = write_cfg(dir, "cert.pem", "not used");
    let y = format!("{SRC}target:\n  addr: 127.0.0.1:1\n  tls:\n    cert: {cert}\n");
    replicate_expect(dir, "tlskey.yaml", &y, 2, &["config-tls-pair"]);

    let y = format!("{SRC}target:\n  addr: 127.0.0.1:1\n  tls:\n    ca: /definitely/not/ca.pem\n");
    replicate_expect(dir, "tlsca.yaml", &y, 2, &["config-file-unreadable"]);
}

#[test]
fn config_warnings_and_command_line_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A Go df2redis file: every warning, then the source is unreachable (exit 1).
    let go = "source:\n  addr: 127.0.0.1:1\n  tls:\n    insecure_skip_verify: true\n\
              target:\n  seed: 127.0.0.1:1\ntaskName: t\nadvanced:\n  qps: 10\n\
              log:\n  consoleEnabled: false\ndashboard:\n  addr: \":7777\"\n\
              checkpoint:\n  path: ck/x.json\n";
    replicate_expect(
        dir,
        "go.yaml",
        go,
        1,
        &[
            "warn-go-key",
            "warn-checkpoint-path",
            "warn-qps",
            "warn-console",
            "warn-listen-all",
            "warn-insecure-tls",
            "net-refused",
        ],
    );

    run_expect(&["bogus"], 2, &["cli-usage"]);

    let ok = write_cfg(
        dir,
        "ok.yaml",
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\n",
    );
    run_expect(
        &["--log-file", "/definitely/not/here/x.log", "replicate", &ok],
        2,
        &["cli-log-file"],
    );

    run_expect(&["check", &ok, "--rounds", "0"], 2, &["cli-check-flag"]);

    let y = "source:\n  addr: no-such-host.invalid:6379\ntarget:\n  type: redis-cluster\n  \
             seeds: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n";
    run_expect(
        &["replicate", "--dry-run", &write_cfg(dir, "dns.yaml", y)],
        1,
        &["net-resolve", "dry-failed", "dry-no-seed"],
    );
}

#[test]
fn checkpoint_file_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Read before anything connects: a broken file stops the start.
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("lsn.json"), b"{ not json").unwrap();
    let y = format!(
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\ncheckpoint:\n  dir: {}\n",
        ck.display()
    );
    replicate_expect(dir, "bad.yaml", &y, 1, &["checkpoint-invalid"]);

    // `status` with neither a running replicate nor a checkpoint.
    let y = format!(
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\ncheckpoint:\n  dir: {}\n",
        dir.join("never-ran").display()
    );
    // Exit 1: nothing to report.
    run_expect(
        &["status", &write_cfg(dir, "status.yaml", &y)],
        1,
        &["status-nothing"],
    );

    // lsn.json is a directory: it cannot be read.
    let ck2 = dir.join("ck2");
    std::fs::create_dir_all(ck2.join("lsn.json")).unwrap();
    let y = format!(
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\ncheckpoint:\n  dir: {}\n",
        ck2.display()
    );
    replicate_expect(dir, "io.yaml", &y, 1, &["checkpoint-io"]);
}

// ---------------------------------------------------------------------------------------------
// Network faults: bare listeners and real redis-servers.

#[test]
fn network_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = |name: &str, src: &str| {
        write_cfg(
            dir,
            name,
            &format!(
                "source:\n  addr: {src}\n  connect_timeout: 2s\n  io_timeout: 300ms\n\
                 target:\n  addr: 127.0.0.1:1\n"
            ),
        )
    };
    // Accepted by the kernel, never answered.
    let (silent, _l1) = fake_server(None, false);
    run_expect(
        &["replicate", &cfg("silent.yaml", &silent)],
        1,
        &["net-timeout"],
    );

    let (closing, _l2) = fake_server(None, true);
    run_expect(
        &["replicate", &cfg("closing.yaml", &closing)],
        1,
        &["net-closed"],
    );

    let (garbage, _l3) = fake_server(Some(b"hello there\r\n"), true);
    run_expect(
        &["replicate", &cfg("garbage.yaml", &garbage)],
        1,
        &["net-not-resp"],
    );

    let (odd, _l4) = fake_server(Some(b"+HELLO\r\n"), true);
    run_expect(&["replicate", &cfg("ping.yaml", &odd)], 1, &["src-ping"]);
}

#[test]
fn redis_server_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A plain Redis as the source: the dry run says so, replicate refuses it.
    let redis = RedisServer::start();
    let y = format!(
        "source:\n  addr: {0}\ntarget:\n  addr: {0}\ncheckpoint:\n  dir: {1}\n",
        redis.addr(),
        dir.join("ck").display()
    );
    let path = write_cfg(dir, "redis-source.yaml", &y);
    run_expect(
        &["replicate", "--dry-run", &path],
        1,
        &["dry-not-dragonfly"],
    );
    run_expect(&["replicate", &path], 1, &["src-not-dragonfly"]);

    // Passwords: a wrong one, and none where one is required.
    let locked = RedisServer::builder().password("right-pw").start();
    let y = format!(
        "source:\n  addr: {0}\n  password: wrong-pw\ntarget:\n  addr: {0}\n",
        locked.addr()
    );
    let t = run_expect(
        &["replicate", "--dry-run", &write_cfg(dir, "pw.yaml", &y)],
        1,
        &["net-auth"],
    );
    assert!(!t.contains("wrong-pw"), "{t}");
    let y = format!(
        "source:\n  addr: {0}\ntarget:\n  addr: {0}\ncheckpoint:\n  dir: {1}\n",
        locked.addr(),
        dir.join("ck2").display()
    );
    replicate_expect(dir, "nopw.yaml", &y, 1, &["net-noauth"]);

    // TLS: a CA that did not sign the server's certificate, and a CA file that is no PEM.
    let tls = RedisServer::builder().tls().start();
    let other = TlsCerts::unrelated_ca(dir, "other");
    let junk = dir.join("junk-ca.pem");
    std::fs::write(&junk, b"this is not a certificate\n").unwrap();
    for (name, ca, id) in [
        ("tls-ca.yaml", &other, "net-tls-handshake"),
        ("tls-junk.yaml", &junk, "net-tls-setup"),
    ] {
        let y = format!(
            "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: {}\n  tls:\n    ca: {}\n",
            tls.addr(),
            ca.display()
        );
        run_expect(
            &["replicate", "--dry-run", &write_cfg(dir, name, &y)],
            1,
            &[id],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A master that answers wrongly: real recordings with one field altered.

fn s1() -> RecordedSession {
    RecordedSession::load(&testdata("s1-lz4-2shards/capture"))
}

/// Replicates from a replay master serving `session` into `target` until the output shows
/// every message in `ids`. With `final_exit` the process must end by itself with exit 1
/// (handshake failures are final); otherwise (the session is retried) it is stopped.
fn replicate_replay(
    session: RecordedSession,
    target: &str,
    name: &str,
    ids: &[&str],
    final_exit: bool,
) {
    let d = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve(session);
    let y = replicate_yaml(m.addr(), target, d.path(), "replica:\n  flow_timeout: 5s\n");
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(d.path(), "r.yaml", &y)],
        d.path(),
        name,
    );
    if final_exit {
        let (code, t) = p.wait_exit(LONG);
        assert_eq!(code, Some(1), "{name}: {t}");
        for id in ids {
            expect(&t, id);
        }
    } else {
        p.wait_msgs(ids, LONG);
        p.stop();
    }
}

#[test]
fn faulty_master_handshake_messages() {
    let target = RedisServer::start();
    let t_addr = target.addr();

    // Handshake answers: final at once (exit 1).
    let mut s = s1();
    s.capa_reply = format!("*2\r\n+{}\r\n+{}\r\n", s.replid, s.sync_id).into_bytes();
    replicate_replay(s, &t_addr, "capa", &["src-capa"], true);

    let mut s = s1();
    s.capa_reply = format!("*4\r\n+{}\r\n+{}\r\n:0\r\n:5\r\n", s.replid, s.sync_id).into_bytes();
    replicate_replay(s, &t_addr, "count", &["src-flow-count"], true);

    // The target unreachable: final at once.
    replicate_replay(
        s1(),
        "127.0.0.1:1",
        "target-down",
        &["target-connect"],
        true,
    );

    // Flow answers: the handshake went through, so the session is retried.
    // The capa reply names a sync id the master then does not know.
    let mut s = s1();
    s.sync_id = "SYNC999".into();
    replicate_replay(
        s,
        &t_addr,
        "refused",
        &["src-refused", "session-retry"],
        false,
    );

    let mut s = s1();
    s.flows[0].reply = b"+OK\r\n".to_vec();
    replicate_replay(s, &t_addr, "flow-answer", &["src-flow-answer"], false);

    let mut s = s1();
    s.flows[0].reply = b"*2\r\n+FULL\r\n+abc\r\n".to_vec();
    replicate_replay(s, &t_addr, "token", &["src-eof-token"], false);
}

#[test]
fn faulty_stream_messages() {
    let target = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();

    // A byte of the snapshot altered: the decoder names the flow and the position; the
    // session is retried with a full sync.
    let mut bad = s1();
    let magic = b"REDIS0009".len();
    assert!(bad.flows[0].data.starts_with(b"REDIS"));
    bad.flows[0].data[magic] = 0x64;
    let m = ReplayMaster::serve(bad);
    let y = replicate_yaml(m.addr(), &target.addr(), dir, "");
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(dir, "dec.yaml", &y)],
        dir,
        "decode",
    );
    p.wait_msgs(&["src-decode", "session-retry"], LONG);
    p.stop();
    drop(m);

    // A FLUSHALL inside a journal blob of the full sync (s2 is uncompressed, so FULLSYNC_END
    // is visible): the sync is started again.
    let clean = RecordedSession::load(&testdata("s2-plain-3shards/capture"));
    let mut bad = clean.clone();
    let mut entry = vec![0x06, 0x00, 0x0A, 0x42, 0xBC, 0x01, 0x01, 0x08, 0x08];
    entry.extend_from_slice(b"FLUSHALL");
    let mut blob = vec![0xD2, 0x01, entry.len() as u8];
    blob.extend_from_slice(&entry);
    let f0 = &mut bad.flows[0];
    let end = memchr::memmem::find(&f0.data, &[0xC8, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    f0.data.splice(end..end, blob.iter().copied());
    f0.split += blob.len();
    let m = ReplayMaster::serve_sequence(vec![bad, clean]);
    let y = replicate_yaml(m.addr(), &target.addr(), &dir.join("f"), "");
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(dir, "flush.yaml", &y)],
        dir,
        "flush",
    );
    p.wait_msgs(&["src-flush-in-full-sync"], LONG);
    p.stop();
    drop(m);

    // A clean session, then the master goes away in stable sync; skipped keys (JSON, field
    // and member TTLs, Dragonfly-only types) are logged on the way; one flow thread is asked
    // to run on a CPU that does not exist.
    target.cli(&["FLUSHALL"]);
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(
        m.addr(),
        &target.addr(),
        &dir.join("c"),
        "cpu:\n  flow_threads: [4000]\n",
    );
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(dir, "clean.yaml", &y)],
        dir,
        "clean",
    );
    p.wait_text("stable sync: following the journal", LONG);
    let acks = m.session().final_acks();
    assert!(m.wait_acks(&acks, LONG), "{}", p.text());
    m.close_all();
    let t = p.wait_msgs(
        &[
            "src-flow-closed",
            "session-retry",
            "cpu-pin",
            "skip-json",
            "skip-type",
            "skip-field-ttl",
            "skip-member-ttl",
        ],
        LONG,
    );
    assert!(!t.contains("ERROR"), "{t}");
    p.stop();
}

// ---------------------------------------------------------------------------------------------
// Target refusals.

#[test]
fn target_refusal_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();

    // Wrong password on the target: final at once.
    let locked = RedisServer::builder().password("right-pw").start();
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &locked.addr(), &dir.join("a"), "").replace(
        &format!("  addr: {}\n", locked.addr()),
        &format!("  addr: {}\n  password: wrong-pw\n", locked.addr()),
    );
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(dir, "auth.yaml", &y)],
        dir,
        "auth",
    );
    let (code, t) = p.wait_exit(LONG);
    assert_eq!(code, Some(1), "{t}");
    expect(&t, "target-auth");
    drop(m);

    // Out of memory: every write refused (the first is the marker reset before the full sync,
    // which is retried); nothing is half-applied.
    let full = RedisServer::start();
    full.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    full.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &full.addr(), &dir.join("b"), "");
    let mut p = Proc::spawn(&["replicate", &write_cfg(dir, "oom.yaml", &y)], dir, "oom");
    p.wait_msgs(&["target-oom"], LONG);
    p.stop();
    drop(m);

    // A read-only replica as the target: retried (a failover may be under way), then stopped.
    let master_port = support::free_port(false).to_string();
    let ro = RedisServer::builder()
        .args(&["--replicaof", "127.0.0.1", &master_port])
        .start();
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &ro.addr(), &dir.join("c"), "");
    let mut p = Proc::spawn(&["replicate", &write_cfg(dir, "ro.yaml", &y)], dir, "ro");
    p.wait_msgs(&["target-readonly", "session-retry"], LONG);
    p.stop();
}

// ---------------------------------------------------------------------------------------------
// Resuming: markers in the target, the checkpoint file, the master's answers (s4 recording).

const S4_LSNS: [u64; 2] = [166, 278];

fn s4(which: &str) -> RecordedSession {
    RecordedSession::load(&testdata(&format!("s4-partial-resume/{which}")))
}

fn set_markers(server: &RedisServer, replid: &str, lsns: &[u64]) {
    server.cli(&["FLUSHALL"]);
    for (i, l) in lsns.iter().enumerate() {
        server.cli(&[
            "SET",
            &format!("df2redis-sync:ckpt:{i}"),
            &format!("{replid}:{l}"),
        ]);
    }
}

fn save_checkpoint(dir: &Path, replid: &str, lsns: &[u64]) {
    let cp = Checkpoint {
        format_version: FORMAT_VERSION,
        master_replid: replid.to_string(),
        sync_id: "SYNC1".into(),
        flow_count: lsns.len() as u32,
        master_version: Some("df-v1.40.1".into()),
        flows: lsns
            .iter()
            .enumerate()
            .map(|(i, l)| FlowCheckpoint {
                flow: i as u32,
                next_lsn: *l,
                state: FlowState::Stable,
            })
            .collect(),
        written_at_ms: 1,
        tool_version: "test".into(),
    };
    Store::new(dir.join("ckpt")).save(&cp).unwrap();
}

/// Starts the binary against `session`, waits for `ids`, stops it.
fn resume_case(
    session: RecordedSession,
    server: &RedisServer,
    dir: &Path,
    name: &str,
    ids: &[&str],
) {
    let m = ReplayMaster::serve(session);
    let y = replicate_yaml(m.addr(), &server.addr(), dir, "");
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(dir, &format!("{name}.yaml"), &y)],
        dir,
        name,
    );
    p.wait_msgs(ids, LONG);
    p.stop();
}

#[test]
fn resume_messages() {
    let server = RedisServer::start();
    let first = s4("capture");
    let resume = s4("capture-resume");
    let replid = first.replid.clone();
    assert_eq!(replid, resume.replid);
    let d = tempfile::tempdir().unwrap();
    let dir = |n: &str| {
        let p = d.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };

    // Markers say "resume", the master answers FULL: the target is flushed first.
    set_markers(&server, &replid, &S4_LSNS);
    resume_case(
        first.clone(),
        &server,
        &dir("full"),
        "full",
        &["resume-answered-full", "resume-flushall"],
    );

    // The same with `flush_before_full_sync: never`: no flush, a warning instead.
    set_markers(&server, &replid, &S4_LSNS);
    let never = dir("never");
    let m = ReplayMaster::serve(first.clone());
    let y = replicate_yaml(m.addr(), &server.addr(), &never, "")
        .replace("target:\n", "target:\n  flush_before_full_sync: never\n");
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(&never, "never.yaml", &y)],
        &never,
        "never",
    );
    p.wait_msgs(&["warn-flush-never"], LONG);
    p.stop();
    drop(m);

    // One flow PARTIAL, the other FULL.
    set_markers(&server, &replid, &S4_LSNS);
    let mut mixed = resume.clone();
    let full_flow = first.flows.iter().find(|f| f.id == 1).unwrap().clone();
    let i = mixed.flows.iter().position(|f| f.id == 1).unwrap();
    mixed.flows[i] = full_flow;
    resume_case(
        mixed,
        &server,
        &dir("mixed"),
        "mixed",
        &["resume-mixed", "session-retry"],
    );

    // The target's markers are older than what the master streams from: the LSN markers in
    // the journal disagree with the count.
    set_markers(&server, &replid, &[S4_LSNS[0] - 6, S4_LSNS[1] - 8]);
    let mut shifted = resume.clone();
    for f in &mut shifted.flows {
        f.requested_lsn = f.requested_lsn.map(|l| l - if f.id == 0 { 6 } else { 8 });
    }
    resume_case(shifted, &server, &dir("lsn"), "lsn", &["src-lsn-mismatch"]);

    // The checkpoint file is ahead of the target's markers.
    let behind = dir("behind");
    set_markers(&server, &replid, &S4_LSNS);
    save_checkpoint(&behind, &replid, &[S4_LSNS[0] + 20, S4_LSNS[1] + 20]);
    resume_case(
        resume.clone(),
        &server,
        &behind,
        "behind",
        &["resume-marker-behind"],
    );

    // A resumable checkpoint file, but the target holds no markers.
    let lost = dir("lost");
    server.cli(&["FLUSHALL"]);
    save_checkpoint(&lost, &replid, &S4_LSNS);
    resume_case(
        first.clone(),
        &server,
        &lost,
        "lost",
        &["resume-no-markers"],
    );

    // A checkpoint of another master.
    let other = dir("other");
    server.cli(&["FLUSHALL"]);
    save_checkpoint(&other, &"0".repeat(40), &S4_LSNS);
    resume_case(first, &server, &other, "other", &["resume-other-master"]);
}

/// The retry budget (10 failed sessions in a row, backoff up to 30 s in the binary), run
/// in-process with a 10 ms backoff and a budget of 2 against a master whose snapshot never
/// decodes.
#[test]
fn failed_sessions_in_a_row_give_up() {
    let server = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    // Every flow broken, so no session applies anything (a session that applies something
    // counts as progress and resets the budget).
    let mut bad = s1();
    for f in &mut bad.flows {
        f.data[b"REDIS0009".len()] = 0x64;
    }
    // One recorded session per attempt (the replay master serves each once).
    let m = ReplayMaster::serve_sequence(vec![bad; 4]);
    let y = replicate_yaml(m.addr(), &server.addr(), d.path(), "");
    let cfg = Config::from_yaml_str(&y, "test").unwrap();
    let opts = Options {
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        max_failures: 2,
        ..Options::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let err = pipeline::run(&cfg, &opts, &stop).expect_err("a snapshot that never decodes");
    expect(&err.to_string(), "session-give-up");
}

// ---------------------------------------------------------------------------------------------
// Live refusals in stable sync: the emulator as the master, a real redis-server as the target.

/// The shared emulator fixture (stopped on drop) and its address.
struct Emulator(#[allow(dead_code)] support::emu::Emulator, String);

impl Emulator {
    fn start(shards: &str) -> Emulator {
        let e = support::emu::Emulator::start_in_tempdir(&["--shards", shards]);
        let addr = e.addr().to_string();
        Emulator(e, addr)
    }

    fn cli(&self, args: &[&str]) -> String {
        let port = self.1.rsplit(':').next().unwrap_or("0");
        let out = support::run_bounded(
            Command::new(support::program("redis-cli"))
                .args(["-h", "127.0.0.1", "-p", port])
                .args(args),
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn stable_sync_target_messages() {
    let emu = Emulator::start("2");
    emu.cli(&["SET", "seed", "1"]);
    let target = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let y = replicate_yaml(&emu.1, &target.addr(), dir, "").replace(
        &format!("  addr: {}\n", target.addr()),
        &format!("  addr: {}\n  io_timeout: 1s\n", target.addr()),
    );
    let mut p = Proc::spawn(&["replicate", &write_cfg(dir, "emu.yaml", &y)], dir, "emu");
    p.wait_text("stable sync: following the journal", LONG);

    // A key of another type in the target: the command is skipped and counted.
    target.cli(&["HSET", "wt", "f", "v"]);
    emu.cli(&["LPUSH", "wt", "x"]);
    p.wait_msgs(&["target-wrongtype"], LONG);

    // The target frozen: no reply within io_timeout; the session is retried.
    signal(target.pid(), "STOP");
    emu.cli(&["SET", "frozen", "1"]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.wait_msgs(&["target-no-reply", "session-retry"], LONG)
    }));
    signal(target.pid(), "CONT");
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    p.wait_text("partial sync: stable sync resumed", LONG);

    // Out of memory inside a journal transaction: EXECABORT, replication stops (exit 1).
    target.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    target.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    emu.cli(&["SET", "after-oom", "1"]);
    let (code, t) = p.wait_exit(LONG);
    assert_eq!(code, Some(1), "{t}");
    expect(&t, "target-execabort");
}

/// A first full sync into a target that already holds keys, and the `always` flush policy.
#[test]
fn first_sync_target_content_messages() {
    let target = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    target.cli(&["SET", "someone-elses-key", "1"]);
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &target.addr(), &dir.join("a"), "");
    let mut p = Proc::spawn(&["replicate", &write_cfg(dir, "a.yaml", &y)], dir, "a");
    p.wait_msgs(&["warn-target-not-empty"], LONG);
    p.stop();
    drop(m);

    // A target with no marker of ours: only the policy can make it flush.
    target.cli(&["FLUSHALL"]);
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &target.addr(), &dir.join("b"), "")
        .replace("target:\n", "target:\n  flush_before_full_sync: always\n");
    let mut p = Proc::spawn(&["replicate", &write_cfg(dir, "b.yaml", &y)], dir, "b");
    p.wait_msgs(&["warn-flush-always"], LONG);
    p.stop();
}

/// A target user without `CLIENT`: the engine cannot close an earlier session's writer
/// connections and waits for them to drain instead; and a Redis Cluster target holding an
/// earlier run's data is flushed on every master before a new full sync.
#[test]
fn target_permission_and_cluster_messages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let target = RedisServer::start();
    target.cli(&[
        "ACL",
        "SETUSER",
        "writer",
        "on",
        ">writer-pw",
        "~*",
        "&*",
        "+@all",
        "-client",
    ]);
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &target.addr(), &dir.join("a"), "").replace(
        &format!("  addr: {}\n", target.addr()),
        &format!(
            "  addr: {}\n  username: writer\n  password: writer-pw\n",
            target.addr()
        ),
    );
    let mut p = Proc::spawn(&["replicate", &write_cfg(dir, "acl.yaml", &y)], dir, "acl");
    p.wait_msgs(&["target-client-refused"], LONG);
    p.stop();
    drop(m);

    let cluster = support::RedisCluster::builder().masters(3).start();
    let seeds: Vec<String> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let prefixes = (1..16)
        .map(|d| format!("{d}: \"src{d}:\""))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = |m: &ReplayMaster, ck: &str| {
        format!(
            "source:\n  addr: {}\ntarget:\n  type: redis-cluster\n  seeds: [{}]\n\
             checkpoint:\n  dir: {}\n  interval: 200ms\n\
             databases:\n  key_prefix: {{{prefixes}}}\n",
            m.addr(),
            seeds.join(", "),
            dir.join(ck).display()
        )
    };
    // s1 writes to dbs other than 0 (snapshot and journal): a cluster has only db 0, so
    // every other db gets a prefix.
    // A first run leaves markers; a second one (a new checkpoint dir, so no resume) flushes.
    for (i, ids) in [(0, &[][..]), (1, &["cluster-flushall"][..])] {
        let m = ReplayMaster::serve(s1());
        let cfg = write_cfg(dir, &format!("cl{i}.yaml"), &yaml(&m, &format!("cl{i}")));
        let mut p = Proc::spawn(&["replicate", &cfg], dir, &format!("cl{i}"));
        p.wait_text("stable sync: following the journal", LONG);
        p.wait_msgs(ids, LONG);
        p.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Rarer warnings: status files, cluster routing refusals.

/// `<checkpoint.dir>/replicate.pid` and `status.addr` cannot be written (both are directories
/// here, a stand-in for a directory without write permission that also works as root): each is
/// a warning and replication goes on to the stable sync.
#[test]
fn status_file_messages() {
    let d = tempfile::tempdir().unwrap();
    let target = RedisServer::start();
    let ck = d.path().join("ckpt");
    std::fs::create_dir_all(ck.join("replicate.pid")).unwrap();
    std::fs::create_dir_all(ck.join("status.addr")).unwrap();
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(
        m.addr(),
        &target.addr(),
        d.path(),
        "metrics:\n  listen: 127.0.0.1:0\n",
    );
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(d.path(), "r.yaml", &y)],
        d.path(),
        "status-files",
    );
    p.wait_msgs(&["warn-pid-file", "warn-status-addr"], LONG);
    p.wait_text("stable sync: following the journal", LONG);
    p.stop();
}

/// The process out of file descriptors: its soft `RLIMIT_NOFILE` lowered to 3 while it runs
/// (`prlimit`, util-linux), so no new descriptor can be had (0–2 are always open). The
/// endpoint's accept fails; it is logged, replication goes on, and once the limit is back the
/// queued connection is answered. (tiny_http, used before, panicked in its accept thread when it
/// could not duplicate a socket and the endpoint stayed dead: CI run of 2026-11-24.)
#[test]
fn metrics_accept_failure_message() {
    let d = tempfile::tempdir().unwrap();
    let target = RedisServer::start();
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(
        m.addr(),
        &target.addr(),
        d.path(),
        "metrics:\n  listen: 127.0.0.1:0\n",
    );
    let cfg = write_cfg(d.path(), "r.yaml", &y);
    let mut p = Proc::spawn(&["replicate", &cfg], d.path(), "fds");
    p.wait_text("stable sync: following the journal", LONG);
    let addr = std::fs::read_to_string(d.path().join("ckpt/status.addr")).unwrap();
    let addr = addr.trim().to_string();
    let pid = p.child.id().to_string();
    let prlimit = |args: &[&str]| {
        let out = Command::new("prlimit")
            .args(["--pid", &pid])
            .args(args)
            .output()
            .expect("prlimit (util-linux) runs");
        assert!(out.status.success(), "prlimit {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let soft = prlimit(&["--nofile", "--output=SOFT", "--noheadings", "--raw"]);
    prlimit(&["--nofile=3:"]);
    // A scrape while no descriptor can be had: queued in the kernel, not accepted.
    let scraper = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            df2redis_sync::ops::status::http_get(&addr, "/metrics", Duration::from_secs(20))
        })
    };
    p.wait_msgs(&["metrics-accept"], LONG);
    prlimit(&[&format!("--nofile={soft}:")]);
    let body = scraper
        .join()
        .unwrap()
        .expect("the queued scrape is answered");
    assert!(body.contains("df2redis_up 1"), "{body}");
    p.wait_text("metrics endpoint: accepting connections again", LONG);
    let t = p.stop();
    assert!(
        t.contains("stopped: writers drained, checkpoint saved"),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

/// A journal `SMOVE` between keys of two slots: a cluster cannot apply it without reading the
/// source, so it is counted as skipped and reported; the journal goes on (the next `SET` lands).
/// A pre-v1.21 MULTI/EXEC group over two slots is reported once; a slot map re-read that fails
/// is reported and retried.
#[test]
fn cluster_routing_and_topology_messages() {
    let d = tempfile::tempdir().unwrap();
    let cluster = support::RedisCluster::builder().masters(3).start();
    let seeds: Vec<String> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let m = ReplayMaster::serve(journal_session(&[
        &["SET", "before", "1"],
        &["SMOVE", "a", "b", "m"],
        &["SET", "after", "2"],
        &["MULTI", "SET", "a", "1"],
        &["MULTI", "SET", "b", "2"],
        // The group's EXEC is the last byte the master sends.
        &["EXEC"],
    ]));
    let y = format!(
        "source:\n  addr: {}\ntarget:\n  type: redis-cluster\n  seeds: [{}]\n\
         checkpoint:\n  dir: {}\n  interval: 200ms\n",
        m.addr(),
        seeds.join(", "),
        d.path().join("ckpt").display()
    );
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(d.path(), "r.yaml", &y)],
        d.path(),
        "cluster-refused",
    );
    let t = p.wait_msgs(&["cluster-not-applied", "cluster-transaction-slots"], LONG);
    assert!(t.contains("SMOVE a not applied"), "{t}");
    // The journal goes on after the refusal: the next SET lands.
    let end = Instant::now() + LONG;
    while cluster.nodes()[0].cli(&["-c", "GET", "after"]).trim() != "2" {
        assert!(
            Instant::now() < end,
            "SET after never applied:\n{}",
            p.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The group that ends the stream is applied (each part in its slot) and acknowledged
    // without waiting for more bytes from the master.
    let acks = m.session().final_acks();
    assert!(
        m.wait_acks(&acks, LONG),
        "ACKs {:?}:\n{}",
        m.last_acks(),
        p.text()
    );
    for (k, v) in [("a", "1"), ("b", "2")] {
        assert_eq!(cluster.nodes()[0].cli(&["-c", "GET", k]).trim(), v, "{k}");
    }
    // The slot map is re-read every few seconds: with `CLUSTER` taken from the user on every
    // node, each re-read fails and is logged; the writers (plain commands) go on.
    for n in cluster.nodes() {
        n.cli(&["ACL", "SETUSER", "default", "-cluster"]);
    }
    p.wait_msgs(&["cluster-refresh-failed"], LONG);
    p.stop();
}

// ---------------------------------------------------------------------------------------------
// A master whose shards disagree about a FLUSHALL (synthetic two-flow journals), run in-process
// with a short stall limit and no retry, so the session's error is the returned one.

/// Replicates `session` into `target` in-process until the first failed session; returns its
/// message (`1 sessions failed in a row; last: <message>`).
fn first_session_error(session: RecordedSession, target: &RedisServer, stall: Duration) -> String {
    let d = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve(session);
    let y = replicate_yaml(m.addr(), &target.addr(), d.path(), "");
    let cfg = Config::from_yaml_str(&y, "test").unwrap();
    let opts = Options {
        stall_limit: stall,
        backoff: Duration::from_millis(10),
        max_failures: 0,
        ..Options::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let err = pipeline::run(&cfg, &opts, &stop).expect_err("a session that fails");
    assert!(started.elapsed() < LONG, "took {:?}", started.elapsed());
    err.to_string()
}

#[test]
fn flush_barrier_messages() {
    let target = RedisServer::start();
    // Each shard journals the FLUSHALL with its own txid: not one command.
    let t = first_session_error(
        journal_session_flows(&[
            &[
                &["SET", "a", "1"],
                &["TXID", "5", "FLUSHALL"],
                &["SET", "b", "2"],
            ],
            &[
                &["SET", "c", "1"],
                &["TXID", "6", "FLUSHALL"],
                &["SET", "d", "2"],
            ],
        ]),
        &target,
        Duration::from_secs(20),
    );
    expect(&t, "src-flush-txid");
    // Only one shard journals it: the other never reaches the barrier.
    let t = first_session_error(
        journal_session_flows(&[
            &[
                &["SET", "a", "1"],
                &["TXID", "5", "FLUSHALL"],
                &["SET", "b", "2"],
            ],
            &[&["SET", "c", "1"], &["SET", "d", "2"]],
        ]),
        &target,
        Duration::from_secs(2),
    );
    expect(&t, "src-flush-barrier");
    assert!(t.contains("flow 0: FLUSH barrier txid 5"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// A target that answers more than it was asked: a proxy in front of a real redis-server adds a
// reply after every EXEC reply of a connection that sent MULTI (the writer's).

/// Forwards every connection to `upstream`; on a connection that sent `MULTI`, each array reply
/// (`EXEC`'s) is followed, in the same write, by an unasked `+OK`.
fn extra_reply_proxy(upstream: String) -> (String, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let l2 = l.try_clone().unwrap();
    std::thread::spawn(move || {
        for c in l2.incoming() {
            let Ok(client) = c else { return };
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                return;
            };
            let multi = Arc::new(AtomicBool::new(false));
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let seen = multi.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        let _ = s_out.shutdown(std::net::Shutdown::Write);
                        return;
                    }
                    let chunk = &buf[..n];
                    if memchr::memmem::find(chunk, b"*1\r\n$5\r\nMULTI\r\n").is_some() {
                        seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if s_out.write_all(chunk).is_err() {
                        return;
                    }
                }
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 65536];
                let limits = df2redis_sync::resp::Limits::default();
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    let mut out = Vec::new();
                    let mut pos = 0;
                    while let Ok(Some((_, len))) =
                        df2redis_sync::resp::decode(&pending[pos..], &limits)
                    {
                        out.extend_from_slice(&pending[pos..pos + len]);
                        if pending[pos] == b'*' && multi.load(std::sync::atomic::Ordering::SeqCst) {
                            out.extend_from_slice(b"+OK\r\n");
                        }
                        pos += len;
                    }
                    pending.drain(..pos);
                    if c_out.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, l)
}

#[test]
fn target_extra_reply_message() {
    let target = RedisServer::start();
    let (proxy, _l) = extra_reply_proxy(target.addr());
    let d = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve(s1());
    // One batch in flight at a time: the extra reply reaches the writer with nothing pending.
    let y = replicate_yaml(
        m.addr(),
        &proxy,
        d.path(),
        "pipeline:\n  inflight_batches: 1\n",
    );
    let mut p = Proc::spawn(
        &["replicate", &write_cfg(d.path(), "r.yaml", &y)],
        d.path(),
        "extra-reply",
    );
    p.wait_msgs(&["target-extra-reply", "session-retry"], LONG);
    p.stop();
}

// ---------------------------------------------------------------------------------------------
// Internal failures, injected through the debug-build failpoints (`DF2REDIS_SYNC_FAILPOINT`,
// src/pipeline/failpoint.rs): the documented message, exit 1 within a bound, and a restart
// that resumes from the target's markers and converges (`check --mode full` equal).

/// Replicates from a 3-shard emulator under writes with failpoint `fp` armed; the process must
/// exit 1 within 60 s showing `ids` and `shown`; a restart without the failpoint then resumes
/// and the target ends equal to the source.
fn failpoint_case(fp: &str, ids: &[&str], shown: &str) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (_emu, emu) = support::emu::start_emulator(dir, &[], "1");
    let target = RedisServer::start();
    let y = replicate_yaml(&emu, &target.addr(), dir, "");
    let cfg = write_cfg(dir, "fp.yaml", &y);
    let mut p = Proc::spawn_env(
        &["replicate", &cfg],
        dir,
        "failpoint",
        &[("DF2REDIS_SYNC_FAILPOINT", fp)],
    );
    p.wait_text("stable sync: following the journal", LONG);
    // A periodic save before any journal write: the coordinator failpoint fires at the first
    // applied journal batch, possibly before its first save in stable sync otherwise.
    let end = Instant::now() + LONG;
    while Store::new(dir.join("ckpt")).load().ok().flatten().is_none() {
        assert!(Instant::now() < end, "no checkpoint saved in stable sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let work = support::emu::spawn_work(&emu, "1000", "2000");
    let started = Instant::now();
    let (code, t) = p.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{t}");
    for id in ids {
        expect(&t, id);
    }
    assert!(
        t.contains(&format!("failpoint {}", fp.split(':').next().unwrap_or(fp))),
        "{t}"
    );
    assert!(t.contains(shown), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(work.join().unwrap(), "dfly-emulator work");
    // The checkpoint file is never ahead of the positions committed in the target (a flow or
    // writer panic still ends with the final save; a coordinator panic leaves the last periodic
    // one).
    let cp = Store::new(dir.join("ckpt"))
        .load()
        .unwrap()
        .unwrap_or_else(|| panic!("no checkpoint:\n{t}"));
    for f in &cp.flows {
        let m = target.cli(&["GET", &format!("df2redis-sync:ckpt:{}", f.flow)]);
        let committed: u64 = m
            .trim()
            .rsplit(':')
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("flow {}: marker {m:?}", f.flow));
        assert!(
            f.next_lsn <= committed,
            "flow {}: checkpoint {} ahead of the target's {committed}",
            f.flow,
            f.next_lsn
        );
    }
    // The restart resumes from the markers the target committed, and converges.
    let mut again = Proc::spawn(&["replicate", &cfg], dir, "restart");
    again.wait_text(
        "resuming from the per-flow LSNs committed in the target",
        LONG,
    );
    let r = support::emu::wait_check_equal(Path::new(&cfg), dir, 40);
    let log = again.stop();
    r.unwrap_or_else(|e| panic!("{e}\n{log}"));
}

#[test]
fn flow_thread_panic_is_reported() {
    failpoint_case(
        "flow-panic:1",
        &["internal-panic"],
        "thread(s) panicked: flow-1",
    );
}

#[test]
fn writer_thread_panic_is_reported() {
    failpoint_case(
        "writer-panic",
        &["internal-panic"],
        "thread(s) panicked: writer-127.0.0.1:",
    );
}

#[test]
fn coordinator_panic_is_reported() {
    failpoint_case(
        "coordinator-panic",
        &["internal-panic"],
        "thread(s) panicked: coordinator",
    );
}

/// The OS refusing a thread, injected at the first flow: reported the same way (exit 1), and
/// nothing is left running.
#[test]
fn thread_spawn_failure_is_reported() {
    let target = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    let m = ReplayMaster::serve(s1());
    let y = replicate_yaml(m.addr(), &target.addr(), d.path(), "");
    let mut p = Proc::spawn_env(
        &["replicate", &write_cfg(d.path(), "r.yaml", &y)],
        d.path(),
        "spawn",
        &[("DF2REDIS_SYNC_FAILPOINT", "spawn-error")],
    );
    let (code, t) = p.wait_exit(LONG);
    assert_eq!(code, Some(1), "{t}");
    expect(&t, "internal-os");
    assert!(t.contains("spawning flow-0: failpoint spawn-error"), "{t}");
}
