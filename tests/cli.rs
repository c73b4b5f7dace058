//! Integration tests: cli. Each test runs the built `df2redis-sync` binary and checks its exit
//! code, stdout and stderr.

use crate::support::{RedisCluster, RedisServer};
use df2redis_sync::net::Endpoint;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts that stderr contains `needle` (showing stderr otherwise).
    #[track_caller]
    fn err_has(&self, needle: &str) {
        assert!(self.stderr.contains(needle), "{}", self.stderr);
    }

    /// Asserts that stdout contains `needle` (showing stdout otherwise).
    #[track_caller]
    fn out_has(&self, needle: &str) {
        assert!(self.stdout.contains(needle), "{}", self.stdout);
    }
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let p = dir.join("replicate.yaml");
    std::fs::write(&p, yaml).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn help_lists_commands_examples_and_exit_codes() {
    let r = run(&["--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for needle in [
        "replicate",
        "check",
        "status",
        "version",
        "--verbose",
        "--quiet",
        "--log-file",
        "Examples:",
        "Exit codes:",
        "130  interrupted",
        "2    usage or configuration error",
        "RUST_LOG",
    ] {
        assert!(
            r.stdout.contains(needle),
            "--help lacks {needle}:\n{}",
            r.stdout
        );
    }
    let r = run(&["replicate", "--help"]);
    assert_eq!(r.code, 0);
    r.out_has("--dry-run");
    r.out_has("-c, --config <CONFIG>");
    r.out_has("REPLCONF");
}

#[test]
fn version_flag_and_subcommand() {
    let want = format!("df2redis-sync {}", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["version"][..], &["-V"][..]] {
        let r = run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout.trim(), want, "{args:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let r = run(&["bogus"]);
    assert_eq!(r.code, 2);
    r.err_has("unrecognized subcommand 'bogus'");

    let r = run(&[]);
    assert_eq!(r.code, 2, "no subcommand prints help and exits 2");
    r.err_has("Usage:");

    let r = run(&["replicate"]);
    assert_eq!(r.code, 2);
    r.err_has("required");

    let r = run(&["replicate", "a.yaml", "--config", "b.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    let r = run(&["-v", "--quiet", "version"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn bad_config_exits_2_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:6380\n  passwrd: hunter2\ntarget:\n  addr: 127.0.0.1:99999\n",
    );
    let r = run(&["replicate", "--dry-run", &path]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    r.err_has(&format!("config {path} has 2 problems:"));
    r.err_has("source.passwrd: unknown key; did you mean `password`?");
    r.err_has("target.addr = `127.0.0.1:99999`: port must be a number between 1 and 65535");
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "nothing on stdout: {}", r.stdout);

    let r = run(&["replicate", "-c", "/definitely/not/here.yaml"]);
    assert_eq!(r.code, 2);
    r.err_has("cannot read config file /definitely/not/here.yaml");
}

#[test]
fn status_with_nothing_to_report_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:2\ncheckpoint:\n  dir: {}\n",
            dir.path().join("ckpt").display()
        ),
    );
    // No running replicate, no checkpoint: nothing to report, and nothing made up.
    let r = run(&["status", &path]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no running replicate answered")
            && r.stderr.contains("there is no checkpoint at"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.is_empty(),
        "status must not print fake output: {}",
        r.stdout
    );
}

/// `replicate` against an unreachable master fails at once with exit 1 (no retry loop before
/// a first session was established).
#[test]
fn replicate_unreachable_master_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:2\n",
    );
    let r = run(&["replicate", &path]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    r.err_has("127.0.0.1:1");
}

#[test]
fn config_warnings_are_logged_and_log_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    // `migrate` (a Go df2redis key) loads with a warning; port 1 refuses connections quickly.
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\nmigrate:\n  snapshotPath: x\n",
    );
    let r = run(&["replicate", &path, "--log-file", log.to_str().unwrap()]);
    r.err_has("`migrate` belongs to the Go df2redis and is ignored");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("`migrate` belongs to the Go df2redis"),
        "{logged}"
    );

    let r = run(&["--quiet", "replicate", &path]);
    assert!(
        r.stderr.contains("WARN"),
        "--quiet keeps warnings: {}",
        r.stderr
    );
}

/// The YAML of one side (`source:` or `target:` body) for a fixture's endpoint.
fn side_yaml(ep: &Endpoint) -> String {
    let mut y = format!("  addr: {}\n", ep.addr);
    if let Some(u) = &ep.username {
        y += &format!("  username: {u}\n");
    }
    if let Some(p) = &ep.password {
        y += &format!("  password: \"{}\"\n", p.expose());
    }
    if let Some(t) = &ep.tls {
        y += "  tls:\n";
        if let Some(ca) = &t.ca_file {
            y += &format!("    ca: {}\n", ca.display());
        }
        if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
            y += &format!("    cert: {}\n    key: {}\n", c.display(), k.display());
        }
    }
    y
}

fn dry_run(dir: &Path, source: &Endpoint, target_body: &str) -> Run {
    let yaml = format!("source:\n{}target:\n{target_body}", side_yaml(source));
    let path = write_config(dir, &yaml);
    run(&["replicate", "--dry-run", &path])
}

/// Decision documented in --help and the README: a source that answers but is not Dragonfly
/// fails the dry run (exit 1), after PING/AUTH worked and the target was checked too.
#[test]
fn dry_run_plain_redis_source_is_reported_as_not_dragonfly() {
    let source = RedisServer::builder().password("src-pw-secret").start();
    let target = RedisServer::builder()
        .acl_user("writer", "tgt-pw-secret")
        .start();
    let dir = tempfile::tempdir().unwrap();
    let r = dry_run(
        dir.path(),
        &source.endpoint(),
        &side_yaml(&target.endpoint()),
    );
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.out_has(&format!(
        "source   {}: PING ok (AUTH ok), but NOT a Dragonfly",
        source.addr()
    ));
    r.out_has(&format!(
        "target   redis-standalone via {} (AUTH as writer ok): 1 master",
        target.addr()
    ));
    r.out_has(&format!("  server {}  PING ok", target.addr()));
    assert!(
        r.stderr.contains("answered PING and AUTH but is not a Dragonfly: INFO SERVER has no dragonfly_version (it reports redis_version"),
        "{}",
        r.stderr
    );
    for secret in ["src-pw-secret", "tgt-pw-secret"] {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    }
}

/// A stand-in Dragonfly main port: answers AUTH, PING and INFO SERVER the way Dragonfly
/// v1.40.1 does and records every command it receives.
fn fake_dragonfly() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        // One connection: the dry run opens exactly one to the source.
        if let Some(Ok(conn)) = listener.incoming().next() {
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            while let Some(args) = read_command(&mut r) {
                let line = args.join(" ");
                log.lock().unwrap().push(line);
                let reply: Vec<u8> = match args.first().map(|a| a.to_ascii_uppercase()).as_deref() {
                    Some("AUTH") => b"+OK\r\n".to_vec(),
                    Some("PING") => b"+PONG\r\n".to_vec(),
                    Some("INFO") => {
                        let body = "# Server\r\nredis_version:7.4.0\r\ndragonfly_version:df-v1.40.1\r\nredis_mode:standalone\r\n";
                        format!("${}\r\n{body}\r\n", body.len()).into_bytes()
                    }
                    _ => b"-ERR unexpected command in a dry run\r\n".to_vec(),
                };
                if w.write_all(&reply).is_err() {
                    break;
                }
            }
        }
    });
    (addr, seen)
}

/// Reads one RESP array of bulk strings; `None` at EOF or on anything else.
fn read_command(r: &mut impl BufRead) -> Option<Vec<String>> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0u8; len.min(1 << 20) + 2];
        std::io::Read::read_exact(r, &mut buf).ok()?;
        buf.truncate(len);
        args.push(String::from_utf8_lossy(&buf).into_owned());
    }
    Some(args)
}

#[test]
fn dry_run_detects_dragonfly_and_never_opens_a_replication_session() {
    let (addr, seen) = fake_dragonfly();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut source = Endpoint::plain(addr.clone());
    source.password = Some(df2redis_sync::net::Secret::new("df-pw"));
    let r = dry_run(dir.path(), &source, &side_yaml(&target.endpoint()));
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.out_has(&format!(
        "source   {addr}: PING ok (AUTH ok), Dragonfly df-v1.40.1"
    ));
    assert!(
        r.stdout.ends_with("dry run: ok (nothing was replicated)\n"),
        "{}",
        r.stdout
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, ["AUTH df-pw", "PING", "INFO SERVER"]);
    assert!(seen
        .iter()
        .all(|c| !c.to_ascii_uppercase().starts_with("REPLCONF")));
}

#[test]
fn dry_run_prints_cluster_masters_and_slots() {
    let cluster = RedisCluster::start();
    let (addr, _seen) = fake_dragonfly();
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<String> = cluster
        .nodes()
        .iter()
        .take(2)
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    let body = format!("  type: redis-cluster\n  seeds: [{}]\n", seeds.join(", "));
    let r = dry_run(dir.path(), &Endpoint::plain(addr), &body);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.out_has("target   redis-cluster via ");
    r.out_has(": 3 masters");
    let masters: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("  master "))
        .collect();
    assert_eq!(masters.len(), 3, "{}", r.stdout);
    // The three slot counts printed add up to every slot.
    let total: usize = masters
        .iter()
        .map(|l| {
            let count = l
                .split(" (")
                .nth(1)
                .and_then(|t| t.split(')').next())
                .unwrap();
            count.parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(total, 16384, "{}", r.stdout);
    assert!(
        masters.iter().any(|l| l.contains("slots 0-")),
        "{}",
        r.stdout
    );
    assert!(
        masters.iter().any(|l| l.contains("-16383 (")),
        "{}",
        r.stdout
    );
}

#[test]
fn dry_run_tls_target_with_ca() {
    let (addr, _seen) = fake_dragonfly();
    let target = RedisServer::builder().tls().password("tls-pw").start();
    let dir = tempfile::tempdir().unwrap();
    let r = dry_run(
        dir.path(),
        &Endpoint::plain(addr),
        &side_yaml(&target.endpoint()),
    );
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.out_has(&format!("  server {}  PING ok", target.addr()));
}

#[test]
fn dry_run_connectivity_failures_exit_1() {
    let target = RedisServer::builder().password("right").start();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the source port; the target refuses the password.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut wrong = target.endpoint();
    wrong.password = Some(df2redis_sync::net::Secret::new("wrong-secret"));
    let r = dry_run(
        dir.path(),
        &Endpoint::plain(dead.clone()),
        &side_yaml(&wrong),
    );
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r.err_has("dry run failed");
    r.err_has(&format!("source: {dead}: connect failed"));
    r.err_has(&format!(
        "target: topology discovery: {}: AUTH failed",
        target.addr()
    ));
    assert!(!r.stderr.contains("wrong-secret"), "{}", r.stderr);
    assert!(!r.stdout.contains("dry run: ok"), "{}", r.stdout);
}

#[test]
fn dry_run_type_mismatch_is_caught() {
    let (addr, _seen) = fake_dragonfly();
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let body = format!("  type: redis-cluster\n  seeds: [\"{}\"]\n", target.addr());
    let r = dry_run(dir.path(), &Endpoint::plain(addr), &body);
    assert_eq!(r.code, 1, "{}", r.stderr);
    r.err_has("has cluster support disabled; set target.type: redis-standalone");
}

#[test]
fn ctrl_c_during_dry_run_exits_130() {
    // A source that accepts the connection and never answers: the dry run waits on PING.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let holder = std::thread::spawn(move || listener.accept().map(|(c, _)| c));
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!("source:\n  addr: {addr}\n  io_timeout: 20s\ntarget:\n  addr: 127.0.0.1:1\n"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(["replicate", "--dry-run", &path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the binary connected (then the handler is surely installed), then SIGINT it.
    let _conn = holder.join().unwrap().unwrap();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("no exit within 10 s of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
}

#[test]
fn log_level_from_flags_rust_log_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let quiet_cfg = "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\n";
    let path = write_config(dir.path(), quiet_cfg);
    let debug_line = "dry run: connecting to the source 127.0.0.1:1";
    let run_env = |args: &[&str], rust_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_df2redis-sync"));
        c.args(args).env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            c.env("RUST_LOG", v);
        }
        let out = c.output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Default (logging.level = info): no debug line.
    assert!(!run_env(&["replicate", "--dry-run", &path], None).contains(debug_line));
    // -v raises to debug.
    assert!(run_env(&["-v", "replicate", "--dry-run", &path], None).contains(debug_line));
    // RUST_LOG is respected when no flag is given.
    assert!(run_env(
        &["replicate", "--dry-run", &path],
        Some("df2redis_sync=debug")
    )
    .contains(debug_line));
    // A flag beats RUST_LOG.
    assert!(
        !run_env(&["--quiet", "replicate", "--dry-run", &path], Some("debug")).contains(debug_line)
    );
    // logging.level from the config.
    let path = write_config(
        dir.path(),
        &format!("{quiet_cfg}logging:\n  level: debug\n"),
    );
    assert!(run_env(&["replicate", "--dry-run", &path], None).contains(debug_line));
    // An unopenable log file is a usage error (exit 2) naming the file.
    let r = run(&[
        "replicate",
        "--dry-run",
        &path,
        "--log-file",
        "/definitely/not/here/x.log",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    r.err_has("cannot open log file /definitely/not/here/x.log");
}
