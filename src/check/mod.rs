//! Read-only consistency checker: proves the target equals the source, or lists what differs.
//!
//! `df2redis-sync check` runs in rounds. Round 1 SCANs every master of the source (each
//! checked db) and compares each key with its image on the target ([`compare`]: existence and
//! type; then absolute expiry and length; then values), and SCANs every master of the target
//! to find keys the source does not have. Later rounds, after an interval, re-check only the keys
//! that differed, so keys still in flight under live replication drop out; what differs after
//! the last round is reported ([`report`]).
//!
//! Threads: one scanner per (side, master, db) feeds key batches into one bounded channel;
//! `workers` threads compare batches with pipelined reads on their own connections; a
//! progress thread calls the caller's callback once a second. All live inside one
//! `std::thread::scope` and quit together on the first error. (The checker is a separate
//! program mode, so it owns its threads; `pipeline/` owns the replicator's.)
//!
//! Memory is bounded: a batch is at most `scan_count` keys, small values are fetched whole
//! only below the big-key threshold and in pipelines of about 8 MiB, big keys are walked in
//! chunks ([`deep`]), and at most `max_diffs` differences are kept.

mod compare;
mod deep;
mod fast;
mod keys;
mod report;
mod side;
mod util;

pub use report::{Diff, DiffKind, Report, RoundSummary, Summary};

use crate::config::{CheckConfig, Config};
use crate::model::{Cmd, DbIndex};
use crate::net::Conn;
use crate::resp::Value;
use compare::{Shared, Worker};
use keys::KeyMap;
use side::{Side, Which};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// What is compared per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Existence and type (one `TYPE` per key and side; expiries are not read).
    Outline,
    /// Outline plus expiry and length (bytes, elements, fields, members, entries).
    Length,
    /// Length plus every value (big keys in chunks).
    Full,
    /// `full` below the big-key threshold, `length` above it.
    Smart,
}

impl Mode {
    /// The name used on the command line and in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Outline => "outline",
            Mode::Length => "length",
            Mode::Full => "full",
            Mode::Smart => "smart",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "outline" => Ok(Mode::Outline),
            "length" => Ok(Mode::Length),
            "full" => Ok(Mode::Full),
            "smart" => Ok(Mode::Smart),
            _ => Err("must be one of outline, length, full, smart".into()),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a sampling rate: a fraction in (0, 1] (`0.1`) or a percentage (`10%`).
pub fn parse_sample(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f / scale <= 1.0 => Ok(f / scale),
        _ => Err("must be a fraction in (0, 1] such as 0.1, or a percentage such as 10%".into()),
    }
}

/// Why a check could not finish.
#[derive(Debug)]
pub enum Error {
    /// Discovering a side's topology failed.
    Topology {
        /// `source` or `target`.
        side: &'static str,
        /// The cause.
        source: crate::target::topology::Error,
    },
    /// A connection failed.
    Net {
        /// `source` or `target`.
        side: &'static str,
        /// The cause.
        source: crate::net::Error,
    },
    /// A server answered something unusable.
    Reply {
        /// `source` or `target`.
        side: &'static str,
        /// The server.
        addr: String,
        /// The command.
        command: String,
        /// What is wrong.
        detail: String,
    },
    /// Writing the report failed.
    Report {
        /// The directory.
        dir: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A thread could not start or panicked.
    Thread(String),
}

impl Error {
    fn net(which: Which, e: crate::net::Error) -> Error {
        Error::Net {
            side: which.name(),
            source: e,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Topology { side, .. } => write!(f, "check: {side}: topology discovery failed"),
            Error::Net { side, .. } => write!(f, "check: {side} connection failed"),
            Error::Reply {
                side,
                addr,
                command,
                detail,
            } => write!(f, "check: {side} {addr}: {command}: {detail}"),
            Error::Report { dir, .. } => {
                write!(f, "check: cannot write the report into {}", dir.display())
            }
            Error::Thread(m) => write!(f, "check: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Topology { source, .. } => Some(source),
            Error::Net { source, .. } => Some(source),
            Error::Report { source, .. } => Some(source),
            Error::Reply { .. } | Error::Thread(_) => None,
        }
    }
}

/// A progress snapshot, handed to the caller's callback about once a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Current round (1-based).
    pub round: u32,
    /// Rounds configured.
    pub rounds: u32,
    /// Source keys scanned so far (round 1).
    pub source_scanned: u64,
    /// Target keys scanned so far (round 1).
    pub target_scanned: u64,
    /// Keys compared in this round.
    pub compared: u64,
    /// Differences found in this round.
    pub differing: u64,
    /// Reply bytes read from both sides.
    pub bytes: u64,
    /// Time since the check started.
    pub elapsed: Duration,
}

/// The outcome: the report and where its JSON was written.
#[derive(Debug)]
pub struct Outcome {
    /// What was found.
    pub report: Report,
    /// `<result-dir>/check_<timestamp>.json`.
    pub path: std::path::PathBuf,
}

/// A unit of work for a worker.
enum Job {
    /// Source keys of a db, compared with the target.
    Forward(DbIndex, Vec<Vec<u8>>),
    /// Target keys of a target db, checked for existence on the source.
    Reverse(DbIndex, Vec<Vec<u8>>),
}

/// Counters of one round, shared by its threads.
#[derive(Default)]
struct Counters {
    source_scanned: AtomicU64,
    target_scanned: AtomicU64,
    source_compared: AtomicU64,
    target_compared: AtomicU64,
    differing: AtomicU64,
    not_recorded: AtomicU64,
}

/// Runs a check of `cfg`'s source against its target with `opts`; `progress` is called about
/// once a second from a helper thread.
pub fn run(
    cfg: &Config,
    opts: &CheckConfig,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Outcome, Error> {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let src = Side::open(
        Which::Source,
        &cfg.source.endpoint(),
        opts.source_qps,
        opts.source_bandwidth,
    )?;
    let seed = cfg
        .target
        .endpoints()
        .into_iter()
        .next()
        .ok_or_else(|| Error::Reply {
            side: "target",
            addr: String::new(),
            command: "config".into(),
            detail: "no target address".into(),
        })?;
    let tgt = Side::open(Which::Target, &seed, opts.target_qps, opts.target_bandwidth)?;
    let source_dbs = src.dbs()?;
    let target_dbs_with_keys = tgt.dbs()?;
    let map = KeyMap::new(
        cfg.databases.clone(),
        source_dbs,
        opts.db,
        &cfg.checkpoint.marker_prefix,
    );
    let sh = Shared {
        opts,
        map: &map,
        src: &src,
        tgt: &tgt,
        unsupported: AtomicU64::new(0),
    };
    log::info!(
        "check ({}) {} -> {}: source dbs {:?}, {} round(s)",
        opts.mode,
        src.addr,
        tgt.addr,
        map.checked_source_dbs()
            .iter()
            .map(|d| d.0)
            .collect::<Vec<_>>(),
        opts.rounds
    );

    // Round 1: scan both sides.
    let mut scans = Vec::new();
    for db in map.checked_source_dbs() {
        for node in 0..src.endpoints.len() {
            scans.push((Which::Source, node, db));
        }
    }
    for tdb in map.target_dbs(&target_dbs_with_keys) {
        for node in 0..tgt.endpoints.len() {
            scans.push((Which::Target, node, tdb));
        }
    }
    let c1 = Counters::default();
    let r1 = Instant::now();
    let bytes_before = src.bytes.load(Ordering::Relaxed) + tgt.bytes.load(Ordering::Relaxed);
    let mut diffs = execute(&sh, &c1, Feed::Scan(scans), 1, t0, progress)?;
    let r1_elapsed = r1.elapsed();
    let r1_bytes =
        src.bytes.load(Ordering::Relaxed) + tgt.bytes.load(Ordering::Relaxed) - bytes_before;
    let mut rounds = vec![RoundSummary {
        round: 1,
        keys_compared: c1.source_compared.load(Ordering::Relaxed)
            + c1.target_compared.load(Ordering::Relaxed),
        differing: diffs.len() as u64 + c1.not_recorded.load(Ordering::Relaxed),
        elapsed_ms: r1_elapsed.as_millis() as u64,
    }];

    // Later rounds: re-check what differed.
    for round in 2..=opts.rounds {
        if diffs.is_empty() {
            break;
        }
        log::info!(
            "round {}: {} key(s) differ; re-checking in {:?}",
            round - 1,
            diffs.len(),
            opts.interval
        );
        std::thread::sleep(opts.interval);
        let c = Counters::default();
        let rt = Instant::now();
        let jobs = recheck_jobs(&diffs);
        let n = diffs.len() as u64;
        diffs = execute(&sh, &c, Feed::Jobs(jobs), round, t0, progress)?;
        rounds.push(RoundSummary {
            round,
            keys_compared: n,
            differing: diffs.len() as u64,
            elapsed_ms: rt.elapsed().as_millis() as u64,
        });
    }

    diffs.sort_by(|a, b| {
        (a.db, &a.key, a.kind, a.target_db, &a.target_key).cmp(&(
            b.db,
            &b.key,
            b.kind,
            b.target_db,
            &b.target_key,
        ))
    });
    // A key can be found twice in round 1 (gone from the source during the forward pass,
    // then again by the target scan): keep one entry per key and kind.
    diffs.dedup_by(|a, b| {
        (a.db, &a.key, a.kind, a.target_db, &a.target_key)
            == (b.db, &b.key, b.kind, b.target_db, &b.target_key)
    });
    let mut by_kind = std::collections::BTreeMap::new();
    for d in &diffs {
        *by_kind.entry(d.kind.as_str().to_string()).or_insert(0u64) += 1;
    }
    let scanned =
        c1.source_scanned.load(Ordering::Relaxed) + c1.target_scanned.load(Ordering::Relaxed);
    let compared =
        c1.source_compared.load(Ordering::Relaxed) + c1.target_compared.load(Ordering::Relaxed);
    let not_recorded = c1.not_recorded.load(Ordering::Relaxed);
    let secs = r1_elapsed.as_secs_f64().max(1e-9);
    let summary = Summary {
        source_keys_scanned: c1.source_scanned.load(Ordering::Relaxed),
        target_keys_scanned: c1.target_scanned.load(Ordering::Relaxed),
        source_keys_compared: c1.source_compared.load(Ordering::Relaxed),
        target_keys_compared: c1.target_compared.load(Ordering::Relaxed),
        coverage: if scanned == 0 {
            1.0
        } else {
            compared as f64 / scanned as f64
        },
        unsupported_type_keys: sh.unsupported.load(Ordering::Relaxed),
        differing: diffs.len() as u64 + not_recorded,
        by_kind,
        not_recorded,
        bytes_read: src.bytes.load(Ordering::Relaxed) + tgt.bytes.load(Ordering::Relaxed),
        elapsed_ms: t0.elapsed().as_millis() as u64,
        keys_per_sec: c1.source_compared.load(Ordering::Relaxed) as f64 / secs,
        mb_per_sec: r1_bytes as f64 / 1e6 / secs,
    };
    let report = Report {
        mode: opts.mode.as_str(),
        started,
        source: (src.addr.clone(), src.topo.cluster),
        target: (tgt.addr.clone(), tgt.topo.cluster),
        pattern: opts.pattern.clone(),
        db: opts.db,
        sample: opts.sample,
        rounds,
        summary,
        diffs,
    };
    let path = report.write(&opts.result_dir).map_err(|e| Error::Report {
        dir: opts.result_dir.clone(),
        source: e,
    })?;
    Ok(Outcome { report, path })
}

/// Jobs re-checking the keys of `diffs`: extra keys by their target name, the rest by their
/// source name, grouped by db in batches.
fn recheck_jobs(diffs: &[Diff]) -> Vec<Job> {
    let mut fwd: std::collections::BTreeMap<DbIndex, Vec<Vec<u8>>> = Default::default();
    let mut rev: std::collections::BTreeMap<DbIndex, Vec<Vec<u8>>> = Default::default();
    for d in diffs {
        match (d.kind, d.db) {
            (DiffKind::Extra, _) | (_, None) => rev
                .entry(d.target_db)
                .or_default()
                .push(d.target_key.clone()),
            (_, Some(db)) => fwd.entry(db).or_default().push(d.key.clone()),
        }
    }
    let mut jobs = Vec::new();
    for (db, mut keys) in fwd {
        keys.sort();
        keys.dedup();
        for c in keys.chunks(256) {
            jobs.push(Job::Forward(db, c.to_vec()));
        }
    }
    for (db, mut keys) in rev {
        keys.sort();
        keys.dedup();
        for c in keys.chunks(256) {
            jobs.push(Job::Reverse(db, c.to_vec()));
        }
    }
    jobs
}

/// Where a round's jobs come from.
enum Feed {
    /// Scanners over (side, master, db).
    Scan(Vec<(Which, usize, DbIndex)>),
    /// A fixed list.
    Jobs(Vec<Job>),
}

/// Runs one round: feeders, workers and the progress thread; returns the differences.
fn execute(
    sh: &Shared,
    c: &Counters,
    feed: Feed,
    round: u32,
    t0: Instant,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Vec<Diff>, Error> {
    let workers = sh.opts.workers.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Job>(workers * 4);
    let quit = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let first_error: parking_lot::Mutex<Option<Error>> = parking_lot::Mutex::new(None);
    let fail = |e: Error| {
        quit.store(true, Ordering::SeqCst);
        let mut g = first_error.lock();
        if g.is_none() {
            *g = Some(e);
        }
    };
    let diffs: parking_lot::Mutex<Vec<Diff>> = parking_lot::Mutex::new(Vec::new());
    let spawn_err = |e: std::io::Error| Error::Thread(format!("cannot start a thread: {e}"));

    std::thread::scope(|s| -> Result<(), Error> {
        let mut handles = Vec::new();
        match feed {
            Feed::Scan(scans) => {
                for (which, node, db) in scans {
                    let tx = tx.clone();
                    let (quit, fail) = (&quit, &fail);
                    let name = format!("scan-{}-{node}-db{}", which.name(), db.0);
                    handles.push(
                        std::thread::Builder::new()
                            .name(name)
                            .spawn_scoped(s, move || {
                                if let Err(e) = scan(sh, c, which, node, db, &tx, quit) {
                                    fail(e);
                                }
                            })
                            .map_err(spawn_err)?,
                    );
                }
            }
            Feed::Jobs(jobs) => {
                let tx = tx.clone();
                let quit = &quit;
                handles.push(
                    std::thread::Builder::new()
                        .name("recheck-feed".into())
                        .spawn_scoped(s, move || {
                            for j in jobs {
                                if quit.load(Ordering::Relaxed) || tx.send(j).is_err() {
                                    break;
                                }
                            }
                        })
                        .map_err(spawn_err)?,
                );
            }
        }
        // Workers end when every feeder has dropped its sender.
        drop(tx);
        for i in 0..workers {
            let rx = rx.clone();
            let (quit, fail, diffs) = (&quit, &fail, &diffs);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("check-worker-{i}"))
                    .spawn_scoped(s, move || {
                        let mut w = Worker::new(sh);
                        let mut out = Vec::new();
                        for job in rx {
                            if quit.load(Ordering::Relaxed) {
                                break;
                            }
                            out.clear();
                            let r = match &job {
                                Job::Forward(db, keys) => {
                                    c.source_compared
                                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                                    w.forward(*db, keys, &mut out)
                                }
                                Job::Reverse(db, keys) => {
                                    c.target_compared
                                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                                    w.reverse(*db, keys, &mut out)
                                }
                            };
                            if let Err(e) = r {
                                fail(e);
                                break;
                            }
                            if !out.is_empty() {
                                c.differing.fetch_add(out.len() as u64, Ordering::Relaxed);
                                let mut d = diffs.lock();
                                let room = sh.opts.max_diffs.saturating_sub(d.len());
                                let take = room.min(out.len());
                                d.extend(out.drain(..take));
                                c.not_recorded
                                    .fetch_add(out.len() as u64, Ordering::Relaxed);
                            }
                        }
                    })
                    .map_err(spawn_err)?,
            );
        }
        drop(rx);
        let ticker = {
            let done = &done;
            std::thread::Builder::new()
                .name("check-progress".into())
                .spawn_scoped(s, move || {
                    let mut last = Instant::now();
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        if last.elapsed() >= Duration::from_secs(1) {
                            last = Instant::now();
                            progress(&snapshot(sh, c, round, t0));
                        }
                    }
                })
                .map_err(spawn_err)?
        };
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        done.store(true, Ordering::Relaxed);
        panicked |= ticker.join().is_err();
        if panicked {
            fail(Error::Thread("a checker thread panicked".into()));
        }
        Ok(())
    })?;
    if let Some(e) = first_error.into_inner() {
        return Err(e);
    }
    progress(&snapshot(sh, c, round, t0));
    Ok(diffs.into_inner())
}

fn snapshot(sh: &Shared, c: &Counters, round: u32, t0: Instant) -> Progress {
    Progress {
        round,
        rounds: sh.opts.rounds,
        source_scanned: c.source_scanned.load(Ordering::Relaxed),
        target_scanned: c.target_scanned.load(Ordering::Relaxed),
        compared: c.source_compared.load(Ordering::Relaxed)
            + c.target_compared.load(Ordering::Relaxed),
        differing: c.differing.load(Ordering::Relaxed),
        bytes: sh.src.bytes.load(Ordering::Relaxed) + sh.tgt.bytes.load(Ordering::Relaxed),
        elapsed: t0.elapsed(),
    }
}

/// SCANs one db of one master and sends batches of (sampled) keys.
fn scan(
    sh: &Shared,
    c: &Counters,
    which: Which,
    node: usize,
    db: DbIndex,
    tx: &crossbeam_channel::Sender<Job>,
    quit: &AtomicBool,
) -> Result<(), Error> {
    let side = match which {
        Which::Source => sh.src,
        Which::Target => sh.tgt,
    };
    let ep = side.endpoints.get(node).ok_or_else(|| Error::Reply {
        side: which.name(),
        addr: side.addr.clone(),
        command: "SCAN".into(),
        detail: format!("no master number {node}"),
    })?;
    let mut conn = Conn::connect(ep).map_err(|e| Error::net(which, e))?;
    if db.0 != 0 {
        let r = conn
            .request(&Cmd::from_args([
                &b"SELECT"[..],
                db.0.to_string().as_bytes(),
            ]))
            .map_err(|e| Error::net(which, e))?;
        if !r.is_ok() {
            return Err(side.bad_reply(&ep.addr, "SELECT", &r));
        }
    }
    // The server filters by pattern where it can: the source always, the target when no key
    // prefix is involved. Otherwise keys are mapped back and matched here.
    let pattern = sh.opts.pattern.as_deref().map(str::as_bytes);
    let any_prefix = which == Which::Target
        && sh
            .map
            .checked_source_dbs()
            .iter()
            .any(|d| sh.map.prefix(*d).is_some());
    let server_match: Option<Vec<u8>> = match (which, pattern) {
        (_, None) => None,
        (Which::Source, Some(p)) => Some(p.to_vec()),
        (Which::Target, Some(p)) if !any_prefix => Some(p.to_vec()),
        (Which::Target, Some(_)) => None,
    };
    let count = sh.opts.scan_count.to_string();
    let mut cursor = b"0".to_vec();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let batch_max = usize::try_from(sh.opts.scan_count).unwrap_or(1000).max(1);
    let send = |batch: Vec<Vec<u8>>| -> bool {
        let job = match which {
            Which::Source => Job::Forward(db, batch),
            Which::Target => Job::Reverse(db, batch),
        };
        tx.send(job).is_ok()
    };
    let scanned = match which {
        Which::Source => &c.source_scanned,
        Which::Target => &c.target_scanned,
    };
    loop {
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut cmd = Cmd::from_args([&b"SCAN"[..], &cursor]);
        if let Some(p) = &server_match {
            cmd.arg(b"MATCH").arg(p);
        }
        cmd.arg(b"COUNT").arg(count.as_bytes());
        side.limiter.pay(1);
        let before = conn.consumed();
        let v = conn.request(&cmd).map_err(|e| Error::net(which, e))?;
        let read = conn.consumed().saturating_sub(before);
        side.bytes.fetch_add(read, Ordering::Relaxed);
        side.bandwidth.pay(read);
        // Take the reply apart by value: the key bytes move into the batch without a copy.
        let shape_ok = v.as_array().is_some_and(|a| {
            a.len() == 2
                && a[0].as_bytes().is_some()
                && a[1]
                    .as_array()
                    .is_some_and(|ks| ks.iter().all(|k| matches!(k, Value::Bulk(_))))
        });
        if !shape_ok {
            return Err(side.bad_reply(&ep.addr, "SCAN", &v));
        }
        let mut parts = match v {
            Value::Array(a) => a.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let next = parts
            .next()
            .and_then(|c| c.as_bytes().map(<[u8]>::to_vec))
            .unwrap_or_else(|| b"0".to_vec());
        let keys = match parts.next() {
            Some(Value::Array(k)) => k,
            _ => Vec::new(),
        };
        scanned.fetch_add(keys.len() as u64, Ordering::Relaxed);
        for k in keys {
            let Value::Bulk(k) = k else {
                continue;
            };
            if which == Which::Target && server_match.is_none() {
                if let Some(p) = pattern {
                    let ok = match sh.map.to_source(db, &k) {
                        Some(c) if !c.is_empty() => c.iter().any(|(_, sk)| util::glob_match(p, sk)),
                        _ => util::glob_match(p, &k),
                    };
                    if !ok {
                        continue;
                    }
                }
            }
            if util::sampled(&k, sh.opts.sample) {
                batch.push(k);
            }
        }
        if batch.len() >= batch_max && !send(std::mem::take(&mut batch)) {
            return Ok(());
        }
        if next == b"0" {
            break;
        }
        cursor = next;
    }
    if !batch.is_empty() {
        send(batch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_samples_parse() {
        assert_eq!("FULL".parse::<Mode>(), Ok(Mode::Full));
        assert!("fast".parse::<Mode>().is_err());
        assert_eq!(parse_sample("0.25"), Ok(0.25));
        assert_eq!(parse_sample("10%"), Ok(0.1));
        assert_eq!(parse_sample("1"), Ok(1.0));
        for bad in ["0", "-1", "1.5", "150%", "x", "nan", ""] {
            assert!(parse_sample(bad).is_err(), "{bad}");
        }
    }
}
