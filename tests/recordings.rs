//! Integration tests on the real Dragonfly recordings (`../shared/testdata`): the recording
//! reader, the manifest comparator against a real redis-server, and the main acceptance of
//! issue 3 — every recording decoded, rewritten and applied to an empty redis-server equals its
//! manifest, with the types plain Redis cannot hold counted as skipped.

pub mod capture;
pub mod keyspace;
pub mod redis;

use capture::{all_recordings, Recording};
use df2redis_sync::journal::LsnCounter;
use df2redis_sync::model::{Cmd, Lsn};
use df2redis_sync::rdb::{FlowDecoder, FlowEvent, Limits, SnapshotItem, Step};
use df2redis_sync::rewrite::{Options, Rewriter, Rewritten, SkipReason};
use keyspace::{compare, dump_redis, load_manifest, KeyState, Keyspace, Value};
use std::collections::BTreeSet;

/// Every recording loads: one flow per shard, flow ids 0..N, FULL flows start with the RDB
/// magic and carry their eof token after the split point (the token follows EOF, which the
/// master writes only after STARTSTABLE), PARTIAL flows start with a journal SELECT.
#[test]
fn recordings_are_read_and_split() {
    let recs = all_recordings();
    assert!(
        recs.len() >= 8,
        "expected 8 recordings, found {}",
        recs.len()
    );
    for dir in recs {
        let rec = Recording::load(&dir).unwrap();
        for s in &rec.sessions {
            let ids: Vec<u32> = s.flows.iter().map(|f| f.id).collect();
            let want: Vec<u32> = (0..s.flows.len() as u32).collect();
            assert_eq!(ids, want, "{}", s.dir.display());
            for f in &s.flows {
                let ctx = format!("{} flow {}", s.dir.display(), f.id);
                assert_eq!(f.token.len(), 40, "{ctx}");
                assert!(f.split <= f.data.len(), "{ctx}");
                if f.partial {
                    assert!(f.requested_lsn.is_some(), "{ctx}");
                    continue;
                }
                assert!(f.data.starts_with(b"REDIS0009"), "{ctx}");
                let mut eof_token = vec![0xFFu8, 0, 0, 0, 0, 0, 0, 0, 0];
                eof_token.extend_from_slice(f.token.as_bytes());
                let at = memchr::memmem::find(&f.data, &eof_token)
                    .unwrap_or_else(|| panic!("{ctx}: no EOF + token"));
                assert!(
                    at >= f.split,
                    "{ctx}: EOF at {at} before the split {}",
                    f.split
                );
                // FULLSYNC_END (C8 + 8 zero bytes) arrives before STARTSTABLE in every
                // uncompressed flow; in compressed ones it may sit inside a frame.
                if let Some(fse) = memchr::memmem::find(&f.data, &[0xC8, 0, 0, 0, 0, 0, 0, 0, 0]) {
                    assert!(
                        fse < f.split || f.split == 0,
                        "{ctx}: FULLSYNC_END at {fse}, split {}",
                        f.split
                    );
                }
            }
        }
    }
}

/// Writes a manifest keyspace into Redis with plain commands (the comparator's self-test; the
/// product's rewrite is tested separately). Stream groups are left out: commands cannot
/// reproduce arbitrary PELs without the source's data, which the manifest does not hold.
fn manifest_to_cmds(ks: &Keyspace) -> Vec<Cmd> {
    let mut out = Vec::new();
    for ((db, key), st) in ks {
        out.push(Cmd::from_args([
            b"SELECT".to_vec(),
            db.to_string().into_bytes(),
        ]));
        let mut c = Cmd::new("DEL");
        c.arg(key);
        out.push(c);
        match &st.value {
            Value::String(v) => out.push(Cmd::from_args([&b"SET"[..], key, v])),
            Value::List(v) => {
                let mut c = Cmd::new("RPUSH");
                c.arg(key);
                v.iter().for_each(|e| {
                    c.arg(e);
                });
                out.push(c);
            }
            Value::Set(v) => {
                let mut c = Cmd::new("SADD");
                c.arg(key);
                v.iter().for_each(|e| {
                    c.arg(e);
                });
                out.push(c);
            }
            Value::Zset(v) => {
                let mut c = Cmd::new("ZADD");
                c.arg(key);
                for (m, s) in v {
                    c.arg(format!("{s:?}").as_bytes()).arg(m);
                }
                out.push(c);
            }
            Value::Hash(v) => {
                let mut c = Cmd::new("HSET");
                c.arg(key);
                for (f, x) in v {
                    c.arg(f).arg(x);
                }
                out.push(c);
            }
            Value::Stream { entries, .. } => {
                if entries.is_empty() {
                    out.push(Cmd::from_args([
                        &b"XADD"[..],
                        key,
                        b"MAXLEN",
                        b"0",
                        b"*",
                        b"x",
                        b"x",
                    ]));
                }
                for (id, fields) in entries {
                    let mut c = Cmd::new("XADD");
                    c.arg(key).arg(id.as_bytes());
                    for (f, x) in fields {
                        c.arg(f).arg(x);
                    }
                    out.push(c);
                }
            }
            Value::Unholdable(_) => continue,
        }
        if st.pexpiretime >= 0 {
            let mut c = Cmd::new("PEXPIREAT");
            c.arg(key).arg_int(st.pexpiretime);
            out.push(c);
        }
    }
    out
}

fn without_groups(ks: &Keyspace) -> Keyspace {
    ks.iter()
        .map(|(k, st)| {
            let value = match &st.value {
                Value::Stream { entries, .. } => Value::Stream {
                    entries: entries.clone(),
                    groups: Vec::new(),
                },
                v => v.clone(),
            };
            (
                k.clone(),
                KeyState {
                    pexpiretime: st.pexpiretime,
                    value,
                },
            )
        })
        .collect()
}

/// The comparator against a real redis-server: a manifest written with plain commands compares
/// equal (unholdable keys listed as skipped), and each kind of change is reported by key.
#[test]
fn manifest_comparator_finds_every_difference() {
    let dir = &all_recordings()[0];
    let manifest = without_groups(&load_manifest(&dir.join("manifest.json")).unwrap());
    let skipped: BTreeSet<(u32, Vec<u8>)> = manifest
        .iter()
        .filter(|(_, st)| matches!(st.value, Value::Unholdable(_)))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        skipped.len(),
        2,
        "the dataset has one JSON and one bloom key"
    );
    let server = redis::Server::start();
    let mut conn = server.conn();
    for (c, r) in manifest_to_cmds(&manifest)
        .iter()
        .zip(conn.pipeline(&manifest_to_cmds(&manifest)))
    {
        assert!(!matches!(r, redis::Reply::Error(_)), "{c:?}: {r:?}");
    }
    let got = without_groups(&dump_redis(&mut conn).unwrap());
    assert_eq!(got.len() + skipped.len(), manifest.len());
    let diffs = compare(&manifest, &got, &skipped, 0);
    assert!(diffs.is_empty(), "{diffs:#?}");

    // Now break one thing of each kind and expect exactly those keys in the listing.
    conn.cmd(&[b"SELECT", b"0"]);
    conn.cmd(&[b"APPEND", b"str:small:5", b"x"]);
    conn.cmd(&[b"PEXPIREAT", b"ttl:str:3", b"1924992003001"]);
    conn.cmd(&[b"RPUSH", b"list:ints", b"extra"]);
    conn.cmd(&[b"ZADD", b"zset:tricky", b"1.0000000000000001e-07", b"tiny"]);
    conn.cmd(&[b"HDEL", b"hash:large", b"field-7"]);
    conn.cmd(&[b"SET", b"not:in:manifest", b"1"]);
    conn.cmd(&[b"DEL", b"set:large"]);
    conn.cmd(&[b"SET", b"json:doc", b"{}"]);
    let got = without_groups(&dump_redis(&mut conn).unwrap());
    let mut skipped2 = skipped.clone();
    skipped2.insert((0, b"str:small:6".to_vec()));
    let diffs = compare(&manifest, &got, &skipped2, 0);
    let keys_hit: BTreeSet<&str> = diffs
        .iter()
        .map(|d| d.split(':').next().unwrap_or_default())
        .collect();
    let expect = [
        "db 0 key str",
        "db 0 key ttl",
        "db 0 key list",
        "db 0 key zset",
        "db 0 key hash",
        "db 0 key not",
        "db 0 key set",
        "db 0 key json",
    ];
    for e in expect {
        assert!(keys_hit.contains(e), "{e} not reported in {diffs:#?}");
    }
    assert_eq!(diffs.len(), 9, "{diffs:#?}");
    // A TTL within the tolerance is equal.
    let diffs = compare(&manifest, &got, &skipped2, 1000);
    assert_eq!(diffs.len(), 8, "{diffs:#?}");
}

/// One decoded and rewritten item of a flow.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    /// Absolute offset of the item in the flow's bytes (after the FLOW reply).
    offset: u64,
    /// LSN of a live journal entry.
    lsn: Option<u64>,
    /// Which event produced it (for the split check).
    event: &'static str,
    out: Rewritten,
}

/// Decodes one flow fed in chunks whose sizes come from `chunk` (called with the remaining
/// length), rewrites every item, and returns them in order.
fn decode_flow(
    flow: &capture::Flow,
    rw: &mut Rewriter,
    mut chunk: impl FnMut(usize) -> usize,
) -> Result<Vec<Item>, String> {
    let limits = Limits::default();
    let mut dec = if flow.partial && !flow.data.starts_with(b"REDIS") {
        FlowDecoder::new_partial(limits)
    } else {
        FlowDecoder::new_full(flow.token.as_bytes(), limits)
    };
    let mut lsn = flow.requested_lsn.map(|l| LsnCounter::new(Lsn(l)));
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let data = &flow.data;
    let ctx = |at: u64, e: &dyn std::fmt::Display| format!("flow {} at byte {at}: {e}", flow.id);
    loop {
        let at = dec.offset();
        let (step, used) = dec
            .step(&buf)
            .map_err(|e| format!("flow {}: {e}", flow.id))?;
        buf.drain(..used);
        match step {
            Step::NeedMore => {
                if fed == data.len() {
                    break;
                }
                let n = chunk(data.len() - fed).clamp(1, data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
            }
            Step::End => break,
            Step::Item(ev) => {
                let (event, r, l) = match &ev {
                    FlowEvent::Snapshot(item) => {
                        if let SnapshotItem::JournalOffset(off) = item {
                            lsn = Some(LsnCounter::new(*off));
                        }
                        let name = match item {
                            SnapshotItem::FullSyncEnd => "fullsync-end",
                            SnapshotItem::JournalOffset(_) => "journal-offset",
                            SnapshotItem::Piece(_) => "piece",
                            SnapshotItem::JournalBlob(_) => "journal-blob",
                            _ => "snapshot",
                        };
                        (name, rw.snapshot_item(item).map_err(|e| ctx(at, &e))?, None)
                    }
                    FlowEvent::EofToken => ("eof-token", Rewritten::default(), None),
                    FlowEvent::Journal(j) => {
                        let l = match lsn.as_mut() {
                            Some(c) => c.observe(j).map_err(|e| ctx(at, &e))?,
                            None => return Err(ctx(at, &"journal entry before JOURNAL_OFFSET")),
                        };
                        ("journal", rw.journal_item(j).map_err(|e| ctx(at, &e))?, l)
                    }
                };
                out.push(Item {
                    offset: at,
                    lsn: l.map(|l| l.0),
                    event,
                    out: r,
                });
            }
        }
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn options() -> Options {
    Options {
        now_ms: now_ms(),
        ..Options::default()
    }
}

/// A tiny deterministic PRNG (xorshift) for chunk sizes, so failures replay.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Applies the rewritten items of all flows of one session to Redis: per flow in order, the
/// flows one after the other, except that a global command (FLUSHALL/FLUSHDB) is a barrier:
/// every flow is applied up to its copy, the command runs once, then every flow goes on
/// (§4.6). Returns the keys reported as not written.
fn apply_session(
    conn: &mut redis::Conn,
    flows: &[Vec<Item>],
    skipped: &mut BTreeSet<(u32, Vec<u8>)>,
) -> Result<usize, String> {
    // Split every flow at its global items; all flows must agree on the txids.
    let mut segments: Vec<Vec<&[Item]>> = Vec::new();
    let mut globals: Vec<Vec<&Item>> = Vec::new();
    for items in flows {
        let mut segs = Vec::new();
        let mut gs = Vec::new();
        let mut start = 0;
        for (i, it) in items.iter().enumerate() {
            if it.out.global.is_some() {
                segs.push(&items[start..i]);
                gs.push(it);
                start = i + 1;
            }
        }
        segs.push(&items[start..]);
        segments.push(segs);
        globals.push(gs);
    }
    let txids = |gs: &Vec<&Item>| {
        gs.iter()
            .map(|g| g.out.global.map(|x| x.txid))
            .collect::<Vec<_>>()
    };
    for gs in &globals {
        if txids(gs) != txids(&globals[0]) {
            return Err(format!(
                "flows disagree on global commands: {:?} vs {:?}",
                txids(gs),
                txids(&globals[0])
            ));
        }
    }
    let mut applied = 0;
    let mut run = |conn: &mut redis::Conn, r: &Rewritten| -> Result<(), String> {
        if let Some(s) = &r.skipped {
            if s.reason.key_not_written() && s.reason != SkipReason::Expired {
                if let Some(k) = &s.key {
                    skipped.insert((r.db.0, k.clone()));
                }
            }
        }
        if r.cmds.is_empty() {
            return Ok(());
        }
        let mut cmds = vec![Cmd::from_args([
            b"SELECT".to_vec(),
            r.db.0.to_string().into_bytes(),
        ])];
        if r.atomic {
            cmds.push(Cmd::new("MULTI"));
        }
        cmds.extend(r.cmds.iter().cloned());
        if r.atomic {
            cmds.push(Cmd::new("EXEC"));
        }
        for (c, reply) in cmds.iter().zip(conn.pipeline(&cmds)) {
            if let redis::Reply::Error(e) = reply {
                return Err(format!("{c:?} -> {e}"));
            }
        }
        applied += r.cmds.len();
        Ok(())
    };
    for seg in 0..segments[0].len() {
        for segs in &segments {
            for it in segs[seg] {
                run(conn, &it.out)?;
            }
        }
        if let Some(g) = globals[0].get(seg) {
            run(conn, &g.out)?;
        }
    }
    Ok(applied)
}

/// The main acceptance of issue 3: for every recording, every flow decodes without error
/// (fed whole and in random chunks, with identical results), FULLSYNC_END comes before the
/// recorded STARTSTABLE and JOURNAL_OFFSET after it, and applying the rewritten snapshot and
/// journal to an empty redis-server yields exactly the manifest — keys, values, TTLs (to the
/// millisecond), dbs — with the types plain Redis cannot hold reported as skipped.
#[test]
fn recordings_replayed_into_redis_equal_their_manifests() {
    let mut failures = Vec::new();
    for dir in all_recordings() {
        let rec = Recording::load(&dir).unwrap();
        match replay_recording(&rec) {
            Ok(summary) => eprintln!("{}: {summary}", rec.name),
            Err(e) => failures.push(format!("{}: {e}", rec.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn replay_recording(rec: &Recording) -> Result<String, String> {
    let server = redis::Server::start();
    let mut conn = server.conn();
    let mut skipped = BTreeSet::new();
    let mut applied = 0;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ rec.dir.to_string_lossy().len() as u64);
    let n_sessions = rec.sessions.len();
    for (si, session) in rec.sessions.iter().enumerate() {
        let mut flows = Vec::new();
        for flow in &session.flows {
            let whole = decode_flow(flow, &mut Rewriter::new(options()), |n| n)?;
            let chunked =
                decode_flow(flow, &mut Rewriter::new(options()), |_| 1 + rng.below(3000))?;
            let strip = |v: &[Item]| v.iter().map(|i| (i.lsn, i.out.clone())).collect::<Vec<_>>();
            if strip(&whole) != strip(&chunked) {
                return Err(format!(
                    "flow {}: whole and chunked decodes differ",
                    flow.id
                ));
            }
            if !flow.partial {
                let at = |ev: &str| whole.iter().find(|i| i.event == ev).map(|i| i.offset);
                let fse = at("fullsync-end").ok_or(format!("flow {}: no FULLSYNC_END", flow.id))?;
                if fse >= flow.split as u64 {
                    return Err(format!(
                        "flow {}: FULLSYNC_END at {fse}, after the split {}",
                        flow.id, flow.split
                    ));
                }
                if let Some(jo) = at("journal-offset") {
                    if jo < flow.split as u64 && flow.split < flow.data.len() {
                        return Err(format!(
                            "flow {}: JOURNAL_OFFSET at {jo}, before the split {}",
                            flow.id, flow.split
                        ));
                    }
                }
            }
            let mut items = whole;
            // A session that was cut and resumed: keep only what the resumed session does not
            // replay, i.e. the live entries below the LSN the replica resumed from.
            if si + 1 < n_sessions {
                let resume = rec.sessions[si + 1]
                    .flows
                    .iter()
                    .find(|f| f.id == flow.id)
                    .and_then(|f| f.requested_lsn)
                    .ok_or(format!("flow {}: resumed session has no LSN", flow.id))?;
                items.retain(|i| !matches!(i.lsn, Some(l) if l >= resume));
            }
            flows.push(items);
        }
        applied += apply_session(&mut conn, &flows, &mut skipped)?;
    }
    let manifest = load_manifest(&rec.dir.join("manifest.json"))?;
    let got = dump_redis(&mut conn)?;
    let diffs = compare(&manifest, &got, &skipped, 0);
    if !diffs.is_empty() {
        return Err(format!(
            "{} difference(s):\n{}",
            diffs.len(),
            diffs.join("\n")
        ));
    }
    Ok(format!(
        "{} keys equal to the manifest, {} skipped (unholdable), {applied} commands applied",
        got.len(),
        skipped.len()
    ))
}

/// Every live journal command of every recording (the bytes after the eof token of a FULL
/// flow, or the whole of a v1.35+ PARTIAL flow) rewrites under the strict policy (unknown
/// command = error), and the only counted skips are Dragonfly-only TTLs and module commands.
#[test]
fn every_recorded_journal_command_rewrites() {
    use df2redis_sync::journal::{JournalDecoder, JournalItem};
    use std::collections::BTreeMap;
    let mut names: BTreeMap<String, u64> = BTreeMap::new();
    let mut skips: BTreeMap<String, u64> = BTreeMap::new();
    for dir in all_recordings() {
        let rec = Recording::load(&dir).unwrap();
        for s in &rec.sessions {
            for f in &s.flows {
                let start = if f.partial && !f.data.starts_with(b"REDIS") {
                    0
                } else {
                    let mut eof_token = vec![0xFFu8, 0, 0, 0, 0, 0, 0, 0, 0];
                    eof_token.extend_from_slice(f.token.as_bytes());
                    memchr::memmem::find(&f.data, &eof_token).unwrap() + eof_token.len()
                };
                let mut dec = JournalDecoder::with_offset(Limits::default(), start as u64);
                let mut rw = Rewriter::new(options());
                let mut pos = start;
                loop {
                    let (step, used) = dec
                        .step(&f.data[pos..])
                        .unwrap_or_else(|e| panic!("{} flow {}: {e}", s.dir.display(), f.id));
                    pos += used;
                    let Step::Item(JournalItem::Entry(e)) = step else {
                        if matches!(step, Step::Item(_)) {
                            continue;
                        }
                        break;
                    };
                    let r = rw
                        .entry(&e)
                        .unwrap_or_else(|err| panic!("{} flow {}: {err}", s.dir.display(), f.id));
                    *names
                        .entry(String::from_utf8_lossy(e.cmd.name()).into_owned())
                        .or_default() += 1;
                    if let Some(sk) = r.skipped {
                        *skips.entry(sk.reason.to_string()).or_default() += 1;
                    }
                }
            }
        }
    }
    eprintln!("journal commands: {names:?}\ncounted skips: {skips:?}");
    assert!(names.len() > 20, "{names:?}");
    for reason in skips.keys() {
        assert!(
            reason.contains("JSON") || reason.contains("TTL") || reason.contains("STICK"),
            "unexpected skip {reason}"
        );
    }
}

/// The emulator's key → shard map is Dragonfly's: every key of every recorded snapshot arrived
/// on flow `XXH64(key, 120577240643) mod flows` — so the emulator sends each key over the same
/// flow number as a real master with the same shard count.
#[test]
fn emulator_shard_map_matches_every_recorded_snapshot() {
    use df2redis_sync::emulator::server::shard_of;
    for dir in all_recordings() {
        let rec = Recording::load(&dir).unwrap();
        for s in &rec.sessions {
            let n = s.flows.len();
            for f in s.flows.iter().filter(|f| !f.partial) {
                let mut rw = Rewriter::new(options());
                let items = decode_flow(f, &mut rw, |rest| rest).unwrap();
                let mut checked = 0;
                for it in items
                    .iter()
                    .filter(|i| i.event == "snapshot" || i.event == "piece")
                {
                    // Lua bodies from the AUX fields become `SCRIPT LOAD`: no key.
                    let Some(key) = it
                        .out
                        .cmds
                        .first()
                        .filter(|c| !c.name().eq_ignore_ascii_case(b"SCRIPT"))
                        .and_then(|c| c.get(1))
                    else {
                        continue;
                    };
                    assert_eq!(
                        shard_of(key, n),
                        f.id as usize,
                        "{} flow {}: key {:?}",
                        s.dir.display(),
                        f.id,
                        String::from_utf8_lossy(key)
                    );
                    checked += 1;
                }
                assert!(
                    checked > 0 || items.is_empty(),
                    "{} flow {}",
                    s.dir.display(),
                    f.id
                );
            }
        }
    }
}
