//! Integration tests on the real Dragonfly recordings (`../shared/testdata`): the recording
//! reader, the manifest comparator against a real redis-server, and the main acceptance of
//! issue 3 — every recording decoded, rewritten and applied to an empty redis-server equals its
//! manifest, with the types plain Redis cannot hold counted as skipped.

mod capture;
mod keyspace;
mod redis;

use capture::{all_recordings, Recording};
use df2redis_sync::model::Cmd;
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
