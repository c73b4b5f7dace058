//! "Nothing panics on remote input", as properties: every parser of bytes or replies that come
//! from another process — the master's `capa dragonfly` and `DFLY FLOW` replies, a cluster's
//! `CLUSTER SHARDS` / `CLUSTER SLOTS` / marker replies, server error lines (redirects), DUMP
//! payloads, the flow stream, and the emulator's request and reply parsers — is fed shapes
//! and bytes it was not written for. Each must answer with a value or an error, never panic,
//! never claim more bytes than it was given, and give the same answer whole and in pieces.
//!
//! The byte-level decoders also have cargo-fuzz targets (`fuzz/`); these properties run in
//! every `cargo test` and cover the reply-shape parsers, which fuzzing bytes reaches only
//! through the RESP decoder.

use proptest::prelude::*;

use df2redis_sync::emulator::proto;
use df2redis_sync::model::FlowId;
use df2redis_sync::rdb::{crc64, decode_dump_payload, FlowDecoder, Limits as RdbLimits};
use df2redis_sync::resp::{ServerError, Value};
use df2redis_sync::source::{parse_capa, MAX_FLOWS};
use df2redis_sync::target::cluster::{ClusterMarkers, Member};
use df2redis_sync::target::topology::{Topology, SLOT_COUNT};

use crate::support::shared_dir;

/// Leaves that reply parsers look for: small and slot-like integers (and their text), node-ish
/// strings, the field names of `CLUSTER SHARDS`, and some noise.
fn leaf() -> impl Strategy<Value = Value> {
    let words = prop::sample::select(vec![
        "slots",
        "nodes",
        "id",
        "port",
        "tls-port",
        "ip",
        "endpoint",
        "role",
        "health",
        "master",
        "replica",
        "online",
        "fail",
        "FULL",
        "PARTIAL",
        "SYNC1",
        "SYNC",
        "?",
        "",
        "127.0.0.1",
        "0123456789abcdef0123456789abcdef01234567",
    ]);
    prop_oneof![
        3 => prop_oneof![
            Just(0i64),
            Just(16383),
            Just(16384),
            Just(-1),
            Just(65535),
            Just(65536),
            Just(i64::MAX),
            Just(i64::MIN),
            0i64..20_000,
        ]
        .prop_map(Value::Int),
        3 => words.prop_map(|w| Value::Bulk(w.as_bytes().to_vec())),
        1 => "[0-9a-f:.]{0,44}".prop_map(|s| Value::Bulk(s.into_bytes())),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bulk),
        1 => Just(Value::Nil),
        1 => "[A-Z]{0,6}".prop_map(|s| Value::Simple(s.into_bytes())),
        1 => any::<f64>().prop_map(Value::Double),
    ]
}

/// Any reply shape, nested up to 4 levels (arrays, maps, sets).
fn reply() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            4 => proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            1 => proptest::collection::vec((inner.clone(), inner.clone()), 0..5)
                .prop_map(Value::Map),
            1 => proptest::collection::vec(inner, 0..4).prop_map(Value::Set),
        ]
    })
}

/// A slot range `(start, end)`: mostly valid, sometimes reversed, out of range or noise.
fn slot_pair() -> impl Strategy<Value = (Value, Value)> {
    prop_oneof![
        6 => (0i64..16384, 0i64..2000)
            .prop_map(|(s, n)| (Value::Int(s), Value::Int((s + n).min(16383)))),
        1 => (0i64..20000, 0i64..20000).prop_map(|(s, e)| (Value::Int(s), Value::Int(e))),
        1 => (leaf(), leaf()),
    ]
}

/// A port: mostly valid, sometimes 0, too large, negative or not a number.
fn port() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (1i64..65536).prop_map(Value::Int),
        1 => leaf(),
    ]
}

/// A host: an address, empty, `?` (announce nothing) or noise.
fn host() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec!["127.0.0.1", "", "?", "::1", "h"])
            .prop_map(|h| Value::Bulk(h.as_bytes().to_vec())),
        1 => leaf(),
    ]
}

/// A `CLUSTER SLOTS` entry: `[start, end, [host, port, id], replica…]`, mostly well formed.
fn slots_entry() -> impl Strategy<Value = Value> {
    let node = || {
        (host(), port(), "[0-9a-f]{0,40}")
            .prop_map(|(h, p, i)| Value::Array(vec![h, p, Value::Bulk(i.into_bytes())]))
    };
    (slot_pair(), node(), proptest::collection::vec(node(), 0..2)).prop_map(|((s, e), m, reps)| {
        let mut v = vec![s, e, m];
        v.extend(reps);
        Value::Array(v)
    })
}

/// One node of a `CLUSTER SHARDS` shard as a RESP2 flat array of fields, mostly well formed.
fn shard_node() -> impl Strategy<Value = Value> {
    let field = |k: &'static str, v: BoxedStrategy<Value>| {
        proptest::option::weighted(0.85, v).prop_map(move |v| (k, v))
    };
    let text = |w: Vec<&'static str>| {
        prop::sample::select(w)
            .prop_map(|x| Value::Bulk(x.as_bytes().to_vec()))
            .boxed()
    };
    (
        field(
            "id",
            "[0-9a-f]{1,40}"
                .prop_map(|i| Value::Bulk(i.into_bytes()))
                .boxed(),
        ),
        field("port", port().boxed()),
        field("tls-port", port().boxed()),
        field("ip", host().boxed()),
        field("endpoint", host().boxed()),
        field("role", text(vec!["master", "master", "replica", "x"])),
        field("health", text(vec!["online", "online", "fail", "loading"])),
    )
        .prop_map(|(a, b, c, d, e, f, g)| {
            let fields = [a, b, c, d, e, f, g];
            Value::Array(
                fields
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| [Value::Bulk(k.as_bytes().to_vec()), v]))
                    .flatten()
                    .collect(),
            )
        })
}

/// A `CLUSTER SHARDS` shard as a RESP2 flat array: `slots [..] nodes [[k v …] …]`.
fn shard() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(slot_pair(), 0..3),
        proptest::option::weighted(0.1, leaf()),
        proptest::collection::vec(shard_node(), 0..3),
    )
        .prop_map(|(pairs, odd, nodes)| {
            let mut slots: Vec<Value> = pairs.into_iter().flat_map(|(s, e)| [s, e]).collect();
            slots.extend(odd);
            Value::Array(vec![
                Value::Bulk(b"slots".to_vec()),
                Value::Array(slots),
                Value::Bulk(b"nodes".to_vec()),
                Value::Array(nodes),
            ])
        })
}

/// A `capa dragonfly` reply: `[replid, sync id, flow count, version, replid]` with each part
/// right or wrong, and 0 to 6 parts.
fn capa() -> impl Strategy<Value = Value> {
    let replid = prop_oneof![
        3 => "[0-9a-f]{40}".prop_map(|s| Value::Bulk(s.into_bytes())),
        1 => leaf(),
    ];
    let sync = prop_oneof![
        3 => "SYNC[0-9]{1,30}".prop_map(|s| Value::Bulk(s.into_bytes())),
        1 => leaf(),
    ];
    let count = prop_oneof![
        3 => (-2i64..2000).prop_map(Value::Int),
        1 => leaf(),
    ];
    (replid.clone(), sync, count, leaf(), replid, 0usize..7).prop_map(|(a, b, c, d, e, n)| {
        let mut v = vec![a, b, c, d, e, Value::Int(1)];
        v.truncate(n);
        Value::Array(v)
    })
}

/// A topology that parsed must keep its invariants: valid, sorted, disjoint slot ranges.
fn check_topology(t: &Topology) -> Result<(), TestCaseError> {
    let mut all = Vec::new();
    for m in &t.masters {
        for r in &m.slots {
            prop_assert!(r.start <= r.end && r.end < SLOT_COUNT, "{r:?}");
            all.push((r.start, r.end));
        }
    }
    all.sort();
    for w in all.windows(2) {
        prop_assert!(w[0].1 < w[1].0, "overlap {:?}", w);
    }
    prop_assert!(t.covered_slots() <= usize::from(SLOT_COUNT));
    Ok(())
}

/// A request or reply of the emulator's parsers: RESP framing bytes, digits and letters.
fn resp_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            7 => prop::sample::select(b"*$+-:_,#(!=%~>|\r\n\r\n0123456789-1 PINGSET".to_vec()),
        ],
        0..96,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// `REPLCONF capa dragonfly`: any reply is a `Hello` with a usable id, sync id and flow
    /// count, or an error sentence.
    #[test]
    fn capa_reply_of_any_shape(near in capa(), junk in reply()) {
        for v in [near, junk] {
        match parse_capa(&v) {
            Ok(h) => {
                prop_assert_eq!(h.replid.len(), 40);
                prop_assert!(h.sync_id.starts_with("SYNC"));
                prop_assert!((1..=MAX_FLOWS).contains(&u64::from(h.flow_count)));
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        }
    }

    /// `CLUSTER SLOTS` and `CLUSTER SHARDS` replies, near-valid and arbitrary: a topology
    /// with valid disjoint ranges, or an error.
    #[test]
    fn cluster_slots_reply_of_any_shape(
        entries in proptest::collection::vec(slots_entry(), 0..6),
        junk in reply(),
    ) {
        for v in [Value::Array(entries), junk] {
            if let Ok(t) = Topology::from_slots(&v, "127.0.0.1:7000") {
                check_topology(&t)?;
            }
        }
    }

    #[test]
    fn cluster_shards_reply_of_any_shape(
        shards in proptest::collection::vec(shard(), 0..5),
        junk in reply(),
        tls in any::<bool>(),
    ) {
        for v in [Value::Array(shards), junk] {
            if let Ok(t) = Topology::from_shards(&v, "127.0.0.1:7000", tls) {
                check_topology(&t)?;
            }
        }
    }

    /// The low-water hash of a cluster target (`HGETALL`): one entry per flow whatever the
    /// reply holds (flow numbers past the count, other masters' ids, non-numbers are ignored).
    #[test]
    fn lowwater_reply_of_any_shape(v in reply(), flows in 0u32..8) {
        let m = ClusterMarkers {
            prefix: "df2redis-sync:ckpt:".into(),
            replid: "0123456789abcdef0123456789abcdef01234567".into(),
        };
        prop_assert_eq!(m.parse_lowwater(&v, flows).len(), flows as usize);
        if let Some(b) = v.as_bytes() {
            let _ = m.parse_member(b);
        }
    }

    /// Error lines a server may send: redirects with missing, huge or non-numeric parts are
    /// classified, never trusted blindly.
    #[test]
    fn server_error_lines(
        code in prop::sample::select(vec!["MOVED", "ASK", "TRYAGAIN", "LOADING", "ERR", ""]),
        rest in "[0-9a-z:. \\-\\[\\]]{0,40}",
    ) {
        let line = format!("{code} {rest}");
        let e = ServerError::parse(line.as_bytes());
        let _ = (e.next_action(), e.code());
        // A slot it reports is a real slot.
        if let df2redis_sync::resp::ErrorKind::Moved { slot, .. }
        | df2redis_sync::resp::ErrorKind::Ask { slot, .. } = e.kind
        {
            prop_assert!(slot < SLOT_COUNT);
        }
    }

    /// The emulator's request parser (client commands, `REPLCONF ACK` on a flow): never
    /// panics, never uses more than it was given, and a complete request is "need more" at
    /// every shorter prefix.
    #[test]
    fn emulator_requests(bytes in resp_bytes()) {
        if let Ok(Some((_, used))) = proto::parse_request(&bytes) {
            prop_assert!(used <= bytes.len());
            for k in 0..used {
                prop_assert!(matches!(proto::parse_request(&bytes[..k]), Ok(None)), "prefix {}", k);
            }
        }
    }

    /// The emulator's reply parser (its backend redis-server's replies), likewise.
    #[test]
    fn emulator_replies(bytes in resp_bytes()) {
        if let Ok(Some((_, used))) = proto::parse_value(&bytes) {
            prop_assert!(used <= bytes.len());
            for k in 0..used {
                prop_assert!(matches!(proto::parse_value(&bytes[..k]), Ok(None)), "prefix {}", k);
            }
        }
    }

    /// A DUMP payload (what `check` reads for types it compares by payload): a valid body
    /// (string, intset, listpack hash/zset/set) with up to two bytes replaced and the footer
    /// recomputed, so the checksum does not stop it first, is a value or an error.
    #[test]
    fn dump_payload_bodies(
        kind in 0u8..5,
        items in proptest::collection::vec("[a-z0-9]{0,8}|-?[0-9]{1,19}", 0..12),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        version in prop::sample::select(vec![9u16, 10, 11, 12]),
    ) {
        let mut p = dump_body(kind, &items);
        let valid = edits.is_empty();
        for (at, b) in edits {
            let i = at.index(p.len());
            p[i] = b;
        }
        p.extend_from_slice(&version.to_le_bytes());
        let crc = crc64(0, &p);
        p.extend_from_slice(&crc.to_le_bytes());
        let r = decode_dump_payload(&p, RdbLimits::default());
        if valid {
            prop_assert!(r.is_ok(), "{:?}", r);
        }
        // Without a valid footer it is refused.
        prop_assert!(decode_dump_payload(&p[..p.len() - 1], RdbLimits::default()).is_err());
    }
}

/// The body of a DUMP payload (type byte + value) of one of five shapes holding `items`.
fn dump_body(kind: u8, items: &[String]) -> Vec<u8> {
    use df2redis_sync::emulator::rdbenc::{intset, put_str, Listpack};
    use df2redis_sync::rdb::consts;
    let lp = |items: &[String]| {
        let mut l = Listpack::default();
        for i in items {
            l.push(i.as_bytes());
        }
        l.finish()
    };
    let even = &items[..items.len() & !1];
    let (ty, value) = match kind {
        0 => (consts::TYPE_STRING, items.concat().into_bytes()),
        1 => {
            let mut ints: Vec<i64> = items.iter().filter_map(|i| i.parse().ok()).collect();
            ints.sort_unstable();
            ints.dedup();
            (consts::TYPE_SET_INTSET, intset(&mut ints))
        }
        2 => (consts::TYPE_HASH_LISTPACK, lp(even)),
        3 => {
            let scored: Vec<String> = items
                .iter()
                .enumerate()
                .flat_map(|(n, m)| [m.clone(), n.to_string()])
                .collect();
            (consts::TYPE_ZSET_LISTPACK, lp(&scored))
        }
        _ => (consts::TYPE_SET_LISTPACK, lp(items)),
    };
    let mut p = vec![ty];
    put_str(&mut p, &value);
    p
}

/// The head of a real uncompressed flow (header, AUX fields, plain keys).
fn real_flow_head() -> Vec<u8> {
    let cap = shared_dir().join("testdata/dragonfly-v1.40.1/s2-plain-3shards/capture");
    let mut longest = Vec::new();
    for i in 1..4 {
        if let Ok(b) = std::fs::read(cap.join(format!("conn-{i:03}.s2c.bin"))) {
            if b.len() > longest.len() {
                longest = b;
            }
        }
    }
    // The FLOW reply (`*2\r\n+FULL\r\n+<token>\r\n`) comes before the snapshot.
    let start = memchr::memmem::find(&longest, b"REDIS").expect("a snapshot in the flow");
    longest.truncate((start + 4096).min(longest.len()));
    longest.split_off(start)
}

/// Decodes `bytes` as a FULL flow, fed in pieces of `chunk` bytes the way the flow thread
/// feeds it. Returns the events (as text) and the error, if any.
fn decode_flow(bytes: &[u8], chunk: usize) -> (Vec<String>, Option<String>) {
    let mut d = FlowDecoder::new_full(&[b'0'; 40], RdbLimits::default());
    let (mut events, mut buf, mut fed) = (Vec::new(), Vec::new(), 0);
    loop {
        match d.step(&buf) {
            Ok((df2redis_sync::rdb::Step::Item(ev), used)) => {
                assert!(used <= buf.len(), "used {used} of {}", buf.len());
                buf.drain(..used);
                events.push(format!("{ev:?}"));
            }
            Ok((_, used)) => {
                assert!(used <= buf.len(), "used {used} of {}", buf.len());
                buf.drain(..used);
                if fed == bytes.len() {
                    return (events, None);
                }
                let n = chunk.min(bytes.len() - fed);
                buf.extend_from_slice(&bytes[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (events, Some(format!("{:?} at {}", e.kind, e.offset))),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// A real flow head with up to three bytes replaced: the snapshot decoder gives events or
    /// an error with a position, the same events and error whole and byte by byte.
    #[test]
    fn mutated_real_flow(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        chunk in 1usize..64,
    ) {
        let mut bytes = real_flow_head();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let whole = decode_flow(&bytes, usize::MAX);
        prop_assert_eq!(&decode_flow(&bytes, chunk), &whole);
    }
}

/// The emulator's request parser refuses what it must not buffer: a bulk longer than its cap
/// and a request line longer than 64 KiB are errors with a position, not allocations.
#[test]
fn emulator_request_caps() {
    let e = proto::parse_request(b"*1\r\n$999999999999\r\n").unwrap_err();
    assert_eq!((e.pos, e.what), (5, "length over the cap"));
    let e = proto::parse_request(b"*99999999999999999999\r\n").unwrap_err();
    assert_eq!(e.what, "bad integer");
    let long = vec![b'a'; 70 * 1024];
    let e = proto::parse_request(&long).unwrap_err();
    assert_eq!(e.what, "line too long");
}

/// A flow id past every flow of the low-water hash is ignored, not indexed.
#[test]
fn lowwater_flow_past_the_count_is_ignored() {
    let m = ClusterMarkers {
        prefix: "p:".into(),
        replid: "r".into(),
    };
    let v = Value::Array(vec![
        Value::Bulk(b"4294967295".to_vec()),
        Value::Bulk(b"r:7".to_vec()),
        Value::Bulk(b"1".to_vec()),
        Value::Bulk(b"r:9".to_vec()),
    ]);
    let got = m.parse_lowwater(&v, 2);
    assert_eq!(got, vec![None, Some(df2redis_sync::model::Lsn(9))]);
    assert_eq!(m.parse_member(b"r:3"), Some(Member::High(FlowId(3))));
    assert_eq!(
        m.parse_member(b"r:3:e2"),
        Some(Member::Range {
            flow: FlowId(3),
            i: 2,
            start: false
        })
    );
    assert_eq!(m.parse_member(b"r:3:x2"), None);
}
