//! Integration tests: `check` against real redis-server pairs (standalone, and a 3-master
//! cluster as target). The same data set is written to both sides, then differences of every
//! kind are injected; each must be reported with its exact key and kind, and nothing else.
//! Also: equal pairs report equal (exit 0), convergence across rounds, sampling coverage,
//! the JSON report, and the `check` config section.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use df2redis_sync::check::{self, DiffKind, Mode, Outcome};
use df2redis_sync::config::{CheckConfig, Config};
use df2redis_sync::model::Cmd;
use df2redis_sync::net::Conn;
use df2redis_sync::route::Slot;
use df2redis_sync::target::topology::{discover, Topology};

use crate::support::{RedisCluster, RedisServer};

/// Writes to a standalone server or a cluster (routing by the key, argument 1).
struct Writer {
    topo: Topology,
    conns: Vec<Conn>,
}

impl Writer {
    fn new(ep: &df2redis_sync::net::Endpoint) -> Writer {
        let topo = discover(ep).unwrap();
        let conns = topo
            .masters
            .iter()
            .map(|m| Conn::connect(&ep.with_addr(m.addr.clone())).unwrap())
            .collect();
        Writer { topo, conns }
    }

    fn node(&self, key: &[u8]) -> usize {
        let slot = Slot::of_key(key).get();
        self.topo
            .masters
            .iter()
            .position(|m| m.slots.iter().any(|r| r.contains(slot)))
            .unwrap()
    }

    fn cmd(&mut self, args: &[&[u8]]) {
        // The key: argument 1, except for the stream group commands used here.
        let key = match args[0] {
            b"XGROUP" => args[2],
            b"XREADGROUP" => args[args.len() - 2],
            _ => args[1],
        };
        let n = if self.topo.cluster { self.node(key) } else { 0 };
        let r = self.conns[n].request(&Cmd::from_args(args)).unwrap();
        assert!(
            !r.is_error(),
            "{:?}: {r:?}",
            String::from_utf8_lossy(args[0])
        );
    }

    /// Many commands on one key, pipelined.
    fn many(&mut self, key: &[u8], cmds: &[Cmd]) {
        let n = if self.topo.cluster { self.node(key) } else { 0 };
        for chunk in cmds.chunks(2000) {
            self.conns[n].send_all(chunk.iter()).unwrap();
            for _ in chunk {
                let r = self.conns[n].read_reply().unwrap();
                assert!(!r.is_error(), "{r:?}");
            }
        }
    }
}

const BIG_FIELDS: usize = 200_000;

/// The same data on both sides: every type, TTLs, a stream with a group and pending
/// entries, a 200k-field hash and filler strings.
fn populate(w: &mut Writer, expire_at: u64) {
    let exp = expire_at.to_string();
    for i in 0..500 {
        let k = format!("filler:{i}");
        w.cmd(&[b"SET", k.as_bytes(), format!("value-{i}").as_bytes()]);
    }
    for k in ["sv", "typed", "ttl_ok", "ttl_wrong", "ttl_missing"] {
        w.cmd(&[b"SET", k.as_bytes(), b"hello"]);
    }
    for k in ["ttl_ok", "ttl_wrong", "ttl_missing"] {
        w.cmd(&[b"PEXPIREAT", k.as_bytes(), exp.as_bytes()]);
    }
    w.cmd(&[b"SET", b"bin\x00\xffkey", b"\x00\x01"]);
    w.cmd(&[b"RPUSH", b"lv", b"a", b"b", b"c"]);
    w.cmd(&[b"RPUSH", b"len", b"a", b"b", b"c"]);
    w.cmd(&[b"RPUSH", b"list_ok", b"1", b"2", b"3"]);
    w.cmd(&[b"SADD", b"setv", b"a", b"b", b"c"]);
    w.cmd(&[b"SADD", b"set_ok", b"a", b"b", b"c"]);
    w.cmd(&[b"ZADD", b"zv", b"1.5", b"m1", b"2", b"m2"]);
    w.cmd(&[b"ZADD", b"zm", b"1", b"a", b"2", b"b"]);
    w.cmd(&[b"ZADD", b"zset_ok", b"1.25", b"a", b"-3", b"b"]);
    w.cmd(&[b"HSET", b"hv", b"f1", b"v1", b"f2", b"v2"]);
    w.cmd(&[b"HSET", b"hash_ok", b"f1", b"v1", b"f2", b"v2"]);
    for k in ["xv", "xg", "xp", "stream_ok"] {
        let k = k.as_bytes();
        w.cmd(&[b"XADD", k, b"1-1", b"f", b"v1"]);
        w.cmd(&[b"XADD", k, b"1-2", b"f", b"v2"]);
        w.cmd(&[b"XADD", k, b"2-1", b"f", b"v3", b"g", b"w"]);
        w.cmd(&[b"XGROUP", b"CREATE", k, b"grp", b"0"]);
        // Deliver two entries to consumer c1: they are pending until acknowledged.
        w.cmd(&[
            b"XREADGROUP",
            b"GROUP",
            b"grp",
            b"c1",
            b"COUNT",
            b"2",
            b"STREAMS",
            k,
            b">",
        ]);
    }
    let cmds: Vec<Cmd> = (0..BIG_FIELDS)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|c| {
            let mut cmd = Cmd::new("HSET");
            cmd.arg(b"bighash");
            for i in c {
                cmd.arg(format!("field:{i}").as_bytes());
                cmd.arg(format!("value:{i}").as_bytes());
            }
            cmd
        })
        .collect();
    w.many(b"bighash", &cmds);
}

/// Every injected difference: (key, kind).
fn inject(src: &mut Writer, tgt: &mut Writer, expire_at: u64) -> BTreeSet<(String, DiffKind)> {
    src.cmd(&[b"SET", b"only_src", b"x"]);
    tgt.cmd(&[b"SET", b"only_tgt", b"x"]);
    tgt.cmd(&[b"DEL", b"typed"]);
    tgt.cmd(&[b"RPUSH", b"typed", b"hello"]);
    tgt.cmd(&[b"SET", b"sv", b"hellp"]);
    tgt.cmd(&[b"LSET", b"lv", b"1", b"x"]);
    tgt.cmd(&[b"RPUSH", b"len", b"d"]);
    tgt.cmd(&[b"SREM", b"setv", b"c"]);
    tgt.cmd(&[b"SADD", b"setv", b"d"]);
    tgt.cmd(&[b"ZADD", b"zv", b"1.5000001", b"m1"]);
    tgt.cmd(&[b"ZREM", b"zm", b"b"]);
    tgt.cmd(&[b"ZADD", b"zm", b"2", b"c"]);
    tgt.cmd(&[b"HSET", b"hv", b"f2", b"changed"]);
    // Stream entry: same ids, one field value differs.
    tgt.cmd(&[b"DEL", b"xv"]);
    tgt.cmd(&[b"XADD", b"xv", b"1-1", b"f", b"v1"]);
    tgt.cmd(&[b"XADD", b"xv", b"1-2", b"f", b"DIFFERENT"]);
    tgt.cmd(&[b"XADD", b"xv", b"2-1", b"f", b"v3", b"g", b"w"]);
    tgt.cmd(&[b"XGROUP", b"CREATE", b"xv", b"grp", b"0"]);
    tgt.cmd(&[
        b"XREADGROUP",
        b"GROUP",
        b"grp",
        b"c1",
        b"COUNT",
        b"2",
        b"STREAMS",
        b"xv",
        b">",
    ]);
    // Stream group: its last-delivered id moved on the target.
    tgt.cmd(&[b"XGROUP", b"SETID", b"xg", b"grp", b"2-1"]);
    // Stream PEL: one pending entry acknowledged on the target only.
    tgt.cmd(&[b"XACK", b"xp", b"grp", b"1-1"]);
    let other = (expire_at + 60_000).to_string();
    tgt.cmd(&[b"PEXPIREAT", b"ttl_wrong", other.as_bytes()]);
    tgt.cmd(&[b"PERSIST", b"ttl_missing"]);
    tgt.cmd(&[b"HSET", b"bighash", b"field:123457", b"value:X"]);
    [
        ("only_src", DiffKind::Missing),
        ("only_tgt", DiffKind::Extra),
        ("typed", DiffKind::Type),
        ("sv", DiffKind::Value),
        ("lv", DiffKind::Value),
        ("len", DiffKind::Length),
        ("setv", DiffKind::Value),
        ("zv", DiffKind::Value),
        ("zm", DiffKind::Value),
        ("hv", DiffKind::Value),
        ("xv", DiffKind::Value),
        ("xg", DiffKind::Value),
        ("xp", DiffKind::Value),
        ("ttl_wrong", DiffKind::Ttl),
        ("ttl_missing", DiffKind::Ttl),
        ("bighash", DiffKind::Value),
    ]
    .into_iter()
    .map(|(k, d)| (k.to_string(), d))
    .collect()
}

fn config(src: &str, tgt: &str, cluster: bool) -> Config {
    let t = if cluster {
        format!("target: {{type: redis-cluster, seeds: ['{tgt}']}}")
    } else {
        format!("target: {{type: redis-standalone, addr: '{tgt}'}}")
    };
    Config::from_yaml_str(&format!("source: {{addr: '{src}'}}\n{t}\n"), "test").unwrap()
}

fn opts(mode: Mode, dir: &Path) -> CheckConfig {
    CheckConfig {
        mode,
        rounds: 1,
        interval: Duration::from_millis(100),
        result_dir: dir.to_path_buf(),
        workers: 2,
        ..CheckConfig::default()
    }
}

fn found(o: &Outcome) -> BTreeSet<(String, DiffKind)> {
    o.report
        .diffs
        .iter()
        .map(|d| (String::from_utf8_lossy(&d.key).into_owned(), d.kind))
        .collect()
}

fn expire_at() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    now + 3_600_000
}

/// Runs the whole scenario against a target (standalone or cluster).
fn every_difference(tgt_ep: df2redis_sync::net::Endpoint, tgt_addr: &str, cluster: bool) {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut src = Writer::new(&s.endpoint());
    let mut tgt = Writer::new(&tgt_ep);
    let exp = expire_at();
    populate(&mut src, exp);
    populate(&mut tgt, exp);
    let cfg = config(&s.addr(), tgt_addr, cluster);

    // Equal pair: equal in every mode.
    for mode in [Mode::Outline, Mode::Length, Mode::Full, Mode::Smart] {
        let o = check::run(&cfg, &opts(mode, dir.path()), &|_| {}).unwrap();
        assert!(o.report.equal(), "{mode}: {:?}", o.report.diffs);
        assert_eq!(o.report.summary.source_keys_compared, 521, "{mode}");
        assert_eq!(o.report.summary.target_keys_compared, 521, "{mode}");
        assert_eq!(o.report.summary.coverage, 1.0);
    }

    let want = inject(&mut src, &mut tgt, exp);
    let full = check::run(&cfg, &opts(Mode::Full, dir.path()), &|_| {}).unwrap();
    assert_eq!(found(&full), want, "{:#?}", full.report.diffs);
    assert_eq!(full.report.summary.differing, want.len() as u64);
    let detail = |key: &str| {
        full.report
            .diffs
            .iter()
            .find(|d| d.key == key.as_bytes())
            .map(|d| d.detail.clone())
            .unwrap()
    };
    assert!(
        detail("bighash").contains("field:123457"),
        "{}",
        detail("bighash")
    );
    assert!(detail("hv").contains("f2"), "{}", detail("hv"));
    assert!(detail("zv").contains("score"), "{}", detail("zv"));
    assert!(
        detail("xv").contains("stream entry 1-2"),
        "{}",
        detail("xv")
    );
    assert!(
        detail("xg").contains("last-delivered-id"),
        "{}",
        detail("xg")
    );
    assert!(detail("xp").contains("pending"), "{}", detail("xp"));
    assert!(
        detail("ttl_missing").contains("never"),
        "{}",
        detail("ttl_missing")
    );
    assert!(detail("lv").contains("element 1"), "{}", detail("lv"));

    // The JSON report lists the same keys and kinds.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&full.path).unwrap()).unwrap();
    assert!(full
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("check_"));
    assert_eq!(json["equal"], false);
    let listed: BTreeSet<(String, String)> = json["diffs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want_json: BTreeSet<(String, String)> = want
        .iter()
        .map(|(k, d)| (k.clone(), d.as_str().to_string()))
        .collect();
    assert_eq!(listed, want_json);

    // smart: the 200k-field hash is above the big-key threshold, so only its length is
    // compared (equal); everything else is found as in full.
    let smart = check::run(&cfg, &opts(Mode::Smart, dir.path()), &|_| {}).unwrap();
    let mut want_smart = want.clone();
    want_smart.remove(&("bighash".to_string(), DiffKind::Value));
    assert_eq!(found(&smart), want_smart);

    // length: existence, type, TTL and length only.
    let length = check::run(&cfg, &opts(Mode::Length, dir.path()), &|_| {}).unwrap();
    let want_len: BTreeSet<_> = want
        .iter()
        .filter(|(_, k)| *k != DiffKind::Value)
        .cloned()
        .collect();
    assert_eq!(found(&length), want_len);

    // outline: existence and type only (expiries are compared by the value modes).
    let outline = check::run(&cfg, &opts(Mode::Outline, dir.path()), &|_| {}).unwrap();
    let want_outline: BTreeSet<_> = want_len
        .iter()
        .filter(|(_, k)| !matches!(k, DiffKind::Length | DiffKind::Ttl))
        .cloned()
        .collect();
    assert!(want_outline.iter().any(|(_, k)| *k == DiffKind::Type));
    assert!(want_len.iter().any(|(_, k)| *k == DiffKind::Ttl));
    assert_eq!(found(&outline), want_outline);
}

#[test]
fn standalone_every_difference_found_exactly() {
    let t = RedisServer::start();
    every_difference(t.endpoint(), &t.addr(), false);
}

#[test]
fn cluster_target_every_difference_found_exactly() {
    let c = RedisCluster::start();
    every_difference(c.endpoint(0), &c.nodes()[0].addr(), true);
}

#[test]
fn convergence_sampling_filters_and_db_mapping() {
    let s = RedisServer::start();
    let t = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut src = Writer::new(&s.endpoint());
    let mut tgt = Writer::new(&t.endpoint());
    for i in 0..2000 {
        let k = format!("user:{i}");
        src.cmd(&[b"SET", k.as_bytes(), b"v"]);
        tgt.cmd(&[b"SET", k.as_bytes(), b"v"]);
    }
    src.cmd(&[b"SET", b"late", b"1"]);
    let cfg = config(&s.addr(), &t.addr(), false);

    // Convergence: the key arrives on the target between rounds.
    let mut o = opts(Mode::Full, dir.path());
    o.rounds = 3;
    o.interval = Duration::from_millis(700);
    // Written from round 1's progress report, so it is there before round 2 however slow the
    // machine (a timed writer thread could land after the last round on a loaded machine).
    let tep = t.endpoint();
    let fixed = std::sync::Once::new();
    let fix = |p: &check::Progress| {
        if p.round == 1 {
            fixed.call_once(|| {
                let mut c = Conn::connect(&tep).unwrap();
                c.request(&Cmd::from_args(["SET", "late", "1"])).unwrap();
            });
        }
    };
    let out = check::run(&cfg, &o, &fix).unwrap();
    assert!(fixed.is_completed(), "round 1 never reported progress");
    if out.report.rounds[0].differing == 1 {
        assert_eq!(out.report.rounds.len(), 2, "{:?}", out.report.rounds);
    }
    assert!(out.report.equal(), "{:?}", out.report.diffs);

    // A key that never converges is reported after the last round.
    src.cmd(&[b"SET", b"never", b"1"]);
    let out = check::run(&cfg, &o, &|_| {}).unwrap();
    assert_eq!(out.report.rounds.len(), 3);
    assert_eq!(
        found(&out),
        BTreeSet::from([("never".to_string(), DiffKind::Missing)])
    );

    // Sampling states the coverage it achieved.
    let mut o = opts(Mode::Outline, dir.path());
    o.sample = 0.25;
    let out = check::run(&cfg, &o, &|_| {}).unwrap();
    let cov = out.report.summary.coverage;
    assert!((0.18..0.32).contains(&cov), "coverage {cov}");
    assert_eq!(out.report.summary.source_keys_scanned, 2002);

    // Pattern filter: only user:1* keys (1, 10-19, 100-199, 1000-1999 = 1111).
    let mut o = opts(Mode::Outline, dir.path());
    o.pattern = Some("user:1*".into());
    let out = check::run(&cfg, &o, &|_| {}).unwrap();
    assert!(out.report.equal(), "{:?}", out.report.diffs);
    assert_eq!(out.report.summary.source_keys_compared, 1111);

    // Databases: source db 2 maps to target db 5; an unmapped db 3 key is missing; --db 2
    // checks db 2 only.
    let mut c = Conn::connect(&s.endpoint()).unwrap();
    c.request(&Cmd::from_args(["SELECT", "2"])).unwrap();
    c.request(&Cmd::from_args(["SET", "in2", "x"])).unwrap();
    c.request(&Cmd::from_args(["SELECT", "3"])).unwrap();
    c.request(&Cmd::from_args(["SET", "in3", "x"])).unwrap();
    let mut c = Conn::connect(&t.endpoint()).unwrap();
    c.request(&Cmd::from_args(["SELECT", "5"])).unwrap();
    c.request(&Cmd::from_args(["SET", "in2", "x"])).unwrap();
    let yaml = format!(
        "source: {{addr: '{}'}}\ntarget: {{addr: '{}'}}\ndatabases: {{map: {{2: 5}}}}\n",
        s.addr(),
        t.addr()
    );
    let mapped = Config::from_yaml_str(&yaml, "t").unwrap();
    let mut o = opts(Mode::Full, dir.path());
    o.db = Some(df2redis_sync::model::DbIndex(2));
    let out = check::run(&mapped, &o, &|_| {}).unwrap();
    assert!(out.report.equal(), "{:?}", out.report.diffs);
    assert_eq!(out.report.summary.source_keys_compared, 1);
    o.db = None;
    o.pattern = Some("in*".into());
    let out = check::run(&mapped, &o, &|_| {}).unwrap();
    assert_eq!(
        found(&out),
        BTreeSet::from([("in3".to_string(), DiffKind::Missing)])
    );
    // The checkpoint marker keys of the replicator are not extra keys.
    let mut c = Conn::connect(&t.endpoint()).unwrap();
    c.request(&Cmd::from_args(["SET", "df2redis-sync:ckpt:flow0", "1"]))
        .unwrap();
    let mut o = opts(Mode::Outline, dir.path());
    o.pattern = Some("df2redis-sync*".into());
    let out = check::run(&cfg, &o, &|_| {}).unwrap();
    assert!(out.report.equal(), "{:?}", out.report.diffs);
    assert_eq!(out.report.summary.target_keys_scanned, 1);
}

fn bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_exit_codes_0_equal_1_different_2_error() {
    let s = RedisServer::start();
    let t = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for srv in [&s, &t] {
        srv.cli(&["SET", "a", "1"]);
        srv.cli(&["HSET", "h", "f", "v"]);
    }
    let cfg = dir.path().join("c.yaml");
    let results = dir.path().join("results");
    std::fs::write(
        &cfg,
        format!(
            "source: {{addr: '{}'}}\ntarget: {{addr: '{}'}}\ncheck: {{mode: full, rounds: 1}}\n",
            s.addr(),
            t.addr()
        ),
    )
    .unwrap();
    let (cfg, res) = (cfg.to_str().unwrap(), results.to_str().unwrap());
    let (code, out, err) = bin(&["check", cfg, "--result-dir", res]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: equal"), "{out}");
    t.cli(&["HSET", "h", "f", "w"]);
    let (code, out, err) = bin(&[
        "check",
        cfg,
        "--result-dir",
        res,
        "--mode",
        "full",
        "--rounds",
        "2",
        "--interval",
        "50ms",
        "--workers",
        "1",
        "--qps",
        "1000",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("key h: value"), "{out}");
    assert!(err.contains("source and target differ"), "{err}");
    let reports = std::fs::read_dir(&results).unwrap().count();
    assert_eq!(reports, 2);
    // A bad flag value and an unreachable server are errors: exit 2.
    let (code, _, err) = bin(&["check", cfg, "--mode", "quick"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--mode"), "{err}");
    drop(t);
    let (code, _, err) = bin(&["check", cfg, "--result-dir", res]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("target"), "{err}");
}

#[test]
fn check_config_section_is_validated() {
    let base = "source: {addr: '127.0.0.1:1'}\ntarget: {addr: '127.0.0.1:2'}\n";
    let ok = Config::from_yaml_str(
        &format!(
            "{base}check: {{mode: length, rounds: 2, interval: 500ms, sample: '10%', qps: 100, target_qps: 50, workers: 8, pattern: 'a*', db: 3, big_key_bytes: 2MiB, ttl_tolerance: 2s, bandwidth: 1MiB, source_bandwidth: 2MiB}}\n"
        ),
        "t",
    )
    .unwrap();
    let c = &ok.check;
    assert_eq!(c.mode, Mode::Length);
    assert_eq!(c.rounds, 2);
    assert_eq!(c.interval, Duration::from_millis(500));
    assert_eq!(c.sample, 0.1);
    assert_eq!((c.source_qps, c.target_qps), (100, 50));
    assert_eq!(c.workers, 8);
    assert_eq!(c.pattern.as_deref(), Some("a*"));
    assert_eq!(c.db, Some(df2redis_sync::model::DbIndex(3)));
    assert_eq!(c.big_key_bytes, 2 << 20);
    assert_eq!(c.ttl_tolerance, Duration::from_secs(2));
    assert_eq!((c.source_bandwidth, c.target_bandwidth), (2 << 20, 1 << 20));
    let default = Config::from_yaml_str(base, "t").unwrap();
    assert_eq!(default.check, CheckConfig::default());
    for (bad, what) in [
        ("mode: quick", "check.mode"),
        ("rounds: 0", "check.rounds"),
        ("sample: 1.5", "check.sample"),
        ("workers: 0", "check.workers"),
        ("interval: soon", "check.interval"),
        ("ttl: maybe", "check.ttl"),
        ("modee: full", "check.modee"),
        ("bandwidth: fast", "check.bandwidth"),
    ] {
        let e = Config::from_yaml_str(&format!("{base}check: {{{bad}}}\n"), "t").unwrap_err();
        assert!(e.to_string().contains(what), "{bad}: {e}");
    }
}

#[test]
fn qps_and_bandwidth_limits_slow_the_check() {
    let s = RedisServer::start();
    let t = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for srv in [&s, &t] {
        let mut w = Writer::new(&srv.endpoint());
        let cmds: Vec<Cmd> = (0..1500)
            .map(|i| Cmd::from_args(["SET".to_string(), format!("k:{i}"), "v".into()]))
            .collect();
        w.many(b"k", &cmds);
    }
    let cfg = config(&s.addr(), &t.addr(), false);
    let timed = |o: &CheckConfig| {
        let t0 = std::time::Instant::now();
        let out = check::run(&cfg, o, &|_| {}).unwrap();
        assert!(out.report.equal(), "{:?}", out.report.diffs);
        t0.elapsed()
    };
    let free = timed(&opts(Mode::Outline, dir.path()));
    // ~1500 source commands (one TYPE per key in outline) at 750/s, the first second's
    // budget free: about 1 s.
    let mut o = opts(Mode::Outline, dir.path());
    o.source_qps = 750;
    let qps = timed(&o);
    assert!(
        qps >= Duration::from_millis(800),
        "qps-limited run took {qps:?}"
    );
    // ~30 KB of target replies (SCAN pages, one TYPE reply per key) at 10 KiB/s: about 2 s.
    let mut o = opts(Mode::Outline, dir.path());
    o.target_bandwidth = 10 << 10;
    let bw = timed(&o);
    assert!(
        bw >= Duration::from_millis(600),
        "bandwidth-limited run took {bw:?}"
    );
    assert!(qps < Duration::from_secs(20) && bw < Duration::from_secs(20));
    eprintln!("unlimited {free:?}, qps-limited {qps:?}, bandwidth-limited {bw:?}");
}

#[test]
fn cluster_source_standalone_target() {
    let c = RedisCluster::start();
    let t = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut src = Writer::new(&c.endpoint(1));
    let mut tgt = Writer::new(&t.endpoint());
    for i in 0..300 {
        let k = format!("k:{i}");
        for w in [&mut src, &mut tgt] {
            w.cmd(&[b"HSET", k.as_bytes(), b"f", b"v"]);
        }
    }
    src.cmd(&[b"SET", b"only_src", b"1"]);
    tgt.cmd(&[b"SET", b"only_tgt", b"1"]);
    tgt.cmd(&[b"HSET", b"k:7", b"f", b"w"]);
    let cfg = config(&c.nodes()[1].addr(), &t.addr(), false);
    let out = check::run(&cfg, &opts(Mode::Full, dir.path()), &|_| {}).unwrap();
    assert!(out.report.source.1, "the source is seen as a cluster");
    assert_eq!(out.report.summary.source_keys_scanned, 301);
    assert_eq!(
        found(&out),
        BTreeSet::from([
            ("only_src".to_string(), DiffKind::Missing),
            ("only_tgt".to_string(), DiffKind::Extra),
            ("k:7".to_string(), DiffKind::Value),
        ])
    );
}

#[test]
fn pttl_fallback_and_authenticated_sides() {
    // A source without PEXPIRETIME (renamed away, like a server older than Redis 7) and with a
    // password; a target that only lets an ACL user in.
    let s = RedisServer::builder()
        .password("src-pw")
        .args(&["--rename-command", "PEXPIRETIME", ""])
        .start();
    let t = RedisServer::builder().acl_user("checker", "tgt-pw").start();
    let dir = tempfile::tempdir().unwrap();
    let mut src = Writer::new(&s.endpoint());
    let mut tgt = Writer::new(&t.endpoint());
    let exp = expire_at().to_string();
    let later = (expire_at() + 30_000).to_string();
    for w in [&mut src, &mut tgt] {
        for k in ["same", "off", "gone"] {
            w.cmd(&[b"SET", k.as_bytes(), b"v"]);
            w.cmd(&[b"PEXPIREAT", k.as_bytes(), exp.as_bytes()]);
        }
    }
    tgt.cmd(&[b"PEXPIREAT", b"off", later.as_bytes()]);
    tgt.cmd(&[b"PERSIST", b"gone"]);
    let yaml = format!(
        "source: {{addr: '{}', password: src-pw}}\ntarget: {{addr: '{}', username: checker, password: tgt-pw}}\n",
        s.addr(),
        t.addr()
    );
    let cfg = Config::from_yaml_str(&yaml, "t").unwrap();
    let out = check::run(&cfg, &opts(Mode::Full, dir.path()), &|_| {}).unwrap();
    assert_eq!(
        found(&out),
        BTreeSet::from([
            ("gone".to_string(), DiffKind::Ttl),
            ("off".to_string(), DiffKind::Ttl),
        ]),
        "{:?}",
        out.report.diffs
    );
    let off = out.report.diffs.iter().find(|d| d.key == b"off").unwrap();
    // PTTL + the local clock: off by 30 s give or take the round trip.
    let by: i64 = off
        .detail
        .split("off by ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((29_000..=31_000).contains(&by), "{}", off.detail);
}

#[test]
fn db_merge_with_key_prefix() {
    // Source dbs 0 and 1 both go to target db 0; db 1's keys carry the prefix `one:`.
    let s = RedisServer::start();
    let t = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = Conn::connect(&s.endpoint()).unwrap();
    for args in [
        &["SET", "a", "0"][..],
        &["SET", "b", "0"],
        &["SELECT", "1"],
        &["SET", "a", "1"],
        &["SET", "c", "1"],
        &["SET", "d", "1"],
    ] {
        assert!(!c.request(&Cmd::from_args(args)).unwrap().is_error());
    }
    for k in ["a", "b", "one:a", "one:zz", "zz"] {
        let v = if k.starts_with("one:") { "1" } else { "0" };
        t.cli(&["SET", k, v]);
    }
    t.cli(&["SET", "one:c", "2"]);
    let yaml = format!(
        "source: {{addr: '{}'}}\ntarget: {{addr: '{}'}}\ndatabases: {{map: {{1: 0}}, key_prefix: {{1: 'one:'}}}}\n",
        s.addr(),
        t.addr()
    );
    let cfg = Config::from_yaml_str(&yaml, "t").unwrap();
    let out = check::run(&cfg, &opts(Mode::Full, dir.path()), &|_| {}).unwrap();
    let got: BTreeSet<(Option<u32>, String, String, DiffKind)> = out
        .report
        .diffs
        .iter()
        .map(|d| {
            (
                d.db.map(|x| x.0),
                String::from_utf8_lossy(&d.key).into_owned(),
                String::from_utf8_lossy(&d.target_key).into_owned(),
                d.kind,
            )
        })
        .collect();
    let want = BTreeSet::from([
        (Some(1), "c".into(), "one:c".into(), DiffKind::Value),
        (Some(1), "d".into(), "one:d".into(), DiffKind::Missing),
        (Some(1), "zz".into(), "one:zz".into(), DiffKind::Extra),
        (Some(0), "zz".into(), "zz".into(), DiffKind::Extra),
    ]);
    assert_eq!(got, want);
    let json = std::fs::read_to_string(&out.path).unwrap();
    assert!(json.contains("\"target_key\": \"one:d\""), "{json}");
}
