//! `df2redis-sync inspect <PATH>`: the offline inspector. Decodes recorded flow streams and
//! prints one JSON line per decoded item (key piece, journal entry, LSN marker, snapshot
//! markers) and then one summary line per flow and one for the whole run.
//!
//! `PATH` may be
//! * a flow file: the master's bytes of one flow connection (`conn-NNN.s2c.bin` as in
//!   `../shared/testdata`). A leading `DFLY FLOW` reply (`*2 +FULL|+PARTIAL +<token>`) is
//!   detected and stripped; without one, the file is read as a snapshot (an RDB file or a flow
//!   stream without its reply) followed, if anything is left after EOF, by the eof token and
//!   the journal;
//! * a capture folder (`conn-*` files) or a recording folder (`capture/`, `capture-resume/`):
//!   every flow connection in it, identified by the replica's `DFLY FLOW` line.
//!
//! Keys and arguments are printed as JSON strings when they are printable UTF-8, else as
//! `{"b64": …}` (the testdata manifests use the same form, so tests compare them directly).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use crate::journal::{EntryKind, JournalDecoder, JournalEntry, JournalItem, LsnCounter};
use crate::model::Lsn;
use crate::rdb::{
    consts, FlowDecoder, FlowEvent, Limits, Piece, SnapshotDecoder, SnapshotItem, Step, Value,
};

/// Why the inspector could not run at all (decode errors are reported in the output instead).
#[derive(Debug)]
pub struct InspectError(String);

/// What `emit` returns when the reader of stdout went away (`inspect … | head`).
const BROKEN_PIPE: &str = "stdout closed";

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The subcommand: decodes `path` to stdout. Fails when a flow did not decode; a reader that
/// closes the pipe early (`| head`) is not a failure.
pub fn command(path: &Path) -> Result<(), InspectError> {
    match run(path, &mut std::io::stdout().lock()) {
        Ok(s) if s.errors.is_empty() => Ok(()),
        Ok(s) => Err(InspectError(format!(
            "{} flow(s) failed to decode (see the error lines)",
            s.errors.len()
        ))),
        Err(e) if e.0 == BROKEN_PIPE => Ok(()),
        Err(e) => Err(e),
    }
}

impl std::error::Error for InspectError {}

/// Totals of one run (also printed as the last line).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Flows decoded.
    pub flows: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Keys (first pieces) per type name.
    pub keys: BTreeMap<String, u64>,
    /// Pieces of all keys.
    pub pieces: u64,
    /// Journal entries per kind/command name (`SET`, `PING` …).
    pub journal: BTreeMap<String, u64>,
    /// Decode errors (each stops its flow).
    pub errors: Vec<String>,
}

impl Summary {
    fn merge(&mut self, o: &Summary) {
        self.flows += o.flows;
        self.bytes += o.bytes;
        for (k, v) in &o.keys {
            *self.keys.entry(k.clone()).or_default() += v;
        }
        self.pieces += o.pieces;
        for (k, v) in &o.journal {
            *self.journal.entry(k.clone()).or_default() += v;
        }
        self.errors.extend(o.errors.iter().cloned());
    }

    fn to_json(&self, scope: Json) -> Json {
        json!({
            "summary": scope,
            "flows": self.flows,
            "bytes": self.bytes,
            "keys": self.keys,
            "key_count": self.keys.values().sum::<u64>(),
            "pieces": self.pieces,
            "journal": self.journal,
            "journal_entries": self.journal.values().sum::<u64>(),
            "errors": self.errors,
        })
    }
}

/// Bytes as a JSON string when printable UTF-8, else `{"b64": …}`.
pub fn enc(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => Json::String(s.to_string()),
        _ => json!({ "b64": base64(b) }),
    }
}

/// Standard base64 with padding.
fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The Redis-facing type name of a piece (what `TYPE` would say), or Dragonfly's for types
/// Redis lacks.
fn type_name(p: &Piece) -> &'static str {
    match &p.value {
        Value::String(_) => "string",
        Value::List(_) => "list",
        Value::Set(_) | Value::SetWithExpiry { .. } => "set",
        Value::ZSet { .. } => "zset",
        Value::Hash(_) | Value::HashWithExpiry { .. } => "hash",
        Value::Stream { .. } => "stream",
        Value::Json(_) => "json",
        Value::Opaque(_) => match p.rdb_type {
            consts::TYPE_SBF | consts::TYPE_SBF2 => "bloom",
            consts::TYPE_CMS => "cms",
            consts::TYPE_TOPK => "topk",
            consts::TYPE_CUCKOO => "cuckoo",
            consts::TYPE_JSON | consts::TYPE_JSON_OLD => "json",
            _ => "opaque",
        },
    }
}

/// One flow to decode.
struct FlowInput {
    label: String,
    flow_id: Option<u32>,
    /// FLOW reply: (partial, token).
    reply: Option<(bool, Vec<u8>)>,
    requested_lsn: Option<u64>,
    data: Vec<u8>,
}

/// Parses a `*2\r\n+FULL|+PARTIAL\r\n+<token>\r\n` reply at the start of `b`: (partial, token,
/// reply length).
fn parse_flow_reply(b: &[u8]) -> Option<(bool, Vec<u8>, usize)> {
    let rest = b.strip_prefix(b"*2\r\n+")?;
    let (partial, rest) = if let Some(r) = rest.strip_prefix(b"FULL\r\n+") {
        (false, r)
    } else {
        (true, rest.strip_prefix(b"PARTIAL\r\n+")?)
    };
    let end = memchr::memmem::find(rest, b"\r\n")?;
    let token = rest.get(..end)?.to_vec();
    Some((partial, token, b.len() - rest.len() + end + 2))
}

fn read(p: &Path) -> Result<Vec<u8>, InspectError> {
    std::fs::read(p).map_err(|e| InspectError(format!("{}: {e}", p.display())))
}

fn flow_from_bytes(label: String, bytes: Vec<u8>) -> FlowInput {
    match parse_flow_reply(&bytes) {
        Some((partial, token, len)) => FlowInput {
            label,
            flow_id: None,
            reply: Some((partial, token)),
            requested_lsn: None,
            data: bytes.get(len..).unwrap_or_default().to_vec(),
        },
        None => FlowInput {
            label,
            flow_id: None,
            reply: None,
            requested_lsn: None,
            data: bytes,
        },
    }
}

/// The flows of a capture folder (connections whose c2s starts with `DFLY FLOW`), by flow id.
fn capture_flows(dir: &Path) -> Result<Vec<FlowInput>, InspectError> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| InspectError(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("conn-") && n.ends_with(".c2s.bin"))
        })
        .collect();
    names.sort();
    let mut flows = Vec::new();
    for c2s_path in names {
        let c2s = read(&c2s_path)?;
        let Some(rest) = c2s.strip_prefix(b"DFLY FLOW ") else {
            continue;
        };
        let line_end = memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len());
        let line = String::from_utf8_lossy(rest.get(..line_end).unwrap_or_default()).into_owned();
        let words: Vec<&str> = line.split_whitespace().collect();
        let s2c_path = PathBuf::from(c2s_path.to_string_lossy().replace(".c2s.bin", ".s2c.bin"));
        let label = s2c_path.display().to_string();
        let mut f = flow_from_bytes(label, read(&s2c_path)?);
        f.flow_id = words.get(2).and_then(|w| w.parse().ok());
        f.requested_lsn = words.get(3).and_then(|w| w.parse().ok());
        flows.push(f);
    }
    flows.sort_by_key(|f| f.flow_id);
    Ok(flows)
}

fn is_capture_dir(p: &Path) -> bool {
    p.join("conn-000.c2s.bin").is_file() || p.join("conn-001.c2s.bin").is_file()
}

/// Decodes `path` and writes JSON lines to `out`. Returns the totals (also printed).
pub fn run(path: &Path, out: &mut dyn Write) -> Result<Summary, InspectError> {
    let mut flows = Vec::new();
    if path.is_dir() {
        let dirs: Vec<PathBuf> = if is_capture_dir(path) {
            vec![path.to_path_buf()]
        } else {
            ["capture", "capture-resume"]
                .iter()
                .map(|d| path.join(d))
                .filter(|d| is_capture_dir(d))
                .collect()
        };
        if dirs.is_empty() {
            return Err(InspectError(format!(
                "{}: neither a flow file nor a recording/capture folder",
                path.display()
            )));
        }
        for d in dirs {
            flows.extend(capture_flows(&d)?);
        }
    } else {
        flows.push(flow_from_bytes(path.display().to_string(), read(path)?));
    }
    let mut total = Summary::default();
    let w = |out: &mut dyn Write, v: &Json| -> Result<(), InspectError> {
        writeln!(out, "{v}").map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => InspectError(BROKEN_PIPE.into()),
            _ => InspectError(format!("stdout: {e}")),
        })
    };
    for f in &flows {
        let s = inspect_flow(f, out)?;
        w(
            out,
            &s.to_json(json!({ "file": f.label, "flow": f.flow_id })),
        )?;
        total.merge(&s);
    }
    w(out, &total.to_json(json!("total")))?;
    Ok(total)
}

/// Decodes one flow, printing its items.
fn inspect_flow(f: &FlowInput, out: &mut dyn Write) -> Result<Summary, InspectError> {
    let mut s = Summary {
        flows: 1,
        bytes: f.data.len() as u64,
        ..Summary::default()
    };
    let mut p = Printer {
        flow: f.flow_id,
        out,
        lsn: f.requested_lsn.map(|l| LsnCounter::new(Lsn(l))),
        summary: &mut s,
    };
    let data = &f.data;
    let result = match &f.reply {
        Some((partial, token)) => {
            let mut d = if *partial && !data.starts_with(consts::RDB_MAGIC) {
                FlowDecoder::new_partial(Limits::default())
            } else {
                FlowDecoder::new_full(token, Limits::default())
            };
            decode_flow(&mut d, data, &mut p)
        }
        None => decode_plain(data, &mut p),
    };
    if let Err(e) = result {
        if e == BROKEN_PIPE {
            return Err(InspectError(e));
        }
        p.emit(json!({ "kind": "error", "error": e }))
            .map_err(InspectError)?;
        p.summary.errors.push(format!("{}: {e}", f.label));
    }
    Ok(s)
}

/// Drives a [`FlowDecoder`] over a complete buffer.
fn decode_flow(d: &mut FlowDecoder, data: &[u8], p: &mut Printer<'_>) -> Result<(), String> {
    let mut pos = 0;
    loop {
        let at = d.offset();
        let (step, used) = d
            .step(data.get(pos..).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        pos += used;
        match step {
            Step::Item(FlowEvent::Snapshot(item)) => p.snapshot(at, &item)?,
            Step::Item(FlowEvent::EofToken) => {
                p.emit(json!({ "kind": "eof-token", "offset": at }))?
            }
            Step::Item(FlowEvent::Journal(j)) => p.journal(at, &j, true)?,
            Step::NeedMore | Step::End => break,
        }
    }
    if pos < data.len() {
        p.emit(json!({ "kind": "incomplete-tail", "offset": pos, "bytes": data.len() - pos }))?;
    }
    Ok(())
}

/// A file without a FLOW reply: a snapshot, then (if bytes remain) the 40-byte eof token and
/// the journal.
fn decode_plain(data: &[u8], p: &mut Printer<'_>) -> Result<(), String> {
    let mut pos = 0;
    if data.starts_with(consts::RDB_MAGIC) {
        let mut d = SnapshotDecoder::new(Limits::default());
        loop {
            let at = d.offset();
            let (step, used) = d
                .step(data.get(pos..).unwrap_or_default())
                .map_err(|e| e.to_string())?;
            pos += used;
            match step {
                Step::Item(item) => {
                    let eof = matches!(item, SnapshotItem::Eof { .. });
                    p.snapshot(at, &item)?;
                    if eof {
                        break;
                    }
                }
                Step::NeedMore | Step::End => break,
            }
        }
        if pos >= data.len() {
            return Ok(());
        }
        if data.len() - pos < consts::EOF_TOKEN_LEN {
            p.emit(json!({ "kind": "incomplete-tail", "offset": pos, "bytes": data.len() - pos }))?;
            return Ok(());
        }
        p.emit(json!({ "kind": "eof-token", "offset": pos }))?;
        pos += consts::EOF_TOKEN_LEN;
    }
    let mut d = JournalDecoder::with_offset(Limits::default(), pos as u64);
    loop {
        let at = d.offset();
        let (step, used) = d
            .step(data.get(pos..).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        pos += used;
        match step {
            Step::Item(j) => p.journal(at, &j, true)?,
            Step::NeedMore | Step::End => break,
        }
    }
    if pos < data.len() {
        p.emit(json!({ "kind": "incomplete-tail", "offset": pos, "bytes": data.len() - pos }))?;
    }
    Ok(())
}

struct Printer<'a> {
    flow: Option<u32>,
    out: &'a mut dyn Write,
    /// LSN count of the live journal (from JOURNAL_OFFSET, or the LSN asked for).
    lsn: Option<LsnCounter>,
    summary: &'a mut Summary,
}

impl Printer<'_> {
    fn emit(&mut self, mut v: Json) -> Result<(), String> {
        if let Some(o) = v.as_object_mut() {
            o.insert("flow".into(), json!(self.flow));
        }
        writeln!(self.out, "{v}").map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => BROKEN_PIPE.to_string(),
            _ => format!("stdout: {e}"),
        })
    }

    fn snapshot(&mut self, at: u64, item: &SnapshotItem) -> Result<(), String> {
        let v = match item {
            SnapshotItem::Header { version } => json!({ "kind": "header", "version": version }),
            SnapshotItem::Aux { key, value } => {
                json!({ "kind": "aux", "name": enc(key), "value": enc(&value[..value.len().min(200)]) })
            }
            SnapshotItem::SelectDb(db) => json!({ "kind": "selectdb", "db": db.0 }),
            SnapshotItem::ResizeDb {
                db_size,
                expires_size,
            } => json!({ "kind": "resizedb", "db_size": db_size, "expires_size": expires_size }),
            SnapshotItem::Function(code) => json!({ "kind": "function", "bytes": code.len() }),
            SnapshotItem::Piece(piece) => self.piece(piece),
            SnapshotItem::JournalBlob(j) => return self.journal(at, j, false),
            SnapshotItem::FullSyncEnd => json!({ "kind": "fullsync-end" }),
            SnapshotItem::JournalOffset(l) => {
                self.lsn = Some(LsnCounter::new(*l));
                json!({ "kind": "journal-offset", "lsn": l.0 })
            }
            SnapshotItem::Skipped { opcode } => json!({ "kind": "skipped", "opcode": opcode }),
            SnapshotItem::Eof { .. } => json!({ "kind": "eof" }),
        };
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("offset".into(), json!(at));
        }
        self.emit(v)
    }

    fn piece(&mut self, p: &Piece) -> Json {
        let ty = type_name(p);
        self.summary.pieces += 1;
        if p.first {
            *self.summary.keys.entry(ty.to_string()).or_default() += 1;
        }
        let mut o = Map::new();
        o.insert("kind".into(), json!("key"));
        o.insert("db".into(), json!(p.db.0));
        o.insert("key".into(), enc(&p.key));
        o.insert("type".into(), json!(ty));
        o.insert("rdb_type".into(), json!(p.rdb_type));
        o.insert("expire_ms".into(), json!(p.expire_ms));
        o.insert("first".into(), json!(p.first));
        o.insert("last".into(), json!(p.last));
        o.insert("elements".into(), json!(p.value.element_count()));
        if p.mask.sticky {
            o.insert("sticky".into(), json!(true));
        }
        if let Some(f) = p.mask.mc_flags {
            o.insert("mc_flags".into(), json!(f));
        }
        match &p.value {
            Value::String(v) => {
                o.insert("bytes".into(), json!(v.len()));
            }
            Value::Stream {
                meta: Some(meta), ..
            } => {
                o.insert("length".into(), json!(meta.length));
                o.insert(
                    "last_id".into(),
                    json!(format!("{}-{}", meta.last_id.ms, meta.last_id.seq)),
                );
                o.insert("groups".into(), json!(meta.groups.len()));
            }
            Value::Opaque(b) | Value::Json(b) => {
                o.insert("bytes".into(), json!(b.len()));
            }
            _ => {}
        }
        Json::Object(o)
    }

    fn journal(&mut self, at: u64, j: &JournalItem, live: bool) -> Result<(), String> {
        let lsn = if live {
            match self.lsn.as_mut().map(|c| c.observe(j)) {
                Some(Ok(l)) => l.map(|l| l.0),
                Some(Err(m)) => return Err(format!("at byte {at}: {m}")),
                None => None,
            }
        } else {
            None
        };
        let v = match j {
            JournalItem::LsnMarker(l) => {
                // A journal-only file with no known start: the first marker names the LSN of
                // the entry before it, so counting can start from there.
                if live && self.lsn.is_none() {
                    self.lsn = Some(LsnCounter::new(Lsn(l.0.saturating_add(1))));
                }
                json!({ "kind": "lsn-marker", "lsn": l.0 })
            }
            JournalItem::Entry(e) => {
                let name = entry_name(e);
                *self.summary.journal.entry(name.clone()).or_default() += 1;
                json!({
                    "kind": if live { "journal" } else { "journal-blob" },
                    "op": name,
                    "db": e.db.0,
                    "txid": e.txid,
                    "lsn": lsn,
                    "args": e.cmd.len().saturating_sub(1),
                    "key": e.cmd.get(1).map(|k| enc(&k[..k.len().min(200)])),
                })
            }
        };
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("offset".into(), json!(at));
        }
        self.emit(v)
    }
}

fn entry_name(e: &JournalEntry) -> String {
    match e.kind {
        EntryKind::Command | EntryKind::MultiCommand | EntryKind::Expired => {
            let n = String::from_utf8_lossy(e.cmd.name()).to_ascii_uppercase();
            if e.kind == EntryKind::Expired {
                format!("EXPIRED {n}")
            } else {
                n
            }
        }
        EntryKind::Exec => "EXEC".into(),
        EntryKind::Ping => "PING".into(),
        EntryKind::Noop => "NOOP".into(),
        EntryKind::Fin => "FIN".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_enc() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"str:bin:\x00\r\n\xff"), "c3RyOmJpbjoADQr/");
        assert_eq!(enc(b"abc"), json!("abc"));
        assert_eq!(enc(b"a\nb"), json!({"b64": "YQpi"}));
    }

    #[test]
    fn flow_reply_is_detected() {
        let b = b"*2\r\n+FULL\r\n+0123456789012345678901234567890123456789\r\nREDIS0009";
        let (partial, token, len) = parse_flow_reply(b).unwrap();
        assert!(!partial);
        assert_eq!(token.len(), 40);
        assert_eq!(&b[len..], b"REDIS0009");
        assert!(parse_flow_reply(b"REDIS0009").is_none());
        assert!(parse_flow_reply(b"*2\r\n+PARTIAL\r\n+abc").is_none());
    }
}
