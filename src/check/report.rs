//! What the checker found: one [`Diff`] per differing key, the run's [`Summary`], and the
//! JSON report written to `<result-dir>/check_<timestamp>.json`.
//!
//! Keys are bytes. In the report every key appears escaped (printable ASCII as is, anything
//! else as `\xNN`, see [`crate::model::escape_bytes`]) and, when it is not plain printable
//! text, also as base64 so a script can recover the exact bytes.

use super::util::{base64, utc_timestamp};
use crate::model::{escape_bytes, DbIndex};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What differs about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// Different types.
    Type,
    /// Different expiry (or an expiry on one side only).
    Ttl,
    /// Different length (bytes, elements, fields, members, entries).
    Length,
    /// Same type and length, different content.
    Value,
}

impl DiffKind {
    /// The name used in the report and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Type => "type",
            DiffKind::Ttl => "ttl",
            DiffKind::Length => "length",
            DiffKind::Value => "value",
        }
    }
}

impl fmt::Display for DiffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One differing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Source database of the key; `None` for a target key that no source database maps to.
    pub db: Option<DbIndex>,
    /// The key's name on the source (for an `Extra` key without a source db: the target name).
    pub key: Vec<u8>,
    /// Target database.
    pub target_db: DbIndex,
    /// The key's name on the target (differs from `key` when a db key prefix is configured).
    pub target_key: Vec<u8>,
    /// What differs.
    pub kind: DiffKind,
    /// A sentence naming the difference, values escaped, e.g. `field "f7": source "a",
    /// target "b"`.
    pub detail: String,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.db {
            Some(db) => write!(f, "{db} key {}", escape_bytes(&self.key))?,
            None => write!(
                f,
                "target {} key {}",
                self.target_db,
                escape_bytes(&self.target_key)
            )?,
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Keys returned by SCAN on the source (all masters, all checked dbs).
    pub source_keys_scanned: u64,
    /// Keys returned by SCAN on the target.
    pub target_keys_scanned: u64,
    /// Source keys compared with the target (after sampling) in the first round.
    pub source_keys_compared: u64,
    /// Target keys checked for existence on the source (after sampling) in the first round.
    pub target_keys_compared: u64,
    /// Fraction of scanned keys that were compared (1.0 without sampling).
    pub coverage: f64,
    /// Keys whose type has no value comparison here (modules, unknown types): compared by
    /// existence, type and TTL (TTL not in outline) only.
    pub unsupported_type_keys: u64,
    /// Differences after the last round (recorded ones plus `not_recorded`); one key can have
    /// two (e.g. `ttl` and `value`).
    pub differing: u64,
    /// Differences per kind after the last round (recorded ones only).
    pub by_kind: BTreeMap<String, u64>,
    /// Differences found but not recorded because `max_diffs` was reached; they were not
    /// re-checked and count as differing.
    pub not_recorded: u64,
    /// Reply bytes read from both sides.
    pub bytes_read: u64,
    /// Wall time of the whole check in milliseconds.
    pub elapsed_ms: u64,
    /// First-round comparison speed.
    pub keys_per_sec: f64,
    /// First-round reply bytes per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
}

/// One round's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundSummary {
    /// 1-based round number.
    pub round: u32,
    /// Keys compared in this round (round 1: every key; later: the previous differences).
    pub keys_compared: u64,
    /// Keys still differing at the end of this round.
    pub differing: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// Everything the checker reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// Mode name.
    pub mode: &'static str,
    /// When the check started.
    pub started: SystemTime,
    /// Source address and whether it is a cluster.
    pub source: (String, bool),
    /// Target address and whether it is a cluster.
    pub target: (String, bool),
    /// `--pattern`.
    pub pattern: Option<String>,
    /// `--db`.
    pub db: Option<DbIndex>,
    /// `--sample`.
    pub sample: f64,
    /// Per round.
    pub rounds: Vec<RoundSummary>,
    /// Totals.
    pub summary: Summary,
    /// The keys still differing after the last round, sorted by db, key, kind.
    pub diffs: Vec<Diff>,
}

impl Report {
    /// True when nothing differs.
    pub fn equal(&self) -> bool {
        self.summary.differing == 0
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Side<'a> {
            addr: &'a str,
            cluster: bool,
        }
        #[derive(Serialize)]
        struct Filters<'a> {
            pattern: Option<&'a str>,
            db: Option<u32>,
            sample: f64,
        }
        #[derive(Serialize)]
        struct JDiff {
            db: Option<u32>,
            key: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            key_base64: Option<String>,
            target_db: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_key: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_key_base64: Option<String>,
            kind: DiffKind,
            detail: String,
        }
        #[derive(Serialize)]
        struct J<'a> {
            tool: &'static str,
            version: &'static str,
            mode: &'a str,
            started_at: String,
            equal: bool,
            source: Side<'a>,
            target: Side<'a>,
            filters: Filters<'a>,
            summary: &'a Summary,
            rounds: &'a [RoundSummary],
            diffs: Vec<JDiff>,
        }
        let b64 = |k: &[u8]| (!plain(k)).then(|| base64(k));
        let diffs = self
            .diffs
            .iter()
            .map(|d| {
                let renamed = d.target_key != d.key;
                JDiff {
                    db: d.db.map(|x| x.0),
                    key: escape_bytes(&d.key),
                    key_base64: b64(&d.key),
                    target_db: d.target_db.0,
                    target_key: renamed.then(|| escape_bytes(&d.target_key)),
                    target_key_base64: if renamed { b64(&d.target_key) } else { None },
                    kind: d.kind,
                    detail: d.detail.clone(),
                }
            })
            .collect();
        let j = J {
            tool: "df2redis-sync check",
            version: env!("CARGO_PKG_VERSION"),
            mode: self.mode,
            started_at: utc_timestamp(self.started, false),
            equal: self.equal(),
            source: Side {
                addr: &self.source.0,
                cluster: self.source.1,
            },
            target: Side {
                addr: &self.target.0,
                cluster: self.target.1,
            },
            filters: Filters {
                pattern: self.pattern.as_deref(),
                db: self.db.map(|d| d.0),
                sample: self.sample,
            },
            summary: &self.summary,
            rounds: &self.rounds,
            diffs,
        };
        // Serializing plain structs of strings and numbers cannot fail; NaN floats become null.
        serde_json::to_string_pretty(&j).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Writes the JSON report into `dir` (created if missing) as `check_<timestamp>.json`
    /// and returns its path. A name already taken gets a `_2`, `_3`... suffix.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let stamp = utc_timestamp(self.started, true);
        let json = self.to_json();
        for n in 1..1000 {
            let name = if n == 1 {
                format!("check_{stamp}.json")
            } else {
                format!("check_{stamp}_{n}.json")
            };
            let path = dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(json.as_bytes())?;
                    f.write_all(b"\n")?;
                    f.sync_all()?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{}: too many reports named check_{stamp}*", dir.display()),
        ))
    }
}

/// True when the key reads the same escaped (printable ASCII, no quote or backslash).
fn plain(k: &[u8]) -> bool {
    !k.is_empty()
        && k.iter()
            .all(|&c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(diffs: Vec<Diff>) -> Report {
        Report {
            mode: "full",
            started: std::time::UNIX_EPOCH,
            source: ("s:1".into(), false),
            target: ("t:1".into(), true),
            pattern: None,
            db: None,
            sample: 1.0,
            rounds: vec![],
            summary: Summary {
                differing: diffs.len() as u64,
                ..Summary::default()
            },
            diffs,
        }
    }

    #[test]
    fn binary_keys_get_base64_and_json_parses() {
        let r = report(vec![Diff {
            db: Some(DbIndex(0)),
            key: b"bin\x00\xff".to_vec(),
            target_db: DbIndex(0),
            target_key: b"bin\x00\xff".to_vec(),
            kind: DiffKind::Missing,
            detail: "not on the target".into(),
        }]);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let d = &v["diffs"][0];
        assert_eq!(d["key"], "\"bin\\x00\\xff\"");
        assert_eq!(d["key_base64"], "YmluAP8=");
        assert_eq!(d["kind"], "missing");
        assert!(d.get("target_key").is_none());
        assert_eq!(v["equal"], false);
    }
}
