//! Data sets shared by the criterion benches: whole flow streams (snapshot, eof token) built
//! with the emulator's snapshot encoder, so every value uses the encoding real Dragonfly picks
//! (listpacks for small collections, quicklist 2 nodes, stream listpacks, LZ4 blobs), and a
//! journal stream of the kind a flow carries after the snapshot.

#![allow(dead_code)]

use df2redis_sync::emulator::journal::encode_command;
use df2redis_sync::emulator::rdbenc::{Compression, FrameOpts, SnapWriter, StreamVal, Val};
use df2redis_sync::journal::JournalItem;
use df2redis_sync::rdb::{EventRef, FlowDecoder, FlowEvent, Limits, Step};

/// The 40-byte eof token every synthetic flow ends with.
pub const TOKEN: &[u8; 40] = b"0123456789abcdef0123456789abcdef01234567";

/// One synthetic flow: its bytes after the FLOW reply, and how many elements it holds
/// (keys for strings, members / pairs / list elements / stream entries for collections).
pub struct Flow {
    /// Name of the data set, for the bench id.
    pub name: &'static str,
    /// The flow bytes: snapshot, FULLSYNC_END, JOURNAL_OFFSET, EOF, eof token.
    pub bytes: Vec<u8>,
    /// Elements it holds.
    pub elements: u64,
    /// Keys it holds.
    pub keys: u64,
}

/// Serializes `keys` as one flow, framed as Dragonfly v1.40 does (tagged chunks of 64 KiB,
/// flushes of 64 KiB) with the given blob compression.
pub fn flow(
    name: &'static str,
    compression: Compression,
    keys: impl Iterator<Item = (Vec<u8>, Val)>,
) -> Flow {
    let mut w = SnapWriter::new(FrameOpts {
        compression,
        tagged: true,
        chunk_size: 64 << 10,
        flush_size: 64 << 10,
    });
    w.header(&[
        ("redis-ver", b"7.4.0".to_vec()),
        ("df-ver", b"v1.40.1".to_vec()),
    ]);
    let (mut n_keys, mut elements) = (0u64, 0u64);
    for (k, v) in keys {
        n_keys += 1;
        elements += match &v {
            Val::Str(_) => 1,
            Val::List(l) | Val::Set(l) => l.len() as u64,
            Val::ZSet(z) => z.len() as u64,
            Val::Hash(h) => h.len() as u64,
            Val::Stream(s) => s.entries.len() as u64,
        };
        w.entry(0, &k, None, &v);
    }
    w.end_db();
    w.fullsync_end();
    w.finish(1, TOKEN);
    Flow {
        name,
        bytes: w.take(),
        elements,
        keys: n_keys,
    }
}

/// `n` keys `key:<8 digits>` holding `size`-byte strings (digits, so they compress like
/// typical payloads do: somewhat, not entirely).
pub fn strings(n: u64, size: usize) -> impl Iterator<Item = (Vec<u8>, Val)> {
    (0..n).map(move |i| {
        let v: Vec<u8> = (0..size)
            .map(|j| b'a' + ((i as usize + j) % 26) as u8)
            .collect();
        (format!("key:{i:08}").into_bytes(), Val::Str(v))
    })
}

/// Every per-type data set of the decode benches (uncompressed flows).
pub fn per_type() -> Vec<Flow> {
    let none = Compression::None;
    vec![
        flow("string-64B", none, strings(100_000, 64)),
        flow("string-16KiB", none, strings(1_000, 16 << 10)),
        // Small hashes: listpack-encoded (≤ 128 pairs, values ≤ 64 bytes).
        flow(
            "hash-listpack",
            none,
            (0..10_000).map(|k| {
                let pairs = (0..10)
                    .map(|i| {
                        (
                            format!("field-{i}").into_bytes(),
                            format!("value-{k}-{i}").into_bytes(),
                        )
                    })
                    .collect();
                (format!("h:{k}").into_bytes(), Val::Hash(pairs))
            }),
        ),
        // Big hashes: plain encoding, one pair per element.
        flow(
            "hash-plain",
            none,
            (0..100).map(|k| {
                let pairs = (0..1000)
                    .map(|i| {
                        (
                            format!("field-{i}").into_bytes(),
                            format!("value-{k}-{i}-xxxxxxxx").into_bytes(),
                        )
                    })
                    .collect();
                (format!("hash:{k}").into_bytes(), Val::Hash(pairs))
            }),
        ),
        flow(
            "list-quicklist2",
            none,
            (0..100).map(|k| {
                let items = (0..1000)
                    .map(|i| format!("element-{k}-{i:04}").into_bytes())
                    .collect();
                (format!("list:{k}").into_bytes(), Val::List(items))
            }),
        ),
        flow(
            "set-plain",
            none,
            (0..100).map(|k| {
                let items = (0..1000)
                    .map(|i| format!("member-{k}-{i}").into_bytes())
                    .collect();
                (format!("set:{k}").into_bytes(), Val::Set(items))
            }),
        ),
        flow(
            "set-intset",
            none,
            (0..1000).map(|k| {
                let items = (0..500)
                    .map(|i| (k * 1000 + i).to_string().into_bytes())
                    .collect();
                (format!("iset:{k}").into_bytes(), Val::Set(items))
            }),
        ),
        flow(
            "zset-skiplist",
            none,
            (0..100).map(|k| {
                let items = (0..1000)
                    .map(|i| (format!("member-{k}-{i}").into_bytes(), f64::from(i) * 1.5))
                    .collect();
                (format!("zset:{k}").into_bytes(), Val::ZSet(items))
            }),
        ),
        flow(
            "stream",
            none,
            (0..100u64).map(|k| {
                let entries: Vec<_> = (0..1000u64)
                    .map(|i| {
                        (
                            (1_700_000_000_000 + i, 0),
                            vec![
                                (b"sensor".to_vec(), format!("s-{k}").into_bytes()),
                                (b"reading".to_vec(), format!("{}", i * 7).into_bytes()),
                            ],
                        )
                    })
                    .collect();
                let last = entries.last().map(|e| e.0).unwrap_or_default();
                let s = StreamVal {
                    entries,
                    last_id: last,
                    first_id: (1_700_000_000_000, 0),
                    entries_added: 1000,
                    ..StreamVal::default()
                };
                (format!("stream:{k}").into_bytes(), Val::Stream(Box::new(s)))
            }),
        ),
    ]
}

/// A journal stream of `n` `SET key:<8 digits> <64 bytes>` entries as Dragonfly v1.40 writes
/// them (`SELECT 0` before each, since every entry is its own item), then an LSN marker.
pub fn journal_sets(n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    let val = [b'v'; 64];
    for i in 0..n {
        let key = format!("key:{i:08}");
        v.extend(encode_command(
            0,
            10,
            0,
            1,
            &[&b"SET"[..], key.as_bytes(), &val[..]],
        ));
    }
    v.push(15);
    v.push(0x80);
    v.extend_from_slice(&(n as u32).to_be_bytes());
    v
}

/// A mixed journal stream of `n` entries: HSET with 4 pairs, SADD, ZADD, EXPIRE, DEL.
pub fn journal_mixed(n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let key = format!("k:{i:08}");
        let args: Vec<Vec<u8>> = match i % 5 {
            0 => ["HSET", &key, "f1", "v1", "f2", "v2", "f3", "v3", "f4", "v4"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            1 => ["SADD", &key, "a", "b", "c"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            2 => ["ZADD", &key, "1.5", "m1", "2.5", "m2"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            3 => ["PEXPIREAT", &key, "1900000000000"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            _ => ["DEL", &key]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        };
        v.extend(encode_command(0, 10, 0, 1, &args));
    }
    v
}

/// Decodes a whole synthetic flow (up to and including the eof token) with a [`FlowDecoder`],
/// the way the flow thread feeds it (one buffer, consumed with an offset, whole string keys
/// borrowed: [`FlowDecoder::step_ref`]); returns the number of events.
pub fn decode_flow(bytes: &[u8]) -> usize {
    let mut d = FlowDecoder::new_full(TOKEN, Limits::default());
    let mut pos = 0;
    let mut n = 0;
    loop {
        match d.step_ref(&bytes[pos..]) {
            Ok((Step::Item(e), used)) => {
                pos += used;
                n += 1;
                match e {
                    EventRef::Event(FlowEvent::EofToken) => return n,
                    e => {
                        std::hint::black_box(&e);
                    }
                }
            }
            other => panic!("bench flow does not decode: {other:?} at {pos}"),
        }
    }
}

/// [`decode_flow`] with owned events only ([`FlowDecoder::step`]: every key copied out).
pub fn decode_flow_owned(bytes: &[u8]) -> usize {
    let mut d = FlowDecoder::new_full(TOKEN, Limits::default());
    let mut pos = 0;
    let mut n = 0;
    loop {
        match d.step(&bytes[pos..]) {
            Ok((Step::Item(e), used)) => {
                pos += used;
                n += 1;
                if e == FlowEvent::EofToken {
                    return n;
                }
                std::hint::black_box(&e);
            }
            other => panic!("bench flow does not decode: {other:?} at {pos}"),
        }
    }
}

/// Decodes a whole journal buffer; returns the number of items.
pub fn decode_journal(bytes: &[u8]) -> usize {
    let mut d = df2redis_sync::journal::JournalDecoder::new(Limits::default());
    let mut pos = 0;
    let mut n = 0;
    while let Ok((Step::Item(it), used)) = d.step(&bytes[pos..]) {
        pos += used;
        n += 1;
        if let JournalItem::Entry(e) = &it {
            std::hint::black_box(e);
        }
    }
    n
}
