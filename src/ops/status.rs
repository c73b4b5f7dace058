//! The status report: one serialisable picture of a replication, built either from the live
//! [`Stats`] of a running engine (what `GET /status` returns) or, when no engine answers, from
//! the checkpoint file alone. `df2redis-sync status` prints it; `--json` prints it as is.
//!
//! The verdict is one of `syncing` (handshake or full sync), `streaming, lag N` (stable sync,
//! N LSNs received but not yet applied over all flows), `caught up` (stable, nothing pending)
//! and `stopped`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Phase, Stats};
use crate::checkpoint::{self, Checkpoint, FlowState};
use crate::model::FlowId;

/// Name of the file, next to the checkpoint, that holds the address the running engine's
/// status endpoint is bound to (so `status` finds it, even with `metrics.listen: …:0`).
pub const ADDR_FILE: &str = "status.addr";

/// A status endpoint's answer is at most this large (a few KiB per flow).
const MAX_REPLY: u64 = 4 << 20;

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// From a running engine (`true`) or from the checkpoint file alone.
    pub live: bool,
    /// `handshake`, `full_sync`, `stable` or `stopped`.
    pub state: String,
    /// `syncing`, `streaming, lag N`, `caught up` or `stopped`.
    pub verdict: String,
    /// Seconds the engine has been running (live only).
    pub uptime_s: Option<f64>,
    /// Sessions begun and failed (each failure reconnects), and the last failure.
    pub sessions: u64,
    /// Sessions that ended with an error.
    pub session_failures: u64,
    /// The last session failure.
    pub last_error: Option<String>,
    /// The master.
    pub master: Option<MasterStatus>,
    /// Full-sync progress (live, while a snapshot is loading or after it).
    pub full_sync: Option<FullSyncStatus>,
    /// Per flow.
    pub flows: Vec<FlowStatus>,
    /// Per target connection.
    pub writers: Vec<WriterStatus>,
    /// Sums over flows and writers.
    pub totals: Totals,
    /// The checkpoint file, when there is one.
    pub checkpoint: Option<CheckpointStatus>,
}

/// The master of the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// `master_replid`.
    pub replid: String,
    /// `SYNC<k>`.
    pub sync_id: Option<String>,
    /// `dragonfly_version`.
    pub version: Option<String>,
    /// Keys at the handshake (`INFO KEYSPACE`).
    pub keys: Option<u64>,
}

/// Full-sync progress: keys decoded against the master's key count at the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullSyncStatus {
    /// Snapshot keys decoded so far (all flows).
    pub keys_done: u64,
    /// The master's key count at the handshake (writes meanwhile make it approximate).
    pub keys_total: Option<u64>,
    /// `keys_done / keys_total`, 0..=100.
    pub percent: Option<f64>,
    /// Estimated seconds left at the average rate so far.
    pub eta_s: Option<f64>,
    /// Seconds since the session started (or the whole full sync once done).
    pub elapsed_s: f64,
    /// Snapshot bytes received (all flows).
    pub bytes: u64,
    /// Every flow finished its snapshot.
    pub done: bool,
}

/// One flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowStatus {
    /// Flow (= master shard) number.
    pub flow: u32,
    /// `handshake`, `full_sync`, `stable` or `stopped`.
    pub phase: String,
    /// Bytes received.
    pub bytes: u64,
    /// Snapshot keys decoded.
    pub keys: u64,
    /// Journal entries decoded.
    pub entries: u64,
    /// Next LSN received (stable sync).
    pub received_lsn: u64,
    /// Next LSN the target acknowledged (what is checkpointed and ACKed).
    pub applied_lsn: u64,
    /// `received_lsn - applied_lsn`.
    pub lag_lsn: u64,
    /// Age of the oldest received-but-unapplied entry (module doc of `ops`).
    pub lag_ms: u64,
    /// Receive rate.
    pub bytes_per_s: f64,
    /// Snapshot keys per second.
    pub keys_per_s: f64,
    /// Journal entries per second.
    pub entries_per_s: f64,
    /// Keys or entries not written (see the log).
    pub skipped: u64,
    /// The flow ended with an error (this session).
    pub errors: u64,
}

/// One target connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriterStatus {
    /// `host:port` (`#k` with several connections per node).
    pub node: String,
    /// Commands acknowledged.
    pub ops: u64,
    /// Commands per second.
    pub ops_per_s: f64,
    /// Commands refused and skipped.
    pub errors: u64,
    /// Commands sent again.
    pub retries: u64,
    /// MOVED/ASK followed.
    pub redirects: u64,
    /// Batches sent and not answered.
    pub inflight: u64,
    /// Batches waiting in the channel.
    pub queued: u64,
    /// Channel capacity.
    pub capacity: u64,
    /// RESP bytes written.
    pub bytes: u64,
}

/// Sums.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Commands the target acknowledged (this session).
    pub applied_commands: u64,
    /// Applied commands per second.
    pub applied_per_s: f64,
    /// Commands refused by the target (this session).
    pub refused: u64,
    /// Skipped keys/entries over all flows.
    pub skipped: u64,
    /// LSNs received but not applied, over all flows.
    pub lag_lsn: u64,
    /// The largest per-flow lag in ms.
    pub lag_ms: u64,
}

/// The checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// Its path.
    pub path: String,
    /// When it was written (ms since the epoch).
    pub written_at_ms: u64,
    /// Seconds since then.
    pub age_s: f64,
    /// Per flow: `next_lsn` and `full_sync`/`stable`.
    pub flows: Vec<(u32, u64, String)>,
}

impl CheckpointStatus {
    /// From a loaded checkpoint at `path`.
    pub fn from_checkpoint(cp: &Checkpoint, path: &Path) -> CheckpointStatus {
        CheckpointStatus {
            path: path.display().to_string(),
            written_at_ms: cp.written_at_ms,
            age_s: checkpoint::now_ms().saturating_sub(cp.written_at_ms) as f64 / 1000.0,
            flows: cp
                .flows
                .iter()
                .map(|f| (f.flow, f.next_lsn, state_name(f.state).to_string()))
                .collect(),
        }
    }
}

fn state_name(s: FlowState) -> &'static str {
    match s {
        FlowState::Stable => "stable",
        _ => "full_sync",
    }
}

/// The verdict for a state and a total lag.
pub fn verdict(state: Phase, lag_lsn: u64) -> String {
    match state {
        Phase::Handshake | Phase::FullSync => "syncing".into(),
        Phase::Stable if lag_lsn == 0 => "caught up".into(),
        Phase::Stable => format!("streaming, lag {lag_lsn}"),
        Phase::Stopped => "stopped".into(),
    }
}

impl StatusReport {
    /// The live picture of a running engine.
    pub fn live(stats: &Stats, checkpoint: Option<CheckpointStatus>) -> StatusReport {
        let state = stats.state();
        let (sessions, failures, last_error) = stats.session_counts();
        let rates = stats.rates();
        let session = stats.session();
        let mut flows = Vec::new();
        let mut totals = Totals::default();
        let mut master = None;
        let mut full_sync = None;
        if let Some(s) = &session {
            master = Some(MasterStatus {
                replid: s.info.replid.clone(),
                sync_id: Some(s.info.sync_id.clone()),
                version: s.info.version.clone(),
                keys: s.info.master_keys,
            });
            for (i, f) in s.flows.iter().enumerate() {
                let phase = f.phase.get();
                let applied = s.applied.get(FlowId(i as u32)).0;
                let recv = f.received_next.load(Ordering::Relaxed);
                // During the full sync nothing is "received" in LSN terms yet.
                let lag_lsn = if phase == Phase::Stable {
                    recv.saturating_sub(applied)
                } else {
                    0
                };
                let r = rates.flows.get(i).copied().unwrap_or_default();
                let fs = FlowStatus {
                    flow: i as u32,
                    phase: phase.as_str().into(),
                    bytes: f.bytes.load(Ordering::Relaxed),
                    keys: f.keys.load(Ordering::Relaxed),
                    entries: f.entries.load(Ordering::Relaxed),
                    received_lsn: recv.max(applied),
                    applied_lsn: applied,
                    lag_lsn,
                    lag_ms: f.lag_ms.load(Ordering::Relaxed),
                    bytes_per_s: r[0],
                    keys_per_s: r[1],
                    entries_per_s: r[2],
                    skipped: f.skipped.load(Ordering::Relaxed),
                    errors: f.errors.load(Ordering::Relaxed),
                };
                totals.lag_lsn += fs.lag_lsn;
                totals.lag_ms = totals.lag_ms.max(fs.lag_ms);
                totals.skipped += fs.skipped;
                flows.push(fs);
            }
            totals.applied_commands = s.applied.commands.load(Ordering::Relaxed);
            totals.refused = s.applied.refused.load(Ordering::Relaxed);
            totals.applied_per_s = rates.applied_per_s;
            if !s.info.partial {
                let done = flows.iter().all(|f| f.phase != "full_sync");
                let keys_done: u64 = flows.iter().map(|f| f.keys).sum();
                let total = s.info.master_keys.filter(|t| *t > 0);
                let stable_at = *s.stable_since.lock();
                let elapsed = match stable_at {
                    Some(t) => t.saturating_duration_since(s.started),
                    None => s.started.elapsed(),
                }
                .as_secs_f64();
                let frac = total.map(|t| (keys_done.min(t) as f64 / t as f64).min(1.0));
                let eta = match frac {
                    _ if done => Some(0.0),
                    Some(p) if p > 0.0 => Some(elapsed * (1.0 - p) / p),
                    _ => None,
                };
                full_sync = Some(FullSyncStatus {
                    keys_done,
                    keys_total: total,
                    percent: if done {
                        Some(100.0)
                    } else {
                        frac.map(|p| p * 100.0)
                    },
                    eta_s: eta,
                    elapsed_s: elapsed,
                    bytes: flows.iter().map(|f| f.bytes).sum(),
                    done,
                });
            }
        }
        let writers = stats
            .writers()
            .iter()
            .map(|w| WriterStatus {
                node: w.node.clone(),
                ops: w.ops.load(Ordering::Relaxed),
                ops_per_s: rates.writers.get(&w.node).copied().unwrap_or(0.0),
                errors: w.errors.load(Ordering::Relaxed),
                retries: w.retries.load(Ordering::Relaxed),
                redirects: w.redirects.load(Ordering::Relaxed),
                inflight: w.inflight.load(Ordering::Relaxed),
                queued: w.queued.load(Ordering::Relaxed),
                capacity: w.capacity.load(Ordering::Relaxed),
                bytes: w.bytes.load(Ordering::Relaxed),
            })
            .collect();
        StatusReport {
            live: true,
            state: state.as_str().into(),
            verdict: verdict(state, totals.lag_lsn),
            uptime_s: Some(stats.uptime().as_secs_f64()),
            sessions,
            session_failures: failures,
            last_error,
            master,
            full_sync,
            flows,
            writers,
            totals,
            checkpoint,
        }
    }

    /// The picture from the checkpoint alone (no engine answered): stopped, at the saved
    /// positions.
    pub fn from_checkpoint(cp: &Checkpoint, path: &Path) -> StatusReport {
        let flows = cp
            .flows
            .iter()
            .map(|f| FlowStatus {
                flow: f.flow,
                phase: "stopped".into(),
                bytes: 0,
                keys: 0,
                entries: 0,
                received_lsn: f.next_lsn,
                applied_lsn: f.next_lsn,
                lag_lsn: 0,
                lag_ms: 0,
                bytes_per_s: 0.0,
                keys_per_s: 0.0,
                entries_per_s: 0.0,
                skipped: 0,
                errors: 0,
            })
            .collect();
        StatusReport {
            live: false,
            state: Phase::Stopped.as_str().into(),
            verdict: verdict(Phase::Stopped, 0),
            uptime_s: None,
            sessions: 0,
            session_failures: 0,
            last_error: None,
            master: Some(MasterStatus {
                replid: cp.master_replid.clone(),
                sync_id: Some(cp.sync_id.clone()),
                version: cp.master_version.clone(),
                keys: None,
            }),
            full_sync: None,
            flows,
            writers: Vec::new(),
            totals: Totals::default(),
            checkpoint: Some(CheckpointStatus::from_checkpoint(cp, path)),
        }
    }
}

impl StatusReport {
    /// The plain one-line progress report logged periodically (and shown when stderr is not a
    /// terminal): full-sync keys and ETA while a snapshot loads, then per flow its position,
    /// lag and rate.
    pub fn progress_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(fs) = self.full_sync.as_ref().filter(|f| !f.done) {
            match (fs.keys_total, fs.percent) {
                (Some(t), Some(p)) => parts.push(format!(
                    "full sync {}/{t} keys ({p:.0}%, ETA {})",
                    fs.keys_done,
                    fs.eta_s.map_or("?".into(), |e| format!("{e:.0}s"))
                )),
                _ => parts.push(format!("full sync {} keys", fs.keys_done)),
            }
        }
        for f in &self.flows {
            if f.phase != "full_sync" {
                parts.push(format!(
                    "flow {}: lsn {}, lag {} entries / {} ms, {:.0} entries/s, {:.2} MB/s",
                    f.flow,
                    f.applied_lsn,
                    f.lag_lsn,
                    f.lag_ms,
                    f.entries_per_s,
                    f.bytes_per_s / 1e6
                ));
            } else {
                parts.push(format!(
                    "flow {}: {} keys, {:.1} MB, {:.0} keys/s, {:.2} MB/s",
                    f.flow,
                    f.keys,
                    f.bytes as f64 / 1e6,
                    f.keys_per_s,
                    f.bytes_per_s / 1e6
                ));
            }
        }
        format!(
            "progress: {}; target: {} commands applied, {} refused; {}",
            parts.join("; "),
            self.totals.applied_commands,
            self.totals.refused,
            self.verdict
        )
    }
}

/// Where a running engine's status endpoint is: the address file next to the checkpoint
/// (written at bind time), else `metrics.listen`.
pub fn endpoint_candidates(checkpoint_dir: &Path, listen: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(text) = read_small(&addr_file(checkpoint_dir)) {
        let a = text.trim();
        if !a.is_empty() {
            out.push(a.to_string());
        }
    }
    if let Some(l) = listen {
        // A wildcard bind is reached on the loopback.
        let l = l
            .strip_prefix("0.0.0.0:")
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_else(|| l.to_string());
        if !out.contains(&l) && !l.ends_with(":0") {
            out.push(l);
        }
    }
    out
}

/// Name of the file, next to the checkpoint, holding the pid of the running `replicate`
/// (written at start, removed at exit): how `status` knows it runs when no endpoint is on.
pub const PID_FILE: &str = "replicate.pid";

/// Whether the `replicate` that wrote `<dir>/replicate.pid` is still running: `Some(true)` /
/// `Some(false)`, `None` when it cannot be told (no pid file is `Some(false)`; a system without
/// `/proc` is `None`).
pub fn replicate_running(checkpoint_dir: &Path) -> Option<bool> {
    let Some(text) = read_small(&checkpoint_dir.join(PID_FILE)) else {
        return Some(false);
    };
    let pid: u32 = text.trim().parse().ok()?;
    if !Path::new("/proc/self").exists() {
        return None;
    }
    // A pid reused by another program after a kill -9 would read as running: the command
    // line tells them apart.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok();
    Some(cmdline.is_some_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"replicate")))
}

/// A small text file (address, pid): at most 256 bytes are read, whatever is there.
fn read_small(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(256)
        .read_to_end(&mut buf)
        .ok()?;
    String::from_utf8(buf).ok()
}

/// Writes `<dir>/replicate.pid` and removes it when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Creates the directory if needed and writes this process's pid.
    pub fn create(checkpoint_dir: &Path) -> std::io::Result<PidFile> {
        std::fs::create_dir_all(checkpoint_dir)?;
        let p = checkpoint_dir.join(PID_FILE);
        std::fs::write(&p, format!("{}\n", std::process::id()))?;
        Ok(PidFile(p))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `<dir>/status.addr`.
pub fn addr_file(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join(ADDR_FILE)
}

/// `GET <path>` on `addr` over plain HTTP/1.0, with `timeout` per step; the body when the
/// answer is `200`. Answers are capped at a few MiB.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let sa: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{addr}: {e}"))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: sending the request: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_REPLY)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{addr}: reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{addr}{path}: {status_line}"));
    }
    Ok(body.to_string())
}

/// Asks each candidate for `/status`; the first report that parses.
pub fn fetch_live(
    candidates: &[String],
    timeout: Duration,
) -> Result<(String, StatusReport), String> {
    let mut errors = Vec::new();
    for a in candidates {
        match http_get(a, "/status", timeout).and_then(|b| {
            serde_json::from_str::<StatusReport>(&b).map_err(|e| format!("{a}/status: {e}"))
        }) {
            Ok(r) => return Ok((a.clone(), r)),
            Err(e) => errors.push(e),
        }
    }
    Err(if errors.is_empty() {
        "no address file and no fixed metrics.listen address".into()
    } else {
        errors.join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lsn;
    use crate::ops::SessionInfo;
    use std::sync::Arc;

    #[test]
    fn verdict_words() {
        assert_eq!(verdict(Phase::Handshake, 0), "syncing");
        assert_eq!(verdict(Phase::FullSync, 3), "syncing");
        assert_eq!(verdict(Phase::Stable, 0), "caught up");
        assert_eq!(verdict(Phase::Stable, 12), "streaming, lag 12");
        assert_eq!(verdict(Phase::Stopped, 12), "stopped");
    }

    #[test]
    fn live_report_round_trips_and_sums() {
        let st = Stats::new();
        let applied = Arc::new(crate::target::writer::Applied::new(&[Lsn(0), Lsn(0)]));
        let s = st.begin_session(
            SessionInfo {
                replid: "r".into(),
                master_keys: Some(100),
                ..SessionInfo::default()
            },
            2,
            applied,
        );
        s.flows[0].keys.store(30, Ordering::Relaxed);
        s.flows[1].keys.store(20, Ordering::Relaxed);
        let r = StatusReport::live(&st, None);
        assert_eq!(r.state, "full_sync");
        assert_eq!(r.verdict, "syncing");
        let fs = r.full_sync.clone().unwrap();
        assert_eq!(fs.keys_done, 50);
        assert_eq!(fs.percent, Some(50.0));
        assert!(fs.eta_s.is_some());
        let text = serde_json::to_string(&r).unwrap();
        let back: StatusReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        for f in s.flows.iter() {
            f.phase.set(Phase::Stable);
        }
        s.flows[1].received_next.store(7, Ordering::Relaxed);
        let r = StatusReport::live(&st, None);
        assert_eq!(r.verdict, "streaming, lag 7");
        assert_eq!(r.flows[1].lag_lsn, 7);
    }

    #[test]
    fn candidates_prefer_the_address_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            endpoint_candidates(d.path(), Some("0.0.0.0:9")),
            vec!["127.0.0.1:9".to_string()]
        );
        std::fs::write(addr_file(d.path()), "127.0.0.1:5\n").unwrap();
        assert_eq!(
            endpoint_candidates(d.path(), Some("127.0.0.1:0")),
            vec!["127.0.0.1:5".to_string()]
        );
    }
}
