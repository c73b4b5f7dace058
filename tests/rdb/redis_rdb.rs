//! Real Redis 7 RDB files and DUMP payloads: a real redis-server is filled with a known
//! dataset under two configurations (every collection in its big encoding, LZF-compressed
//! quicklist nodes and multi-listpack streams; then every collection in its small encoding),
//! SAVEd, and the dump.rdb decoded (whole and in random chunks) must be exactly what was
//! written; each key's DUMP payload must decode to the same value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use df2redis_sync::model::Cmd;
use df2redis_sync::rdb::consts::*;
use df2redis_sync::rdb::{
    decode_dump_payload, Limits, SnapshotDecoder, SnapshotItem, Step, StreamId, Value,
};
use df2redis_sync::resp;

use super::{KeyMap, Rng};
use crate::support::RedisServer;

/// A minimal blocking RESP client (binary safe, which redis-cli output is not).
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> resp::Value {
        let c = Cmd::from_args(args.iter().map(|a| a.as_ref()));
        self.s.write_all(&c.to_resp()).unwrap();
        loop {
            if let Some((v, n)) = resp::decode(&self.buf, &resp::Limits::default()).unwrap() {
                self.buf.drain(..n);
                assert!(!v.is_error(), "{c:?}: {v:?}");
                return v;
            }
            let mut tmp = [0u8; 65536];
            let n = self.s.read(&mut tmp).expect("read reply");
            assert!(n > 0, "server closed");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone, PartialEq)]
enum M {
    Str(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    Stream {
        entries: Vec<(StreamId, Fields)>,
        last_id: StreamId,
        /// group name → (consumer → pending ids)
        groups: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<StreamId>>>,
    },
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<(u32, Vec<u8>), (M, Option<i64>)>,
}

fn sid(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

fn populate(c: &mut Client, m: &mut Model) {
    let mut put = |db: u32, k: &str, v: M| {
        m.keys.insert((db, k.as_bytes().to_vec()), (v, None));
    };
    let strings: Vec<(&str, Vec<u8>)> = vec![
        ("s:short", b"hello".to_vec()),
        ("s:int", b"12345".to_vec()),
        ("s:neg", b"-7".to_vec()),
        ("s:i16", b"-30000".to_vec()),
        ("s:i32", b"2000000000".to_vec()),
        ("s:big", b"12345678901234567".to_vec()),
        ("s:lead0", b"007".to_vec()),
        ("s:lzf", b"abcdefgh".repeat(200)),
        ("s:bin", (0..=255u8).collect()),
        ("s:empty", Vec::new()),
        ("42", b"int-encoded key".to_vec()),
    ];
    for (k, v) in strings {
        c.call(&[b"SET".as_slice(), k.as_bytes(), &v]);
        put(0, k, M::Str(v));
    }
    c.call(&["SET", "s:ttl", "expiring", "PXAT", "4102444800000"]);
    m.keys.insert(
        (0, b"s:ttl".to_vec()),
        (M::Str(b"expiring".to_vec()), Some(4_102_444_800_000)),
    );

    let small: Vec<Vec<u8>> = ["a", "1", "-2", "bb", "300000"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let mut cmd: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"l:small".to_vec()];
    cmd.extend(small.iter().cloned());
    c.call(&cmd);
    m.keys
        .insert((0, b"l:small".to_vec()), (M::List(small), None));
    let big: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("item-{i}").into_bytes())
        .collect();
    for ch in big.chunks(100) {
        let mut cmd: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"l:big".to_vec()];
        cmd.extend(ch.iter().cloned());
        c.call(&cmd);
    }
    m.keys.insert((0, b"l:big".to_vec()), (M::List(big), None));
    let fat: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i; 10_000]).collect();
    let mut cmd: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"l:fat".to_vec()];
    cmd.extend(fat.iter().cloned());
    c.call(&cmd);
    m.keys.insert((0, b"l:fat".to_vec()), (M::List(fat), None));

    let ints: BTreeSet<Vec<u8>> = (-20..30i64)
        .map(|i| (i * 1_000_003).to_string().into_bytes())
        .chain([b"9223372036854775807".to_vec(), b"-5".to_vec()])
        .collect();
    let mut cmd: Vec<Vec<u8>> = vec![b"SADD".to_vec(), b"set:int".to_vec()];
    cmd.extend(ints.iter().cloned());
    c.call(&cmd);
    m.keys
        .insert((0, b"set:int".to_vec()), (M::Set(ints), None));
    let strs: BTreeSet<Vec<u8>> = (0..200)
        .map(|i| format!("member-{i}").into_bytes())
        .collect();
    let mut cmd: Vec<Vec<u8>> = vec![b"SADD".to_vec(), b"set:str".to_vec()];
    cmd.extend(strs.iter().cloned());
    c.call(&cmd);
    m.keys
        .insert((0, b"set:str".to_vec()), (M::Set(strs), None));

    let tricky: Vec<(&str, &str)> = vec![
        ("ninf", "-inf"),
        ("neg", "-3.5"),
        ("tiny", "1e-7"),
        ("tenth", "0.1"),
        ("third", "0.3333333333333333"),
        ("int", "42"),
        ("big", "1.7976931348623157e308"),
        ("pinf", "inf"),
    ];
    for (mem, sc) in &tricky {
        c.call(&["ZADD", "z:tricky", sc, mem]);
    }
    let mut z: Vec<(Vec<u8>, f64)> = tricky
        .iter()
        .map(|(m, s)| (m.as_bytes().to_vec(), s.parse::<f64>().unwrap()))
        .collect();
    z.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    m.keys.insert((0, b"z:tricky".to_vec()), (M::ZSet(z), None));
    let mut cmd: Vec<Vec<u8>> = vec![b"ZADD".to_vec(), b"z:big".to_vec()];
    let mut z = Vec::new();
    for i in 0..300 {
        let s = f64::from(i) * 0.25 - 10.0;
        cmd.push(s.to_string().into_bytes());
        cmd.push(format!("zm-{i}").into_bytes());
        z.push((format!("zm-{i}").into_bytes(), s));
    }
    c.call(&cmd);
    z.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    m.keys.insert((0, b"z:big".to_vec()), (M::ZSet(z), None));

    for (k, n) in [("h:small", 5), ("h:big", 500)] {
        let mut cmd: Vec<Vec<u8>> = vec![b"HSET".to_vec(), k.as_bytes().to_vec()];
        let mut h = BTreeMap::new();
        for i in 0..n {
            let (f, v) = if i % 3 == 0 {
                (format!("{i}"), format!("{}", i * 7))
            } else {
                (format!("field-{i}"), format!("value-{i}"))
            };
            cmd.push(f.clone().into_bytes());
            cmd.push(v.clone().into_bytes());
            h.insert(f.into_bytes(), v.into_bytes());
        }
        c.call(&cmd);
        m.keys
            .insert((0, k.as_bytes().to_vec()), (M::Hash(h), None));
    }

    // A stream with several listpacks, entries with their own fields, deletions, two groups,
    // a PEL spread over two consumers and an idle consumer.
    let mut entries = Vec::new();
    for i in 1..=20u64 {
        let id = format!("{i}-1");
        let fields: Fields = if i % 4 == 0 {
            vec![(b"other".to_vec(), format!("o{i}").into_bytes())]
        } else {
            vec![
                (b"a".to_vec(), i.to_string().into_bytes()),
                (b"b".to_vec(), format!("x{i}").into_bytes()),
            ]
        };
        let mut cmd: Vec<Vec<u8>> = vec![b"XADD".to_vec(), b"st".to_vec(), id.into_bytes()];
        for (f, v) in &fields {
            cmd.push(f.clone());
            cmd.push(v.clone());
        }
        c.call(&cmd);
        entries.push((sid(i, 1), fields));
    }
    c.call(&["XDEL", "st", "3-1", "5-1"]);
    entries.retain(|(id, _)| id.ms != 3 && id.ms != 5);
    c.call(&["XGROUP", "CREATE", "st", "g1", "0"]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "c1",
        "COUNT",
        "4",
        "STREAMS",
        "st",
        ">",
    ]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "c2",
        "COUNT",
        "2",
        "STREAMS",
        "st",
        ">",
    ]);
    c.call(&["XGROUP", "CREATE", "st", "g2", "$"]);
    c.call(&["XGROUP", "CREATECONSUMER", "st", "g2", "idle"]);
    let mut groups = BTreeMap::new();
    let live: Vec<StreamId> = entries.iter().map(|e| e.0).collect();
    groups.insert(
        b"g1".to_vec(),
        BTreeMap::from([
            (b"c1".to_vec(), live[..4].to_vec()),
            (b"c2".to_vec(), live[4..6].to_vec()),
        ]),
    );
    groups.insert(b"g2".to_vec(), BTreeMap::from([(b"idle".to_vec(), vec![])]));
    m.keys.insert(
        (0, b"st".to_vec()),
        (
            M::Stream {
                entries,
                last_id: sid(20, 1),
                groups,
            },
            None,
        ),
    );
    c.call(&["XADD", "st:empty", "7-7", "f", "v"]);
    c.call(&["XDEL", "st:empty", "7-7"]);
    m.keys.insert(
        (0, b"st:empty".to_vec()),
        (
            M::Stream {
                entries: vec![],
                last_id: sid(7, 7),
                groups: BTreeMap::new(),
            },
            None,
        ),
    );

    c.call(&["SELECT", "1"]);
    c.call(&["SET", "db1:s", "in db one"]);
    c.call(&["RPUSH", "db1:l", "x", "y"]);
    c.call(&["SELECT", "0"]);
    m.keys.insert(
        (1, b"db1:s".to_vec()),
        (M::Str(b"in db one".to_vec()), None),
    );
    m.keys.insert(
        (1, b"db1:l".to_vec()),
        (M::List(vec![b"x".to_vec(), b"y".to_vec()]), None),
    );
}

/// True when the decoded value is exactly the model's.
fn same(m: &M, v: &Value) -> bool {
    match (m, v) {
        (M::Str(a), Value::String(b)) => a == b,
        (M::List(a), Value::List(b)) => *a == b.to_vecs(),
        (M::Set(a), Value::Set(b)) => *a == b.to_vecs().into_iter().collect::<BTreeSet<_>>(),
        (M::Hash(a), Value::Hash(b)) => {
            b.len() == a.len() * 2
                && *a
                    == b.pairs()
                        .map(|(f, v)| (f.to_vec(), v.to_vec()))
                        .collect::<BTreeMap<_, _>>()
        }
        (M::ZSet(a), Value::ZSet { members, scores }) => {
            let mut got: Vec<(Vec<u8>, f64)> = members
                .to_vecs()
                .into_iter()
                .zip(scores.iter().map(|s| s.value))
                .collect();
            got.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            got == *a
        }
        (
            M::Stream {
                entries,
                last_id,
                groups,
            },
            Value::Stream {
                entries: got,
                meta: Some(meta),
            },
        ) => {
            let got_entries: Vec<(StreamId, Fields)> = got
                .iter()
                .map(|e| {
                    (
                        e.id,
                        e.fields
                            .pairs()
                            .map(|(f, v)| (f.to_vec(), v.to_vec()))
                            .collect(),
                    )
                })
                .collect();
            let got_groups: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<StreamId>>> = meta
                .groups
                .iter()
                .map(|g| {
                    (
                        g.name.clone(),
                        g.consumers
                            .iter()
                            .map(|c| (c.name.clone(), c.pending.clone()))
                            .collect(),
                    )
                })
                .collect();
            let pel_ok = meta.groups.iter().all(|g| {
                let mut ids: Vec<StreamId> = g.pending.iter().map(|p| p.id).collect();
                ids.sort();
                let mut owned: Vec<StreamId> =
                    g.consumers.iter().flat_map(|c| c.pending.clone()).collect();
                owned.sort();
                ids == owned && g.pending.iter().all(|p| p.delivery_count == 1)
            });
            got_entries == *entries
                && meta.length == entries.len() as u64
                && meta.last_id == *last_id
                && got_groups == *groups
                && pel_ok
        }
        _ => false,
    }
}

/// Decodes an RDB file fed in chunks from `next`; returns the items.
fn decode_file(bytes: &[u8], limits: Limits, next: &mut dyn FnMut() -> usize) -> Vec<SnapshotItem> {
    let mut d = SnapshotDecoder::new(limits);
    let mut buf = Vec::new();
    let (mut pos, mut fed) = (0, 0);
    let mut out = Vec::new();
    loop {
        let (s, n) = d.step(&buf[pos..]).unwrap_or_else(|e| panic!("{e}"));
        pos += n;
        match s {
            Step::Item(it) => out.push(it),
            Step::End => break,
            Step::NeedMore => {
                assert!(fed < bytes.len(), "RDB file ended early");
                let k = next().clamp(1, bytes.len() - fed);
                buf.drain(..pos);
                pos = 0;
                buf.extend_from_slice(&bytes[fed..fed + k]);
                fed += k;
            }
        }
    }
    assert_eq!(fed, bytes.len(), "bytes after EOF");
    assert_eq!(pos, buf.len(), "bytes after EOF");
    out
}

fn run_config(args: &[&str], compressed: bool, expect_types: &[u8]) {
    let server = RedisServer::builder().args(args).start();
    let mut c = Client::connect(&server.addr());
    let mut model = Model::default();
    populate(&mut c, &mut model);
    c.call(&["SAVE"]);
    let rdb = std::fs::read(server.dir().join("dump.rdb")).expect("dump.rdb");
    let contains = |needle: &[u8]| rdb.windows(needle.len()).any(|w| w == needle);
    // With rdbcompression the long string and the inner quicklist nodes travel LZF-compressed
    // (`C3`), so their plain bytes are absent from the file; without it they are present.
    assert_eq!(!contains(&b"abcdefgh".repeat(200)), compressed);
    assert_eq!(!contains(b"item-500"), compressed);

    let limits = Limits {
        batch_elements: 7,
        batch_bytes: 4096,
        ..Limits::default()
    };
    let whole = decode_file(&rdb, limits, &mut || usize::MAX);
    let mut rng = Rng(0xDEAD_BEEF);
    let random = decode_file(&rdb, limits, &mut || (rng.next() % 64) as usize + 1);
    assert!(whole == random, "random chunks differ");
    let bytewise = decode_file(&rdb, limits, &mut || 1);
    assert!(whole == bytewise, "byte by byte differs");

    let mut got = KeyMap::new();
    let mut pieces = 0;
    let mut checksum = None;
    for it in whole {
        match it {
            SnapshotItem::Piece(p) => {
                pieces += 1;
                let k = (p.db.0, p.key.clone());
                if p.first {
                    got.insert(k, (p.rdb_type, p.expire_ms, p.value));
                } else {
                    got.get_mut(&k).unwrap().2.append(p.value);
                }
            }
            SnapshotItem::Eof { checksum: c } => checksum = Some(c),
            _ => {}
        }
    }
    // Redis writes a real CRC64 of everything before it.
    let crc = u64::from_le_bytes(checksum.unwrap());
    assert_eq!(
        crc,
        df2redis_sync::rdb::crc64(0, &rdb[..rdb.len() - 8]),
        "RDB checksum"
    );
    assert!(pieces > got.len(), "big values were not split into pieces");
    let types: BTreeSet<u8> = got.values().map(|v| v.0).collect();
    for t in expect_types {
        assert!(types.contains(t), "type {t} not produced; got {types:?}");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        model.keys.keys().collect::<Vec<_>>()
    );
    for (k, (want, exp)) in &model.keys {
        let (t, e, v) = &got[k];
        assert_eq!(e, exp, "{k:?} expiry");
        assert!(
            same(want, v),
            "{k:?} (type {t}): decoded {v:?}, wrote {want:?}"
        );
    }

    // DUMP payloads of every key decode to the same value.
    for ((db, key), (want, _)) in &model.keys {
        c.call(&["SELECT".as_bytes(), db.to_string().as_bytes()]);
        let resp::Value::Bulk(payload) = c.call(&[b"DUMP".as_slice(), key]) else {
            panic!("DUMP {key:?}: not a bulk string");
        };
        let d = decode_dump_payload(&payload, Limits::default())
            .unwrap_or_else(|e| panic!("DUMP {key:?}: {e}"));
        assert!(same(want, &d.value), "DUMP {key:?}: {:?}", d.value);
        assert_eq!(d.rdb_version, 10);
    }
}

#[test]
fn redis7_rdb_big_encodings_lzf_nodes_and_dumps() {
    run_config(
        &[
            "--hash-max-listpack-entries",
            "0",
            "--zset-max-listpack-entries",
            "0",
            "--set-max-intset-entries",
            "0",
            "--list-max-listpack-size",
            "64",
            "--list-compress-depth",
            "1",
            "--stream-node-max-entries",
            "3",
            "--rdbcompression",
            "yes",
        ],
        true,
        &[
            TYPE_STRING,
            TYPE_SET,
            TYPE_HASH,
            TYPE_ZSET_2,
            TYPE_LIST_QUICKLIST_2,
            TYPE_STREAM_LISTPACKS_2,
        ],
    );
}

#[test]
fn redis7_rdb_small_encodings_and_dumps() {
    run_config(
        &[
            "--hash-max-listpack-entries",
            "100000",
            "--hash-max-listpack-value",
            "100000",
            "--zset-max-listpack-entries",
            "100000",
            "--zset-max-listpack-value",
            "100000",
            "--set-max-intset-entries",
            "100000",
            "--list-max-listpack-size",
            "-5",
            "--rdbcompression",
            "no",
        ],
        false,
        &[
            TYPE_STRING,
            TYPE_SET,
            TYPE_SET_INTSET,
            TYPE_HASH_LISTPACK,
            TYPE_ZSET_LISTPACK,
            TYPE_LIST_QUICKLIST_2,
            TYPE_STREAM_LISTPACKS_2,
        ],
    );
}
