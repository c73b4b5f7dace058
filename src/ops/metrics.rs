//! Prometheus metrics: a `prometheus-client` collector that reads the live [`Stats`] at each
//! scrape (no second set of counters to keep in step) and encodes the text exposition format.
//!
//! Every metric is listed in [`METRICS`] (name, type, labels, help); `docs/metrics.md` documents
//! each one and a test checks that the two agree. Counters get the `_total` suffix from the
//! encoder. Per-flow counters restart at 0 with each replication session (a reconnect);
//! Prometheus' `rate()` handles that as a counter reset. Per-node writer counters are kept
//! across sessions.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::status::StatusReport;
use super::{Phase, Stats};
use crate::checkpoint;

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (within a session for per-flow ones).
    Counter,
    /// A current value.
    Gauge,
}

/// One metric: name without prefix and without `_total`, kind, label, help.
pub struct Metric {
    /// Name after `df2redis_` (counters get `_total` appended on the wire).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its label (`flow`, `node`), if any.
    pub label: Option<&'static str>,
    /// HELP text.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: Kind,
    label: Option<&'static str>,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        label,
        help,
    }
}

use Kind::{Counter, Gauge};
const FLOW: Option<&str> = Some("flow");
const NODE: Option<&str> = Some("node");

/// Every metric the endpoint exports.
pub const METRICS: &[Metric] = &[
    m("up", Gauge, None, "1 while the process runs"),
    m(
        "uptime_seconds",
        Gauge,
        None,
        "Seconds since the process started",
    ),
    m(
        "state",
        Gauge,
        None,
        "Engine state: 0 handshake, 1 full sync, 2 stable, 3 stopped",
    ),
    m(
        "sessions",
        Counter,
        None,
        "Replication sessions begun (each reconnect is one more)",
    ),
    m(
        "session_failures",
        Counter,
        None,
        "Replication sessions that ended with an error",
    ),
    m(
        "flow_phase",
        Gauge,
        FLOW,
        "Flow phase: 0 handshake, 1 full sync, 2 stable, 3 stopped",
    ),
    m(
        "flow_bytes",
        Counter,
        FLOW,
        "Bytes received on the flow connection (this session)",
    ),
    m(
        "flow_keys",
        Counter,
        FLOW,
        "Snapshot keys decoded (this session)",
    ),
    m(
        "flow_entries",
        Counter,
        FLOW,
        "Journal entries decoded (this session)",
    ),
    m(
        "flow_received_lsn",
        Gauge,
        FLOW,
        "Next LSN received from the master",
    ),
    m(
        "flow_applied_lsn",
        Gauge,
        FLOW,
        "Next LSN acknowledged by the target (checkpointed, ACKed)",
    ),
    m(
        "flow_lag_lsn",
        Gauge,
        FLOW,
        "LSNs received but not yet applied",
    ),
    m(
        "flow_lag_seconds",
        Gauge,
        FLOW,
        "Age of the oldest received but unapplied journal entry",
    ),
    m(
        "flow_skipped",
        Counter,
        FLOW,
        "Keys or entries not written (see the log)",
    ),
    m(
        "flow_errors",
        Counter,
        FLOW,
        "The flow ended with an error (this session)",
    ),
    m(
        "applied_commands",
        Counter,
        None,
        "Commands acknowledged by the target (this session)",
    ),
    m(
        "refused_commands",
        Counter,
        None,
        "Commands the target refused, skipped (this session)",
    ),
    m(
        "lag_lsn",
        Gauge,
        None,
        "LSNs received but not yet applied, all flows",
    ),
    m(
        "lag_seconds",
        Gauge,
        None,
        "Largest per-flow lag in seconds",
    ),
    m(
        "writer_ops",
        Counter,
        NODE,
        "Commands acknowledged by the node",
    ),
    m("writer_errors", Counter, NODE, "Commands the node refused"),
    m(
        "writer_retries",
        Counter,
        NODE,
        "Commands sent again to the node",
    ),
    m(
        "writer_redirects",
        Counter,
        NODE,
        "MOVED/ASK redirects followed (cluster)",
    ),
    m(
        "writer_bytes",
        Counter,
        NODE,
        "RESP bytes written to the node",
    ),
    m(
        "writer_inflight_batches",
        Gauge,
        NODE,
        "Batches sent and not fully answered",
    ),
    m(
        "writer_queued_batches",
        Gauge,
        NODE,
        "Batches waiting in the writer's channel",
    ),
    m(
        "writer_channel_capacity",
        Gauge,
        NODE,
        "Capacity of the writer's channel, in batches",
    ),
    m(
        "writer_channel_fill_ratio",
        Gauge,
        NODE,
        "queued / capacity of the writer's channel",
    ),
    m(
        "full_sync_keys_done",
        Gauge,
        None,
        "Snapshot keys decoded in this session's full sync",
    ),
    m(
        "full_sync_keys_total",
        Gauge,
        None,
        "Keys on the master at the handshake (INFO KEYSPACE)",
    ),
    m(
        "full_sync_progress_ratio",
        Gauge,
        None,
        "keys_done / keys_total, 0..1 (1 once done)",
    ),
    m(
        "full_sync_eta_seconds",
        Gauge,
        None,
        "Estimated seconds left in the full sync",
    ),
    m(
        "checkpoint_timestamp_seconds",
        Gauge,
        None,
        "When this process last saved the checkpoint",
    ),
    m(
        "checkpoint_age_seconds",
        Gauge,
        None,
        "Seconds since this process last saved the checkpoint",
    ),
];

/// Prefix of every metric name.
pub const PREFIX: &str = "df2redis";

/// The collector registered in the registry: reads `stats` at each scrape.
#[derive(Debug)]
struct StatsCollector {
    stats: Arc<Stats>,
}

fn phase_num(p: &str) -> i64 {
    Phase::parse(p).map_or(3, |p| p as i64)
}

/// Values of one metric: label value (or none) → number.
type Series = Vec<(Option<String>, f64)>;

fn series(stats: &Stats, r: &StatusReport) -> Vec<(&'static Metric, Series)> {
    let flows = |f: &dyn Fn(&super::status::FlowStatus) -> f64| -> Series {
        r.flows
            .iter()
            .map(|x| (Some(x.flow.to_string()), f(x)))
            .collect()
    };
    let nodes = |f: &dyn Fn(&super::status::WriterStatus) -> f64| -> Series {
        r.writers
            .iter()
            .map(|x| (Some(x.node.clone()), f(x)))
            .collect()
    };
    let one = |v: f64| vec![(None, v)];
    let fs = r.full_sync.as_ref();
    let ck = stats.checkpoint_ms();
    METRICS
        .iter()
        .map(|mt| {
            let s: Series = match mt.name {
                "up" => one(1.0),
                "uptime_seconds" => one(stats.uptime().as_secs_f64()),
                "state" => one(phase_num(&r.state) as f64),
                "sessions" => one(r.sessions as f64),
                "session_failures" => one(r.session_failures as f64),
                "flow_phase" => flows(&|f| phase_num(&f.phase) as f64),
                "flow_bytes" => flows(&|f| f.bytes as f64),
                "flow_keys" => flows(&|f| f.keys as f64),
                "flow_entries" => flows(&|f| f.entries as f64),
                "flow_received_lsn" => flows(&|f| f.received_lsn as f64),
                "flow_applied_lsn" => flows(&|f| f.applied_lsn as f64),
                "flow_lag_lsn" => flows(&|f| f.lag_lsn as f64),
                "flow_lag_seconds" => flows(&|f| f.lag_ms as f64 / 1000.0),
                "flow_skipped" => flows(&|f| f.skipped as f64),
                "flow_errors" => flows(&|f| f.errors as f64),
                "applied_commands" => one(r.totals.applied_commands as f64),
                "refused_commands" => one(r.totals.refused as f64),
                "lag_lsn" => one(r.totals.lag_lsn as f64),
                "lag_seconds" => one(r.totals.lag_ms as f64 / 1000.0),
                "writer_ops" => nodes(&|w| w.ops as f64),
                "writer_errors" => nodes(&|w| w.errors as f64),
                "writer_retries" => nodes(&|w| w.retries as f64),
                "writer_redirects" => nodes(&|w| w.redirects as f64),
                "writer_bytes" => nodes(&|w| w.bytes as f64),
                "writer_inflight_batches" => nodes(&|w| w.inflight as f64),
                "writer_queued_batches" => nodes(&|w| w.queued as f64),
                "writer_channel_capacity" => nodes(&|w| w.capacity as f64),
                "writer_channel_fill_ratio" => nodes(&|w| {
                    if w.capacity == 0 {
                        0.0
                    } else {
                        w.queued as f64 / w.capacity as f64
                    }
                }),
                "full_sync_keys_done" => fs.map_or(vec![], |f| one(f.keys_done as f64)),
                "full_sync_keys_total" => fs
                    .and_then(|f| f.keys_total)
                    .map_or(vec![], |t| one(t as f64)),
                "full_sync_progress_ratio" => fs
                    .and_then(|f| f.percent)
                    .map_or(vec![], |p| one(p / 100.0)),
                "full_sync_eta_seconds" => fs.and_then(|f| f.eta_s).map_or(vec![], one),
                "checkpoint_timestamp_seconds" => ck.map_or(vec![], |ms| one(ms as f64 / 1000.0)),
                "checkpoint_age_seconds" => ck.map_or(vec![], |ms| {
                    one(checkpoint::now_ms().saturating_sub(ms) as f64 / 1000.0)
                }),
                _ => vec![],
            };
            (mt, s)
        })
        .collect()
}

impl prometheus_client::collector::Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let report = StatusReport::live(&self.stats, None);
        for (mt, values) in series(&self.stats, &report) {
            if values.is_empty() {
                continue;
            }
            let ty = match mt.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut me = encoder.encode_descriptor(mt.name, mt.help, None, ty)?;
            let Some(ln) = mt.label else {
                // Unlabelled: exactly one value, encoded without a family.
                if let Some((_, v)) = values.first() {
                    encode_value(mt.kind, *v, me)?;
                }
                continue;
            };
            for (label, v) in values {
                let labels = [(ln, label.unwrap_or_default())];
                let fam = me.encode_family(&labels)?;
                encode_value(mt.kind, v, fam)?;
            }
        }
        Ok(())
    }
}

fn encode_value(
    kind: Kind,
    v: f64,
    enc: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), fmt::Error> {
    match kind {
        Kind::Counter => ConstCounter::new(v).encode(enc),
        Kind::Gauge => ConstGauge::new(v).encode(enc),
    }
}

/// The registry for `stats` (created once; encoded at each scrape).
pub fn registry(stats: Arc<Stats>) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    r.register_collector(Box::new(StatsCollector { stats }));
    r
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    encode(&mut out, registry)?;
    Ok(out)
}

/// The full wire name of a metric (`df2redis_<name>[_total]`).
pub fn wire_name(mt: &Metric) -> String {
    match mt.kind {
        Kind::Counter => format!("{PREFIX}_{}_total", mt.name),
        Kind::Gauge => format!("{PREFIX}_{}", mt.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lsn;
    use crate::ops::SessionInfo;
    use std::sync::atomic::Ordering;

    #[test]
    fn exposition_has_every_always_present_metric() {
        let st = Arc::new(Stats::new());
        let applied = Arc::new(crate::target::writer::Applied::new(&[Lsn(0)]));
        let s = st.begin_session(
            SessionInfo {
                master_keys: Some(10),
                ..SessionInfo::default()
            },
            1,
            applied,
        );
        s.flows[0].keys.store(4, Ordering::Relaxed);
        st.writer("127.0.0.1:1").ops.store(9, Ordering::Relaxed);
        st.checkpoint_saved(checkpoint::now_ms());
        let text = render(&registry(st)).unwrap();
        for mt in METRICS {
            let name = wire_name(mt);
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("df2redis_flow_keys_total{flow=\"0\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("df2redis_writer_ops_total{node=\"127.0.0.1:1\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("df2redis_full_sync_progress_ratio 0.4"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
