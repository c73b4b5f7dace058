//! Integration tests: rdb. The snapshot/flow decoder against every real Dragonfly recording
//! (whole, byte by byte, random chunks), a manifest cross-check of untouched keys, DUMP
//! payloads from the manifests, and real Redis 7 RDB files (see `redis_rdb`).

mod prop;
mod redis_rdb;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use df2redis_sync::journal::{EntryKind, JournalItem, LsnCounter};
use df2redis_sync::model::{DbIndex, Lsn};
use df2redis_sync::rdb::{
    decode_dump_payload, FlowDecoder, FlowEvent, Limits, Piece, SnapshotItem, Step, Value,
};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata");

/// One recorded flow connection: the bytes after the FLOW reply.
pub struct Flow {
    pub name: String,
    pub flow_id: u32,
    pub partial: bool,
    pub token: Vec<u8>,
    pub bytes: Vec<u8>,
}

/// Every capture directory of both releases.
pub fn captures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for rel in ["dragonfly-v1.40.1", "dragonfly-v1.34.2"] {
        let Ok(rd) = std::fs::read_dir(Path::new(TESTDATA).join(rel)) else {
            continue;
        };
        let mut sessions: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        sessions.sort();
        for s in sessions {
            for c in ["capture", "capture-resume"] {
                if s.join(c).is_dir() {
                    out.push(s.join(c));
                }
            }
        }
    }
    out
}

/// The flow connections of one capture directory, FLOW reply stripped.
pub fn flows(dir: &Path) -> Vec<Flow> {
    let mut out = Vec::new();
    for i in 0..16 {
        let c2s = dir.join(format!("conn-{i:03}.c2s.bin"));
        let s2c = dir.join(format!("conn-{i:03}.s2c.bin"));
        let (Ok(c), Ok(s)) = (std::fs::read(&c2s), std::fs::read(&s2c)) else {
            continue;
        };
        if !c.starts_with(b"DFLY FLOW") {
            continue;
        }
        let line =
            String::from_utf8_lossy(&c[..c.iter().position(|&b| b == b'\r').unwrap()]).to_string();
        let flow_id: u32 = line.split(' ').nth(4).unwrap().parse().unwrap();
        let (partial, rest) = if let Some(r) = s.strip_prefix(b"*2\r\n+FULL\r\n+") {
            (false, r)
        } else if let Some(r) = s.strip_prefix(b"*2\r\n+PARTIAL\r\n+") {
            (true, r)
        } else {
            panic!("{}: unexpected FLOW reply", s2c.display());
        };
        let token = rest[..40].to_vec();
        assert_eq!(&rest[40..42], b"\r\n");
        out.push(Flow {
            name: format!("{} conn-{i:03}", dir.display()),
            flow_id,
            partial,
            token,
            bytes: rest[42..].to_vec(),
        });
    }
    out
}

/// The decoder a flow needs: RDB-framed unless a v1.35+ PARTIAL flow (raw journal).
pub fn decoder_for(f: &Flow, limits: Limits) -> FlowDecoder {
    if f.partial && !f.bytes.starts_with(b"REDIS") {
        FlowDecoder::new_partial(limits)
    } else {
        FlowDecoder::new_full(&f.token, limits)
    }
}

/// Feeds `data` in chunks whose sizes come from `next`, returning every event and the number
/// of bytes left unconsumed at the end.
pub fn run(
    dec: &mut FlowDecoder,
    data: &[u8],
    next: &mut dyn FnMut() -> usize,
) -> (Vec<FlowEvent>, usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut fed = 0;
    let mut out = Vec::new();
    loop {
        let (s, n) = dec
            .step(&buf[pos..])
            .unwrap_or_else(|e| panic!("decode failed: {e}"));
        pos += n;
        match s {
            Step::Item(e) => out.push(e),
            Step::End => break,
            Step::NeedMore => {
                if fed == data.len() {
                    break;
                }
                let k = next().clamp(1, data.len() - fed);
                buf.drain(..pos);
                pos = 0;
                buf.extend_from_slice(&data[fed..fed + k]);
                fed += k;
            }
        }
    }
    (out, buf.len() - pos)
}

/// A tiny xorshift, so chunkings are random but reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn small_limits() -> Limits {
    // Small batches so the big keys of the recordings really arrive in many pieces.
    Limits {
        batch_elements: 100,
        batch_bytes: 16 << 10,
        ..Limits::default()
    }
}

#[test]
fn every_recording_decodes_whole_bytewise_and_in_random_chunks() {
    let caps = captures();
    assert!(caps.len() >= 10, "recordings not found under {TESTDATA}");
    let mut flows_seen = 0;
    for cap in caps {
        for f in flows(&cap) {
            flows_seen += 1;
            let (whole, left) = run(&mut decoder_for(&f, small_limits()), &f.bytes, &mut || {
                usize::MAX
            });
            assert_eq!(left, 0, "{}: bytes left over", f.name);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(f.flow_id));
            let (random, _) = run(&mut decoder_for(&f, small_limits()), &f.bytes, &mut || {
                (rng.next() % 5000) as usize + 1
            });
            assert!(
                random == whole,
                "{}: random chunks differ from whole",
                f.name
            );
            // Byte by byte on everything up to 2 MB (the larger flows take too long in a debug
            // build; their random-chunk runs include many 1–10 byte chunks).
            if f.bytes.len() <= 2 << 20 {
                let (bytewise, _) = run(&mut decoder_for(&f, small_limits()), &f.bytes, &mut || 1);
                assert!(
                    bytewise == whole,
                    "{}: byte-by-byte differs from whole",
                    f.name
                );
            }
            check_structure(&f, &whole);
        }
    }
    assert!(flows_seen >= 20);
}

/// The order of §3.1 and the LSN bookkeeping of §4.5 on every flow.
fn check_structure(f: &Flow, events: &[FlowEvent]) {
    let pos = |pred: &dyn Fn(&FlowEvent) -> bool| events.iter().position(pred);
    let token = pos(&|e| *e == FlowEvent::EofToken);
    let rdb_framed = f.bytes.starts_with(b"REDIS");
    if rdb_framed {
        let fse = pos(&|e| matches!(e, FlowEvent::Snapshot(SnapshotItem::FullSyncEnd)))
            .unwrap_or_else(|| panic!("{}: no FULLSYNC_END", f.name));
        let jo = pos(&|e| matches!(e, FlowEvent::Snapshot(SnapshotItem::JournalOffset(_))))
            .unwrap_or_else(|| panic!("{}: no JOURNAL_OFFSET", f.name));
        let eof = pos(&|e| matches!(e, FlowEvent::Snapshot(SnapshotItem::Eof { .. })))
            .unwrap_or_else(|| panic!("{}: no EOF", f.name));
        let token = token.unwrap_or_else(|| panic!("{}: no eof token", f.name));
        assert!(
            fse < jo && jo < eof && eof + 1 == token,
            "{}: order",
            f.name
        );
        // Every piece sequence of a key starts with first and ends with last.
        let mut open: HashSet<(DbIndex, Vec<u8>)> = HashSet::new();
        for e in &events[..eof] {
            if let FlowEvent::Snapshot(SnapshotItem::Piece(p)) = e {
                let k = (p.db, p.key.clone());
                assert_eq!(p.first, !open.contains(&k), "{}: first flag", f.name);
                if p.last {
                    open.remove(&k);
                } else {
                    open.insert(k);
                }
            }
        }
        assert!(open.is_empty(), "{}: unfinished keys", f.name);
    } else {
        assert!(token.is_none());
    }
    // LSN markers agree with the count started at JOURNAL_OFFSET (or at the first marker for
    // a raw partial flow, which starts at the LSN the replica asked for).
    let start = events.iter().find_map(|e| match e {
        FlowEvent::Snapshot(SnapshotItem::JournalOffset(l)) => Some(*l),
        _ => None,
    });
    let mut counter = start.map(LsnCounter::new);
    let mut entries = 0;
    for e in events {
        if let FlowEvent::Journal(it) = e {
            if counter.is_none() {
                // Partial flow: the first entry carries the LSN asked for; the marker right
                // after it names it.
                let JournalItem::LsnMarker(l) = it else {
                    entries += 1;
                    continue;
                };
                assert!(entries >= 1 && l.0 >= entries, "{}: marker {l}", f.name);
                counter = Some(LsnCounter::new(Lsn(l.0 + 1)));
                continue;
            }
            if let Some(c) = counter.as_mut() {
                c.observe(it).unwrap_or_else(|m| panic!("{}: {m}", f.name));
            }
        }
    }
}

/// Decoded keys: (db, key) → (RDB type, expiry, whole value).
pub type KeyMap = BTreeMap<(u32, Vec<u8>), (u8, Option<i64>, Value)>;

/// Everything a session's flows decoded to, merged per key.
#[derive(Default)]
struct Decoded {
    keys: KeyMap,
    touched: HashSet<Vec<u8>>,
    flushed_dbs: HashSet<u32>,
    flushall: bool,
}

fn absorb(d: &mut Decoded, events: Vec<FlowEvent>) {
    for e in events {
        let cmd = match e {
            FlowEvent::Snapshot(SnapshotItem::Piece(p)) => {
                let Piece {
                    db,
                    key,
                    rdb_type,
                    expire_ms,
                    first,
                    value,
                    ..
                } = p;
                let k = (db.0, key);
                if first {
                    d.keys.insert(k, (rdb_type, expire_ms, value));
                } else {
                    d.keys
                        .get_mut(&k)
                        .expect("continuation of a known key")
                        .2
                        .append(value);
                }
                continue;
            }
            FlowEvent::Snapshot(SnapshotItem::JournalBlob(JournalItem::Entry(e)))
            | FlowEvent::Journal(JournalItem::Entry(e)) => e,
            _ => continue,
        };
        if cmd.kind == EntryKind::Ping {
            continue;
        }
        match cmd.cmd.name() {
            b"FLUSHDB" => {
                d.flushed_dbs.insert(cmd.db.0);
            }
            b"FLUSHALL" => d.flushall = true,
            _ => {}
        }
        for a in cmd.cmd.args().skip(1) {
            d.touched.insert(a.to_vec());
        }
    }
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64"),
        }
    };
    let mut out = Vec::new();
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    for ch in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in ch.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let n = ch.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A manifest string: UTF-8 text or `{"b64": …}`.
fn mstr(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Object(o) => b64(o["b64"].as_str().unwrap()),
        other => panic!("unexpected manifest string {other}"),
    }
}

/// A manifest key (JSON-encoded string, or `{"b64"}` inside JSON text).
fn mkey(k: &str) -> Vec<u8> {
    match serde_json::from_str::<serde_json::Value>(k) {
        Ok(v) => mstr(&v),
        Err(_) => k.as_bytes().to_vec(),
    }
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Compares one decoded value with the manifest's; returns a description of the difference.
fn compare(name: &str, rdb_type: u8, got: &Value, want: &serde_json::Value) -> Result<(), String> {
    let ty = want["type"].as_str().unwrap();
    let v = &want["value"];
    let ok = match (ty, got) {
        ("string", Value::String(s)) => *s == mstr(v),
        ("list", Value::List(b)) => {
            b.to_vecs() == v.as_array().unwrap().iter().map(mstr).collect::<Vec<_>>()
        }
        ("set", Value::Set(b)) | ("set", Value::SetWithExpiry { members: b, .. }) => {
            sorted(b.to_vecs()) == sorted(v.as_array().unwrap().iter().map(mstr).collect())
        }
        ("hash", Value::Hash(b)) | ("hash", Value::HashWithExpiry { fields: b, .. }) => {
            let got: BTreeMap<Vec<u8>, Vec<u8>> =
                b.pairs().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
            let want: BTreeMap<Vec<u8>, Vec<u8>> = v
                .as_object()
                .unwrap()
                .iter()
                .map(|(f, v)| (mkey(f), mstr(v)))
                .collect();
            got == want
        }
        ("zset", Value::ZSet { members, scores }) => {
            let mut got: Vec<(Vec<u8>, f64)> = members
                .iter()
                .map(<[u8]>::to_vec)
                .zip(scores.iter().map(|s| s.value))
                .collect();
            got.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let want: Vec<(Vec<u8>, f64)> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (mstr(&p[0]), p[1].as_str().unwrap().parse::<f64>().unwrap()))
                .collect();
            got == want
        }
        ("stream", Value::Stream { entries, .. }) => {
            let want = v["entries"].as_array().unwrap();
            entries.len() == want.len()
                && entries.iter().zip(want).all(|(e, w)| {
                    let id = format!("{}-{}", e.id.ms, e.id.seq);
                    let wf: BTreeMap<Vec<u8>, Vec<u8>> = w[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(f, v)| (mkey(f), mstr(v)))
                        .collect();
                    let gf: BTreeMap<Vec<u8>, Vec<u8>> = e
                        .fields
                        .pairs()
                        .map(|(f, v)| (f.to_vec(), v.to_vec()))
                        .collect();
                    id == w[0].as_str().unwrap() && gf == wf
                })
        }
        (_, Value::Json(_) | Value::Opaque(_)) if v.get("dump").is_some() => {
            // JSON and bloom filters carry their DUMP payload: decode it and compare.
            let dump = decode_dump_payload(&b64(v["dump"].as_str().unwrap()), Limits::default())
                .map_err(|e| format!("{name}: manifest DUMP does not decode: {e}"))?;
            dump.rdb_type == rdb_type && dump.value == *got
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: type {ty} / rdb type {rdb_type}: value differs"
        ))
    }
}

#[test]
fn untouched_keys_match_the_manifests() {
    let mut checked_sessions = 0;
    for rel in ["dragonfly-v1.40.1", "dragonfly-v1.34.2"] {
        let dir = Path::new(TESTDATA).join(rel);
        let mut sessions: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("manifest.json").is_file())
            .collect();
        sessions.sort();
        for s in sessions {
            let mut d = Decoded::default();
            for c in ["capture", "capture-resume"] {
                for f in flows(&s.join(c)) {
                    let (ev, _) = run(
                        &mut decoder_for(&f, Limits::default()),
                        &f.bytes,
                        &mut || usize::MAX,
                    );
                    absorb(&mut d, ev);
                }
            }
            let manifest: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(s.join("manifest.json")).unwrap())
                    .unwrap();
            let mut per_db_snapshot: HashMap<u32, usize> = HashMap::new();
            for (db, _) in d.keys.keys() {
                *per_db_snapshot.entry(*db).or_default() += 1;
            }
            let mut compared = 0;
            let mut errors = Vec::new();
            for (db, keys) in manifest.as_object().unwrap() {
                let db: u32 = db.parse().unwrap();
                for (k, want) in keys.as_object().unwrap() {
                    let key = mkey(k);
                    if d.touched.contains(&key) || d.flushall || d.flushed_dbs.contains(&db) {
                        continue;
                    }
                    match d.keys.get(&(db, key.clone())) {
                        None => errors.push(format!("{}: db {db} key {k} missing", s.display())),
                        Some((t, exp, v)) => {
                            let want_exp = want["pexpiretime"].as_i64().unwrap();
                            if exp.unwrap_or(-1) != want_exp {
                                errors.push(format!("{k}: expiry {exp:?} vs {want_exp}"));
                            }
                            if let Err(e) = compare(k, *t, v, want) {
                                errors.push(e);
                            }
                            compared += 1;
                        }
                    }
                }
            }
            // Conversely: an untouched snapshot key outside flushed dbs is in the manifest.
            let mut in_manifest: HashSet<(u32, Vec<u8>)> = HashSet::new();
            for (db, keys) in manifest.as_object().unwrap() {
                for k in keys.as_object().unwrap().keys() {
                    in_manifest.insert((db.parse().unwrap(), mkey(k)));
                }
            }
            for (db, key) in d.keys.keys() {
                if d.touched.contains(key) || d.flushall || d.flushed_dbs.contains(db) {
                    continue;
                }
                if !in_manifest.contains(&(*db, key.clone())) {
                    errors.push(format!(
                        "{}: snapshot key {:?} in db {db} not in the manifest",
                        s.display(),
                        String::from_utf8_lossy(key)
                    ));
                }
            }
            assert!(errors.is_empty(), "{}:\n{}", s.display(), errors.join("\n"));
            eprintln!("{}: {compared} untouched keys compared", s.display());
            assert!(
                compared > 300,
                "{}: only {compared} keys compared",
                s.display()
            );
            checked_sessions += 1;
        }
    }
    assert_eq!(checked_sessions, 8);
}
