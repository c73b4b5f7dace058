//! Operating the engine: the live status model the engine updates, and what reads it (the
//! Prometheus/JSON endpoint in [`http`], the metric names in [`metrics`], the serialisable
//! report in [`status`] that `df2redis-sync status` and the progress display use).
//!
//! The engine writes plain atomics and never waits on a reader:
//!
//! * [`Stats`] lives as long as the process (it outlives reconnects): engine state, session
//!   count, last failure, checkpoint time, the per-node [`WriterStats`] (cumulative).
//! * [`Session`] is replaced at each handshake: the master's identity and key count, one
//!   [`FlowStats`] per flow (phase, bytes, keys, entries, received LSN, skips) and the writers'
//!   shared [`Applied`] positions.
//! * The coordinator calls [`Stats::tick`] on its 100 ms tick: it measures the lag in time and
//!   the rates, so every reader sees the same figures whoever asks and however often.
//!
//! **Lag in milliseconds.** The journal carries no timestamps (protocol §4), so the lag in time
//! is measured on this side: the age of the oldest journal entry that was received but whose
//! batch the target has not acknowledged yet. Each tick records `(received next LSN, now)` when
//! it moved; samples at or below the applied position are dropped; the lag is the age of the
//! first sample above it (resolution: one tick). It is 0 when everything received is applied,
//! and it does not grow under a steady stream that the target keeps up with.

pub mod http;
pub mod metrics;
pub mod status;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::model::FlowId;
use crate::target::writer::Applied;

/// Where a flow (or the whole engine) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Connecting to the master, handshake, opening flows (or waiting to reconnect).
    Handshake = 0,
    /// Receiving and applying the full-sync snapshot.
    FullSync = 1,
    /// Following the journal.
    Stable = 2,
    /// Not replicating (stopped, or the session ended).
    Stopped = 3,
}

impl Phase {
    /// The name used in JSON, metrics labels and the status command.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FullSync => "full_sync",
            Phase::Stable => "stable",
            Phase::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Handshake,
            1 => Phase::FullSync,
            2 => Phase::Stable,
            _ => Phase::Stopped,
        }
    }

    /// Parses [`Phase::as_str`].
    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Handshake,
            Phase::FullSync,
            Phase::Stable,
            Phase::Stopped,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A phase that threads set and readers load.
#[derive(Debug)]
pub struct AtomicPhase(AtomicU8);

impl AtomicPhase {
    /// Starts at `p`.
    pub fn new(p: Phase) -> AtomicPhase {
        AtomicPhase(AtomicU8::new(p as u8))
    }
    /// Sets it.
    pub fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::Relaxed);
    }
    /// Reads it.
    pub fn get(&self) -> Phase {
        Phase::from_u8(self.0.load(Ordering::Relaxed))
    }
}

/// Per-flow counters, written by the flow thread (one writer per field, relaxed atomics).
#[derive(Debug)]
pub struct FlowStats {
    /// Full sync, stable or stopped.
    pub phase: AtomicPhase,
    /// Bytes received on the flow connection.
    pub bytes: AtomicU64,
    /// Snapshot keys decoded (first pieces).
    pub keys: AtomicU64,
    /// Journal entries decoded.
    pub entries: AtomicU64,
    /// The flow's received `next` LSN (stable sync), for the lag.
    pub received_next: AtomicU64,
    /// Entries or keys not written (see the log for why).
    pub skipped: AtomicU64,
    /// The flow ended with an error (this session).
    pub errors: AtomicU64,
    /// Lag in ms, as measured by [`Stats::tick`].
    pub lag_ms: AtomicU64,
}

impl Default for FlowStats {
    fn default() -> FlowStats {
        FlowStats {
            phase: AtomicPhase::new(Phase::Handshake),
            bytes: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            received_next: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
        }
    }
}

/// Per target connection counters, cumulative over sessions (keyed by the writer's name).
#[derive(Debug)]
pub struct WriterStats {
    /// `host:port` of the node (plus `#k` with several connections per node).
    pub node: String,
    /// Commands the node acknowledged.
    pub ops: AtomicU64,
    /// Commands the node refused (skipped and counted, see the log).
    pub errors: AtomicU64,
    /// Commands sent again (cluster: after TRYAGAIN / a moved slot).
    pub retries: AtomicU64,
    /// MOVED / ASK answers followed (cluster).
    pub redirects: AtomicU64,
    /// Batches sent and not fully answered (gauge).
    pub inflight: AtomicU64,
    /// Batches waiting in the writer's channel (gauge).
    pub queued: AtomicU64,
    /// The channel's capacity.
    pub capacity: AtomicU64,
    /// RESP bytes written to the node.
    pub bytes: AtomicU64,
}

impl WriterStats {
    /// Zeroed counters for `node`.
    pub fn new(node: &str) -> WriterStats {
        WriterStats {
            node: node.to_string(),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

/// What the handshake told about the master.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// `master_replid`.
    pub replid: String,
    /// `SYNC<k>`.
    pub sync_id: String,
    /// `dragonfly_version`, when known.
    pub version: Option<String>,
    /// Keys on the master at the handshake (`INFO KEYSPACE`), for the full-sync ETA.
    pub master_keys: Option<u64>,
    /// The session resumed the journal (no snapshot).
    pub partial: bool,
}

/// One replication session's live figures.
#[derive(Debug)]
pub struct Session {
    /// The master.
    pub info: SessionInfo,
    /// Per flow, indexed by flow id.
    pub flows: Arc<[FlowStats]>,
    /// Applied positions and command counts (written by the writers).
    pub applied: Arc<Applied>,
    /// When the session started.
    pub started: Instant,
    /// When every flow reached stable sync (full sync duration).
    pub stable_since: Mutex<Option<Instant>>,
}

/// Rates over the last second or more (per flow: bytes, keys, entries; applied commands).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rates {
    pub flows: Vec<[f64; 3]>,
    pub applied_per_s: f64,
    pub writers: BTreeMap<String, f64>,
}

#[derive(Debug, Default)]
struct RateSample {
    at: Option<Instant>,
    flows: Vec<[u64; 3]>,
    applied: u64,
    writers: BTreeMap<String, u64>,
}

/// Measures the age of the oldest received-but-unapplied entry of one flow (module doc).
#[derive(Debug, Default)]
struct LagTracker {
    samples: VecDeque<(u64, Instant)>,
}

/// Samples kept per flow: 10 minutes of 100 ms ticks; beyond, the newest sample is moved up
/// (which can only overstate the lag, never hide it).
const LAG_SAMPLES: usize = 6000;

impl LagTracker {
    fn update(&mut self, received: u64, applied: u64, now: Instant) -> Duration {
        if self.samples.back().map_or(true, |b| b.0 < received) {
            if self.samples.len() >= LAG_SAMPLES {
                if let Some(b) = self.samples.back_mut() {
                    b.0 = received;
                }
            } else {
                self.samples.push_back((received, now));
            }
        }
        while self.samples.front().is_some_and(|f| f.0 <= applied) {
            self.samples.pop_front();
        }
        self.samples
            .front()
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f.1))
    }
}

/// The engine's live state, shared (in an `Arc`) by the engine, the HTTP endpoint and the
/// progress display; lives as long as the process.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    state: AtomicPhase,
    sessions: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    session: Mutex<Option<Arc<Session>>>,
    writers: Mutex<BTreeMap<String, Arc<WriterStats>>>,
    /// Wall-clock ms of the last checkpoint saved by this process (0 = none).
    checkpoint_ms: AtomicU64,
    lag: Mutex<Vec<LagTracker>>,
    sample: Mutex<RateSample>,
    rates: Mutex<Rates>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    /// A fresh model: handshake, no session.
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            state: AtomicPhase::new(Phase::Handshake),
            sessions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            session: Mutex::new(None),
            writers: Mutex::new(BTreeMap::new()),
            checkpoint_ms: AtomicU64::new(0),
            lag: Mutex::new(Vec::new()),
            sample: Mutex::new(RateSample::default()),
            rates: Mutex::new(Rates::default()),
        }
    }

    /// The engine is connecting (or waiting to reconnect).
    pub fn connecting(&self) {
        self.state.set(Phase::Handshake);
    }

    /// Replication ended for good.
    pub fn stopped(&self) {
        self.state.set(Phase::Stopped);
        if let Some(s) = self.session() {
            for f in s.flows.iter() {
                f.phase.set(Phase::Stopped);
            }
        }
        for w in self.writers.lock().values() {
            w.inflight.store(0, Ordering::Relaxed);
            w.queued.store(0, Ordering::Relaxed);
        }
    }

    /// A session ended with `msg`; the engine may retry.
    pub fn session_failed(&self, msg: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(msg.to_string());
        self.connecting();
    }

    /// A session got through the handshake: its flows start in `phase`.
    pub fn begin_session(
        &self,
        info: SessionInfo,
        flows: u32,
        applied: Arc<Applied>,
    ) -> Arc<Session> {
        let phase = if info.partial {
            Phase::Stable
        } else {
            Phase::FullSync
        };
        let flows: Arc<[FlowStats]> = (0..flows).map(|_| FlowStats::default()).collect();
        for f in flows.iter() {
            f.phase.set(phase);
        }
        let s = Arc::new(Session {
            info,
            flows,
            applied,
            started: Instant::now(),
            stable_since: Mutex::new(None),
        });
        self.sessions.fetch_add(1, Ordering::Relaxed);
        *self.lag.lock() = Vec::new();
        *self.sample.lock() = RateSample::default();
        *self.rates.lock() = Rates::default();
        *self.session.lock() = Some(s.clone());
        self.state.set(phase);
        s
    }

    /// The current (or last) session.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.session.lock().clone()
    }

    /// The counters of writer `name` (created on first use, kept across sessions).
    pub fn writer(&self, name: &str) -> Arc<WriterStats> {
        self.writers
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(WriterStats::new(name)))
            .clone()
    }

    /// Every writer's counters, by name.
    pub fn writers(&self) -> Vec<Arc<WriterStats>> {
        self.writers.lock().values().cloned().collect()
    }

    /// A checkpoint was saved at `ms` (wall clock).
    pub fn checkpoint_saved(&self, ms: u64) {
        self.checkpoint_ms.store(ms, Ordering::Relaxed);
    }

    /// Wall-clock ms of the last checkpoint this process saved.
    pub fn checkpoint_ms(&self) -> Option<u64> {
        Some(self.checkpoint_ms.load(Ordering::Relaxed)).filter(|m| *m > 0)
    }

    /// The engine state: handshake / stopped, else the slowest flow's phase.
    pub fn state(&self) -> Phase {
        match self.state.get() {
            Phase::Handshake => Phase::Handshake,
            Phase::Stopped => Phase::Stopped,
            _ => match self.session() {
                Some(s) if s.flows.iter().all(|f| f.phase.get() == Phase::Stable) => Phase::Stable,
                Some(s)
                    if s.flows
                        .iter()
                        .any(|f| matches!(f.phase.get(), Phase::FullSync | Phase::Handshake)) =>
                {
                    Phase::FullSync
                }
                // Some flows stopped, none loading: the session is ending.
                Some(_) => Phase::Stopped,
                None => Phase::Handshake,
            },
        }
    }

    /// Seconds since the process started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sessions begun, sessions failed, the last failure.
    pub fn session_counts(&self) -> (u64, u64, Option<String>) {
        (
            self.sessions.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.last_error.lock().clone(),
        )
    }

    /// Called by the coordinator on its tick: lag in time per flow, and the rates once a
    /// second.
    pub fn tick(&self) {
        let Some(s) = self.session() else { return };
        let now = Instant::now();
        {
            let mut lag = self.lag.lock();
            if lag.len() != s.flows.len() {
                *lag = (0..s.flows.len()).map(|_| LagTracker::default()).collect();
            }
            for (i, (f, t)) in s.flows.iter().zip(lag.iter_mut()).enumerate() {
                let applied = s.applied.get(FlowId(i as u32)).0;
                let ms = if f.phase.get() == Phase::Stable {
                    let recv = f.received_next.load(Ordering::Relaxed);
                    t.update(recv, applied, now).as_millis() as u64
                } else {
                    0
                };
                f.lag_ms.store(ms, Ordering::Relaxed);
            }
        }
        if s.flows.iter().all(|f| f.phase.get() == Phase::Stable) {
            let mut st = s.stable_since.lock();
            if st.is_none() {
                *st = Some(now);
            }
        }
        let mut sample = self.sample.lock();
        let flows: Vec<[u64; 3]> = s
            .flows
            .iter()
            .map(|f| {
                [
                    f.bytes.load(Ordering::Relaxed),
                    f.keys.load(Ordering::Relaxed),
                    f.entries.load(Ordering::Relaxed),
                ]
            })
            .collect();
        let applied = s.applied.commands.load(Ordering::Relaxed);
        let writers: BTreeMap<String, u64> = self
            .writers()
            .iter()
            .map(|w| (w.node.clone(), w.ops.load(Ordering::Relaxed)))
            .collect();
        let Some(at) = sample.at else {
            *sample = RateSample {
                at: Some(now),
                flows,
                applied,
                writers,
            };
            return;
        };
        let secs = now.saturating_duration_since(at).as_secs_f64();
        if secs < 1.0 {
            return;
        }
        let per = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        let rates = Rates {
            flows: flows
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let o = sample.flows.get(i).copied().unwrap_or_default();
                    [per(n[0], o[0]), per(n[1], o[1]), per(n[2], o[2])]
                })
                .collect(),
            applied_per_s: per(applied, sample.applied),
            writers: writers
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        per(*v, sample.writers.get(k).copied().unwrap_or(0)),
                    )
                })
                .collect(),
        };
        *self.rates.lock() = rates;
        *sample = RateSample {
            at: Some(now),
            flows,
            applied,
            writers,
        };
    }

    pub(crate) fn rates(&self) -> Rates {
        self.rates.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lsn;

    #[test]
    fn lag_is_the_age_of_the_oldest_unapplied_entry() {
        let mut t = LagTracker::default();
        let t0 = Instant::now();
        let ms = |d: u64| t0 + Duration::from_millis(d);
        // Entries 1..10 received at t0; nothing applied yet.
        assert_eq!(t.update(10, 1, ms(0)), Duration::ZERO);
        assert_eq!(t.update(10, 1, ms(300)), Duration::from_millis(300));
        // More arrive; the oldest unapplied is still from t0.
        assert_eq!(t.update(20, 5, ms(400)), Duration::from_millis(400));
        // Everything up to 10 applied: the oldest unapplied arrived at 400.
        assert_eq!(t.update(20, 10, ms(500)), Duration::from_millis(100));
        // All applied: no lag, even though entries keep flowing steadily.
        assert_eq!(t.update(20, 20, ms(600)), Duration::ZERO);
        assert_eq!(t.update(25, 25, ms(700)), Duration::ZERO);
    }

    #[test]
    fn lag_samples_are_bounded() {
        let mut t = LagTracker::default();
        let t0 = Instant::now();
        for i in 0..(LAG_SAMPLES as u64 + 100) {
            t.update(i + 2, 1, t0 + Duration::from_millis(i));
        }
        assert!(t.samples.len() <= LAG_SAMPLES);
        // The oldest sample is kept: the lag is not understated.
        let lag = t.update(LAG_SAMPLES as u64 + 200, 1, t0 + Duration::from_secs(100));
        assert_eq!(lag, Duration::from_secs(100));
    }

    #[test]
    fn state_follows_the_flows() {
        let st = Stats::new();
        assert_eq!(st.state(), Phase::Handshake);
        let applied = Arc::new(Applied::new(&[Lsn(0), Lsn(0)]));
        let s = st.begin_session(SessionInfo::default(), 2, applied);
        assert_eq!(st.state(), Phase::FullSync);
        s.flows[0].phase.set(Phase::Stable);
        assert_eq!(st.state(), Phase::FullSync);
        s.flows[1].phase.set(Phase::Stable);
        assert_eq!(st.state(), Phase::Stable);
        // A flow stopped (shutdown or failure) while none loads: ending, not syncing.
        s.flows[1].phase.set(Phase::Stopped);
        assert_eq!(st.state(), Phase::Stopped);
        st.session_failed("x");
        assert_eq!(st.state(), Phase::Handshake);
        st.stopped();
        assert_eq!(st.state(), Phase::Stopped);
        assert_eq!(s.flows[0].phase.get(), Phase::Stopped);
    }
}
