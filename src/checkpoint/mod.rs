//! Versioned on-disk checkpoint of per-flow LSNs, saved atomically.
//!
//! The checkpoint is `<checkpoint.dir>/lsn.json`. It records which master the positions belong
//! to (replication id, flow count, release) and, per flow, the *next* LSN to ask for on resume
//! (protocol document §4.5, §6.1) with the flow's phase. It is written with the classic atomic
//! recipe: write a temporary file in the same directory, `fsync` it, `rename` it over the old
//! one, then `fsync` the directory, so a crash leaves either the old or the new checkpoint,
//! never a torn one.
//!
//! Invariant (kept by the coordinator, stated here because this is where it becomes durable):
//! a saved `next_lsn` is never ahead of what the target has acknowledged.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name of the checkpoint inside the checkpoint directory.
pub const FILE_NAME: &str = "lsn.json";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Phase a flow was in when the checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Full sync not finished: the positions are not resumable; a restart needs a full sync.
    FullSync,
    /// Streaming the journal: `next_lsn` is resumable with a PARTIAL request.
    Stable,
}

/// One flow's saved position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowCheckpoint {
    /// Flow (= master shard) index.
    pub flow: u32,
    /// The next LSN to request on resume (`DFLY FLOW … <next_lsn>`).
    pub next_lsn: u64,
    /// The flow's phase.
    pub state: FlowState,
}

/// The whole checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Always [`FORMAT_VERSION`] for files this build writes.
    pub format_version: u32,
    /// The master's replication id (`master_replid` of the capa reply).
    pub master_replid: String,
    /// The sync id of the session that produced the positions (`SYNC<k>`).
    pub sync_id: String,
    /// The master's flow (shard) count.
    pub flow_count: u32,
    /// The master's release as `INFO SERVER` reported it (`dragonfly_version`), if known.
    #[serde(default)]
    pub master_version: Option<String>,
    /// One entry per flow, ordered by flow index.
    pub flows: Vec<FlowCheckpoint>,
    /// When this checkpoint was written, unix milliseconds.
    pub written_at_ms: u64,
    /// The df2redis-sync version that wrote it.
    pub tool_version: String,
}

impl Checkpoint {
    /// True when every flow is in the stable phase, i.e. a PARTIAL resume can be asked for.
    pub fn is_resumable(&self) -> bool {
        !self.flows.is_empty()
            && self.flows.len() == self.flow_count as usize
            && self.flows.iter().all(|f| f.state == FlowState::Stable)
    }

    /// Checks the internal consistency of a loaded checkpoint.
    fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.master_replid.is_empty() {
            return Err("master_replid is empty".into());
        }
        if self.flows.len() != self.flow_count as usize {
            return Err(format!(
                "flow_count is {} but {} flows are listed",
                self.flow_count,
                self.flows.len()
            ));
        }
        for (i, f) in self.flows.iter().enumerate() {
            if f.flow as usize != i {
                return Err(format!("flows[{i}] is flow {}, expected {i}", f.flow));
            }
        }
        Ok(())
    }
}

/// A checkpoint could not be read or written.
#[derive(Debug)]
pub enum Error {
    /// Reading, writing, syncing or renaming failed.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The file exists but is not a valid checkpoint.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why it is invalid.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "checkpoint {}: {action} failed: {source}",
                path.display()
            ),
            Error::Invalid { path, reason } => write!(
                f,
                "checkpoint {} is invalid: {reason} (move it away to start with a full sync)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Invalid { .. } => None,
        }
    }
}

/// Current time as unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads and writes the checkpoint file of one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store for `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// Path of the checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Loads the checkpoint; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<Checkpoint>, Error> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    path,
                    action: "read",
                    source,
                })
            }
        };
        let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        cp.validate()
            .map_err(|reason| Error::Invalid { path, reason })?;
        Ok(Some(cp))
    }

    /// Writes `cp` atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, cp: &Checkpoint) -> Result<(), Error> {
        let io_err = |path: &Path, action: &'static str| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                path,
                action,
                source,
            }
        };
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir, "create directory"))?;
        let tmp = self.dir.join(format!(".{FILE_NAME}.tmp"));
        let mut body = serde_json::to_vec_pretty(cp).map_err(|e| Error::Invalid {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        body.push(b'\n');
        {
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp, "create"))?;
            f.write_all(&body).map_err(io_err(&tmp, "write"))?;
            f.sync_all().map_err(io_err(&tmp, "fsync"))?;
        }
        let path = self.path();
        fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))?;
        // Make the rename itself durable.
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir, "fsync directory"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            format_version: FORMAT_VERSION,
            master_replid: "a".repeat(40),
            sync_id: "SYNC3".into(),
            flow_count: 2,
            master_version: Some("df-v1.40.1".into()),
            flows: vec![
                FlowCheckpoint {
                    flow: 0,
                    next_lsn: 17,
                    state: FlowState::Stable,
                },
                FlowCheckpoint {
                    flow: 1,
                    next_lsn: 3,
                    state: FlowState::Stable,
                },
            ],
            written_at_ms: now_ms(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("nested"));
        assert_eq!(store.load().unwrap(), None);
        let cp = sample();
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp.clone()));
        assert!(cp.is_resumable());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        fs::write(store.path(), b"{not json").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("lsn.json is invalid"), "{e}");

        let mut cp = sample();
        cp.flow_count = 3;
        fs::write(store.path(), serde_json::to_vec(&cp).unwrap()).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("flow_count is 3 but 2 flows"), "{e}");

        let mut cp = sample();
        cp.format_version = 99;
        fs::write(store.path(), serde_json::to_vec(&cp).unwrap()).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("format_version 99"), "{e}");
    }

    #[test]
    fn full_sync_state_is_not_resumable() {
        let mut cp = sample();
        cp.flows[1].state = FlowState::FullSync;
        assert!(!cp.is_resumable());
    }
}
