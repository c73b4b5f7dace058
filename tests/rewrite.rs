//! Integration tests: the rewrite of decoded pieces and journal commands, applied to a real
//! redis-server and read back — every type written exactly, the delete-then-write rule
//! (re-running a key never duplicates elements), absolute TTLs, streams with consumer groups
//! and pending entries (including entries whose stream entry was deleted), counted skips.

use crate::recordings::redis::{Conn, Reply, Server};
use df2redis_sync::journal::{EntryKind, JournalEntry};
use df2redis_sync::model::{Cmd, DbIndex};
use df2redis_sync::rdb::consts;
use df2redis_sync::rdb::{
    Blobs, KeyMask, Piece, Score, StreamConsumer, StreamEntry, StreamGroup, StreamId, StreamMeta,
    StreamPending, Value,
};
use df2redis_sync::rewrite::{Options, Rewriter, Rewritten, SkipReason};

const FAR_MS: i64 = 1_924_992_000_000; // 2031-01-01

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn piece(key: &str, rdb_type: u8, value: Value) -> Piece {
    Piece {
        db: DbIndex(0),
        key: key.as_bytes().to_vec(),
        rdb_type,
        expire_ms: None,
        mask: KeyMask::default(),
        first: true,
        last: true,
        value,
    }
}

fn blobs(items: &[&str]) -> Blobs {
    items.iter().collect()
}

/// Applies a rewrite result: SELECT its db, run its commands, fail on any error reply.
fn apply(conn: &mut Conn, r: &Rewritten) {
    let mut cmds = vec![Cmd::from_args([
        b"SELECT".to_vec(),
        r.db.0.to_string().into_bytes(),
    ])];
    cmds.extend(r.cmds.iter().cloned());
    for (c, reply) in cmds.iter().zip(conn.pipeline(&cmds)) {
        assert!(!matches!(reply, Reply::Error(_)), "{c:?} -> {reply:?}");
    }
}

fn strings(r: &Reply) -> Vec<String> {
    r.array().iter().map(|x| x.text()).collect()
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

fn entry(ms: u64, seq: u64, fields: &[&str]) -> StreamEntry {
    StreamEntry {
        id: id(ms, seq),
        fields: blobs(fields),
    }
}

#[test]
fn every_plain_type_is_written_exactly() {
    let server = Server::start();
    let mut conn = server.conn();
    let rw = Rewriter::new(Options {
        now_ms: now_ms(),
        ..Options::default()
    });

    let mut s = piece(
        "s",
        consts::TYPE_STRING,
        Value::String(b"\x00\r\nbin".to_vec()),
    );
    s.expire_ms = Some(FAR_MS + 7);
    s.db = DbIndex(3);
    apply(&mut conn, &rw.piece(&s));
    conn.cmd(&[b"SELECT", b"3"]);
    assert_eq!(conn.cmd(&[b"GET", b"s"]).bytes(), Some(&b"\x00\r\nbin"[..]));
    assert_eq!(conn.cmd(&[b"PEXPIRETIME", b"s"]).int(), Some(FAR_MS + 7));
    conn.cmd(&[b"SELECT", b"0"]);

    let z = piece(
        "z",
        consts::TYPE_ZSET_2,
        Value::ZSet {
            members: blobs(&["tiny", "third", "pinf", "ninf", "int", "big", "txt"]),
            scores: [
                1e-7,
                1.0 / 3.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                42.0,
                f64::MAX,
            ]
            .iter()
            .map(|&v| Score {
                value: v,
                text: None,
            })
            .chain([Score {
                value: 0.1,
                text: Some(b"0.1".to_vec()),
            }])
            .collect(),
        },
    );
    apply(&mut conn, &rw.piece(&z));
    for (m, want) in [
        ("tiny", 1e-7),
        ("third", 1.0 / 3.0),
        ("pinf", f64::INFINITY),
        ("ninf", f64::NEG_INFINITY),
        ("int", 42.0),
        ("big", f64::MAX),
        ("txt", 0.1),
    ] {
        let got: f64 = conn
            .cmd(&[b"ZSCORE", b"z", m.as_bytes()])
            .text()
            .parse()
            .unwrap();
        assert_eq!(got.to_bits(), want.to_bits(), "{m}");
    }

    let h = piece(
        "h",
        consts::TYPE_HASH,
        Value::Hash(blobs(&["f1", "v1", "", "empty-field"])),
    );
    apply(&mut conn, &rw.piece(&h));
    assert_eq!(
        strings(&conn.cmd(&[b"HGETALL", b"h"])),
        ["f1", "v1", "", "empty-field"]
    );

    let set = piece("set", consts::TYPE_SET, Value::Set(blobs(&["a", "b", "1"])));
    apply(&mut conn, &rw.piece(&set));
    assert_eq!(conn.cmd(&[b"SCARD", b"set"]).int(), Some(3));

    // Empty string is a key too (§3.5).
    apply(
        &mut conn,
        &rw.piece(&piece("e", consts::TYPE_STRING, Value::String(Vec::new()))),
    );
    assert_eq!(conn.cmd(&[b"EXISTS", b"e"]).int(), Some(1));
}

#[test]
fn pieces_append_and_a_rerun_never_duplicates() {
    let server = Server::start();
    let mut conn = server.conn();
    let rw = Rewriter::new(Options::default());
    let parts = [vec!["a", "b"], vec!["c"], vec!["d", "e"]];
    let run = |conn: &mut Conn| {
        for (i, p) in parts.iter().enumerate() {
            let mut l = piece("l", consts::TYPE_LIST_QUICKLIST_2, Value::List(blobs(p)));
            l.first = i == 0;
            l.last = i == parts.len() - 1;
            l.expire_ms = Some(FAR_MS);
            let r = rw.piece(&l);
            // Only the first piece deletes; only the last sets the TTL.
            assert_eq!(r.cmds.first().unwrap().name() == b"DEL", l.first);
            assert_eq!(r.cmds.last().unwrap().name() == b"PEXPIREAT", l.last);
            apply(conn, &r);
        }
    };
    conn.cmd(&[b"RPUSH", b"l", b"stale"]);
    run(&mut conn);
    run(&mut conn);
    assert_eq!(
        strings(&conn.cmd(&[b"LRANGE", b"l", b"0", b"-1"])),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(conn.cmd(&[b"PEXPIRETIME", b"l"]).int(), Some(FAR_MS));
}

#[test]
fn dragonfly_only_types_are_counted() {
    let server = Server::start();
    let mut conn = server.conn();
    let now = now_ms();
    let rw = Rewriter::new(Options {
        now_ms: now,
        ..Options::default()
    });
    let far_s = FAR_MS / 1000;
    let hx = piece(
        "hx",
        consts::TYPE_HASH_WITH_EXPIRY,
        Value::HashWithExpiry {
            fields: blobs(&["f1", "v1", "f2", "v2", "gone", "x"]),
            expire_unix_s: vec![Some(far_s), None, Some(now / 1000 - 10)],
        },
    );
    let r = rw.piece(&hx);
    assert_eq!(
        r.skipped.as_ref().unwrap().reason,
        SkipReason::FieldTtlDropped { fields: 1 }
    );
    apply(&mut conn, &r);
    assert_eq!(
        strings(&conn.cmd(&[b"HGETALL", b"hx"])),
        ["f1", "v1", "f2", "v2"]
    );

    let sx = piece(
        "sx",
        consts::TYPE_SET_WITH_EXPIRY,
        Value::SetWithExpiry {
            members: blobs(&["m1", "m2"]),
            expire_unix_s: vec![Some(far_s), None],
        },
    );
    let r = rw.piece(&sx);
    assert_eq!(
        r.skipped.as_ref().unwrap().reason,
        SkipReason::MemberTtlDropped { members: 1 }
    );
    apply(&mut conn, &r);
    assert_eq!(conn.cmd(&[b"SCARD", b"sx"]).int(), Some(2));

    conn.cmd(&[b"SET", b"bf", b"stale"]);
    let bf = piece("bf", consts::TYPE_SBF2, Value::Opaque(vec![1, 2, 3]));
    let r = rw.piece(&bf);
    let skip = r.skipped.clone().unwrap();
    assert_eq!(skip.key.as_deref(), Some(&b"bf"[..]));
    assert!(skip.reason.key_not_written());
    apply(&mut conn, &r);
    assert_eq!(conn.cmd(&[b"EXISTS", b"bf"]).int(), Some(0));
    let mut cont = bf.clone();
    cont.first = false;
    assert_eq!(
        rw.piece(&cont),
        Rewritten {
            db: DbIndex(0),
            ..Rewritten::default()
        },
        "reported once"
    );

    let js = piece("js", consts::TYPE_JSON, Value::Json(b"{\"a\":1}".to_vec()));
    assert_eq!(
        rw.piece(&js).skipped.unwrap().reason,
        SkipReason::JsonWithoutModule
    );

    let mut old = piece("old", consts::TYPE_STRING, Value::String(b"v".to_vec()));
    old.expire_ms = Some(now - 1000);
    let r = rw.piece(&old);
    assert_eq!(r.skipped.unwrap().reason, SkipReason::Expired);
}

/// A stream with deleted entries, two groups, consumers and pending entries — one of them
/// pointing at a deleted entry — comes out identical in XINFO STREAM FULL (but consumers'
/// seen/active times, which no command can set).
#[test]
fn streams_with_groups_and_pending_entries() {
    let server = Server::start();
    let mut conn = server.conn();
    let rw = Rewriter::new(Options::default());
    let meta = StreamMeta {
        length: 3,
        last_id: id(30, 0),
        first_id: Some(id(10, 0)),
        max_deleted_id: Some(id(25, 0)),
        entries_added: Some(6),
        deleted_entries: 0,
        groups: vec![
            StreamGroup {
                name: b"g1".to_vec(),
                last_id: id(20, 1),
                entries_read: Some(4),
                pending: vec![
                    StreamPending {
                        id: id(5, 0),
                        delivery_time_ms: 1_700_000_000_123,
                        delivery_count: 3,
                    },
                    StreamPending {
                        id: id(10, 0),
                        delivery_time_ms: 1_700_000_000_456,
                        delivery_count: 1,
                    },
                    StreamPending {
                        id: id(20, 1),
                        delivery_time_ms: 1_700_000_000_789,
                        delivery_count: 7,
                    },
                ],
                consumers: vec![
                    StreamConsumer {
                        name: b"alice".to_vec(),
                        seen_time_ms: 0,
                        active_time_ms: None,
                        pending: vec![id(5, 0), id(20, 1)],
                    },
                    StreamConsumer {
                        name: b"bob".to_vec(),
                        seen_time_ms: 0,
                        active_time_ms: None,
                        pending: vec![id(10, 0)],
                    },
                    StreamConsumer {
                        name: b"idle".to_vec(),
                        seen_time_ms: 0,
                        active_time_ms: None,
                        pending: vec![],
                    },
                ],
            },
            StreamGroup {
                name: b"g2".to_vec(),
                last_id: id(0, 0),
                entries_read: Some(u64::MAX),
                pending: vec![],
                consumers: vec![],
            },
        ],
    };
    let st = piece(
        "st",
        consts::TYPE_STREAM_LISTPACKS_3,
        Value::Stream {
            entries: vec![
                entry(10, 0, &["a", "1"]),
                entry(20, 1, &["b", "2", "c", "3"]),
                entry(30, 0, &["a", "4"]),
            ],
            meta: Some(Box::new(meta)),
        },
    );
    let r = rw.piece(&st);
    assert!(r.skipped.is_none(), "{:?}", r.skipped);
    apply(&mut conn, &r);
    apply(&mut conn, &r); // a re-run replaces, never duplicates
    let full = conn.cmd(&[b"XINFO", b"STREAM", b"st", b"FULL"]);
    let f = pairs(&full);
    assert_eq!(f["length"].int(), Some(3));
    assert_eq!(f["last-generated-id"].text(), "30-0");
    assert_eq!(f["max-deleted-entry-id"].text(), "25-0");
    assert_eq!(f["entries-added"].int(), Some(6));
    let entries: Vec<String> = f["entries"]
        .array()
        .iter()
        .map(|e| e.array()[0].text())
        .collect();
    assert_eq!(entries, ["10-0", "20-1", "30-0"]);
    let groups = f["groups"].array();
    assert_eq!(groups.len(), 2);
    let g1 = pairs(&groups[0]);
    assert_eq!(g1["name"].text(), "g1");
    assert_eq!(g1["last-delivered-id"].text(), "20-1");
    assert_eq!(g1["entries-read"].int(), Some(4));
    assert_eq!(g1["pel-count"].int(), Some(3));
    let pel: Vec<(String, i64, i64)> = g1["pending"]
        .array()
        .iter()
        .map(|p| {
            let a = p.array();
            (a[0].text(), a[2].int().unwrap(), a[3].int().unwrap())
        })
        .collect();
    assert_eq!(
        pel,
        [
            ("5-0".to_string(), 1_700_000_000_123, 3),
            ("10-0".to_string(), 1_700_000_000_456, 1),
            ("20-1".to_string(), 1_700_000_000_789, 7)
        ]
    );
    let owners: Vec<String> = g1["pending"]
        .array()
        .iter()
        .map(|p| p.array()[1].text())
        .collect();
    assert_eq!(owners, ["alice", "bob", "alice"]);
    let consumers: Vec<String> = g1["consumers"]
        .array()
        .iter()
        .map(|c| pairs(c)["name"].text())
        .collect();
    assert_eq!(consumers, ["alice", "bob", "idle"]);
    let g2 = pairs(&groups[1]);
    assert_eq!(g2["last-delivered-id"].text(), "0-0");
    assert_eq!(g2["entries-read"], Reply::Bulk(None));

    // An empty stream (all entries deleted) still exists, with its ids (§3.5).
    let empty = piece(
        "empty",
        consts::TYPE_STREAM_LISTPACKS_3,
        Value::Stream {
            entries: vec![],
            meta: Some(Box::new(StreamMeta {
                length: 0,
                last_id: id(1, 1),
                first_id: Some(id(0, 0)),
                max_deleted_id: Some(id(1, 1)),
                entries_added: Some(1),
                ..StreamMeta::default()
            })),
        },
    );
    apply(&mut conn, &rw.piece(&empty));
    let f = pairs(&conn.cmd(&[b"XINFO", b"STREAM", b"empty", b"FULL"]));
    assert_eq!(f["length"].int(), Some(0));
    assert_eq!(f["last-generated-id"].text(), "1-1");
    assert_eq!(f["max-deleted-entry-id"].text(), "1-1");
    assert_eq!(f["entries-added"].int(), Some(1));
}

fn pairs(r: &Reply) -> std::collections::BTreeMap<String, Reply> {
    r.array()
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].text(), c[1].clone()))
        .collect()
}

#[test]
fn journal_entries_apply_and_flushes_are_global() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut rw = Rewriter::new(Options::default());
    let e = |db: u32, txid: u64, args: &[&str]| JournalEntry {
        kind: EntryKind::Command,
        db: DbIndex(db),
        txid,
        shard_cnt: 1,
        cmd: Cmd::from_args(args),
    };
    for entry in [
        e(2, 0, &["SET", "k", "v", "PXAT", "1924992000000", "STICK"]),
        e(2, 0, &["HSETEX", "h", "100", "f", "v"]),
        e(2, 0, &["XADD", "s", "MINID", "0-1", "5-0", "a", "1"]),
        e(2, 0, &["XGROUP", "CREATECONSUMER", "s", "g", "c"]),
    ] {
        let r = rw.entry(&entry).unwrap();
        if entry.cmd.get(1) == Some(b"CREATECONSUMER") {
            // The group does not exist on the target: Redis answers an error, as it would
            // have on Dragonfly; skip applying it here.
            continue;
        }
        apply(&mut conn, &r);
    }
    conn.cmd(&[b"SELECT", b"2"]);
    assert_eq!(
        conn.cmd(&[b"PEXPIRETIME", b"k"]).int(),
        Some(1_924_992_000_000)
    );
    assert_eq!(strings(&conn.cmd(&[b"HGETALL", b"h"])), ["f", "v"]);
    assert_eq!(conn.cmd(&[b"XLEN", b"s"]).int(), Some(1));
    let r = rw.entry(&e(2, 9, &["FLUSHDB"])).unwrap();
    assert_eq!(r.global.unwrap().txid, 9);
    apply(&mut conn, &r);
    assert_eq!(conn.cmd(&[b"DBSIZE"]).int(), Some(0));

    // ≤ v1.20 groups: buffered until EXEC, then one atomic result.
    let m = |args: &[&str]| JournalEntry {
        kind: EntryKind::MultiCommand,
        ..e(1, 4, args)
    };
    assert!(rw.entry(&m(&["SET", "a", "1"])).unwrap().cmds.is_empty());
    assert!(rw.entry(&m(&["INCR", "a"])).unwrap().cmds.is_empty());
    let exec = JournalEntry {
        kind: EntryKind::Exec,
        cmd: Cmd::default(),
        ..e(1, 4, &[])
    };
    let r = rw.entry(&exec).unwrap();
    assert!(r.atomic);
    assert_eq!(r.db, DbIndex(1));
    assert_eq!(r.cmds.len(), 2);
    apply(&mut conn, &r);
    conn.cmd(&[b"SELECT", b"1"]);
    assert_eq!(conn.cmd(&[b"GET", b"a"]).text(), "2");
}

/// `df2redis-sync inspect <recording>`: runs the real binary on a recording, and checks its
/// JSON lines against the manifest (keys of the dbs the workload never touches, types that
/// only the snapshot creates), and each flow's final LSN against the last `REPLCONF ACK` the
/// real replica sent.
#[test]
fn inspect_recording_matches_manifest() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/dragonfly-v1.40.1/s2-plain-3shards"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(["inspect", dir])
        .output()
        .expect("run df2redis-sync inspect");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();

    // Keys (first pieces) per db and type.
    let mut keys: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l["kind"] == "key" && l["first"] == true)
    {
        keys.entry(l["db"].as_u64().unwrap())
            .or_default()
            .insert(l["key"].to_string());
        *types
            .entry(l["type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{dir}/manifest.json")).unwrap()).unwrap();
    for db in [1u64, 7] {
        // json.dumps(enc(key)) in the manifest == the JSON text of the inspector's key.
        let want: BTreeSet<String> = manifest[db.to_string()]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| {
                serde_json::from_str::<serde_json::Value>(k)
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(keys.get(&db), Some(&want), "db {db}");
        assert_eq!(want.len(), 31);
    }
    let count = |t: &str| {
        manifest["0"]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v["type"] == t)
            .count() as u64
    };
    assert_eq!(types.get("stream").copied(), Some(count("stream")));
    assert_eq!(types.get("bloom").copied(), Some(count("MBbloom--")));
    assert_eq!(types.get("json").copied(), Some(count("ReJSON-RL")));

    // The total summary agrees with the lines, and nothing failed.
    let total = lines.last().unwrap();
    assert_eq!(total["summary"], "total");
    assert_eq!(total["flows"], 3);
    assert_eq!(total["errors"].as_array().unwrap().len(), 0);
    assert_eq!(total["key_count"].as_u64(), Some(types.values().sum()));

    // Per flow: the next LSN after the last entry equals the replica's last REPLCONF ACK.
    for conn in 1..=3 {
        let c2s = std::fs::read(format!("{dir}/capture/conn-00{conn}.c2s.bin")).unwrap();
        let text = String::from_utf8_lossy(&c2s);
        let flow: u64 = text.split_whitespace().nth(4).unwrap().parse().unwrap();
        let last_ack: u64 = text
            .split("REPLCONF ACK ")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        let of_flow = lines.iter().filter(|l| l["flow"] == flow);
        let next = of_flow
            .filter_map(|l| match l["kind"].as_str() {
                Some("journal") => l["lsn"].as_u64().map(|x| x + 1),
                Some("journal-offset") => l["lsn"].as_u64(),
                _ => None,
            })
            .max()
            .unwrap();
        assert_eq!(next, last_ack, "flow {flow}");
    }
}

/// Dragonfly's text for a double (reference for the script): shortest round-trip digits, plain
/// for decimal exponents -6..=20, else `d.ddde±x`.
fn dragonfly_double(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{:e}", v.abs()); // shortest digits: "3.0000000000000004e-1"
    let (mant, exp) = s.split_once('e').unwrap();
    let e: i32 = exp.parse().unwrap();
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let body = if (-6..=20).contains(&e) {
        if e >= n - 1 {
            format!("{digits}{}", "0".repeat((e - (n - 1)) as usize))
        } else if e >= 0 {
            format!(
                "{}.{}",
                &digits[..(e + 1) as usize],
                &digits[(e + 1) as usize..]
            )
        } else {
            format!("0.{}{digits}", "0".repeat((-e - 1) as usize))
        }
    } else {
        let rest = if n > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        format!(
            "{}{rest}e{}{}",
            &digits[..1],
            if e > 0 { "+" } else { "-" },
            e.abs()
        )
    };
    format!("{}{body}", if v < 0.0 { "-" } else { "" })
}

/// INCRBYFLOAT / HINCRBYFLOAT replay stores Dragonfly's text, not Redis's (§4.8 notes).
#[test]
fn incrbyfloat_matches_dragonfly_formatting() {
    let server = Server::start();
    let mut conn = server.conn();
    let mut rw = Rewriter::new(Options::default());
    let mut run = |conn: &mut Conn, args: &[&str]| {
        let e = JournalEntry {
            kind: EntryKind::Command,
            db: DbIndex(0),
            txid: 0,
            shard_cnt: 1,
            cmd: Cmd::from_args(args),
        };
        apply(conn, &rw.entry(&e).unwrap());
    };
    for (steps, want) in [
        (&["0.1", "0.2"][..], "0.30000000000000004"),
        (&["1.25", "0.1"][..], "1.35"),
        (&["1e20"][..], "100000000000000000000"),
        (&["1e21"][..], "1e+21"),
        (&["1.1111111111111111e21"][..], "1.1111111111111111e+21"),
        (&["1e-7"][..], "1e-7"),
        (&["0.000001"][..], "0.000001"),
        (&["7.5", "2.5"][..], "10"),
        (&["-2.5"][..], "-2.5"),
    ] {
        conn.cmd(&[b"DEL", b"f", b"h"]);
        for s in steps {
            run(&mut conn, &["INCRBYFLOAT", "f", s]);
            run(&mut conn, &["HINCRBYFLOAT", "h", "x", s]);
        }
        assert_eq!(conn.cmd(&[b"GET", b"f"]).text(), want, "{steps:?}");
        assert_eq!(conn.cmd(&[b"HGET", b"h", b"x"]).text(), want, "{steps:?}");
        assert_eq!(dragonfly_double(want.parse().unwrap()), want);
    }
    // The TTL survives, as with INCRBYFLOAT.
    conn.cmd(&[b"SET", b"t", b"1", b"PXAT", b"1924992000000"]);
    run(&mut conn, &["INCRBYFLOAT", "t", "0.5"]);
    assert_eq!(conn.cmd(&[b"GET", b"t"]).text(), "1.5");
    assert_eq!(
        conn.cmd(&[b"PEXPIRETIME", b"t"]).int(),
        Some(1_924_992_000_000)
    );
    // Many magnitudes: the script's text equals the reference's.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mant = (x % 1_000_000_007) as f64 / 1_000_003.0;
        let v = mant * 10f64.powi((x % 60) as i32 - 30) * if x & 1 == 0 { 1.0 } else { -1.0 };
        conn.cmd(&[b"DEL", b"r"]);
        run(&mut conn, &["INCRBYFLOAT", "r", &format!("{v:?}")]);
        assert_eq!(
            conn.cmd(&[b"GET", b"r"]).text(),
            dragonfly_double(v),
            "{v:?}"
        );
    }
}

/// A stream in two pieces whose group has pending entries: one of an entry of the first
/// piece (claimed), one of an id below the first live id (deleted, cannot be re-created
/// after the fact: counted), and a stream with a group but no entry and last id 0-0.
#[test]
fn split_streams_and_empty_streams_with_groups() {
    let server = Server::start();
    let mut conn = server.conn();
    let rw = Rewriter::new(Options::default());
    let group = StreamGroup {
        name: b"g".to_vec(),
        last_id: id(3, 0),
        entries_read: None,
        pending: vec![
            StreamPending {
                id: id(1, 0),
                delivery_time_ms: 1000,
                delivery_count: 1,
            },
            StreamPending {
                id: id(2, 0),
                delivery_time_ms: 2000,
                delivery_count: 2,
            },
        ],
        consumers: vec![StreamConsumer {
            name: b"c".to_vec(),
            seen_time_ms: 0,
            active_time_ms: None,
            pending: vec![id(1, 0), id(2, 0)],
        }],
    };
    let mut p1 = piece(
        "sp",
        consts::TYPE_STREAM_LISTPACKS_3,
        Value::Stream {
            entries: vec![entry(2, 0, &["a", "1"])],
            meta: None,
        },
    );
    p1.last = false;
    let mut p2 = piece(
        "sp",
        consts::TYPE_STREAM_LISTPACKS_3,
        Value::Stream {
            entries: vec![entry(3, 0, &["a", "2"])],
            meta: Some(Box::new(StreamMeta {
                length: 2,
                last_id: id(3, 0),
                first_id: Some(id(2, 0)),
                max_deleted_id: Some(id(1, 0)),
                entries_added: Some(3),
                groups: vec![group],
                deleted_entries: 0,
            })),
        },
    );
    p2.first = false;
    apply(&mut conn, &rw.piece(&p1));
    let r = rw.piece(&p2);
    assert_eq!(
        r.skipped.as_ref().unwrap().reason,
        SkipReason::PendingEntriesDropped { count: 1 }
    );
    apply(&mut conn, &r);
    let f = pairs(&conn.cmd(&[b"XINFO", b"STREAM", b"sp", b"FULL"]));
    assert_eq!(f["length"].int(), Some(2));
    assert_eq!(f["entries-added"].int(), Some(3));
    assert_eq!(f["max-deleted-entry-id"].text(), "1-0");
    let g = pairs(&f["groups"].array()[0]);
    assert_eq!(g["pel-count"].int(), Some(1));

    let e = piece(
        "mk",
        consts::TYPE_STREAM_LISTPACKS_3,
        Value::Stream {
            entries: vec![],
            meta: Some(Box::new(StreamMeta {
                length: 0,
                last_id: id(0, 0),
                first_id: Some(id(0, 0)),
                max_deleted_id: Some(id(0, 0)),
                entries_added: Some(0),
                groups: vec![StreamGroup {
                    name: b"g0".to_vec(),
                    last_id: id(0, 0),
                    entries_read: Some(0),
                    pending: vec![],
                    consumers: vec![],
                }],
                deleted_entries: 0,
            })),
        },
    );
    apply(&mut conn, &rw.piece(&e));
    let f = pairs(&conn.cmd(&[b"XINFO", b"STREAM", b"mk", b"FULL"]));
    assert_eq!(f["length"].int(), Some(0));
    assert_eq!(f["last-generated-id"].text(), "0-0");
    assert_eq!(f["entries-added"].int(), Some(0));
    assert_eq!(pairs(&f["groups"].array()[0])["name"].text(), "g0");
}

/// `inspect` on a corrupt flow: an error line naming the byte offset, a summary counting it,
/// exit code 1.
#[test]
fn inspect_reports_decode_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conn-001.s2c.bin");
    let mut bytes =
        b"*2\r\n+FULL\r\n+0123456789abcdef0123456789abcdef01234567\r\nREDIS0009".to_vec();
    bytes.extend_from_slice(&[0x64, 0x01, b'k']);
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err_line: serde_json::Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "error")
        .expect("an error line");
    let msg = err_line["error"].as_str().unwrap();
    assert!(msg.contains("byte 9"), "{msg}");
    let total: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(total["errors"].as_array().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to decode"));
}
