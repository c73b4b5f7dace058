//! `replicate --dry-run`: proves the config is usable without replicating anything.
//!
//! Source: connect (TCP/TLS, AUTH), `PING`, `INFO SERVER`. Dragonfly's `INFO SERVER` has a
//! `dragonfly_version` field (`dragonfly src/server/server_family.cc (ServerFamily::Info)`);
//! a plain Redis has only `redis_version`. Nothing else is sent: in particular never
//! `REPLCONF capa dragonfly`, which would register a replication session on the master
//! (protocol document §1.5).
//!
//! Target: topology discovery (which connects and authenticates to every seed tried and every
//! master found), then `PING` on each master.
//!
//! Both sides are always checked, so one run reports every problem. Results go to stdout as
//! they are known; the failures become one error for `cli::main` to print (exit 1).

use crate::config::{Config, TargetKind};
use crate::model::Cmd;
use crate::net::Conn;
use crate::target::topology;
use std::fmt::Write as _;

/// What the source turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    /// `dragonfly_version` from `INFO SERVER`, e.g. `df-v1.40.1`; `None` = not a Dragonfly.
    pub dragonfly_version: Option<String>,
    /// `redis_version` from `INFO SERVER` (Dragonfly reports a compatible Redis version too).
    pub redis_version: Option<String>,
}

/// Runs the dry run; `out` receives the report lines (stdout in the binary). The error lists
/// every check that failed.
pub fn run(cfg: &Config, out: &mut dyn FnMut(&str)) -> Result<(), String> {
    let mut failures: Vec<String> = Vec::new();
    out(&format!("config   {}: ok", cfg.origin));

    match check_source(cfg) {
        Ok(r) => match &r.dragonfly_version {
            Some(v) => out(&format!(
                "source   {}: PING ok{}, Dragonfly {v}",
                cfg.source.addr,
                auth_note(
                    cfg.source.password.is_some(),
                    cfg.source.username.as_deref()
                ),
            )),
            None => {
                out(&format!(
                    "source   {}: PING ok{}, but NOT a Dragonfly",
                    cfg.source.addr,
                    auth_note(
                        cfg.source.password.is_some(),
                        cfg.source.username.as_deref()
                    ),
                ));
                failures.push(format!(
                    "source {} answered PING{} but is not a Dragonfly: INFO SERVER has no \
                     dragonfly_version ({}); df2redis-sync can only replicate from Dragonfly",
                    cfg.source.addr,
                    if cfg.source.password.is_some() {
                        " and AUTH"
                    } else {
                        ""
                    },
                    match &r.redis_version {
                        Some(v) => format!("it reports redis_version {v}"),
                        None => "nor redis_version".to_string(),
                    }
                ));
            }
        },
        Err(e) => failures.push(format!("source: {e}")),
    }

    match check_target(cfg) {
        Ok(lines) => {
            for l in lines {
                out(&l);
            }
        }
        Err(e) => failures.push(format!("target: {e}")),
    }

    if failures.is_empty() {
        out("dry run: ok (nothing was replicated)");
        Ok(())
    } else {
        let mut msg = String::from("dry run failed");
        if let [one] = failures.as_slice() {
            let _ = write!(msg, ": {one}");
        } else {
            for f in &failures {
                let _ = write!(msg, "\n  - {f}");
            }
        }
        Err(msg)
    }
}

fn auth_note(password: bool, user: Option<&str>) -> String {
    match (password, user) {
        (true, Some(u)) => format!(" (AUTH as {u} ok)"),
        (true, None) => " (AUTH ok)".to_string(),
        _ => String::new(),
    }
}

/// Connects to the source, `PING`s it and reads `INFO SERVER`.
pub fn check_source(cfg: &Config) -> Result<SourceReport, String> {
    let ep = cfg.source.endpoint();
    log::debug!("dry run: connecting to the source {}", ep.addr);
    let mut conn = Conn::connect(&ep).map_err(|e| e.to_string())?;
    let pong = conn
        .request_ok(&Cmd::new("PING"))
        .map_err(|e| e.to_string())?;
    if pong.as_bytes() != Some(&b"PONG"[..]) {
        return Err(format!(
            "{}: PING answered {pong:?} instead of PONG",
            cfg.source.addr
        ));
    }
    let info = conn
        .request_ok(&Cmd::from_args(["INFO", "SERVER"]))
        .map_err(|e| e.to_string())?;
    let text = info
        .as_bytes()
        .map(String::from_utf8_lossy)
        .ok_or_else(|| format!("{}: INFO SERVER answered {info:?}", cfg.source.addr))?;
    Ok(SourceReport {
        dragonfly_version: info_field(&text, "dragonfly_version"),
        redis_version: info_field(&text, "redis_version"),
    })
}

/// The value of `field` in an `INFO` reply (`field:value` lines), trimmed and made safe to
/// print.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == field).then(|| {
            v.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect()
        })
    })
}

/// Discovers the target's masters (trying the seeds in order) and `PING`s each; returns the
/// report lines.
fn check_target(cfg: &Config) -> Result<Vec<String>, String> {
    let t = &cfg.target;
    let want_cluster = t.kind == TargetKind::Cluster;
    let mut tried: Vec<String> = Vec::new();
    let mut found = None;
    for ep in t.endpoints() {
        log::debug!("dry run: discovering the target through {}", ep.addr);
        match topology::discover(&ep) {
            Ok(topo) => {
                found = Some((ep.addr, topo));
                break;
            }
            Err(e) => tried.push(e.to_string()),
        }
    }
    let Some((seed, topo)) = found else {
        return Err(match tried.as_slice() {
            [one] => one.clone(),
            many => format!("no seed answered: {}", many.join("; ")),
        });
    };
    if topo.cluster != want_cluster {
        return Err(if want_cluster {
            format!("target.type is redis-cluster but {seed} has cluster support disabled; set target.type: redis-standalone")
        } else {
            format!("{seed} is a Redis Cluster node but target.type is redis-standalone; set target.type: redis-cluster and list seeds")
        });
    }
    let n = topo.masters.len();
    let mut lines = vec![format!(
        "target   {} via {seed}{}: {n} master{}",
        t.kind.as_str(),
        auth_note(t.password.is_some(), t.username.as_deref()),
        if n == 1 { "" } else { "s" }
    )];
    for m in &topo.masters {
        let mut conn = Conn::connect(&t.endpoint_for(&m.addr)).map_err(|e| e.to_string())?;
        conn.request_ok(&Cmd::new("PING"))
            .map_err(|e| e.to_string())?;
        if want_cluster {
            let ranges: Vec<String> = m.slots.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "  master {}  id {}  slots {} ({})  PING ok",
                m.addr,
                m.id,
                ranges.join(","),
                m.slot_count()
            ));
        } else {
            lines.push(format!("  server {}  PING ok", m.addr));
        }
    }
    let covered = topo.covered_slots();
    if want_cluster && covered != usize::from(topology::SLOT_COUNT) {
        return Err(format!(
            "the cluster's masters own {covered} of {} slots; every slot needs a master before replicating",
            topology::SLOT_COUNT
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info =
            "# Server\r\nredis_version:7.4.0\r\ndragonfly_version:df-v1.40.1\r\nos:Linux\r\n";
        assert_eq!(
            info_field(info, "dragonfly_version").as_deref(),
            Some("df-v1.40.1")
        );
        assert_eq!(info_field(info, "redis_version").as_deref(), Some("7.4.0"));
        assert_eq!(info_field(info, "missing"), None);
        assert_eq!(info_field("x:\x1b[31mred", "x").as_deref(), Some("[31mred"));
    }
}
