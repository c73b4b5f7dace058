//! `df2redis-sync status <CONFIG> [--json]`: where a replication stands.
//!
//! It asks the running `replicate`'s status endpoint (address from `<checkpoint.dir>/status.addr`,
//! else `metrics.listen`) for the live report; when nothing answers, it reports from the
//! checkpoint file alone. Without a live endpoint (`metrics.listen` unset), `replicate.pid` next
//! to the checkpoint (written while `replicate` runs) tells whether it runs: the verdict then
//! says so (`syncing` / `streaming`, no lag figure) from the flows' saved states. With
//! `metrics.listen` set, no answer means stopped. The first line is always
//! `verdict: <syncing | streaming, lag N | caught up | stopped>`.

use std::time::Duration;

use crate::checkpoint::Store;
use crate::config::Config;
use crate::ops::status::{self, CheckpointStatus, StatusReport};

/// How long to wait for the live endpoint.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Builds the report; `Err` when there is neither a running engine nor a checkpoint.
pub fn report(cfg: &Config) -> Result<(StatusReport, String), String> {
    let dir = &cfg.checkpoint.dir;
    let candidates = status::endpoint_candidates(dir, cfg.metrics.listen.as_deref());
    let live_err = match status::fetch_live(&candidates, TIMEOUT) {
        Ok((addr, r)) => return Ok((r, format!("live from http://{addr}/status"))),
        Err(e) => e,
    };
    if !cfg.checkpoint.enabled {
        return Err(format!(
            "no running replicate answered ({live_err}) and checkpoints are disabled"
        ));
    }
    let store = Store::new(dir);
    let cp = store
        .load()
        .map_err(|e| format!("no running replicate answered ({live_err}); {e}"))?
        .ok_or_else(|| {
            format!(
                "no running replicate answered ({live_err}) and there is no checkpoint at {}",
                store.path().display()
            )
        })?;
    let mut r = StatusReport::from_checkpoint(&cp, &store.path());
    let age_ms = crate::checkpoint::now_ms().saturating_sub(cp.written_at_ms);
    // Running without an endpoint? The pid file says; where it cannot tell (no /proc), a
    // checkpoint saved within the last three intervals (at least 5 s) does.
    let fresh = (3 * cfg.checkpoint.interval).max(Duration::from_secs(5));
    let running = status::replicate_running(dir).unwrap_or(u128::from(age_ms) < fresh.as_millis());
    if cfg.metrics.listen.is_none() && running {
        let stable = cp
            .flows
            .iter()
            .all(|f| f.state == crate::checkpoint::FlowState::Stable);
        let (state, verdict) = if stable {
            ("stable", "streaming")
        } else {
            ("full_sync", "syncing")
        };
        r.state = state.into();
        r.verdict = verdict.into();
        for f in &mut r.flows {
            f.phase = state.into();
        }
        return Ok((
            r,
            format!(
                "replicate runs without a status endpoint; from the checkpoint, written {:.1}s \
                 ago; set metrics.listen for lag and rates",
                age_ms as f64 / 1000.0
            ),
        ));
    }
    Ok((
        r,
        format!("from the checkpoint (no running replicate answered: {live_err})"),
    ))
}

/// The human-readable form.
pub fn render(r: &StatusReport, origin: &str) -> Vec<String> {
    let mut out = vec![format!("verdict: {}", r.verdict)];
    let mut state = format!("state: {} ({origin}", r.state);
    if let Some(up) = r.uptime_s {
        state.push_str(&format!(
            "; up {}, {} session(s), {} failed",
            secs(up),
            r.sessions,
            r.session_failures
        ));
    }
    state.push(')');
    out.push(state);
    if let Some(m) = &r.master {
        let mut line = format!("master: {}", m.replid);
        if let Some(v) = &m.version {
            line.push_str(&format!(" ({v})"));
        }
        if let Some(k) = m.keys {
            line.push_str(&format!(", {k} keys at the handshake"));
        }
        out.push(line);
    }
    if let Some(fs) = &r.full_sync {
        if fs.done {
            out.push(format!(
                "full sync: done, {} keys, {:.1} MB in {}",
                fs.keys_done,
                fs.bytes as f64 / 1e6,
                secs(fs.elapsed_s)
            ));
        } else {
            let of = fs.keys_total.map(|t| format!("/{t}")).unwrap_or_default();
            let pct = fs
                .percent
                .map(|p| format!(" ({p:.0}%)"))
                .unwrap_or_default();
            let eta = fs
                .eta_s
                .map(|e| format!(", ETA {}", secs(e)))
                .unwrap_or_default();
            out.push(format!(
                "full sync: {}{of} keys{pct}, {:.1} MB, {} elapsed{eta}",
                fs.keys_done,
                fs.bytes as f64 / 1e6,
                secs(fs.elapsed_s)
            ));
        }
    }
    if !r.flows.is_empty() {
        out.push(format!(
            "{:>4}  {:<9}  {:>12}  {:>12}  {:>8}  {:>8}  {:>10}  {:>10}  {:>8}  {:>7}  {:>6}",
            "flow",
            "phase",
            "received",
            "applied",
            "lag",
            "lag ms",
            "keys",
            "entries/s",
            "MB/s",
            "skipped",
            "errors"
        ));
        for f in &r.flows {
            out.push(format!(
                "{:>4}  {:<9}  {:>12}  {:>12}  {:>8}  {:>8}  {:>10}  {:>10.0}  {:>8.2}  {:>7}  {:>6}",
                f.flow,
                f.phase,
                f.received_lsn,
                f.applied_lsn,
                f.lag_lsn,
                f.lag_ms,
                f.keys,
                f.entries_per_s,
                f.bytes_per_s / 1e6,
                f.skipped,
                f.errors
            ));
        }
    }
    for w in &r.writers {
        out.push(format!(
            "target {}: {} ops ({:.0}/s), {} refused, {} retries, {} redirects, {} in flight, channel {}/{}",
            w.node,
            w.ops,
            w.ops_per_s,
            w.errors,
            w.retries,
            w.redirects,
            w.inflight,
            w.queued,
            w.capacity
        ));
    }
    if r.live {
        out.push(format!(
            "totals: {} commands applied ({:.0}/s), {} refused, {} skipped, lag {} entries / {} ms",
            r.totals.applied_commands,
            r.totals.applied_per_s,
            r.totals.refused,
            r.totals.skipped,
            r.totals.lag_lsn,
            r.totals.lag_ms
        ));
    }
    if let Some(c) = &r.checkpoint {
        out.push(checkpoint_line(c));
    }
    if let Some(e) = &r.last_error {
        out.push(format!("last error: {e}"));
    }
    out
}

fn checkpoint_line(c: &CheckpointStatus) -> String {
    let flows: Vec<String> = c
        .flows
        .iter()
        .map(|(f, l, s)| format!("{f}={l} {s}"))
        .collect();
    format!(
        "checkpoint: {} written {} ago: {}",
        c.path,
        secs(c.age_s),
        flows.join(", ")
    )
}

/// `4.2s`, `3m05s`, `2h07m`.
fn secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".into();
    }
    let t = s as u64;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if t < 3600 {
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        format!("{}h{:02}m", t / 3600, (t % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(4.25), "4.2s");
        assert_eq!(secs(185.0), "3m05s");
        assert_eq!(secs(7620.0), "2h07m");
        assert_eq!(secs(f64::NAN), "?");
    }
}
