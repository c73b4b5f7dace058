//! Integration tests: journal. LSN bookkeeping against every `REPLCONF ACK` the real
//! Dragonfly replica sent in the recordings, resumed LSNs, recorded entries, and property
//! tests of the journal decoder against a reference encoder.

use std::path::Path;

use df2redis_sync::journal::{EntryKind, JournalDecoder, JournalEntry, JournalItem, LsnCounter};
use df2redis_sync::model::{Cmd, DbIndex, Lsn};
use df2redis_sync::rdb::{FlowEvent, Limits, SnapshotItem, Step};
use proptest::prelude::*;

use crate::rdb::{captures, decoder_for, flows, run};

/// The `REPLCONF ACK <n>` values a replica sent on a flow connection, and the LSN it asked
/// for in `DFLY FLOW` (partial sync), from the c2s bytes.
fn acks_and_requested(c2s: &[u8]) -> (Vec<u64>, Option<u64>) {
    let text = String::from_utf8_lossy(c2s);
    let mut acks = Vec::new();
    let mut requested = None;
    for line in text.split("\r\n") {
        if let Some(n) = line.strip_prefix("REPLCONF ACK ") {
            acks.push(n.parse().unwrap());
        } else if line.starts_with("DFLY FLOW") {
            requested = line.split(' ').nth(5).map(|l| l.parse().unwrap());
        }
    }
    (acks, requested)
}

/// Walks a flow's events with an [`LsnCounter`] and returns every `next` value at an entry
/// boundary (the start included) and the final `next`.
fn boundaries(events: &[FlowEvent], requested: Option<u64>) -> (Vec<u64>, u64) {
    let mut counter = requested.map(|l| LsnCounter::new(Lsn(l)));
    let mut out: Vec<u64> = requested.into_iter().collect();
    for e in events {
        match e {
            FlowEvent::Snapshot(SnapshotItem::JournalOffset(l)) => {
                counter = Some(LsnCounter::new(*l));
                out.push(l.0);
            }
            FlowEvent::Journal(it) => {
                let c = counter.as_mut().expect("journal before any LSN start");
                c.observe(it).expect("LSN marker disagrees with the count");
                out.push(c.next().0);
            }
            _ => {}
        }
    }
    let last = counter.map(|c| c.next().0).unwrap_or(0);
    (out, last)
}

#[test]
fn every_replica_ack_is_the_next_lsn_at_an_entry_boundary() {
    let mut acks_checked = 0;
    for cap in captures() {
        for (i, f) in flows(&cap).into_iter().enumerate() {
            let conn = f.name.rsplit(' ').next().unwrap().to_string();
            let c2s = std::fs::read(cap.join(format!("{conn}.c2s.bin"))).unwrap();
            let (acks, requested) = acks_and_requested(&c2s);
            let (events, _) = run(
                &mut decoder_for(&f, Limits::default()),
                &f.bytes,
                &mut || usize::MAX,
            );
            // A raw (v1.35+) partial flow counts from the LSN asked for; an RDB-framed one
            // restarts at JOURNAL_OFFSET.
            let start = if f.bytes.starts_with(b"REDIS") {
                None
            } else {
                requested
            };
            let (bounds, last) = boundaries(&events, start);
            let mut prev = 0;
            for a in &acks {
                assert!(
                    bounds.contains(a),
                    "{} (#{i}): ACK {a} is not a boundary",
                    f.name
                );
                assert!(*a >= prev, "{}: ACKs go backwards", f.name);
                prev = *a;
            }
            assert_eq!(acks.last().copied(), Some(last), "{}: last ACK", f.name);
            acks_checked += acks.len();
        }
    }
    // §0.2: 85 ACKs in the v1.40.1 sessions without the extra captures, 42 in v1.34.2.
    assert!(acks_checked >= 127, "only {acks_checked} ACKs checked");
}

#[test]
fn resumed_flows_ask_for_the_final_next_lsn_of_the_first_session() {
    for rel in [
        "dragonfly-v1.40.1/s4-partial-resume",
        "dragonfly-v1.34.2/s6-partial-resume",
    ] {
        let base = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata")).join(rel);
        let first = flows(&base.join("capture"));
        let resumed = flows(&base.join("capture-resume"));
        assert_eq!(first.len(), resumed.len());
        for r in &resumed {
            assert!(r.partial, "{}: not PARTIAL", r.name);
            let conn = r.name.rsplit(' ').next().unwrap().to_string();
            let c2s =
                std::fs::read(base.join("capture-resume").join(format!("{conn}.c2s.bin"))).unwrap();
            let (_, requested) = acks_and_requested(&c2s);
            let f = first.iter().find(|f| f.flow_id == r.flow_id).unwrap();
            let (events, _) = run(
                &mut decoder_for(f, Limits::default()),
                &f.bytes,
                &mut || usize::MAX,
            );
            let (_, last) = boundaries(&events, None);
            assert_eq!(requested, Some(last), "{}", r.name);
        }
    }
}

#[test]
fn recorded_entries_of_s2_flow_0() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        .join("dragonfly-v1.40.1/s2-plain-3shards/capture");
    let mut flushdb_txids = Vec::new();
    for f in flows(&dir) {
        let (events, _) = run(
            &mut decoder_for(&f, Limits::default()),
            &f.bytes,
            &mut || usize::MAX,
        );
        let journal: Vec<&JournalItem> = events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Journal(j) => Some(j),
                _ => None,
            })
            .collect();
        for j in &journal {
            if let JournalItem::Entry(e) = j {
                if e.cmd.name() == b"FLUSHDB" {
                    flushdb_txids.push((e.txid, e.db));
                }
            }
        }
        if f.flow_id == 0 {
            // §4.4: the first entry is `SET w:str:2 w2` (txid 0, db 0), then the marker 1.
            let JournalItem::Entry(e) = journal[0] else {
                panic!("first item is not an entry")
            };
            assert_eq!(e.cmd, Cmd::from_args(["SET", "w:str:2", "w2"]));
            assert_eq!((e.txid, e.db, e.kind), (0, DbIndex(0), EntryKind::Command));
            assert_eq!(*journal[1], JournalItem::LsnMarker(Lsn(1)));
            let entries = journal
                .iter()
                .filter(|j| matches!(j, JournalItem::Entry(_)))
                .count();
            assert_eq!(entries, 124, "§4.3: 124 entries on flow 0");
        }
    }
    // One FLUSHDB of db 3 per flow, all with txid 9.
    assert_eq!(flushdb_txids, vec![(9, DbIndex(3)); 3]);
}

// ---------------------------------------------------------------------------------------------
// Property tests against a reference encoder.
// ---------------------------------------------------------------------------------------------

fn put_pu(out: &mut Vec<u8>, v: u64) {
    df2redis_sync::wire::put_pu(out, v);
}

/// Reference encoder of §4.3.
fn encode(items: &[(Option<u32>, JournalItem)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (select, it) in items {
        if let Some(db) = select {
            out.push(6);
            put_pu(&mut out, u64::from(*db));
        }
        match it {
            JournalItem::LsnMarker(l) => {
                out.push(15);
                put_pu(&mut out, l.0);
            }
            JournalItem::Entry(e) => {
                let op = match e.kind {
                    EntryKind::Command => 10,
                    EntryKind::Expired => 9,
                    EntryKind::MultiCommand => 11,
                    EntryKind::Exec => 12,
                    EntryKind::Ping => 13,
                    EntryKind::Noop => 0,
                    EntryKind::Fin => 14,
                };
                out.push(op);
                if matches!(
                    e.kind,
                    EntryKind::Command
                        | EntryKind::Expired
                        | EntryKind::MultiCommand
                        | EntryKind::Exec
                ) {
                    put_pu(&mut out, e.txid);
                    put_pu(&mut out, e.shard_cnt);
                }
                if e.kind != EntryKind::Exec && !e.cmd.is_empty() {
                    put_pu(&mut out, e.cmd.len() as u64);
                    put_pu(&mut out, e.cmd.payload_len() as u64);
                    for a in e.cmd.args() {
                        put_pu(&mut out, a.len() as u64);
                        out.extend_from_slice(a);
                    }
                }
            }
        }
    }
    out
}

fn arb_item() -> impl Strategy<Value = (Option<u32>, JournalItem)> {
    let args = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70), 1..6);
    prop_oneof![
        (
            proptest::option::of(0u32..20000),
            prop_oneof![
                Just(EntryKind::Command),
                Just(EntryKind::Expired),
                Just(EntryKind::MultiCommand)
            ],
            any::<u64>(),
            0u64..5,
            args
        )
            .prop_map(|(sel, kind, txid, shard_cnt, args)| {
                (
                    sel,
                    JournalItem::Entry(JournalEntry {
                        kind,
                        db: DbIndex(0),
                        txid,
                        shard_cnt,
                        cmd: Cmd::from_args(args),
                    }),
                )
            }),
        (any::<u64>(), 0u64..3).prop_map(|(txid, sc)| (
            None,
            JournalItem::Entry(JournalEntry {
                kind: EntryKind::Exec,
                db: DbIndex(0),
                txid,
                shard_cnt: sc,
                cmd: Cmd::default(),
            })
        )),
        Just((
            None,
            JournalItem::Entry(JournalEntry {
                kind: EntryKind::Ping,
                db: DbIndex(0),
                txid: 0,
                shard_cnt: 0,
                cmd: Cmd::default(),
            })
        )),
        any::<u64>().prop_map(|l| (None, JournalItem::LsnMarker(Lsn(l)))),
    ]
}

/// Fills in the db each entry must carry (the last SELECT before it).
fn with_dbs(items: &[(Option<u32>, JournalItem)]) -> Vec<JournalItem> {
    let mut db = 0;
    items
        .iter()
        .map(|(sel, it)| {
            if let Some(d) = sel {
                db = *d;
            }
            match it {
                JournalItem::Entry(e) => JournalItem::Entry(JournalEntry {
                    db: DbIndex(db),
                    ..e.clone()
                }),
                m => m.clone(),
            }
        })
        .collect()
}

fn decode_chunked(bytes: &[u8], sizes: &[usize]) -> Vec<JournalItem> {
    let mut d = JournalDecoder::new(Limits::default());
    let mut buf = Vec::new();
    let (mut pos, mut fed, mut k) = (0, 0, 0);
    let mut out = Vec::new();
    loop {
        let (s, n) = d.step(&buf[pos..]).unwrap();
        pos += n;
        match s {
            Step::Item(it) => out.push(it),
            _ => {
                if fed == bytes.len() {
                    break;
                }
                let c = sizes[k % sizes.len()].clamp(1, bytes.len() - fed);
                k += 1;
                buf.drain(..pos);
                pos = 0;
                buf.extend_from_slice(&bytes[fed..fed + c]);
                fed += c;
            }
        }
    }
    assert_eq!(pos, buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn journal_round_trips_in_any_chunking(
        items in proptest::collection::vec(arb_item(), 0..40),
        sizes in proptest::collection::vec(1usize..40, 1..10),
    ) {
        let bytes = encode(&items);
        let want = with_dbs(&items);
        prop_assert_eq!(decode_chunked(&bytes, &[usize::MAX]), want.clone());
        prop_assert_eq!(decode_chunked(&bytes, &sizes), want.clone());
        prop_assert_eq!(decode_chunked(&bytes, &[1]), want);
    }

    #[test]
    fn journal_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut d = JournalDecoder::new(Limits::default());
        let mut pos = 0;
        while let Ok((Step::Item(_), n)) = d.step(&bytes[pos..]) {
            pos += n;
        }
    }
}
