//! Property tests of the snapshot decoder against a reference encoder: random keys of every
//! collection kind, encoded in random forms (counted elements, listpacks, quicklist nodes,
//! integer / LZF strings), optionally split into tagged chunks interleaved with other keys
//! and journal blobs, optionally wrapped in LZ4 / ZSTD blobs, decoded in random chunkings with
//! small batches, must give back exactly the generated keys. Random and mutated bytes must
//! never panic.

use std::collections::BTreeMap;

use df2redis_sync::journal::JournalItem;
use df2redis_sync::rdb::consts::*;
use df2redis_sync::rdb::{Limits, SnapshotDecoder, SnapshotItem, Step, Value};
use df2redis_sync::wire::{lzf, put_pu, put_raw_str};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
enum Gen {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    ZSet(Vec<(Vec<u8>, f64)>),
    SetExp(Vec<(Vec<u8>, Option<i64>)>),
}

#[derive(Debug, Clone)]
struct Key {
    db: u32,
    key: Vec<u8>,
    expire: Option<i64>,
    value: Gen,
    /// Encoding choice bits (listpack vs counted, LZF strings…).
    style: u8,
    /// Split into tagged chunks after every `split` elements (0 = never).
    split: usize,
}

fn elem() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        (-70000i64..70000).prop_map(|i| i.to_string().into_bytes()),
        any::<i64>().prop_map(|i| i.to_string().into_bytes()),
        (0usize..3, 20usize..90).prop_map(|(c, n)| vec![b'a' + c as u8; n]),
    ]
}

fn gen_value() -> impl Strategy<Value = Gen> {
    let v = || proptest::collection::vec(elem(), 1..30);
    prop_oneof![
        elem().prop_map(Gen::Str),
        v().prop_map(Gen::List),
        v().prop_map(Gen::Set),
        proptest::collection::vec((elem(), elem()), 1..20).prop_map(Gen::Hash),
        proptest::collection::vec(
            (
                elem(),
                prop_oneof![
                    any::<f64>().prop_filter("no NaN", |f| !f.is_nan()),
                    (-1000i32..1000).prop_map(f64::from),
                    Just(f64::INFINITY),
                    Just(f64::NEG_INFINITY)
                ]
            ),
            1..20
        )
        .prop_map(Gen::ZSet),
        proptest::collection::vec((elem(), proptest::option::of(0i64..1_000_000_000)), 1..20)
            .prop_map(Gen::SetExp),
    ]
}

fn gen_key() -> impl Strategy<Value = Key> {
    (
        0u32..4,
        elem(),
        proptest::option::of(0i64..4_102_444_800_000),
        gen_value(),
        any::<u8>(),
        prop_oneof![Just(0usize), 1usize..8],
    )
        .prop_map(|(db, key, expire, value, style, split)| Key {
            db,
            key,
            expire,
            value,
            style,
            split,
        })
}

/// `str(x)` in one of the forms of §3.2.2, chosen by `style`.
fn put_str(out: &mut Vec<u8>, s: &[u8], style: u8) {
    if style & 1 != 0 {
        if let Some(i) = std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.parse::<i32>().ok())
        {
            if i.to_string().as_bytes() == s {
                if let Ok(b) = i8::try_from(i) {
                    out.extend_from_slice(&[0xC0, b as u8]);
                } else if let Ok(h) = i16::try_from(i) {
                    out.push(0xC1);
                    out.extend_from_slice(&h.to_le_bytes());
                } else {
                    out.push(0xC2);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                return;
            }
        }
    }
    if style & 2 != 0 && s.len() > 20 {
        let c = lzf::compress(s);
        out.push(0xC3);
        put_pu(out, c.len() as u64);
        put_pu(out, s.len() as u64);
        out.extend_from_slice(&c);
        return;
    }
    put_raw_str(out, s);
}

/// A listpack of `elems` (integers encoded as integers, like Redis does).
fn listpack(elems: &[Vec<u8>]) -> Vec<u8> {
    let mut lp = vec![0u8; 6];
    for e in elems {
        let start = lp.len();
        let int = std::str::from_utf8(e)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|i| i.to_string().as_bytes() == e.as_slice());
        match int {
            Some(i) if (0..128).contains(&i) => lp.push(i as u8),
            Some(i) if (-4096..4096).contains(&i) => {
                let u = (i as u16) & 0x1FFF;
                lp.push(0xC0 | (u >> 8) as u8);
                lp.push(u as u8);
            }
            Some(i) if i16::try_from(i).is_ok() => {
                lp.push(0xF1);
                lp.extend_from_slice(&(i as i16).to_le_bytes());
            }
            Some(i) if (-(1 << 23)..(1 << 23)).contains(&i) => {
                lp.push(0xF2);
                lp.extend_from_slice(&(i as i32).to_le_bytes()[..3]);
            }
            Some(i) if i32::try_from(i).is_ok() => {
                lp.push(0xF3);
                lp.extend_from_slice(&(i as i32).to_le_bytes());
            }
            Some(i) => {
                lp.push(0xF4);
                lp.extend_from_slice(&i.to_le_bytes());
            }
            None if e.len() < 64 => {
                lp.push(0x80 | e.len() as u8);
                lp.extend_from_slice(e);
            }
            None if e.len() < 4096 => {
                lp.push(0xE0 | (e.len() >> 8) as u8);
                lp.push(e.len() as u8);
                lp.extend_from_slice(e);
            }
            None => {
                lp.push(0xF0);
                lp.extend_from_slice(&(e.len() as u32).to_le_bytes());
                lp.extend_from_slice(e);
            }
        }
        let l = lp.len() - start;
        // Back-length, big-endian 7-bit groups read backwards (listpack.c lpEncodeBacklen).
        if l < 128 {
            lp.push(l as u8);
        } else {
            lp.push((l >> 7) as u8);
            lp.push((l & 127) as u8 | 128);
        }
    }
    lp.push(0xFF);
    let total = lp.len() as u32;
    lp[..4].copy_from_slice(&total.to_le_bytes());
    let n = u16::try_from(elems.len()).unwrap_or(u16::MAX);
    lp[4..6].copy_from_slice(&n.to_le_bytes());
    lp
}

/// A ziplist of `elems` (Redis `ziplist.c`): integers as `E0` i64 or 4-bit immediates,
/// strings with 6-, 14- or 32-bit lengths.
fn ziplist(elems: &[Vec<u8>]) -> Vec<u8> {
    let mut zl = vec![0u8; 10];
    let mut prev = 0usize;
    for e in elems {
        let start = zl.len();
        if prev < 254 {
            zl.push(prev as u8);
        } else {
            zl.push(0xFE);
            zl.extend_from_slice(&(prev as u32).to_le_bytes());
        }
        let int = std::str::from_utf8(e)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|i| i.to_string().as_bytes() == e.as_slice());
        match int {
            Some(i) if (0..=12).contains(&i) => zl.push(0xF1 + i as u8),
            Some(i) => {
                zl.push(0xE0);
                zl.extend_from_slice(&i.to_le_bytes());
            }
            None if e.len() < 64 => {
                zl.push(e.len() as u8);
                zl.extend_from_slice(e);
            }
            None if e.len() < 16384 => {
                zl.push(0x40 | (e.len() >> 8) as u8);
                zl.push(e.len() as u8);
                zl.extend_from_slice(e);
            }
            None => {
                zl.push(0x80);
                zl.extend_from_slice(&(e.len() as u32).to_be_bytes());
                zl.extend_from_slice(e);
            }
        }
        prev = zl.len() - start;
    }
    zl.push(0xFF);
    let total = zl.len() as u32;
    zl[..4].copy_from_slice(&total.to_le_bytes());
    let n = u16::try_from(elems.len()).unwrap_or(u16::MAX);
    zl[8..10].copy_from_slice(&n.to_le_bytes());
    zl
}

fn fmt_score(f: f64) -> Vec<u8> {
    if f == f64::INFINITY {
        b"inf".to_vec()
    } else if f == f64::NEG_INFINITY {
        b"-inf".to_vec()
    } else {
        format!("{f:e}").into_bytes()
    }
}

/// Encodes one key: the key header (`[FC] type str(key) value header`) and the elements, each
/// element's bytes separately so the caller can cut between them.
fn encode_key(k: &Key) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut head = Vec::new();
    if let Some(e) = k.expire {
        head.push(OP_EXPIRETIME_MS);
        head.extend_from_slice(&e.to_le_bytes());
    }
    let s = k.style;
    let listpack_form = s & 4 != 0;
    let mut elems = Vec::new();
    let body = |t: u8, head: &mut Vec<u8>| {
        head.push(t);
        put_str(head, &k.key, s);
    };
    match &k.value {
        Gen::Str(v) => {
            body(TYPE_STRING, &mut head);
            put_str(&mut head, v, s);
        }
        Gen::List(v) if listpack_form && s & 16 != 0 => {
            // quicklist 1: ziplist nodes of up to 4 elements.
            body(TYPE_LIST_QUICKLIST, &mut head);
            let nodes: Vec<&[Vec<u8>]> = v.chunks(4).collect();
            put_pu(&mut head, nodes.len() as u64);
            for n in nodes {
                let mut e = Vec::new();
                put_str(&mut e, &ziplist(n), s);
                elems.push(e);
            }
        }
        Gen::List(v) if listpack_form => {
            // quicklist 2: nodes of up to 3 elements, some PLAIN, some LZF-packed.
            body(TYPE_LIST_QUICKLIST_2, &mut head);
            let nodes: Vec<&[Vec<u8>]> = v.chunks(3).collect();
            put_pu(&mut head, nodes.len() as u64);
            for n in nodes {
                let mut e = Vec::new();
                if n.len() == 1 && s & 8 != 0 {
                    put_pu(&mut e, QUICKLIST_NODE_CONTAINER_PLAIN);
                    put_str(&mut e, &n[0], s);
                } else {
                    put_pu(&mut e, QUICKLIST_NODE_CONTAINER_PACKED);
                    put_str(&mut e, &listpack(n), s);
                }
                elems.push(e);
            }
        }
        Gen::List(v) => {
            body(TYPE_LIST, &mut head);
            put_pu(&mut head, v.len() as u64);
            for x in v {
                let mut e = Vec::new();
                put_str(&mut e, x, s);
                elems.push(e);
            }
        }
        Gen::Set(v) => {
            body(TYPE_SET, &mut head);
            put_pu(&mut head, v.len() as u64);
            for x in v {
                let mut e = Vec::new();
                put_str(&mut e, x, s);
                elems.push(e);
            }
        }
        Gen::Hash(v) if listpack_form && s & 16 != 0 => {
            body(TYPE_HASH_ZIPLIST, &mut head);
            let flat: Vec<Vec<u8>> = v.iter().flat_map(|(f, x)| [f.clone(), x.clone()]).collect();
            put_str(&mut head, &ziplist(&flat), s);
        }
        Gen::Hash(v) if listpack_form => {
            body(TYPE_HASH_LISTPACK, &mut head);
            let flat: Vec<Vec<u8>> = v.iter().flat_map(|(f, x)| [f.clone(), x.clone()]).collect();
            put_str(&mut head, &listpack(&flat), s);
        }
        Gen::Hash(v) => {
            body(TYPE_HASH, &mut head);
            put_pu(&mut head, v.len() as u64);
            for (f, x) in v {
                let mut e = Vec::new();
                put_str(&mut e, f, s);
                put_str(&mut e, x, s);
                elems.push(e);
            }
        }
        Gen::ZSet(v) if listpack_form && s & 16 != 0 => {
            body(TYPE_ZSET_ZIPLIST, &mut head);
            let flat: Vec<Vec<u8>> = v
                .iter()
                .flat_map(|(m, f)| [m.clone(), fmt_score(*f)])
                .collect();
            put_str(&mut head, &ziplist(&flat), s);
        }
        Gen::ZSet(v) if s & 32 != 0 => {
            // Type 3: text scores, with the special lengths for the infinities.
            body(TYPE_ZSET, &mut head);
            put_pu(&mut head, v.len() as u64);
            for (m, f) in v {
                let mut e = Vec::new();
                put_str(&mut e, m, s);
                if *f == f64::INFINITY {
                    e.push(TEXT_DOUBLE_POS_INF);
                } else if *f == f64::NEG_INFINITY {
                    e.push(TEXT_DOUBLE_NEG_INF);
                } else {
                    let t = fmt_score(*f);
                    e.push(t.len() as u8);
                    e.extend_from_slice(&t);
                }
                elems.push(e);
            }
        }
        Gen::ZSet(v) if listpack_form => {
            body(TYPE_ZSET_LISTPACK, &mut head);
            let flat: Vec<Vec<u8>> = v
                .iter()
                .flat_map(|(m, f)| [m.clone(), fmt_score(*f)])
                .collect();
            put_str(&mut head, &listpack(&flat), s);
        }
        Gen::ZSet(v) => {
            body(TYPE_ZSET_2, &mut head);
            put_pu(&mut head, v.len() as u64);
            for (m, f) in v {
                let mut e = Vec::new();
                put_str(&mut e, m, s);
                e.extend_from_slice(&f.to_le_bytes());
                elems.push(e);
            }
        }
        Gen::SetExp(v) => {
            body(TYPE_SET_WITH_EXPIRY, &mut head);
            put_pu(&mut head, v.len() as u64);
            for (m, ttl) in v {
                let mut e = Vec::new();
                put_str(&mut e, m, s);
                let t = ttl.map(|t| t.to_string()).unwrap_or_else(|| "-1".into());
                put_str(&mut e, t.as_bytes(), s);
                elems.push(e);
            }
        }
    }
    (head, elems)
}

/// A JOURNAL_BLOB holding `SELECT 0; SET <k> x` (so blobs carry their own SELECT, §3.9).
fn journal_blob(k: &[u8]) -> Vec<u8> {
    let mut inner = vec![6, 0, 10, 0, 1, 3];
    put_pu(&mut inner, 4 + k.len() as u64);
    put_raw_str(&mut inner, b"SET");
    put_raw_str(&mut inner, k);
    put_raw_str(&mut inner, b"x");
    let mut out = vec![OP_JOURNAL_BLOB, 1];
    put_raw_str(&mut out, &inner);
    out
}

/// The whole stream: header, keys (tagged-chunk splits interleaved with other keys and journal
/// blobs), groups of items wrapped in compressed blobs, FULLSYNC_END, JOURNAL_OFFSET, EOF.
fn encode_stream(keys: &[Key], compress: u8) -> Vec<u8> {
    // Each item is (bytes, may be compressed together with its neighbours).
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut pending_chunks: Vec<Vec<u8>> = Vec::new();
    let mut id = 0u32;
    for k in keys {
        id += 1;
        let mut sel = vec![OP_SELECTDB];
        put_pu(&mut sel, u64::from(k.db));
        items.push(sel);
        let (head, elems) = encode_key(k);
        if k.split == 0 || elems.len() <= k.split {
            let mut b = head;
            for e in elems {
                b.extend_from_slice(&e);
            }
            items.push(b);
        } else {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            let mut cur = head;
            for (i, e) in elems.iter().enumerate() {
                cur.extend_from_slice(e);
                if (i + 1) % k.split == 0 && i + 1 < elems.len() {
                    chunks.push(std::mem::take(&mut cur));
                }
            }
            chunks.push(cur);
            let mut tagged = chunks.into_iter().map(|c| {
                let mut t = vec![OP_TAGGED_CHUNK];
                t.extend_from_slice(&id.to_le_bytes());
                t.extend_from_slice(&(c.len() as u32).to_le_bytes());
                t.extend_from_slice(&c);
                t
            });
            // The first chunk goes now; the others come after later keys.
            if let Some(first) = tagged.next() {
                items.push(first);
            }
            pending_chunks.extend(tagged);
        }
        if id % 3 == 0 {
            items.push(journal_blob(&k.key));
        }
        if id % 2 == 0 {
            items.append(&mut pending_chunks);
        }
    }
    items.append(&mut pending_chunks);
    items.push(vec![OP_FULLSYNC_END, 0, 0, 0, 0, 0, 0, 0, 0]);
    items.push(vec![OP_JOURNAL_OFFSET, 7, 0, 0, 0, 0, 0, 0, 0]);

    let mut out = b"REDIS0011".to_vec();
    out.extend_from_slice(&[OP_AUX, 3, b'a', b'b', b'c', 0xC0, 5]);
    let group = usize::from(compress % 4) + 1;
    for g in items.chunks(group) {
        let plain: Vec<u8> = g.concat();
        match compress % 3 {
            1 => {
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                    lz4_flex::frame::FrameInfo::new().content_size(Some(plain.len() as u64)),
                    Vec::new(),
                );
                std::io::Write::write_all(&mut enc, &plain).unwrap();
                let f = enc.finish().unwrap();
                out.push(OP_COMPRESSED_LZ4_BLOB_START);
                put_raw_str(&mut out, &f);
            }
            2 => {
                let f = zstd::bulk::compress(&plain, 1).unwrap();
                out.push(OP_COMPRESSED_ZSTD_BLOB_START);
                put_raw_str(&mut out, &f);
            }
            _ => out.extend_from_slice(&plain),
        }
    }
    out.push(OP_EOF);
    out.extend_from_slice(&[0; 8]);
    out
}

fn decode(bytes: &[u8], sizes: &[usize], limits: Limits) -> Result<Vec<SnapshotItem>, String> {
    let mut d = SnapshotDecoder::new(limits);
    let mut buf = Vec::new();
    let (mut pos, mut fed, mut k) = (0, 0, 0);
    let mut out = Vec::new();
    loop {
        let (s, n) = d.step(&buf[pos..]).map_err(|e| e.to_string())?;
        pos += n;
        match s {
            Step::Item(it) => out.push(it),
            Step::End => break,
            Step::NeedMore => {
                if fed == bytes.len() {
                    return Err("input ended".into());
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
    Ok(out)
}

/// A key's pieces merged: expiry, value so far, last piece seen.
type Merged = (Option<i64>, Value, bool);

/// What the decoder should give back for a generated key.
fn expected(k: &Key) -> Value {
    use df2redis_sync::rdb::{Blobs, Score};
    match &k.value {
        Gen::Str(v) => Value::String(v.clone()),
        Gen::List(v) => Value::List(v.iter().collect()),
        Gen::Set(v) => Value::Set(v.iter().collect()),
        Gen::Hash(v) => Value::Hash(v.iter().flat_map(|(f, x)| [f, x]).collect()),
        Gen::ZSet(v) => Value::ZSet {
            members: v.iter().map(|(m, _)| m).collect::<Blobs>(),
            scores: v
                .iter()
                .map(|(_, f)| Score {
                    value: *f,
                    text: if k.style & 4 != 0 || k.style & 32 != 0 {
                        Some(fmt_score(*f))
                    } else {
                        None
                    },
                })
                .collect(),
        },
        Gen::SetExp(v) => Value::SetWithExpiry {
            members: v.iter().map(|(m, _)| m).collect(),
            expire_unix_s: v
                .iter()
                .map(|(_, t)| t.map(|t| t + MEMBER_EXPIRY_BASE))
                .collect(),
        },
    }
}

/// Integer-valued scores in a listpack come back as integers: compare by value, and the text
/// only when it was not an integer.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (
            Value::ZSet {
                members: m1,
                scores: s1,
            },
            Value::ZSet {
                members: m2,
                scores: s2,
            },
        ) => m1 == m2 && s1.len() == s2.len() && s1.iter().zip(s2).all(|(x, y)| x.value == y.value),
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn snapshot_round_trips_with_chunks_blobs_and_any_chunking(
        keys in proptest::collection::vec(gen_key(), 1..12),
        compress in any::<u8>(),
        sizes in proptest::collection::vec(1usize..300, 1..8),
        batch in 1usize..6,
    ) {
        // Distinct (db, key) pairs, as in a real keyspace.
        let mut seen = std::collections::HashSet::new();
        let keys: Vec<Key> = keys.into_iter().filter(|k| seen.insert((k.db, k.key.clone()))).collect();
        let bytes = encode_stream(&keys, compress);
        let limits = Limits { batch_elements: batch, batch_bytes: 64, ..Limits::default() };
        let whole = decode(&bytes, &[usize::MAX], limits).map_err(TestCaseError::fail)?;
        let chunked = decode(&bytes, &sizes, limits).map_err(TestCaseError::fail)?;
        prop_assert!(whole == chunked);
        let mut got: BTreeMap<(u32, Vec<u8>), Merged> = BTreeMap::new();
        let mut journal = 0;
        let mut pieces: BTreeMap<(u32, Vec<u8>), usize> = BTreeMap::new();
        for it in whole {
            match it {
                SnapshotItem::Piece(p) => {
                    // Counted collections come in batches of at most `batch` elements.
                    if matches!(p.rdb_type, TYPE_LIST | TYPE_SET | TYPE_HASH | TYPE_ZSET | TYPE_ZSET_2 | TYPE_SET_WITH_EXPIRY) {
                        prop_assert!(p.value.element_count() <= batch);
                    }
                    let k = (p.db.0, p.key.clone());
                    *pieces.entry(k.clone()).or_insert(0usize) += 1;
                    if p.first {
                        prop_assert!(!got.contains_key(&k));
                        got.insert(k, (p.expire_ms, p.value, p.last));
                    } else {
                        let e = got.get_mut(&k).expect("continuation of a known key");
                        prop_assert!(!e.2, "piece after the last one");
                        e.1.append(p.value);
                        e.2 = p.last;
                    }
                }
                SnapshotItem::JournalBlob(JournalItem::Entry(e)) => {
                    prop_assert_eq!(e.cmd.name(), b"SET");
                    journal += 1;
                }
                _ => {}
            }
        }
        prop_assert_eq!(journal, keys.len() / 3);
        prop_assert_eq!(got.len(), keys.len());
        for k in &keys {
            let (exp, v, last) = &got[&(k.db, k.key.clone())];
            prop_assert!(*last);
            prop_assert_eq!(*exp, k.expire);
            let want = expected(k);
            prop_assert!(same_value(v, &want), "{:?}\n got {:?}\nwant {:?}", k, v, want);
            // A value split into tagged chunks arrives in at least two pieces.
            if k.split > 0 && encode_key(k).1.len() > k.split {
                prop_assert!(pieces[&(k.db, k.key.clone())] >= 2);
            }
        }
    }

    #[test]
    fn snapshot_random_and_mutated_bytes_never_panic(
        keys in proptest::collection::vec(gen_key(), 1..5),
        compress in any::<u8>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        noise in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = encode_stream(&keys, compress);
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        let _ = decode(&bytes, &[7], Limits::default());
        let mut random = b"REDIS0009".to_vec();
        random.extend_from_slice(&noise);
        let _ = decode(&random, &[usize::MAX], Limits::default());
    }
}
