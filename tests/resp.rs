//! Integration tests: the RESP reply decoder against a simple reference encoder/decoder
//! (property tests: whole, byte by byte, random chunks; random and mutated bytes never panic)
//! and against real replies recorded from a Dragonfly v1.40.1 master.

use df2redis_sync::resp::{decode, DecodeErrorKind, Limits, Value};
use proptest::prelude::*;

use crate::support::shared_dir;

// ---------------------------------------------------------------------------------------------
// Reference: the plainest possible encoder and decoder, written independently of src/resp.

fn ref_encode(v: &Value) -> Vec<u8> {
    let mut o = Vec::new();
    let cat = |o: &mut Vec<u8>, items: Vec<Vec<u8>>| items.into_iter().for_each(|i| o.extend(i));
    match v {
        Value::Simple(s) => o.extend([b"+".to_vec(), s.clone(), b"\r\n".to_vec()].concat()),
        Value::Error(s) => o.extend([b"-".to_vec(), s.clone(), b"\r\n".to_vec()].concat()),
        Value::Int(n) => o.extend(format!(":{n}\r\n").into_bytes()),
        Value::Bulk(b) => {
            o.extend(format!("${}\r\n", b.len()).into_bytes());
            o.extend(b);
            o.extend(b"\r\n");
        }
        Value::Nil => o.extend(b"$-1\r\n"),
        Value::Array(a) => {
            o.extend(format!("*{}\r\n", a.len()).into_bytes());
            cat(&mut o, a.iter().map(ref_encode).collect());
        }
        Value::Double(d) => {
            let t = if d.is_nan() {
                "nan".to_string()
            } else if *d == f64::INFINITY {
                "inf".to_string()
            } else if *d == f64::NEG_INFINITY {
                "-inf".to_string()
            } else {
                d.to_string()
            };
            o.extend(format!(",{t}\r\n").into_bytes());
        }
        Value::Boolean(b) => o.extend(format!("#{}\r\n", if *b { 't' } else { 'f' }).into_bytes()),
        Value::BigNumber(b) => o.extend([b"(".to_vec(), b.clone(), b"\r\n".to_vec()].concat()),
        Value::BulkError(b) => {
            o.extend(format!("!{}\r\n", b.len()).into_bytes());
            o.extend(b);
            o.extend(b"\r\n");
        }
        Value::Verbatim { format, text } => {
            o.extend(format!("={}\r\n", text.len() + 4).into_bytes());
            o.extend(format);
            o.push(b':');
            o.extend(text);
            o.extend(b"\r\n");
        }
        Value::Map(m) => {
            o.extend(format!("%{}\r\n", m.len()).into_bytes());
            for (k, v) in m {
                o.extend(ref_encode(k));
                o.extend(ref_encode(v));
            }
        }
        Value::Set(a) => {
            o.extend(format!("~{}\r\n", a.len()).into_bytes());
            cat(&mut o, a.iter().map(ref_encode).collect());
        }
        Value::Attribute { attrs, value } => {
            o.extend(format!("|{}\r\n", attrs.len()).into_bytes());
            for (k, v) in attrs {
                o.extend(ref_encode(k));
                o.extend(ref_encode(v));
            }
            o.extend(ref_encode(value));
        }
        Value::Push(a) => {
            o.extend(format!(">{}\r\n", a.len()).into_bytes());
            cat(&mut o, a.iter().map(ref_encode).collect());
        }
    }
    o
}

/// Reference decoder: no caps, no incrementality; `None` for anything incomplete or invalid.
fn ref_decode(b: &[u8]) -> Option<(Value, usize)> {
    fn line(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let rest = b.get(at..)?;
        let i = rest.windows(2).position(|w| w == b"\r\n")?;
        let l = &rest[..i];
        if l.contains(&b'\r') {
            return None;
        }
        Some((l, at + i + 2))
    }
    fn int(l: &[u8]) -> Option<i64> {
        let s = std::str::from_utf8(l).ok()?;
        if s.starts_with('+') || s.len() > 21 {
            return None;
        }
        s.parse().ok()
    }
    fn blob(b: &[u8], l: &[u8], at: usize) -> Option<(Option<Vec<u8>>, usize)> {
        let n = int(l)?;
        if n == -1 {
            return Some((None, at));
        }
        let n = usize::try_from(n).ok()?;
        let data = b.get(at..at.checked_add(n)?)?;
        if b.get(at + n..at + n + 2)? != b"\r\n" {
            return None;
        }
        Some((Some(data.to_vec()), at + n + 2))
    }
    fn many(b: &[u8], n: i64, mut at: usize) -> Option<(Vec<Value>, usize)> {
        let mut v = Vec::new();
        for _ in 0..n {
            let (x, next) = value(b, at)?;
            v.push(x);
            at = next;
        }
        Some((v, at))
    }
    fn pairs(b: &[u8], n: i64, at: usize) -> Option<(Vec<(Value, Value)>, usize)> {
        let (flat, at) = many(b, n.checked_mul(2)?, at)?;
        let mut it = flat.into_iter();
        let mut v = Vec::new();
        while let (Some(k), Some(x)) = (it.next(), it.next()) {
            v.push((k, x));
        }
        Some((v, at))
    }
    fn value(b: &[u8], at: usize) -> Option<(Value, usize)> {
        let tag = *b.get(at)?;
        let (l, next) = line(b, at + 1)?;
        let text = std::str::from_utf8(l).ok();
        Some(match tag {
            b'+' => (Value::Simple(l.to_vec()), next),
            b'-' => (Value::Error(l.to_vec()), next),
            b':' => (Value::Int(int(l)?), next),
            b'$' => match blob(b, l, next)? {
                (Some(d), n) => (Value::Bulk(d), n),
                (None, n) => (Value::Nil, n),
            },
            b'!' => match blob(b, l, next)? {
                (Some(d), n) => (Value::BulkError(d), n),
                (None, _) => return None,
            },
            b'=' => match blob(b, l, next)? {
                (Some(d), n) if d.len() >= 4 && d[3] == b':' => (
                    Value::Verbatim {
                        format: [d[0], d[1], d[2]],
                        text: d[4..].to_vec(),
                    },
                    n,
                ),
                _ => return None,
            },
            b'*' => match int(l)? {
                -1 => (Value::Nil, next),
                n if n >= 0 => {
                    let (v, at) = many(b, n, next)?;
                    (Value::Array(v), at)
                }
                _ => return None,
            },
            b'~' | b'>' => {
                let n = int(l).filter(|n| *n >= 0)?;
                let (v, at) = many(b, n, next)?;
                (
                    if tag == b'~' {
                        Value::Set(v)
                    } else {
                        Value::Push(v)
                    },
                    at,
                )
            }
            b'%' => {
                let (m, at) = pairs(b, int(l).filter(|n| *n >= 0)?, next)?;
                (Value::Map(m), at)
            }
            b'|' => {
                let (attrs, at) = pairs(b, int(l).filter(|n| *n >= 0)?, next)?;
                let (v, at) = value(b, at)?;
                (
                    Value::Attribute {
                        attrs,
                        value: Box::new(v),
                    },
                    at,
                )
            }
            b'_' if l.is_empty() => (Value::Nil, next),
            b'#' if l == b"t" => (Value::Boolean(true), next),
            b'#' if l == b"f" => (Value::Boolean(false), next),
            b',' => {
                let t = text.filter(|t| !t.is_empty() && !t.starts_with('+'))?;
                (Value::Double(t.parse().ok()?), next)
            }
            b'(' => {
                let d = l.strip_prefix(b"-").unwrap_or(l);
                if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                (Value::BigNumber(l.to_vec()), next)
            }
            _ => return None,
        })
    }
    value(b, 0)
}

/// Equality that treats NaN doubles as equal (their encodings are compared).
fn same(a: &Value, b: &Value) -> bool {
    ref_encode(a) == ref_encode(b)
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |c| *c != b'\r' && *c != b'\n'),
        0..20,
    )
}

fn blob_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        // CRLF-heavy payloads stress the length-based framing.
        proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'$')], 0..10),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        line_bytes().prop_map(Value::Simple),
        line_bytes().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Int),
        blob_bytes().prop_map(Value::Bulk),
        Just(Value::Nil),
        prop_oneof![
            any::<f64>().prop_filter("NaN compared separately", |d| !d.is_nan()),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
        ]
        .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        "-?[0-9]{1,60}".prop_map(|s| Value::BigNumber(s.into_bytes())),
        blob_bytes().prop_map(Value::BulkError),
        (any::<[u8; 3]>(), blob_bytes())
            .prop_map(|(format, text)| Value::Verbatim { format, text }),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Push),
            (
                proptest::collection::vec((inner.clone(), inner.clone()), 0..3),
                inner
            )
                .prop_map(|(attrs, v)| Value::Attribute {
                    attrs,
                    value: Box::new(v)
                }),
        ]
    })
}

/// Feeds `input` to the decoder in the given chunk sizes, the way a connection does: append
/// the chunk, decode as many replies as are complete, keep the rest.
fn feed_in_chunks(input: &[u8], chunks: &[usize]) -> Vec<Value> {
    let lim = Limits::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < input.len() {
        let n = (*sizes.next().unwrap_or(&1)).max(1).min(input.len() - at);
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        while let Some((v, used)) = decode(&buf, &lim).expect("valid input") {
            out.push(v);
            buf.drain(..used);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn encoder_matches_reference(v in value()) {
        prop_assert_eq!(v.to_resp(), ref_encode(&v));
    }

    #[test]
    fn round_trip_whole(v in value()) {
        let bytes = ref_encode(&v);
        let (got, used) = decode(&bytes, &Limits::default()).unwrap().unwrap();
        prop_assert!(same(&got, &v), "{:?} != {:?}", got, v);
        prop_assert_eq!(used, bytes.len());
        // Trailing bytes are left alone.
        let mut more = bytes.clone();
        more.extend_from_slice(b"+next\r\n");
        prop_assert_eq!(decode(&more, &Limits::default()).unwrap().unwrap().1, bytes.len());
    }

    #[test]
    fn round_trip_byte_by_byte(v in value()) {
        let bytes = ref_encode(&v);
        for k in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..k], &Limits::default()).unwrap(), None, "prefix {}", k);
        }
        let got = feed_in_chunks(&bytes, &[1]);
        prop_assert_eq!(got.len(), 1);
        prop_assert!(same(&got[0], &v));
    }

    #[test]
    fn pipelined_replies_in_random_chunks(
        vs in proptest::collection::vec(value(), 1..8),
        chunks in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let bytes: Vec<u8> = vs.iter().flat_map(ref_encode).collect();
        let got = feed_in_chunks(&bytes, &chunks);
        prop_assert_eq!(got.len(), vs.len());
        for (g, v) in got.iter().zip(&vs) {
            prop_assert!(same(g, v), "{:?} != {:?}", g, v);
        }
    }

    #[test]
    fn random_bytes_never_panic_and_agree_with_reference(
        bytes in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                6 => proptest::sample::select(b"+-:$*_,#(!=%~>|\r\n0123456789-tf?".to_vec()),
            ],
            0..64,
        )
    ) {
        let tiny = Limits { max_bulk_len: 16, max_array_len: 8, max_depth: 3, max_line_len: 32 };
        for lim in [Limits::default(), tiny] {
            if let Ok(Some((v, used))) = decode(&bytes, &lim) {
                prop_assert!(used <= bytes.len());
                let (r, rused) = ref_decode(&bytes[..used]).expect("reference accepts it too");
                prop_assert!(same(&r, &v), "{:?} != {:?}", r, v);
                prop_assert_eq!(rused, used);
            }
        }
    }

    #[test]
    fn mutated_encodings_never_panic(v in value(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut bytes = ref_encode(&v);
        let i = at.index(bytes.len());
        bytes[i] = b;
        if let Ok(Some((got, used))) = decode(&bytes, &Limits::default()) {
            let (r, _) = ref_decode(&bytes[..used]).expect("reference accepts it too");
            prop_assert!(same(&r, &got));
        }
    }
}

#[test]
fn nan_double_decodes() {
    for t in [&b",nan\r\n"[..], b",NaN\r\n"] {
        let (v, _) = decode(t, &Limits::default()).unwrap().unwrap();
        assert!(matches!(v, Value::Double(d) if d.is_nan()), "{v:?}");
    }
}

#[test]
fn deep_nesting_is_refused_not_recursed() {
    let mut b = b"*1\r\n".repeat(100_000);
    b.extend_from_slice(b":1\r\n");
    let e = decode(&b, &Limits::default()).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::TooDeep { max: 64 });
    assert_eq!(e.pos, 65 * 4);
}

/// Every reply a real Dragonfly v1.40.1 master sent on the main replication connection,
/// decoded whole, byte by byte and in chunks; the count matches the replica's commands.
#[test]
fn real_dragonfly_main_connection_replies() {
    let root = shared_dir().join("testdata/dragonfly-v1.40.1");
    let mut sessions = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let cap = entry.unwrap().path().join("capture");
        let (c2s, s2c) = (cap.join("conn-000.c2s.bin"), cap.join("conn-000.s2c.bin"));
        let (Ok(sent), Ok(got)) = (std::fs::read(&c2s), std::fs::read(&s2c)) else {
            continue;
        };
        if !sent.windows(23).any(|w| w == b"REPLCONF capa dragonfly") {
            continue;
        }
        sessions += 1;
        let commands = sent.windows(2).filter(|w| w == b"\r\n").count();
        let whole = feed_in_chunks(&got, &[usize::MAX]);
        assert_eq!(whole.len(), commands, "{}", s2c.display());
        assert_eq!(feed_in_chunks(&got, &[1]), whole);
        assert_eq!(feed_in_chunks(&got, &[3, 7, 1, 29]), whole);
        // The `capa dragonfly` reply: [replid, sync id, flow count, version, ...] (v1.40 adds
        // a fifth element).
        let capa = whole
            .iter()
            .find_map(Value::as_array)
            .expect("an array reply");
        assert!(capa.len() >= 4, "{capa:?}");
        assert!(capa[1].as_str().is_some_and(|s| s.starts_with("SYNC")));
        assert!(capa[2].as_int().is_some_and(|n| n > 0));
    }
    assert!(
        sessions >= 5,
        "only {sessions} recordings found under {}",
        root.display()
    );
}
