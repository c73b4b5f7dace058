//! Operating a replication: the metrics and status endpoint scraped while the real binary
//! replicates from the emulator into a real redis-server (full sync, stable sync, a paused
//! target, a refused command, stop), `status --json` at each stage, progress bars in a
//! pseudo-terminal and plain progress lines otherwise, and passwords absent from trace logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use df2redis_sync::ops::status::{http_get, StatusReport};

use crate::recordings::redis;
use crate::support::emu::{Emulator, Proc};
use crate::support::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_df2redis-sync");

/// An emulator with 3 shards (plus `args`), its dataset loaded at `scale`; its address.
fn start_emulator(dir: &Path, args: &[&str], scale: Option<&str>) -> (Emulator, String) {
    let (emu, addr) = crate::support::emu::start_empty_emulator(dir, args);
    if let Some(scale) = scale {
        emu.load(scale);
    }
    (emu, addr)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sum of `keys=` over the `INFO KEYSPACE` lines of the server on `port`.
fn keyspace_keys(port: u16) -> u64 {
    let mut c = redis::Conn::connect(port).unwrap();
    let info = c.cmd(&[b"INFO", b"KEYSPACE"]).text();
    info.lines()
        .filter_map(|l| l.split("keys=").nth(1))
        .filter_map(|r| r.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// `name{labels}` → value, from a Prometheus text exposition.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name` (any labels).
fn sum(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v)
        .sum()
}

fn scrape(addr: &str) -> BTreeMap<String, f64> {
    parse_metrics(&http_get(addr, "/metrics", Duration::from_secs(5)).unwrap())
}

fn live(addr: &str) -> StatusReport {
    serde_json::from_str(&http_get(addr, "/status", Duration::from_secs(5)).unwrap()).unwrap()
}

/// `df2redis-sync status --json <cfg>`, parsed.
fn status_json(cfg: &Path) -> StatusReport {
    let out = crate::support::run_bounded(
        std::process::Command::new(BIN).args(["status", "--json", cfg.to_str().unwrap()]),
        Duration::from_secs(20),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "status --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Polls `f` every 20 ms for up to `secs`; panics with `what` when it never holds.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_config(dir: &Path, src: &str, target: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {src}\ntarget:\n  addr: {target}\ncheckpoint:\n  dir: {}\n  \
             interval: 300ms\n{extra}",
            dir.join("ckpt").display()
        ),
    )
    .unwrap();
    cfg
}

fn wait_exit(child: &mut Proc, secs: u64) -> std::process::ExitStatus {
    wait_for(secs, "the replica to exit", || child.0.try_wait().unwrap())
}

/// The endpoint and `status --json` during full sync (keys and bytes moving, the ETA against
/// the master's key count), stable sync (entries, applied LSNs and writer ops moving; a paused
/// target shows lag in LSNs and in ms, then catches up), a refused command (error counters, the
/// binary key escaped in the log), and after SIGTERM (checkpoint only, `stopped`). Plain
/// `progress:` lines on a non-terminal stderr.
#[test]
fn metrics_and_status_follow_a_replication_from_full_sync_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], Some("4"));
    let master_keys = keyspace_keys(port_of(&emu_addr));
    let server = RedisServer::start();
    let cfg = write_config(
        dir.path(),
        &emu_addr,
        &server.addr(),
        "logging:\n  progress_interval: 200ms\nmetrics:\n  listen: 127.0.0.1:0\n",
    );
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = Proc(
        std::process::Command::new(BIN)
            .args(["replicate", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr_file = dir.path().join("ckpt").join("status.addr");
    let addr = wait_for(30, "status.addr", || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });

    // Full sync: a live report in the middle of it, the metrics then, and `status --json`.
    let mut during: Option<(StatusReport, BTreeMap<String, f64>)> = None;
    let mut cli_during: Option<StatusReport> = None;
    wait_for(120, "stable sync", || {
        let r = live(&addr);
        let loading = r.state == "full_sync"
            && r.full_sync
                .as_ref()
                .is_some_and(|f| f.keys_done > 0 && !f.done);
        if loading && during.is_none() {
            let m = scrape(&addr);
            // Kept only when the scrape too saw the full sync (it may have ended since).
            if m.get("df2redis_state") == Some(&1.0) {
                during = Some((r.clone(), m));
            }
        }
        if loading && during.is_some() && cli_during.is_none() {
            let c = status_json(&cfg);
            if c.state == "full_sync" {
                cli_during = Some(c);
            }
        }
        (r.state == "stable").then_some(())
    });
    let (fs_report, m1) = during.expect("no status report caught during the full sync");
    let fs = fs_report.full_sync.unwrap();
    assert_eq!(fs_report.verdict, "syncing");
    assert_eq!(fs.keys_total, Some(master_keys), "ETA base = INFO KEYSPACE");
    assert!(fs.percent.is_some_and(|p| p > 0.0 && p < 100.0), "{fs:?}");
    assert!(fs.eta_s.is_some(), "{fs:?}");
    assert!(fs_report
        .flows
        .iter()
        .all(|f| f.phase != "stable" || f.applied_lsn > 0));
    let cli = cli_during.expect("`status --json` never ran during the full sync");
    assert!(cli.live);
    assert_eq!(cli.verdict, "syncing");
    assert_eq!(cli.flows.len(), 3);
    assert_eq!(m1.get("df2redis_state"), Some(&1.0));

    let caught_up = wait_for(60, "caught up", || {
        let r = live(&addr);
        (r.verdict == "caught up").then_some(r)
    });
    let m2 = scrape(&addr);
    assert!(
        sum(&m2, "df2redis_full_sync_keys_done") > sum(&m1, "df2redis_full_sync_keys_done"),
        "keys moved"
    );
    assert!(sum(&m2, "df2redis_flow_bytes_total") > sum(&m1, "df2redis_flow_bytes_total"));
    assert!(sum(&m2, "df2redis_writer_ops_total") > sum(&m1, "df2redis_writer_ops_total"));
    assert_eq!(m2.get("df2redis_full_sync_progress_ratio"), Some(&1.0));
    assert_eq!(m2.get("df2redis_state"), Some(&2.0));
    assert_eq!(sum(&m2, "df2redis_flow_phase"), 6.0, "3 flows stable");
    assert!(m2
        .get("df2redis_checkpoint_age_seconds")
        .is_some_and(|a| *a < 5.0));
    assert!(caught_up
        .flows
        .iter()
        .all(|f| f.phase == "stable" && f.lag_lsn == 0));
    let cli = status_json(&cfg);
    assert_eq!(cli.state, "stable");
    assert!(
        cli.checkpoint.is_some(),
        "the live report carries the checkpoint"
    );

    // Stable sync with writes; the target paused for 2 s in the middle: lag shows, then goes.
    let work = {
        let a = emu_addr.clone();
        std::thread::spawn(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
                .args(["work", "--target", &a, "--rate", "1500", "--ops", "4500"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        })
    };
    wait_for(30, "journal entries", || {
        (sum(&scrape(&addr), "df2redis_flow_entries_total") > 0.0).then_some(())
    });
    let mut tgt = redis::Conn::connect(server.port()).unwrap();
    assert_eq!(
        tgt.cmd(&[b"CLIENT", b"PAUSE", b"2000", b"WRITE"]).text(),
        "OK"
    );
    let paused_at = Instant::now();
    let lagging = wait_for(10, "lag during the pause", || {
        let r = live(&addr);
        (r.totals.lag_lsn > 0 && r.totals.lag_ms >= 300).then_some(r)
    });
    assert!(
        paused_at.elapsed() < Duration::from_millis(2000),
        "lag seen only after the pause"
    );
    assert!(
        lagging.verdict.starts_with("streaming, lag "),
        "{}",
        lagging.verdict
    );
    // Scraped while the target is still paused (checked: a slow machine skips the check
    // rather than fail on a pause that already ended).
    let ml = scrape(&addr);
    if paused_at.elapsed() < Duration::from_millis(1800) {
        assert!(sum(&ml, "df2redis_lag_lsn") > 0.0);
        assert!(sum(&ml, "df2redis_flow_lag_seconds") >= 0.3);
        assert!(
            sum(&ml, "df2redis_writer_inflight_batches") > 0.0,
            "batches wait for the paused target"
        );
    }
    let cli = status_json(&cfg);
    if paused_at.elapsed() < Duration::from_millis(1900) {
        assert!(
            cli.verdict.starts_with("streaming, lag "),
            "{}",
            cli.verdict
        );
    }
    assert!(work.join().unwrap(), "dfly-emulator work");
    let after = wait_for(60, "caught up after the writes", || {
        let r = live(&addr);
        (r.verdict == "caught up").then_some(r)
    });
    let m3 = scrape(&addr);
    assert!(
        sum(&m3, "df2redis_flow_entries_total") >= 2000.0,
        "entries moved"
    );
    assert!(sum(&m3, "df2redis_flow_applied_lsn") > sum(&m2, "df2redis_flow_applied_lsn") + 2000.0);
    assert!(sum(&m3, "df2redis_writer_ops_total") > sum(&m2, "df2redis_writer_ops_total"));
    // The master's PINGs are journal entries too: lag 0 is a moment, not a state.
    wait_for(10, "lag_lsn 0 in the metrics", || {
        (sum(&scrape(&addr), "df2redis_lag_lsn") == 0.0).then_some(())
    });
    let before: u64 = caught_up.flows.iter().map(|f| f.applied_lsn).sum();
    let now: u64 = after.flows.iter().map(|f| f.applied_lsn).sum();
    assert!(now > before);

    // A command the target refuses: counted, and its binary key escaped in the log.
    let key: &[u8] = b"o1:k\n\x01";
    assert_eq!(tgt.cmd(&[b"SET", key, b"str"]).text(), "OK");
    let mut src = redis::Conn::connect(port_of(&emu_addr)).unwrap();
    assert_eq!(src.cmd(&[b"LPUSH", key, b"a"]).int(), Some(1));
    wait_for(30, "the refused LPUSH counted", || {
        let m = scrape(&addr);
        (sum(&m, "df2redis_refused_commands_total") >= 1.0
            && sum(&m, "df2redis_writer_errors_total") >= 1.0)
            .then_some(())
    });

    // Stop: the report comes from the checkpoint, at the applied positions.
    let last = wait_for(30, "caught up after the refusal", || {
        let r = live(&addr);
        (r.verdict == "caught up").then_some(r)
    });
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(wait_exit(&mut child, 20).code(), Some(0));
    assert!(!addr_file.exists(), "status.addr removed at exit");
    let stopped = status_json(&cfg);
    assert!(!stopped.live);
    assert_eq!(stopped.verdict, "stopped");
    let saved: Vec<u64> = stopped.flows.iter().map(|f| f.applied_lsn).collect();
    let applied: Vec<u64> = last.flows.iter().map(|f| f.applied_lsn).collect();
    // The master's PINGs (journal entries too) may move a position after the last look.
    assert!(
        saved
            .iter()
            .zip(&applied)
            .all(|(s, a)| s >= a && s - a <= 10),
        "checkpoint {saved:?} vs last live {applied:?}"
    );
    let text = crate::support::run_bounded(
        std::process::Command::new(BIN).args(["status", cfg.to_str().unwrap()]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.starts_with("verdict: stopped\n"), "{text}");
    assert!(text.contains("checkpoint: "), "{text}");

    // The non-terminal form: plain progress lines, full sync with ETA, then per-flow LSNs.
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        log.lines().any(|l| l.contains("progress: full sync ")
            && l.contains("keys (")
            && l.contains("ETA")),
        "{log}"
    );
    assert!(log.contains("progress: flow 0: lsn "), "{log}");
    assert!(
        !log.contains("\x1b["),
        "no terminal codes when stderr is a file"
    );
    assert!(log.contains(r#"LPUSH "o1:k\n\x01" refused"#), "{log}");
}

/// On a terminal (a pseudo-terminal from `script`), the full sync is drawn as bars (total and
/// per flow, with rate and ETA) redrawn in place, instead of the plain lines; `--quiet` draws
/// nothing.
#[test]
fn progress_bars_in_a_pseudo_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], Some("3"));
    let server = RedisServer::start();
    let cfg = write_config(
        dir.path(),
        &emu_addr,
        &server.addr(),
        "logging:\n  progress_interval: 200ms\n",
    );
    // Runs replicate under `script` (a pseudo-terminal), its typescript in a file; stops it
    // with SIGTERM once `until` shows in the output (a bounded wait: the full sync's length
    // depends on the machine's load), or after `secs` via `timeout`.
    let run = |name: &str, quiet: bool, until: Option<&str>, secs: u32| -> String {
        let ts = dir.path().join(name);
        let cmd = format!(
            "timeout -s TERM {secs} {BIN} {}replicate {}",
            if quiet { "--quiet " } else { "" },
            cfg.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qfec", &cmd])
            .arg(&ts)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn script");
        let text = || std::fs::read_to_string(&ts).unwrap_or_default();
        let end = Instant::now() + Duration::from_secs(u64::from(secs) + 30);
        let mut stopped = until.is_none();
        loop {
            if child.try_wait().expect("wait for script").is_some() {
                break;
            }
            if !stopped && until.is_some_and(|u| text().contains(u)) {
                let pid = std::fs::read_to_string(dir.path().join("ckpt/replicate.pid"))
                    .unwrap_or_default();
                let st = std::process::Command::new("kill")
                    .args(["-TERM", pid.trim()])
                    .status()
                    .expect("kill");
                assert!(st.success(), "kill -TERM {pid:?}");
                stopped = true;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("replicate under script did not end:\n{}", text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        text()
    };
    let out = run("bars.typescript", false, Some("caught up: 3 flow(s)"), 90);
    assert!(out.contains("full sync ["), "{out}");
    assert!(out.contains("keys/s"), "{out}");
    assert!(out.contains("ETA "), "{out}");
    assert!(out.contains("  flow 0 "), "{out}");
    // Redrawn in place: cursor up + erase below.
    assert!(out.contains("\x1b[J"), "{out}");
    // The bars replace the periodic lines; log lines still show (above the bars).
    assert!(!out.contains("progress: full sync"), "{out}");
    assert!(out.contains("full sync started"), "{out}");
    // Caught up by the end: the stable line.
    assert!(out.contains("caught up: 3 flow(s)"), "{out}");
    // Quiet: no bars, no info lines (the same data again: nothing to load, only to resume).
    let quiet = run("quiet.typescript", true, None, 4);
    assert!(!quiet.contains("full sync ["), "{quiet}");
    assert!(!quiet.contains("\x1b[J"), "{quiet}");
    assert!(!quiet.contains("INFO"), "{quiet}");
}

/// At trace level, with passwords on both sides, neither password appears in stderr or the
/// log file.
#[test]
fn trace_logs_never_show_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let src_pw = "Src-Pw-7f3a9e";
    let tgt_pw = "Tgt-Pw-42c1d8";
    let (_emu, emu_addr) = start_emulator(dir.path(), &["--requirepass", src_pw], None);
    let server = RedisServer::builder().password(tgt_pw).start();
    let cfg = dir.path().join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {emu_addr}\n  password: {src_pw}\ntarget:\n  addr: {}\n  \
             password: {tgt_pw}\ncheckpoint:\n  dir: {}\nmetrics:\n  listen: 127.0.0.1:0\n",
            server.addr(),
            dir.path().join("ckpt").display()
        ),
    )
    .unwrap();
    let log_file = dir.path().join("replica.log");
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = Proc(
        std::process::Command::new(BIN)
            .args(["-vv", "replicate", cfg.to_str().unwrap(), "--log-file"])
            .arg(&log_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(60, "stable sync", || {
        std::fs::read_to_string(&log_file)
            .ok()
            .filter(|l| l.contains("stable sync: following the journal"))
    });
    let status = status_json(&cfg);
    assert_eq!(status.verdict, "caught up");
    let pid = child.0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert_eq!(wait_exit(&mut child, 20).code(), Some(0));
    let log = std::fs::read_to_string(&log_file).unwrap();
    let err = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        log.contains("authenticated to"),
        "AUTH happened and was logged: {log}"
    );
    assert!(log.contains("TRACE"), "trace level was on");
    for pw in [src_pw, tgt_pw] {
        assert!(!log.contains(pw), "password in the log file");
        assert!(!err.contains(pw), "password on stderr");
        assert!(!serde_json::to_string(&status).unwrap().contains(pw));
    }
}

/// docs/metrics.md documents every exported metric, and the Grafana dashboard queries only
/// metrics that exist.
#[test]
fn docs_and_dashboard_match_the_exported_metrics() {
    use df2redis_sync::ops::metrics::{wire_name, METRICS};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    for m in METRICS {
        let name = wire_name(m);
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/metrics.md lacks {name}"
        );
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let known: Vec<String> = METRICS.iter().map(wire_name).collect();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut used = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("df2redis_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for n in names {
                assert!(
                    known.iter().any(|k| k == n),
                    "dashboard uses unknown metric {n}"
                );
                used += 1;
            }
        }
    }
    assert!(used >= 20);
}

/// Without an endpoint, `status` reads the checkpoint, and `replicate.pid` tells whether
/// replicate runs: `streaming` while it does, `stopped` after SIGTERM (file removed) and with a
/// stale pid file left by a kill -9 whose pid now belongs to another program.
#[test]
fn status_without_an_endpoint_uses_the_checkpoint_and_the_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], None);
    let server = RedisServer::start();
    let cfg = write_config(dir.path(), &emu_addr, &server.addr(), "");
    let ckpt = dir.path().join("ckpt");
    let mut child = Proc(
        std::process::Command::new(BIN)
            .args(["-q", "replicate", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid_file = ckpt.join("replicate.pid");
    wait_for(30, "the pid file", || pid_file.exists().then_some(()));
    let r = wait_for(30, "a stable checkpoint", || {
        // Exit 1 until the first checkpoint is written.
        let out = crate::support::run_bounded(
            std::process::Command::new(BIN).args(["status", "--json", cfg.to_str().unwrap()]),
            Duration::from_secs(20),
        );
        let r: StatusReport = serde_json::from_slice(&out.stdout).ok()?;
        (r.state == "stable").then_some(r)
    });
    assert!(!r.live);
    assert_eq!(r.verdict, "streaming");
    assert_eq!(r.flows.len(), 3);
    let pid = child.0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert_eq!(wait_exit(&mut child, 20).code(), Some(0));
    assert!(!pid_file.exists(), "removed at exit");
    assert_eq!(status_json(&cfg).verdict, "stopped");
    // A stale pid file whose pid is now another program's.
    let mut other = Proc(
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap(),
    );
    std::fs::write(&pid_file, format!("{}\n", other.0.id())).unwrap();
    assert_eq!(status_json(&cfg).verdict, "stopped");
    let _ = other.0.kill();
}

/// A metrics address already in use stops `replicate` at once (exit 1), naming the address,
/// before anything is replicated.
#[test]
fn metrics_address_in_use_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let cfg = write_config(
        dir.path(),
        "127.0.0.1:1",
        "127.0.0.1:2",
        &format!("metrics:\n  listen: {addr}\n"),
    );
    let out = crate::support::run_bounded(
        std::process::Command::new(BIN).args(["replicate", cfg.to_str().unwrap()]),
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("metrics endpoint: cannot listen on {addr}")),
        "{err}"
    );
}

/// Into a Redis Cluster: every master gets a writer whose ops counter moves with the data, and
/// a `CLUSTER FAILOVER` under writes shows in the redirect/retry counters (`MOVED` from the
/// demoted master, or a retry-later answer during the switch), while the verdict returns to
/// `caught up`.
#[test]
fn cluster_target_per_node_writer_metrics_and_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = crate::support::RedisCluster::builder()
        .masters(3)
        .replicas(1)
        .start();
    let (_emu, emu_addr) = start_emulator(dir.path(), &[], None);
    let mut src = redis::Conn::connect(port_of(&emu_addr)).unwrap();
    for i in 0..300 {
        let k = format!("o1:c:{i}");
        assert_eq!(src.cmd(&[b"SET", k.as_bytes(), b"v"]).text(), "OK");
    }
    let cfg = dir.path().join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {emu_addr}\ntarget:\n  type: redis-cluster\n  seeds: [{}]\n\
             checkpoint:\n  dir: {}\n  interval: 300ms\nmetrics:\n  listen: 127.0.0.1:0\n",
            cluster.nodes()[0].addr(),
            dir.path().join("ckpt").display()
        ),
    )
    .unwrap();
    let _child = Proc(
        std::process::Command::new(BIN)
            .args(["replicate", cfg.to_str().unwrap(), "--log-file"])
            .arg(dir.path().join("replica.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr_file = dir.path().join("ckpt").join("status.addr");
    let addr = wait_for(30, "status.addr", || {
        std::fs::read_to_string(&addr_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    wait_for(60, "caught up", || {
        (live(&addr).verdict == "caught up").then_some(())
    });
    let m = scrape(&addr);
    let busy: Vec<&String> = m
        .iter()
        .filter(|(k, v)| k.starts_with("df2redis_writer_ops_total{") && **v > 0.0)
        .map(|(k, _)| k)
        .collect();
    assert!(busy.len() >= 3, "every master wrote: {busy:?}");
    // Writes, then a failover of master 0 in the middle of them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, port) = (stop.clone(), port_of(&emu_addr));
        std::thread::spawn(move || {
            let mut c = redis::Conn::connect(port).unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 200_000 {
                let k = format!("o1:c:{}", i % 300);
                c.cmd(&[b"SET", k.as_bytes(), i.to_string().as_bytes()]);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let rep = cluster.replica_of(0).expect("node 0 has a replica");
    cluster.failover(rep);
    let redirected = wait_for(30, "a redirect counted", || {
        let m = scrape(&addr);
        let r =
            sum(&m, "df2redis_writer_redirects_total") + sum(&m, "df2redis_writer_retries_total");
        (r > 0.0).then_some(r)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert!(redirected > 0.0);
    let r = wait_for(60, "caught up after the failover", || {
        let r = live(&addr);
        (r.verdict == "caught up").then_some(r)
    });
    assert!(r.writers.len() >= 3, "{:?}", r.writers);
}
