//! The only place threads and channels are created: flows, writers, coordinator, shutdown.
//!
//! One replication *session* (one `REPLCONF capa dragonfly` on the master) runs as:
//!
//! ```text
//! flow-0 ─┐  owned Batches over bounded channels   ┌─ writer-ADDR (mio, pipelined, MULTI+marker)
//! flow-1 ─┼──────────────────────────────────────► ┤
//! flow-N ─┘      events (bounded) ──► coordinator  └─ Applied (atomics): per-flow applied LSN
//! ```
//!
//! * `flow-i` owns flow connection *i* (blocking socket): decodes snapshot then journal,
//!   rewrites into owned [`Batch`]es, sends them to its writer (bounded: a slow target is
//!   backpressure), writes `REPLCONF ACK <applied next>` itself on the socket it owns (so no
//!   other thread ever touches a flow socket), and meets the other flows at the FLUSH barrier.
//! * `writer-ADDR` pipelines batches into one target node and publishes each flow's applied
//!   LSN (atomics in [`Applied`]) when the target acknowledged it.
//! * `coordinator` owns the main connection (`DFLY SYNC`, `DFLY STARTSTABLE` once every flow
//!   delivered FULLSYNC_END), runs the FLUSH barrier, saves checkpoints every interval and at
//!   the end, logs progress; one closed [`Event`] enum in one `select!`.
//!
//! Shutdown is by disconnection: flows stop reading and drop their senders, writers drain and
//! end, the coordinator saves the final checkpoint, then the master's connections are closed
//! with a FIN. [`run`] loops over sessions: a lost source or target reconnects with backoff and
//! resumes PARTIAL from the positions committed in the target (docs/exactly-once.md).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, SendTimeoutError, Sender};

use crate::checkpoint::{self, Checkpoint, FlowCheckpoint, FlowState, Store};
use crate::config::{Config, FlushPolicy, TargetKind};
use crate::journal::{EntryKind, JournalItem, LsnCounter};
use crate::model::{escape_bytes, Cmd, DbIndex, FlowId, Lsn};
use crate::net::{Conn, Stream};
use crate::ops::{self, Phase as OpsPhase};
use crate::rdb::{EventRef, FlowEvent, Limits, SnapshotItem};
use crate::rewrite::{self, Rewriter, Rewritten};
use crate::source::{self, FlowReader, Master};
use crate::target::writer::{
    Applied, Batch, BatchKind, Markers, Writer, WriterConfig, WriterError,
};

mod cluster;
pub(crate) mod failpoint;

/// Engine settings that are not in the config file (tests shorten them).
#[derive(Debug, Clone)]
pub struct Options {
    /// A flow blocked this long (target too slow, barrier not reached) stops the session
    /// cleanly with a checkpoint, well before the master's `replication_timeout` (30 s since
    /// v1.23; 10 s in v1.22) drops us in a way that can hurt it (§5.2, §5.4).
    pub stall_limit: Duration,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// Sessions that fail in a row without applying anything before giving up.
    pub max_failures: u32,
    /// Decoder caps.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            stall_limit: Duration::from_secs(20),
            progress_interval: Duration::from_secs(10),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_failures: 10,
            limits: Limits::default(),
        }
    }
}

/// Why replication stopped for good.
#[derive(Debug)]
pub enum Error {
    /// The configuration asks for something this build cannot do.
    Unsupported(String),
    /// A failure that retrying cannot fix (authentication, out of memory, a refused
    /// transaction, a bad checkpoint), or too many failed sessions in a row.
    Fatal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unsupported(m) => write!(f, "not supported: {m}"),
            Error::Fatal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// How one session ended badly.
#[derive(Debug)]
struct SessionError {
    msg: String,
    /// The handshake with the master had succeeded.
    established: bool,
    /// Reconnecting can help.
    retryable: bool,
    /// The next session must not ask for PARTIAL.
    force_full: bool,
}

impl SessionError {
    fn retry(msg: impl Into<String>) -> SessionError {
        SessionError {
            msg: msg.into(),
            established: true,
            retryable: true,
            force_full: false,
        }
    }
    fn full(msg: impl Into<String>) -> SessionError {
        SessionError {
            force_full: true,
            ..SessionError::retry(msg)
        }
    }
    fn fatal(msg: impl Into<String>) -> SessionError {
        SessionError {
            retryable: false,
            ..SessionError::retry(msg)
        }
    }
    fn early(msg: impl Into<String>) -> SessionError {
        SessionError {
            established: false,
            ..SessionError::retry(msg)
        }
    }
}

/// Replicates until `stop` is set (then drains, checkpoints and returns `Ok`) or a failure
/// that retrying cannot fix.
pub fn run(cfg: &Config, opts: &Options, stop: &Arc<AtomicBool>) -> Result<(), Error> {
    run_with_stats(cfg, opts, stop, &Arc::new(ops::Stats::new()))
}

/// [`run`], publishing the live figures in `stats` (read by the status endpoint and the
/// progress display); `stats` ends in the stopped state.
pub fn run_with_stats(
    cfg: &Config,
    opts: &Options,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ops::Stats>,
) -> Result<(), Error> {
    let r = run_sessions(cfg, opts, stop, stats);
    if let Err(e) = &r {
        stats.session_failed(&e.to_string());
    }
    stats.stopped();
    r
}

fn run_sessions(
    cfg: &Config,
    opts: &Options,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ops::Stats>,
) -> Result<(), Error> {
    let mut force_full = false;
    let mut failures = 0u32;
    // Until one session got through the handshake, a failure is reported at once (exit 1:
    // wrong address, credentials, not a Dragonfly); afterwards it is retried with backoff.
    let mut established = false;
    let mut backoff = opts.backoff;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        stats.connecting();
        match run_session(cfg, opts, stop, force_full, stats) {
            Ok(progress) => {
                let _ = progress;
                return Ok(());
            }
            Err((e, progressed)) => {
                established |= e.established;
                if !e.retryable || !established {
                    return Err(Error::Fatal(e.msg));
                }
                if progressed {
                    failures = 0;
                    backoff = opts.backoff;
                }
                failures += 1;
                if failures > opts.max_failures {
                    return Err(Error::Fatal(format!(
                        "{failures} sessions failed in a row; last: {}",
                        e.msg
                    )));
                }
                force_full = e.force_full;
                stats.session_failed(&e.msg);
                log::warn!(
                    "replication session ended: {}; reconnecting in {:?}{}",
                    e.msg,
                    backoff,
                    if force_full { " with a full sync" } else { "" }
                );
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
}

/// Readies the target for a full sync: empties it when the policy asks for it, invalidates
/// every position committed by an earlier session, and marks the target as ours.
///
/// Delete-then-write makes every key of the snapshot exact, but a key the target holds from an
/// earlier run (an interrupted full sync, a session of another master id, a resume the master
/// answered FULL) that the master no longer has is in no snapshot: it would stay, and later
/// journal writes to that name would merge into the stale value. So with the default policy
/// (`auto`) a target that carries our owner marker or flow markers is flushed, the way
/// Dragonfly's own replica starts from an empty dataset (`Replica::InitiateDflySync`). A first
/// sync (no marker of ours) never flushes: the target may hold other data.
fn prepare_full_sync(
    probe: &mut Conn,
    markers: &Markers,
    flows: u32,
    policy: FlushPolicy,
) -> Result<(), String> {
    let ours = markers
        .ours(probe, flows)
        .map_err(|e| format!("reading the markers: {e}"))?;
    if flush_decision(policy, ours, "the target") {
        probe
            .request_ok(&Cmd::new("FLUSHALL"))
            .map_err(|e| format!("FLUSHALL: {e}"))?;
    } else if !ours {
        let keys = target_key_count(probe);
        if keys > 0 {
            log::warn!(
                "the target already holds {keys} keys not written by df2redis-sync: keys the \
                 master also has are overwritten, the others are left as they are"
            );
        }
    }
    // A full sync invalidates every position committed by an earlier session: without this, a
    // crash during this full sync would resume from stale markers. The owner marker stays
    // from here on, so an interrupted full sync is flushed by the next one.
    let mut del = Cmd::new("DEL");
    for i in 0..flows {
        del.arg(&markers.key(FlowId(i)));
    }
    probe
        .request_ok(&Cmd::from_args(["SELECT", "0"]))
        .and_then(|_| probe.request_ok(&del))
        .and_then(|_| probe.request_ok(&markers.owner_cmd()))
        .map_err(|e| format!("clearing the markers: {e}"))?;
    Ok(())
}

/// Whether a full sync empties the target first, under `policy`, given whether the target
/// holds data of an earlier run (`ours`); logs the decision. `what` names the target in the
/// log ("the target", "every master of the target"). Shared by standalone and cluster targets.
pub(crate) fn flush_decision(policy: FlushPolicy, ours: bool, what: &str) -> bool {
    let flush = match policy {
        FlushPolicy::Always => true,
        FlushPolicy::Never => false,
        FlushPolicy::Auto => ours,
    };
    if flush {
        log::warn!(
            "flushing {what} (FLUSHALL) before the full sync: {}",
            if ours {
                "it holds data of an earlier df2redis-sync run, and keys the master deleted \
                 meanwhile are in no snapshot"
            } else {
                "target.flush_before_full_sync is `always`"
            }
        );
    } else if ours {
        log::warn!(
            "target.flush_before_full_sync is `never`: keys that an earlier run wrote and the \
             master deleted since stay in the target (check will report them)"
        );
    }
    flush
}

/// Keys in every database of the target (`INFO keyspace`); 0 when it cannot be read.
fn target_key_count(probe: &mut Conn) -> u64 {
    let Ok(v) = probe.request_ok(&Cmd::from_args(["INFO", "keyspace"])) else {
        return 0;
    };
    let text = v
        .as_bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once("keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Refuses to start when the source has keys in a db the mapping does not replicate (a
/// Redis Cluster target has only db 0, `docs/cluster-commands.md`), or in two dbs that would
/// collide in one target db. Reads the master's `INFO keyspace` on a normal connection.
fn check_source_dbs(cfg: &Config, src: &crate::net::Endpoint) -> Result<(), SessionError> {
    let mut c = Conn::connect(src).map_err(|e| SessionError::early(format!("source: {e}")))?;
    let info = c
        .request(&Cmd::from_args(["INFO", "keyspace"]))
        .map_err(|e| SessionError::early(format!("source: INFO keyspace: {e}")))?;
    let Some(text) = info.as_bytes() else {
        return Err(SessionError::early(format!(
            "source: INFO keyspace answered {info:?}"
        )));
    };
    cfg.databases
        .check_keyspace(text)
        .map_err(|e| SessionError::fatal(e.to_string()))
}

/// Everything a flow reports to the coordinator.
#[derive(Debug)]
enum Event {
    /// FULLSYNC_END seen.
    FullSyncEnd(FlowId),
    /// Eof token seen (or PARTIAL on v1.35+): journal from `next` on.
    Stable(FlowId, Lsn),
    /// A FLUSHALL/FLUSHDB reached with txid `txid`, LSN `lsn`.
    Barrier {
        flow: FlowId,
        txid: u64,
        lsn: Lsn,
        db: DbIndex,
        cmd: Cmd,
    },
    /// A flow thread ended (`Some` = why, when it failed).
    FlowEnded(FlowId, Option<FlowFailure>),
    /// A writer thread ended.
    WriterEnded(String, Option<WriterError>),
}

#[derive(Debug)]
struct FlowFailure {
    msg: String,
    force_full: bool,
}

/// State shared by the threads of one session.
struct Shared {
    /// Set by a signal: drain and stop.
    stop: Arc<AtomicBool>,
    /// Set by the coordinator when the session must end (a failure somewhere).
    abort: Arc<AtomicBool>,
    applied: Arc<Applied>,
    /// Per-flow live counters (the status model's, `ops`).
    stats: Arc<[ops::FlowStats]>,
    /// `DFLY STARTSTABLE` was answered: ACKs may flow (the real replica sends none before).
    stable_started: AtomicBool,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.abort.load(Ordering::SeqCst)
    }
}

/// Runs one session. `Ok(true)` = stopped by request. The error carries whether anything was
/// applied (for the failure count).
fn run_session(
    cfg: &Config,
    opts: &Options,
    stop: &Arc<AtomicBool>,
    force_full: bool,
    ops_stats: &Arc<ops::Stats>,
) -> Result<bool, (SessionError, bool)> {
    let fail = |e: SessionError| (e, false);
    let store = cfg
        .checkpoint
        .enabled
        .then(|| Store::new(cfg.checkpoint.dir.clone()));
    let saved = match &store {
        Some(s) => s
            .load()
            .map_err(|e| fail(SessionError::fatal(e.to_string())))?,
        None => None,
    };
    let src = cfg.source.endpoint();
    check_source_dbs(cfg, &src).map_err(fail)?;
    let master = Master::handshake(&src, &cfg.replica)
        .map_err(|e| fail(SessionError::early(e.to_string())))?;
    let hello = master.hello().clone();
    let n = hello.flow_count;
    let markers = Markers {
        prefix: cfg.checkpoint.marker_prefix.clone(),
        replid: hello.replid.clone(),
    };
    let target_ep = cfg
        .target
        .endpoints()
        .into_iter()
        .next()
        .ok_or_else(|| fail(SessionError::fatal("no target address")))?;
    // Cluster targets: discovery, markers per slot, writers per master (pipeline/cluster.rs).
    let clus = if cfg.target.kind == TargetKind::Cluster {
        Some(cluster::Setup::discover(cfg, &hello.replid).map_err(fail)?)
    } else {
        None
    };
    let mut probe = match &clus {
        Some(c) => cluster::probe(c).map_err(fail)?,
        None => Conn::connect(&target_ep).map_err(|e| {
            let retry = !e.is_auth();
            fail(SessionError {
                retryable: retry,
                established: false,
                ..SessionError::retry(format!("target: {e}"))
            })
        })?,
    };

    // Writer connections of an earlier session (or of a killed process) that Redis has not
    // finished reading go first, so the markers read below are final.
    let retired = match &clus {
        Some(c) => c.retire_writers(&markers),
        None => markers
            .retire_writers(&mut probe)
            .map_err(|e| e.to_string()),
    };
    match retired {
        Ok(0) => {}
        Ok(k) => log::info!("closed {k} writer connection(s) left by an earlier session"),
        Err(e) => {
            log::warn!(
                "target: CLIENT LIST/KILL refused ({e}); waiting 1 s for connections of an \
                 earlier session to drain instead"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    // Resume positions (§6.2): same master id, same flow count, a release that has partial
    // sync. The markers in the target are the authority (they are committed with the writes);
    // a resumable file checkpoint without markers means the target lost its data (restarted
    // without persistence, flushed by someone): only a full sync makes it whole again.
    let mut resume: Option<Vec<Lsn>> = None;
    let release_ok = hello.release.map_or(true, |r| r.supports_partial());
    if !force_full && release_ok {
        let from_markers = match &clus {
            Some(c) => c.read_lowwater(n),
            None => markers.read(&mut probe, n).map_err(|e| e.to_string()),
        }
        .map_err(|e| fail(SessionError::retry(format!("target: reading markers: {e}"))))?;
        let file_ok = saved
            .as_ref()
            .filter(|c| c.master_replid == hello.replid && c.flow_count == n && c.is_resumable());
        let lsns: Vec<Lsn> = from_markers.iter().flatten().copied().collect();
        if lsns.len() == n as usize {
            // (A cluster's low-water positions trail the acknowledged ones by design.)
            if let Some(f) = file_ok.filter(|_| clus.is_none()) {
                for (i, (m, c)) in lsns.iter().zip(&f.flows).enumerate() {
                    if m.0 < c.next_lsn {
                        log::warn!(
                            "flow {i}: the target's marker ({}) is behind the checkpoint file \
                             ({}): the target lost acknowledged writes; resuming from the marker",
                            m.0,
                            c.next_lsn
                        );
                    }
                }
            }
            log::info!(
                "resuming from the per-flow LSNs committed in the target: {:?}",
                lsns.iter().map(|l| l.0).collect::<Vec<_>>()
            );
            resume = Some(lsns);
        } else if file_ok.is_some() {
            log::warn!(
                "the checkpoint allows a partial sync but the target holds no position markers \
                 for master {}: the target lost its data; full sync",
                hello.replid
            );
        } else if saved.is_some() {
            log::info!(
                "the checkpoint does not allow a partial sync with master {} ({} flows): full sync",
                hello.replid,
                n
            );
        }
    }
    let rw_opts = probe_target(&mut probe);

    // Open every flow (§2.1).
    let mut flows = Vec::new();
    for i in 0..n {
        let lsn = resume.as_ref().map(|l| l[i as usize]);
        let f = source::open_flow(&src, &hello, FlowId(i), lsn, cfg.replica.flow_timeout)
            .map_err(|e| fail(SessionError::retry(e.to_string())))?;
        flows.push(f);
    }
    let partial = flows.iter().filter(|f| f.partial).count();
    if partial != 0 && partial != flows.len() {
        master.close();
        return Err(fail(SessionError::full(format!(
            "the master answered PARTIAL for {partial} of {n} flows; a mixed answer needs a \
             full sync (§6.2)"
        ))));
    }
    let partial = partial != 0;
    if resume.is_some() && !partial {
        log::warn!("the master answered FULL to the partial-sync request: resyncing fully");
    }
    let old_procedure = partial && hello.release.is_some_and(|r| r.partial_needs_sync());
    if !partial {
        match &clus {
            Some(c) => c.prepare_full_sync(cfg.target.flush_before_full_sync),
            None => prepare_full_sync(&mut probe, &markers, n, cfg.target.flush_before_full_sync),
        }
        .map_err(|e| fail(SessionError::retry(format!("target: {e}"))))?;
    }
    drop(probe);
    let start: Vec<Lsn> = match (&resume, partial) {
        (Some(l), true) => l.clone(),
        _ => vec![Lsn(0); n as usize],
    };

    let applied = Arc::new(Applied::new(&start));
    let session = ops_stats.begin_session(
        ops::SessionInfo {
            replid: hello.replid.clone(),
            sync_id: hello.sync_id.clone(),
            version: hello.version_text.clone(),
            master_keys: hello.master_keys,
            partial: partial && !old_procedure,
        },
        n,
        applied.clone(),
    );
    let shared = Arc::new(Shared {
        stop: stop.clone(),
        abort: Arc::new(AtomicBool::new(false)),
        applied,
        stats: session.flows.clone(),
        stable_started: AtomicBool::new(false),
    });
    let (ev_tx, ev_rx) = bounded::<Event>(n as usize * 4 + 16);

    // Writers: one thread per target connection (standalone: one node; cluster: per master).
    let conns = cfg.pipeline.connections_per_node.max(1);
    let mut writer_txs = Vec::new();
    let mut writer_handles = Vec::new();
    let mut writers_total = conns;
    let mut coord_cluster = None;
    let mut cluster_ctx = None;
    let mut skips = Vec::new();
    if let Some(setup) = clus {
        if partial {
            skips = setup.read_skip(n).map_err(|e| {
                fail(SessionError::retry(format!(
                    "target: reading the slot markers: {e}"
                )))
            })?;
            log::info!(
                "resume: slot markers of {} (flow, slot) pairs read from the target",
                skips.iter().map(|m| m.len()).sum::<usize>()
            );
        }
        let hint = Arc::new(crate::target::cluster::TopologyHint::default());
        let mut spawner = cluster::Spawner {
            cfg: cfg.clone(),
            applied: shared.applied.clone(),
            abort: shared.abort.clone(),
            ev: ev_tx.clone(),
            hint: hint.clone(),
            markers: markers.clone(),
            spawned: 0,
            ops: ops_stats.clone(),
        };
        let (routes, handles, count) = spawner.all(&setup).map_err(fail)?;
        writer_handles.extend(handles);
        writers_total = count;
        if let Some(t) = routes.txs.iter().find(|t| !t.is_empty()) {
            writer_txs = t.clone();
        }
        let ctx = Arc::new(cluster::ClusterCtx {
            setup,
            tracker: Arc::new(crate::target::cluster::Tracker::new(
                shared.applied.clone(),
                n as usize + 1,
            )),
            hint,
            routes: parking_lot::RwLock::new(routes),
            version: AtomicU64::new(0),
            flows: n,
        });
        coord_cluster = Some(cluster::CoordCluster {
            ctx: ctx.clone(),
            spawner,
            late: Vec::new(),
            last_refresh: Instant::now(),
            last_lowwater: Instant::now(),
            written: Vec::new(),
        });
        cluster_ctx = Some(ctx);
    }
    if writer_txs.is_empty() && cluster_ctx.is_some() {
        return Err(fail(SessionError::retry(
            "target: the cluster has no master",
        )));
    }
    for w in 0..conns {
        if cluster_ctx.is_some() {
            break;
        }
        let (tx, rx) = bounded::<Batch>(cfg.pipeline.channel_capacity.max(1));
        let wcfg = WriterConfig {
            endpoint: target_ep.clone(),
            window: cfg.pipeline.inflight_batches.max(1),
            markers: markers.clone(),
            reply_timeout: cfg.target.io_timeout,
            hint: None,
        };
        let writer = Writer::connect(wcfg, shared.applied.clone()).map_err(|e| {
            fail(SessionError {
                retryable: e.retryable,
                ..SessionError::retry(e.to_string())
            })
        })?;
        let name = if conns == 1 {
            format!("writer-{}", target_ep.addr)
        } else {
            format!("writer-{}#{w}", target_ep.addr)
        };
        let wstats = ops_stats.writer(name.trim_start_matches("writer-"));
        wstats.capacity.store(
            cfg.pipeline.channel_capacity.max(1) as u64,
            Ordering::Relaxed,
        );
        let writer = writer.with_stats(wstats);
        let ev = ev_tx.clone();
        let abort = shared.abort.clone();
        let core = pick_core(&cfg.cpu.writer_threads, w);
        let tname = name.clone();
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                // A panic ends the session like an error would (the join reports it).
                // (The report goes first, so it is the session's first error.)
                let _guard = OnPanic::new(|| {
                    let _ = ev.send(Event::WriterEnded(
                        tname.clone(),
                        Some(WriterError {
                            addr: tname.trim_start_matches("writer-").to_string(),
                            detail: "the writer thread panicked".into(),
                            retryable: false,
                        }),
                    ));
                    abort.store(true, Ordering::SeqCst);
                });
                pin(core, &tname);
                let r = writer.run(&rx, &abort);
                let _ = ev.send(Event::WriterEnded(tname.clone(), r.err()));
            })
            .map_err(|e| fail(SessionError::fatal(format!("spawning {name}: {e}"))))?;
        writer_txs.push(tx);
        writer_handles.push(h);
    }

    // Flows.
    let mut release_txs = Vec::new();
    let mut flow_handles: Vec<JoinHandle<Stream>> = Vec::new();
    for f in flows {
        let id = f.id;
        let (rel_tx, rel_rx) = bounded::<()>(1);
        release_txs.push(rel_tx);
        let phase = match (partial, old_procedure) {
            (false, _) => Phase::Snapshot,
            (true, true) => Phase::OldPartial,
            (true, false) => Phase::Stable,
        };
        let ctx = FlowCtx {
            id,
            reader: FlowReader::new(f, old_procedure, opts.limits),
            tx: writer_txs[id.0 as usize % writer_txs.len()].clone(),
            ev: ev_tx.clone(),
            release: rel_rx,
            shared: shared.clone(),
            rewriter: Rewriter::new(rw_opts),
            databases: cfg.databases.clone(),
            batch_commands: cfg.pipeline.batch_commands.max(1),
            batch_bytes: cfg.pipeline.batch_bytes.max(1),
            stall_limit: opts.stall_limit,
            phase,
            counter: LsnCounter::new(start[id.0 as usize]),
            pending: Vec::new(),
            pending_bytes: 0,
            last_sent_next: start[id.0 as usize],
            last_ack: None,
            events_since_clock: 256,
            group_open: false,
            cluster: cluster_ctx.as_ref().map(|c| {
                cluster::FlowRouting::new(
                    c.clone(),
                    skips.get(id.0 as usize).cloned().unwrap_or_default(),
                )
            }),
        };
        let core = pick_core(&cfg.cpu.flow_threads, id.0 as usize);
        let name = format!("flow-{}", id.0);
        let (ev, abort) = (ev_tx.clone(), shared.abort.clone());
        let spawned = if failpoint::hit("spawn-error", None) {
            Err(std::io::Error::other("failpoint spawn-error"))
        } else {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    // A panic ends the session like a failure would: the other threads stop, the
                    // coordinator counts this flow as ended, the join reports the panic.
                    let _guard = OnPanic::new(move || {
                        let _ = ev.send(Event::FlowEnded(
                            id,
                            Some(FlowFailure {
                                msg: format!("{id}: the thread panicked"),
                                force_full: false,
                            }),
                        ));
                        abort.store(true, Ordering::SeqCst);
                    });
                    pin(core, &format!("flow-{}", id.0));
                    ctx.run()
                })
        };
        let h = match spawned {
            Ok(h) => h,
            Err(e) => {
                // The flows already started stop (they see the abort) before the error returns.
                shared.abort.store(true, Ordering::SeqCst);
                drop(ev_tx);
                drop(writer_txs);
                for h in flow_handles {
                    let _ = h.join();
                }
                for h in writer_handles {
                    let _ = h.join();
                }
                return Err(fail(SessionError::fatal(format!("spawning {name}: {e}"))));
            }
        };
        flow_handles.push(h);
    }
    drop(ev_tx);
    // Global batches go to writer 0 (after the barrier made every writer idle); on a cluster
    // to every master (CoordCluster::send_global).
    let global_tx = (cluster_ctx.is_none()).then(|| writer_txs[0].clone());
    drop(writer_txs);
    drop(cluster_ctx);

    let coord = Coordinator {
        cfg: cfg.clone(),
        opts: opts.clone(),
        shared: shared.clone(),
        ops: ops_stats.clone(),
        master: Some(master),
        hello: hello.clone(),
        store,
        n,
        partial,
        old_procedure,
        stable_at: if partial && !old_procedure {
            start.iter().map(|l| Some(*l)).collect()
        } else {
            vec![None; n as usize]
        },
        fullsync_end: 0,
        release_txs,
        global_tx,
        started: Instant::now(),
        writers: writers_total,
        cluster: coord_cluster,
    };
    let abort = shared.abort.clone();
    let coord_handle = std::thread::Builder::new()
        .name("coordinator".into())
        .spawn(move || {
            // Without the coordinator nothing ends the session: stop every thread.
            let _guard = OnPanic::new(move || abort.store(true, Ordering::SeqCst));
            coord.run(ev_rx)
        })
        .map_err(|e| fail(SessionError::fatal(format!("spawning coordinator: {e}"))))?;

    let mut panicked = Vec::new();
    let mut streams = Vec::new();
    for h in flow_handles {
        let n = thread_name(h.thread());
        match h.join() {
            Ok(s) => streams.push(s),
            Err(_) => panicked.push(n),
        }
    }
    for h in writer_handles {
        let n = thread_name(h.thread());
        if h.join().is_err() {
            panicked.push(n);
        }
    }
    let (result, master) = match coord_handle.join() {
        Ok(r) => r,
        Err(_) => {
            // Reported below with the other panics.
            panicked.push("coordinator".into());
            (Ok(()), None)
        }
    };
    // Close the master's connections last, gracefully (§5.4 #3).
    for s in streams {
        source::close_stream(s);
    }
    if let Some(m) = master {
        m.close();
    }
    if !panicked.is_empty() {
        return Err((
            SessionError::fatal(format!("thread(s) panicked: {}", panicked.join(", "))),
            false,
        ));
    }
    let progressed = shared.applied.batches.load(Ordering::Relaxed) > 0;
    result.map(|()| true).map_err(|e| (e, progressed))
}

/// Asks the target what the rewrite may use: the JSON module, hash field TTLs (7.4+).
/// What the flow thread's read step produced: a whole string key already rewritten (from
/// the borrowed fast path of the decoder), or an owned event.
enum Next {
    String(Rewritten),
    Event(FlowEvent),
}

fn probe_target(conn: &mut Conn) -> rewrite::Options {
    let mut o = rewrite::Options {
        now_ms: checkpoint::now_ms() as i64,
        ..rewrite::Options::default()
    };
    if let Ok(v) = conn.request(&Cmd::from_args(["MODULE", "LIST"])) {
        let text = format!("{v:?}").to_ascii_lowercase();
        o.target_json = text.contains("rejson") || text.contains("\"json\"");
    }
    if let Ok(v) = conn.request(&Cmd::from_args(["INFO", "SERVER"])) {
        if let Some(b) = v.as_bytes() {
            let t = String::from_utf8_lossy(b);
            if let Some(ver) = t.lines().find_map(|l| l.strip_prefix("redis_version:")) {
                let mut it = ver.trim().split('.').map(|x| x.parse::<u32>().unwrap_or(0));
                let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                o.target_field_ttl = (a, b) >= (7, 4);
            }
        }
    }
    o
}

fn thread_name(t: &std::thread::Thread) -> String {
    t.name().unwrap_or("unnamed").to_string()
}

/// Runs a closure when the thread unwinds from a panic (a worker's drop trips the session's
/// quit flag): a panicking thread must not leave the others waiting for it.
struct OnPanic<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnPanic<F> {
    fn new(f: F) -> OnPanic<F> {
        OnPanic(Some(f))
    }
}

impl<F: FnOnce()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
}

fn pick_core(cores: &[usize], i: usize) -> Option<usize> {
    if cores.is_empty() {
        None
    } else {
        cores.get(i % cores.len()).copied()
    }
}

/// Largest CPU number + 1 that `core_affinity` can put in a `cpu_set_t` (glibc's
/// `CPU_SETSIZE`); a larger id makes its `CPU_SET` index out of bounds inside a function that
/// cannot unwind, which aborts the process. The config accepts up to 4095.
const CPU_SETSIZE: usize = 1024;

fn pin(core: Option<usize>, name: &str) {
    if let Some(id) = core {
        if id >= CPU_SETSIZE || !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            log::warn!("{name}: could not pin to CPU {id}");
        }
    }
}

/// Where a flow is in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Full-sync snapshot (and its journal blobs, which carry no LSN).
    Snapshot,
    /// ≤ v1.34 partial sync: RDB-framed, journal blobs are the missed entries from the
    /// requested LSN on (counted here, so a crash in this phase stays exactly-once).
    OldPartial,
    /// The journal.
    Stable,
}

/// One flow thread's state.
struct FlowCtx {
    id: FlowId,
    reader: FlowReader,
    tx: Sender<Batch>,
    ev: Sender<Event>,
    release: Receiver<()>,
    shared: Arc<Shared>,
    rewriter: Rewriter,
    databases: crate::config::DbMapping,
    batch_commands: usize,
    batch_bytes: usize,
    stall_limit: Duration,
    phase: Phase,
    counter: LsnCounter,
    pending: Vec<(DbIndex, Cmd)>,
    pending_bytes: usize,
    /// The `next` of the last journal batch sent.
    last_sent_next: Lsn,
    /// When and what the last ACK was.
    last_ack: Option<(Instant, Lsn)>,
    /// Events handled since the clock was last read (see `main_loop`).
    events_since_clock: u32,
    /// A pre-v1.21 atomic group is open: MULTI_COMMAND entries were counted, their commands
    /// wait in the rewriter for the EXEC. No journal batch may be sent meanwhile (see `flush`).
    group_open: bool,
    /// Cluster targets: the slot map, the resume skip table (`pipeline/cluster.rs`).
    cluster: Option<cluster::FlowRouting>,
}

impl FlowCtx {
    /// The flow thread: returns the connection for the graceful close.
    fn run(mut self) -> Stream {
        let r = self.main_loop();
        // Whatever happened, ship what was decoded (a stop drains; a failure loses nothing
        // that the checkpoint claims, since positions come from acknowledged batches only).
        let flushed = self.flush();
        let failure = match (r, flushed) {
            (Err(e), _) | (Ok(()), Err(e)) => Some(e),
            _ => None,
        };
        if let Some(f) = &failure {
            log::debug!("{}: ended: {}", self.id, f.msg);
        }
        let st = &self.shared.stats[self.id.0 as usize];
        if failure.is_some() && !self.shared.stopping() {
            st.errors.fetch_add(1, Ordering::Relaxed);
        }
        st.phase.set(OpsPhase::Stopped);
        let _ = self.ev.send(Event::FlowEnded(self.id, failure));
        drop(self.tx);
        self.reader.into_stream()
    }

    fn fail(&self, msg: impl fmt::Display) -> FlowFailure {
        FlowFailure {
            msg: msg.to_string(),
            force_full: false,
        }
    }

    fn main_loop(&mut self) -> Result<(), FlowFailure> {
        self.reader
            .set_read_timeout(Duration::from_millis(100))
            .map_err(|e| self.fail(e))?;
        if self.phase == Phase::Stable {
            let _ = self.ev.send(Event::Stable(self.id, self.counter.next()));
        }
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            // The clock (TTL rewrites, ACK cadence) is read before a read that may block and
            // every 256 events, not per event: a clock read per key was ~3 % of a flow's CPU
            // on small keys, and 256 events take well under a millisecond.
            let drained = self.reader.drained();
            if drained {
                self.flush()?;
            }
            if drained || self.events_since_clock >= 256 {
                self.events_since_clock = 0;
                self.rewriter.set_now_ms(checkpoint::now_ms() as i64);
                self.maybe_ack()?;
            }
            // Whole string keys of the snapshot are rewritten straight from the read buffer
            // (no copy of key and value); every other event is handled owned.
            let (rewriter, id, phase) = (&mut self.rewriter, self.id, self.phase);
            let ev = self
                .reader
                .next_with(|ev| match ev {
                    EventRef::String(s) => {
                        log::trace!("{id} ({phase:?}): {s:?}");
                        Next::String(rewriter.string_ref(&s))
                    }
                    EventRef::Event(e) => Next::Event(e),
                })
                .map_err(|e| {
                    let full = matches!(e, source::Error::Decode { .. });
                    FlowFailure {
                        msg: e.to_string(),
                        force_full: full,
                    }
                })?;
            self.shared.stats[self.id.0 as usize]
                .bytes
                .store(self.reader.received(), Ordering::Relaxed);
            match ev {
                Some(Next::String(rw)) => {
                    self.events_since_clock += 1;
                    // What `on_snapshot` does for a first piece.
                    self.shared.stats[self.id.0 as usize]
                        .keys
                        .fetch_add(1, Ordering::Relaxed);
                    self.take(rw, None)?;
                }
                Some(Next::Event(ev)) => {
                    self.events_since_clock += 1;
                    self.on_event(ev)?;
                }
                None => {}
            }
        }
    }

    fn on_event(&mut self, ev: FlowEvent) -> Result<(), FlowFailure> {
        log::trace!("{} ({:?}): {ev:?}", self.id, self.phase);
        match ev {
            FlowEvent::Snapshot(item) => self.on_snapshot(item),
            FlowEvent::EofToken => {
                self.flush()?;
                self.phase = Phase::Stable;
                self.shared.stats[self.id.0 as usize]
                    .phase
                    .set(OpsPhase::Stable);
                // A marker-only batch: once it is acknowledged, every snapshot batch before it
                // is too, and the flow's position becomes JOURNAL_OFFSET.
                let next = self.counter.next();
                self.send(Batch {
                    flow: self.id,
                    cmds: Vec::new(),
                    kind: BatchKind::Journal { next },
                })?;
                self.last_sent_next = next;
                let _ = self.ev.send(Event::Stable(self.id, next));
                Ok(())
            }
            FlowEvent::Journal(item) => self.on_journal(item),
        }
    }

    fn on_snapshot(&mut self, item: SnapshotItem) -> Result<(), FlowFailure> {
        match &item {
            SnapshotItem::FullSyncEnd => {
                self.flush()?;
                let _ = self.ev.send(Event::FullSyncEnd(self.id));
                return Ok(());
            }
            SnapshotItem::JournalOffset(l) => {
                if self.phase == Phase::OldPartial && *l != self.counter.next() {
                    log::info!(
                        "{}: JOURNAL_OFFSET {} after {} counted backlog entries",
                        self.id,
                        l.0,
                        self.counter.next().0
                    );
                }
                self.counter = LsnCounter::new(*l);
                return Ok(());
            }
            SnapshotItem::JournalBlob(j) if self.phase == Phase::OldPartial => {
                return self.on_journal(j.clone());
            }
            SnapshotItem::JournalBlob(JournalItem::Entry(e)) if is_flush(&e.cmd) => {
                // §3.9 / §5.4 #9: a FLUSH during the full sync cannot be ordered against the
                // snapshot entries of the other flows: start over.
                return Err(FlowFailure {
                    msg: format!(
                        "{}: {} inside a journal blob during the full sync: restarting the sync",
                        self.id,
                        escape_bytes(e.cmd.name())
                    ),
                    force_full: true,
                });
            }
            SnapshotItem::Piece(p) if p.first => {
                self.shared.stats[self.id.0 as usize]
                    .keys
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let rw = self
            .rewriter
            .snapshot_item(&item)
            .map_err(|e| self.fail(format!("{}: {e}", self.id)))?;
        self.take(rw, None)
    }

    fn on_journal(&mut self, item: JournalItem) -> Result<(), FlowFailure> {
        if matches!(&item, JournalItem::Entry(e) if e.kind == EntryKind::MultiCommand)
            && !self.group_open
        {
            // A group opens: what came before it goes now, marked with the group's first
            // position (nothing is sent again until its EXEC, see `flush`).
            self.flush()?;
        }
        let lsn = self.counter.observe(&item).map_err(|e| FlowFailure {
            msg: format!("{}: {e}: the stream position is lost, full sync", self.id),
            force_full: true,
        })?;
        let stats = &self.shared.stats[self.id.0 as usize];
        stats
            .received_next
            .store(self.counter.next().0, Ordering::Relaxed);
        let JournalItem::Entry(entry) = item else {
            return Ok(());
        };
        stats.entries.fetch_add(1, Ordering::Relaxed);
        let ping = entry.kind == EntryKind::Ping;
        match entry.kind {
            EntryKind::MultiCommand => self.group_open = true,
            EntryKind::Exec => self.group_open = false,
            _ => {}
        }
        #[cfg(debug_assertions)]
        if self.phase == Phase::Stable && entry.kind == EntryKind::Command {
            failpoint::panic_if("flow-panic", Some(self.id.0));
        }
        // By value: a command replayed as it is moves into its batch without a copy.
        let rw = self
            .rewriter
            .entry_owned(entry)
            .map_err(|e| self.fail(format!("{}: {e}", self.id)))?;
        if let Some(g) = rw.global {
            let lsn = lsn.unwrap_or(self.counter.next());
            return self.barrier(g.txid, lsn, rw);
        }
        if ping {
            // The master wants a prompt ACK after a PING (§5.1): ship what is pending.
            self.take(rw, Some(self.counter.next()))?;
            return self.flush();
        }
        self.take(rw, Some(self.counter.next()))
    }

    /// Adds rewritten commands to the pending batch (`next` = journal position after them).
    fn take(&mut self, rw: Rewritten, next: Option<Lsn>) -> Result<(), FlowFailure> {
        if let Some(s) = &rw.skipped {
            self.shared.stats[self.id.0 as usize]
                .skipped
                .fetch_add(1, Ordering::Relaxed);
            let key = s.key.as_deref().map(escape_bytes).unwrap_or_default();
            if s.reason.key_not_written() && s.reason.name() == "expired" {
                log::debug!(
                    "{}: skipped {key} ({} {}): {}",
                    self.id,
                    rw.db,
                    s.reason.name(),
                    s.reason
                );
            } else {
                log::warn!("{}: skipped {key} ({}): {}", self.id, rw.db, s.reason);
            }
        }
        let (db, cmds) = self
            .databases
            .apply(rw.db, rw.cmds)
            .map_err(|e| self.fail(format!("{}: {e}", self.id)))?;
        if let Some(cl) = self.cluster.as_mut() {
            // Single-slot commands; on a resume, minus what the slot markers show applied.
            let end = if self.phase == Phase::Snapshot {
                None
            } else {
                next
            };
            let steps = cl.route(self.id, cmds, end, rw.atomic);
            for step in steps {
                match step {
                    cluster::Step::Cmd(c) => {
                        self.pending_bytes += c.resp_len();
                        self.pending.push((db, c));
                    }
                    cluster::Step::Refused(c, rule) => {
                        self.shared.stats[self.id.0 as usize]
                            .skipped
                            .fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "{}: {} {} not applied on the cluster (rule {rule}, \
                             docs/cluster-commands.md)",
                            self.id,
                            escape_bytes(c.name()),
                            c.get(1).map(escape_bytes).unwrap_or_default()
                        );
                    }
                    cluster::Step::Transfer {
                        t,
                        cmd,
                        mark,
                        finish,
                    } => self.transfer(&t, &cmd, mark, finish)?,
                }
            }
        } else {
            for c in cmds {
                self.pending_bytes += c.resp_len();
                self.pending.push((db, c));
            }
        }
        // An entry with nothing to write (PING, skipped) still moves the position: the next
        // flush sends at least the marker.
        let _ = next;
        if self.pending.len() >= self.batch_commands || self.pending_bytes >= self.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Ships the pending commands as one batch (journal batches carry the flow's `next`).
    fn flush(&mut self) -> Result<(), FlowFailure> {
        let next = self.counter.next();
        let journal = self.phase != Phase::Snapshot;
        // Inside a pre-v1.21 atomic group every position is past commands that wait in the
        // rewriter for the EXEC: a batch marked with it would let a resume skip them. Nothing
        // is sent until the group closes (a stop drops the pending commands with their
        // unclaimed position: the resume receives them again).
        if journal && self.group_open {
            return Ok(());
        }
        if self.pending.is_empty() && (!journal || next <= self.last_sent_next) {
            return Ok(());
        }
        // The next batch is likely as long as this one: start it at that capacity instead of
        // growing it by doubling (a realloc and a copy each time).
        let cap = self.pending.len();
        let cmds = std::mem::replace(&mut self.pending, Vec::with_capacity(cap));
        self.pending_bytes = 0;
        let kind = if journal {
            self.last_sent_next = next;
            BatchKind::Journal { next }
        } else {
            BatchKind::Plain
        };
        self.send(Batch {
            flow: self.id,
            cmds,
            kind,
        })
    }

    /// Sends a batch; while the writer's channel is full, keeps ACKing and gives up cleanly
    /// after the stall limit (the master must never wait on us for long, §5.2).
    fn send(&mut self, batch: Batch) -> Result<(), FlowFailure> {
        if self.cluster.is_some() {
            return self.send_cluster(batch);
        }
        let tx = self.tx.clone();
        self.send_on(&tx, batch)
    }

    /// Cluster: splits the batch into node parts grouped per slot (journal groups commit their
    /// slot marker), tracked so the flow's position moves once every node acknowledged. When
    /// the slot map changed, first waits until everything sent is acknowledged (the fence:
    /// nothing sent by the new map can overtake what an old owner still holds).
    fn send_cluster(&mut self, batch: Batch) -> Result<(), FlowFailure> {
        let next = match batch.kind {
            BatchKind::Journal { next } => Some(next),
            _ => None,
        };
        if self.cluster.as_ref().is_some_and(|c| c.outdated()) {
            self.drain_cluster("a topology change")?;
            if let Some(c) = self.cluster.as_mut() {
                c.reload();
            }
            log::debug!("{}: routing by the new slot map", self.id);
        }
        let Some(cl) = self.cluster.as_mut() else {
            return Ok(());
        };
        let (parts, wait) = cl.split(self.id, batch.cmds, next);
        if wait {
            // Per-key order through a slot migration (`FlowRouting::split`).
            self.drain_cluster("a write of a key of an unacknowledged several-key group")?;
        }
        let Some(cl) = self.cluster.as_ref() else {
            return Ok(());
        };
        let ticket = cl.ticket(self.id, parts.len(), next);
        for (tx, cmds, groups) in parts {
            self.send_on(
                &tx,
                Batch {
                    flow: self.id,
                    cmds,
                    kind: BatchKind::Tracked {
                        groups,
                        ticket: ticket.clone(),
                    },
                },
            )?;
        }
        Ok(())
    }

    /// Cluster: a cross-slot `RENAME`/`RENAMENX`/`COPY` as a read-then-write transfer, after
    /// everything the flow sent before it is applied (`route::split::Transfer::run`); its
    /// steps commit the slot markers at `mark`; `finish` completes one a previous session
    /// left half done (`cluster::Step::Transfer`).
    fn transfer(
        &mut self,
        t: &crate::route::split::Transfer,
        cmd: &Cmd,
        mark: Option<Lsn>,
        finish: bool,
    ) -> Result<(), FlowFailure> {
        // The pending commands come before it. Their position is the transfer's own entry
        // (`next - 1`): everything before that entry is in them or was sent already. (Commands
        // of a pre-v1.21 atomic group that precede the transfer inside the same entry are
        // marked with that position too, so a crash right here would apply them again.)
        let cmds = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if !cmds.is_empty() {
            let kind = if self.phase == Phase::Snapshot {
                BatchKind::Plain
            } else {
                let at = Lsn(self.counter.next().0.saturating_sub(1)).max(self.last_sent_next);
                self.last_sent_next = at;
                BatchKind::Journal { next: at }
            };
            self.send(Batch {
                flow: self.id,
                cmds,
                kind,
            })?;
        }
        self.drain_cluster("a cross-slot transfer")?;
        let Some(cl) = self.cluster.as_ref() else {
            return Ok(());
        };
        let outcome = cl
            .transfer(self.id, t, mark, finish)
            .map_err(|e| self.fail(format!("{}: {cmd:?} across slots: {e}", self.id)))?;
        if finish {
            log::info!(
                "{}: {cmd:?} across slots: completed the source step a previous session left \
                 undone (its destination step was committed): {outcome:?}",
                self.id
            );
        }
        if let Some(cl) = self.cluster.as_mut() {
            cl.transfers += 1;
            if cl.transfers == 1 {
                log::info!(
                    "{}: a cross-slot {} ran as single-slot DUMP/RESTORE/DEL (every cross-slot \
                     RENAME/RENAMENX/COPY does; logged once per flow): {outcome:?}",
                    self.id,
                    escape_bytes(cmd.name())
                );
            }
        }
        log::debug!("{}: {cmd:?} across slots: {outcome:?}", self.id);
        Ok(())
    }

    /// Cluster: waits until every batch the flow sent is acknowledged by every node.
    fn drain_cluster(&mut self, why: &str) -> Result<(), FlowFailure> {
        let started = Instant::now();
        while self
            .cluster
            .as_ref()
            .is_some_and(|c| c.in_flight(self.id) > 0)
        {
            self.maybe_ack()?;
            if self.shared.abort.load(Ordering::SeqCst) {
                return Err(self.fail(format!("{}: session aborted", self.id)));
            }
            if started.elapsed() > self.stall_limit {
                return Err(self.fail(format!(
                    "{}: batches sent before {why} not acknowledged within {:?}",
                    self.id, self.stall_limit
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Sends a batch on `tx`; while the writer's channel is full, keeps ACKing and gives up
    /// cleanly after the stall limit.
    fn send_on(&mut self, tx: &Sender<Batch>, batch: Batch) -> Result<(), FlowFailure> {
        let started = Instant::now();
        let mut b = batch;
        loop {
            match tx.send_timeout(b, Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Disconnected(_)) => {
                    return Err(self.fail(format!("{}: the target writer stopped", self.id)))
                }
                Err(SendTimeoutError::Timeout(x)) => {
                    b = x;
                    self.maybe_ack()?;
                    if started.elapsed() > self.stall_limit {
                        return Err(self.fail(stalled(self.id, self.stall_limit)));
                    }
                    if self.shared.abort.load(Ordering::SeqCst) {
                        return Err(self.fail(format!("{}: session aborted", self.id)));
                    }
                }
            }
        }
    }

    /// FLUSHALL/FLUSHDB: ship what came before, hand the command to the coordinator, wait
    /// until it was applied once for every flow (§4.6).
    fn barrier(&mut self, txid: u64, lsn: Lsn, rw: Rewritten) -> Result<(), FlowFailure> {
        // Everything before the flush: position = the flush's own LSN.
        let cmds = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if !cmds.is_empty() || lsn > self.last_sent_next {
            self.send(Batch {
                flow: self.id,
                cmds,
                kind: BatchKind::Journal { next: lsn },
            })?;
        }
        self.last_sent_next = self.counter.next();
        let (db, cmds) = self
            .databases
            .apply(rw.db, rw.cmds)
            .map_err(|e| self.fail(format!("{}: {e}", self.id)))?;
        let cmd = cmds
            .into_iter()
            .next()
            .unwrap_or_else(|| Cmd::new("FLUSHALL"));
        if self
            .ev
            .send(Event::Barrier {
                flow: self.id,
                txid,
                lsn,
                db,
                cmd,
            })
            .is_err()
        {
            return Err(self.fail(format!("{}: the coordinator stopped", self.id)));
        }
        let started = Instant::now();
        loop {
            match self.release.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(self.fail(format!("{}: the coordinator stopped", self.id)))
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.maybe_ack()?;
                    if self.shared.stopping() {
                        return Err(self.fail(format!(
                            "{}: stopped while waiting at the FLUSH barrier (txid {txid})",
                            self.id
                        )));
                    }
                    if started.elapsed() > self.stall_limit {
                        return Err(self.fail(format!(
                            "{}: FLUSH barrier txid {txid} not reached by every flow within {:?}",
                            self.id, self.stall_limit
                        )));
                    }
                }
            }
        }
    }

    /// `REPLCONF ACK <applied next>` (§5.1): when the applied position moved (throttled),
    /// else once a second; only in stable sync, after `DFLY STARTSTABLE` was answered.
    fn maybe_ack(&mut self) -> Result<(), FlowFailure> {
        if self.phase != Phase::Stable || !self.shared.stable_started.load(Ordering::SeqCst) {
            return Ok(());
        }
        let applied = self.shared.applied.get(self.id);
        if applied.0 == 0 {
            return Ok(());
        }
        let due = match self.last_ack {
            None => true,
            // Dragonfly's cadence (§5.1): after 1024 applied entries, else at most every
            // 100 ms while the position moves, and once a second when idle.
            Some((t, v)) => {
                (v != applied
                    && (t.elapsed() >= Duration::from_millis(100) || applied.0 >= v.0 + 1024))
                    || t.elapsed() >= Duration::from_secs(1)
            }
        };
        if due {
            self.reader.ack(applied).map_err(|e| self.fail(e))?;
            self.last_ack = Some((Instant::now(), applied));
        }
        Ok(())
    }
}

/// The target took no batch for `limit` (docs/troubleshooting.md `target-stall`).
pub(crate) fn stalled(who: impl fmt::Display, limit: Duration) -> String {
    format!(
        "{who}: the target has not taken a batch for {limit:?} (too slow or paused); stopping \
         before the master's replication timeout"
    )
}

fn is_flush(cmd: &Cmd) -> bool {
    let n = cmd.name();
    n.eq_ignore_ascii_case(b"FLUSHALL") || n.eq_ignore_ascii_case(b"FLUSHDB")
}

/// A FLUSH being gathered across flows.
struct PendingGlobal {
    txid: u64,
    arrived: BTreeMap<u32, Lsn>,
    db: DbIndex,
    cmd: Cmd,
    /// Sent to the writer; waiting for it to be applied.
    sent: bool,
}

struct Coordinator {
    cfg: Config,
    opts: Options,
    shared: Arc<Shared>,
    /// The status model (lag in time, rates, checkpoint time).
    ops: Arc<ops::Stats>,
    master: Option<Master>,
    hello: source::Hello,
    store: Option<Store>,
    n: u32,
    partial: bool,
    old_procedure: bool,
    /// Per flow: the LSN its stable phase started at (None = still in full sync).
    stable_at: Vec<Option<Lsn>>,
    fullsync_end: u32,
    release_txs: Vec<Sender<()>>,
    global_tx: Option<Sender<Batch>>,
    started: Instant,
    /// Writer threads started with the session.
    writers: usize,
    /// Cluster targets: topology refresh, low-water positions, global commands.
    cluster: Option<cluster::CoordCluster>,
}

impl Coordinator {
    fn run(mut self, events: Receiver<Event>) -> (Result<(), SessionError>, Option<Master>) {
        let mut r = self.main_loop(&events);
        if let Some(c) = self.cluster.as_mut() {
            c.close();
            if !c.join_late() && r.is_ok() {
                r = Err(SessionError::fatal(
                    "thread(s) panicked: a writer of a master added during the session",
                ));
            }
        }
        // Let everything end: abort flows, drop the global sender, drain events until every
        // thread reported.
        (r, self.master.take())
    }

    fn main_loop(&mut self, events: &Receiver<Event>) -> Result<(), SessionError> {
        let mut result: Result<(), SessionError> = Ok(());
        fn abort(this: &mut Coordinator, e: SessionError, result: &mut Result<(), SessionError>) {
            if result.is_ok() {
                *result = Err(e);
            }
            this.shared.abort.store(true, Ordering::SeqCst);
        }
        if !self.partial || self.old_procedure {
            let t = self.cfg.replica.flow_timeout;
            if let Some(m) = self.master.as_mut() {
                if let Err(e) = m.sync(t) {
                    abort(self, SessionError::retry(e.to_string()), &mut result);
                }
            }
            if result.is_ok() {
                log::info!(
                    "{}: {} ({} flows)",
                    if self.partial {
                        "partial sync (≤ v1.34 procedure)"
                    } else {
                        "full sync started"
                    },
                    self.hello.sync_id,
                    self.n
                );
            }
        } else if let Some(m) = self.master.as_mut() {
            // v1.35+ partial sync: no DFLY SYNC (§6.3).
            match m.start_stable(self.cfg.replica.flow_timeout) {
                Ok(()) => {
                    self.shared.stable_started.store(true, Ordering::SeqCst);
                    log::info!("partial sync: stable sync resumed ({} flows)", self.n)
                }
                Err(e) => abort(self, SessionError::retry(e.to_string()), &mut result),
            }
        }
        let tick = crossbeam_channel::tick(Duration::from_millis(100));
        let started = self.started;
        let mut last_save = Instant::now();
        let mut last_progress = Instant::now();
        let mut flows_left = self.n;
        let mut writers_left = self.writers;
        let mut global: Option<PendingGlobal> = None;
        let mut stable_logged = false;
        loop {
            if flows_left == 0 {
                // No flow sends any more: let the writers drain and end.
                self.global_tx = None;
                if let Some(c) = &self.cluster {
                    c.close();
                }
            }
            if flows_left == 0 && writers_left == 0 {
                break;
            }
            select! {
                recv(events) -> ev => {
                    let Ok(ev) = ev else { break };
                    match ev {
                        Event::FullSyncEnd(f) => {
                            self.fullsync_end += 1;
                            log::info!("{f}: snapshot complete ({}/{})", self.fullsync_end, self.n);
                            if self.fullsync_end == self.n && result.is_ok() {
                                let t = self.cfg.replica.flow_timeout;
                                if let Some(m) = self.master.as_mut() {
                                    match m.start_stable(t) {
                                        Ok(()) => {
                                            self.shared.stable_started.store(true, Ordering::SeqCst);
                                            log::info!(
                                            "every flow finished its snapshot in {:.1}s: DFLY STARTSTABLE sent",
                                            started.elapsed().as_secs_f64()
                                        );
                                        }
                                        Err(e) => abort(self, SessionError::retry(e.to_string()), &mut result),
                                    }
                                }
                            }
                        }
                        Event::Stable(f, next) => {
                            if let Some(s) = self.stable_at.get_mut(f.0 as usize) {
                                *s = Some(next);
                            }
                            log::debug!("{f}: journal from lsn {}", next.0);
                        }
                        Event::Barrier { flow, txid, lsn, db, cmd } => {
                            let g = global.get_or_insert_with(|| PendingGlobal {
                                txid,
                                arrived: BTreeMap::new(),
                                db,
                                cmd,
                                sent: false,
                            });
                            if g.txid != txid {
                                abort(self, SessionError::full(format!(
                                    "{flow}: FLUSH txid {txid} while txid {} is pending", g.txid
                                )), &mut result);
                            } else {
                                g.arrived.insert(flow.0, lsn);
                            }
                        }
                        Event::FlowEnded(f, failure) => {
                            // (A flow ends without a failure only once the session is stopping:
                            // `main_loop` returns `Ok` nowhere else.)
                            log::debug!("{f}: thread ended");
                            flows_left -= 1;
                            if let Some(fl) = failure {
                                if !self.shared.stopping() {
                                    let e = SessionError { force_full: fl.force_full, ..SessionError::retry(fl.msg) };
                                    abort(self, e, &mut result);
                                }
                            }
                        }
                        Event::WriterEnded(name, err) => {
                            log::debug!("{name}: thread ended");
                            // (A writer ends without an error only once every sender is gone:
                            // the flows' and the coordinator's, dropped when the flows ended. A
                            // flow whose writer is gone fails its next send and says so.)
                            writers_left = writers_left.saturating_sub(1);
                            if let Some(e) = err {
                                let se = SessionError {
                                    retryable: e.retryable,
                                    ..SessionError::retry(e.to_string())
                                };
                                abort(self, se, &mut result);
                            }
                        }
                    }
                }
                recv(tick) -> _ => {}
            }
            if let Some(g) = global.as_mut() {
                if let Err(e) = self.advance_global(g) {
                    abort(self, e, &mut result);
                    global = None;
                } else if g.sent && g.arrived.is_empty() {
                    global = None;
                }
            }
            if flows_left > 0 && result.is_ok() {
                if let Err(e) = self.cluster_tick(&mut writers_left, false) {
                    abort(self, e, &mut result);
                }
            }
            if !stable_logged && self.stable_at.iter().all(Option::is_some) {
                stable_logged = true;
                log::info!("stable sync: following the journal on {} flow(s)", self.n);
            }
            #[cfg(debug_assertions)]
            if stable_logged
                && (0..self.n).any(|i| {
                    self.stable_at[i as usize]
                        .is_some_and(|s| self.shared.applied.get(FlowId(i)) > s)
                })
            {
                failpoint::panic_if("coordinator-panic", None);
            }
            if last_save.elapsed() >= self.cfg.checkpoint.interval {
                last_save = Instant::now();
                self.save();
            }
            self.ops.tick();
            if last_progress.elapsed() >= self.opts.progress_interval {
                last_progress = Instant::now();
                log::info!(
                    "{}",
                    ops::status::StatusReport::live(&self.ops, None).progress_line()
                );
            }
        }
        self.save();
        if result.is_ok() {
            // The final low-water positions: a restart resumes from exactly here.
            if let Err(e) = self.cluster_tick(&mut writers_left, true) {
                log::warn!("{}", e.msg);
            }
        }
        result
    }

    /// Cluster: refreshes the topology when due (new masters get writers; `writers_left`
    /// counts them) and writes the low-water positions once every flow is in stable sync.
    fn cluster_tick(&mut self, writers_left: &mut usize, last: bool) -> Result<(), SessionError> {
        let positions = self.stable_positions();
        let Some(c) = self.cluster.as_mut() else {
            return Ok(());
        };
        if !last {
            *writers_left += c.maybe_refresh()?;
        }
        c.maybe_lowwater(positions, last)
            .map_err(|e| SessionError::retry(format!("target: {e}")))
    }

    /// Every flow's applied position, once every flow's snapshot is acknowledged.
    fn stable_positions(&self) -> Option<Vec<Lsn>> {
        (0..self.n)
            .map(|i| {
                let applied = self.shared.applied.get(FlowId(i));
                self.stable_at[i as usize]
                    .filter(|s| applied >= *s && applied.0 > 0)
                    .map(|_| applied)
            })
            .collect()
    }

    /// Runs the FLUSH barrier: once every flow arrived and everything before it is applied,
    /// send the command once (with every flow's marker), then release the flows when it is
    /// applied.
    fn advance_global(&mut self, g: &mut PendingGlobal) -> Result<(), SessionError> {
        if g.arrived.len() < self.n as usize {
            return Ok(());
        }
        let applied = &self.shared.applied;
        if self.cluster.is_some() {
            return self.advance_global_cluster(g);
        }
        if !g.sent {
            let ready = g.arrived.iter().all(|(f, l)| applied.get(FlowId(*f)) >= *l);
            if !ready {
                return Ok(());
            }
            let nexts: Vec<(FlowId, Lsn)> = g
                .arrived
                .iter()
                .map(|(f, l)| (FlowId(*f), Lsn(l.0 + 1)))
                .collect();
            let batch = Batch {
                flow: FlowId(0),
                cmds: vec![(g.db, g.cmd.clone())],
                kind: BatchKind::Global { nexts },
            };
            // Every flow ended (a stop, or a failure reported first): the barrier is moot; the
            // markers stay before the FLUSH, so the next session replays it.
            let Some(tx) = self.global_tx.as_ref() else {
                return Ok(());
            };
            match tx.send_timeout(batch, self.opts.stall_limit) {
                Ok(()) => {}
                // The writer ended; its own report (queued before its channel closed) says why.
                Err(SendTimeoutError::Disconnected(_)) => return Ok(()),
                Err(SendTimeoutError::Timeout(_)) => {
                    return Err(SessionError::retry(stalled(
                        "the FLUSH barrier",
                        self.opts.stall_limit,
                    )))
                }
            }
            log::info!(
                "{} (txid {}) reached on every flow: applied once",
                escape_bytes(g.cmd.name()),
                g.txid
            );
            g.sent = true;
            return Ok(());
        }
        let done = g.arrived.iter().all(|(f, l)| applied.get(FlowId(*f)) > *l);
        if done {
            for f in g.arrived.keys() {
                if let Some(tx) = self.release_txs.get(*f as usize) {
                    let _ = tx.try_send(());
                }
            }
            g.arrived.clear();
        }
        Ok(())
    }

    /// The FLUSH barrier on a cluster: once everything before it is applied, the command runs
    /// on every master; once every master acknowledged it, the low-water positions move past it
    /// (the flush wiped the slot markers: a resume must not start before it), then the flows
    /// are released.
    fn advance_global_cluster(&mut self, g: &mut PendingGlobal) -> Result<(), SessionError> {
        let applied = self.shared.applied.clone();
        let Some(c) = self.cluster.as_mut() else {
            return Ok(());
        };
        if !g.sent {
            let ready = g.arrived.iter().all(|(f, l)| applied.get(FlowId(*f)) >= *l);
            if !ready {
                return Ok(());
            }
            c.send_global(&g.cmd, self.opts.stall_limit)?;
            log::info!(
                "{} (txid {}) reached on every flow: applied once on every master",
                escape_bytes(g.cmd.name()),
                g.txid
            );
            g.sent = true;
            return Ok(());
        }
        if !c.global_done() {
            return Ok(());
        }
        let nexts: Vec<Lsn> = (0..self.n)
            .map(|i| {
                let after = g.arrived.get(&i).map_or(Lsn(0), |l| Lsn(l.0 + 1));
                after.max(applied.get(FlowId(i)))
            })
            .collect();
        c.maybe_lowwater(Some(nexts.clone()), true)
            .map_err(|e| SessionError::retry(format!("target: {e}")))?;
        for (i, l) in nexts.iter().enumerate() {
            applied.advance(FlowId(i as u32), *l);
        }
        for f in g.arrived.keys() {
            if let Some(tx) = self.release_txs.get(*f as usize) {
                let _ = tx.try_send(());
            }
        }
        g.arrived.clear();
        Ok(())
    }

    /// The checkpoint: every flow's acknowledged position; `stable` only once the marker
    /// batch that ends its snapshot is acknowledged.
    fn checkpoint(&self) -> Checkpoint {
        let flows = (0..self.n)
            .map(|i| {
                let applied = self.shared.applied.get(FlowId(i));
                let stable =
                    self.stable_at[i as usize].is_some_and(|s| applied >= s && applied.0 > 0);
                FlowCheckpoint {
                    flow: i,
                    next_lsn: applied.0,
                    state: if stable {
                        FlowState::Stable
                    } else {
                        FlowState::FullSync
                    },
                }
            })
            .collect();
        Checkpoint {
            format_version: checkpoint::FORMAT_VERSION,
            master_replid: self.hello.replid.clone(),
            sync_id: self.hello.sync_id.clone(),
            flow_count: self.n,
            master_version: self.hello.version_text.clone(),
            flows,
            written_at_ms: checkpoint::now_ms(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn save(&self) {
        let Some(store) = &self.store else { return };
        let cp = self.checkpoint();
        match store.save(&cp) {
            Ok(()) => {
                self.ops.checkpoint_saved(cp.written_at_ms);
                log::debug!(
                    "checkpoint saved: {:?}",
                    cp.flows.iter().map(|f| f.next_lsn).collect::<Vec<_>>()
                )
            }
            Err(e) => log::error!("{e}"),
        }
    }
}
