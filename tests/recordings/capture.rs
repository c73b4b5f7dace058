//! Reader for the recorded replication sessions in `../shared/testdata` (format in that folder's
//! README): finds the main connection and the flows of a capture folder, strips each flow's
//! `DFLY FLOW` reply, and computes the split point, i.e. how many bytes of each flow the master
//! had sent when the replica sent `DFLY STARTSTABLE` on the main connection.

use std::fs;
use std::path::{Path, PathBuf};

/// One recorded flow connection, already stripped of its FLOW reply.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The flow id from the replica's `DFLY FLOW` (not the connection number).
    pub id: u32,
    /// True when the master answered `+PARTIAL`.
    pub partial: bool,
    /// The LSN the replica asked for (`DFLY FLOW … <lsn>`), if any.
    pub requested_lsn: Option<u64>,
    /// The eof token from the FLOW reply.
    pub token: String,
    /// Every master byte after the FLOW reply.
    pub data: Vec<u8>,
    /// Offset in `data` of the first byte the master sent after the replica's STARTSTABLE.
    pub split: usize,
}

/// One capture folder (`capture/` or `capture-resume/`).
#[derive(Debug, Clone)]
pub struct Session {
    pub dir: PathBuf,
    /// Flows sorted by flow id.
    pub flows: Vec<Flow>,
}

/// A recording: its folder, its sessions in order (first session, then the resumed one).
#[derive(Debug, Clone)]
pub struct Recording {
    pub dir: PathBuf,
    pub name: String,
    pub sessions: Vec<Session>,
}

/// Every recording folder under the shared testdata, v1.40.1 then v1.34.2, sorted by name.
pub fn all_recordings() -> Vec<PathBuf> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"));
    let mut out = Vec::new();
    for version in ["dragonfly-v1.40.1", "dragonfly-v1.34.2"] {
        let mut dirs: Vec<PathBuf> = fs::read_dir(root.join(version))
            .unwrap_or_else(|e| panic!("testdata {version}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("manifest.json").is_file())
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

impl Recording {
    /// Loads a recording folder and its capture folders (`capture`, then `capture-resume`).
    pub fn load(dir: &Path) -> Result<Recording, String> {
        let mut sessions = Vec::new();
        for sub in ["capture", "capture-resume"] {
            let d = dir.join(sub);
            if d.is_dir() {
                sessions.push(Session::load(&d)?);
            }
        }
        if sessions.is_empty() {
            return Err(format!("{}: no capture folder", dir.display()));
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Recording {
            dir: dir.to_path_buf(),
            name,
            sessions,
        })
    }
}

/// One line of a `conn-NNN.events.jsonl` file.
#[derive(Debug, Clone, serde::Deserialize)]
struct Event {
    t: f64,
    dir: String,
    off: usize,
    len: usize,
}

fn read_events(path: &Path) -> Result<Vec<Event>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Parses a `*2\r\n+FULL|+PARTIAL\r\n+<token>\r\n` FLOW reply at the start of `s2c`; returns
/// (partial, token, reply length).
pub fn parse_flow_reply(s2c: &[u8]) -> Option<(bool, String, usize)> {
    let rest = s2c.strip_prefix(b"*2\r\n+")?;
    let (partial, rest) = if let Some(r) = rest.strip_prefix(b"FULL\r\n+") {
        (false, r)
    } else if let Some(r) = rest.strip_prefix(b"PARTIAL\r\n+") {
        (true, r)
    } else {
        return None;
    };
    let end = memchr::memmem::find(rest, b"\r\n")?;
    let token = std::str::from_utf8(&rest[..end]).ok()?.to_string();
    let total = s2c.len() - rest.len() + end + 2;
    Some((partial, token, total))
}

impl Session {
    fn load(dir: &Path) -> Result<Session, String> {
        let mut conns: Vec<u32> = fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix("conn-")?
                    .strip_suffix(".c2s.bin")?
                    .parse::<u32>()
                    .ok()
            })
            .collect();
        conns.sort_unstable();
        let file = |c: u32, suffix: &str| dir.join(format!("conn-{c:03}.{suffix}"));
        let read = |p: PathBuf| fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));

        // The main connection carries `REPLCONF capa dragonfly`; the replica sent STARTSTABLE
        // on it, and the recorder's clock at that chunk is the split moment.
        let mut startstable_t = None;
        for &c in &conns {
            let c2s = read(file(c, "c2s.bin"))?;
            if memchr::memmem::find(&c2s, b"REPLCONF capa dragonfly").is_none() {
                continue;
            }
            if let Some(off) = memchr::memmem::find(&c2s, b"DFLY STARTSTABLE") {
                let events = read_events(&file(c, "events.jsonl"))?;
                startstable_t = events
                    .iter()
                    .find(|e| e.dir == "c2s" && e.off <= off && off < e.off + e.len)
                    .map(|e| e.t);
            }
        }
        let startstable_t = startstable_t.ok_or_else(|| {
            format!(
                "{}: no DFLY STARTSTABLE on the main connection",
                dir.display()
            )
        })?;

        let mut flows = Vec::new();
        for &c in &conns {
            let c2s = read(file(c, "c2s.bin"))?;
            let Some(rest) = c2s.strip_prefix(b"DFLY FLOW ") else {
                continue;
            };
            let line_end = memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len());
            let line = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let words: Vec<&str> = line.split_whitespace().collect();
            let id: u32 = words.get(2).and_then(|w| w.parse().ok()).ok_or_else(|| {
                format!("{}: conn {c}: bad DFLY FLOW line {line:?}", dir.display())
            })?;
            let requested_lsn = words.get(3).and_then(|w| w.parse().ok());
            let s2c = read(file(c, "s2c.bin"))?;
            let (partial, token, reply_len) = parse_flow_reply(&s2c)
                .ok_or_else(|| format!("{}: conn {c}: no FLOW reply", dir.display()))?;
            let events = read_events(&file(c, "events.jsonl"))?;
            let sent_before = events
                .iter()
                .filter(|e| e.dir == "s2c" && e.t < startstable_t)
                .map(|e| e.off + e.len)
                .max()
                .unwrap_or(0);
            flows.push(Flow {
                id,
                partial,
                requested_lsn,
                token,
                split: sent_before.saturating_sub(reply_len),
                data: s2c.get(reply_len..).unwrap_or_default().to_vec(),
            });
        }
        if flows.is_empty() {
            return Err(format!("{}: no flow connection", dir.display()));
        }
        flows.sort_by_key(|f| f.id);
        Ok(Session {
            dir: dir.to_path_buf(),
            flows,
        })
    }
}
