//! Integration tests: config. A table of bad configs (each error must name the key path and the
//! reason), good configs in the Go tool's style and in the full style, `${ENV}` expansion, and
//! the sample file shipped in `examples/`.

use df2redis_sync::config::{Config, ErrorKind, TargetKind};
use df2redis_sync::model::DbIndex;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fake environment the table runs in (no process-wide `set_var`, tests run in parallel).
fn env(name: &str) -> Option<String> {
    match name {
        "T_SOURCE_PW" => Some("from-env-pw".into()),
        "T_PORT" => Some("7001".into()),
        "T_HOST" => Some("10.0.0.9".into()),
        _ => None,
    }
}

fn parse(yaml: &str) -> Result<Config, df2redis_sync::config::Error> {
    Config::from_yaml_str_with_env(yaml, "test.yaml", &env)
}

const MIN_TARGET: &str = "target:\n  addr: 127.0.0.1:6379\n";
const MIN_SOURCE: &str = "source:\n  addr: 127.0.0.1:6380\n";

/// `(case name, yaml, key path the message must name, reason fragment)`.
fn bad_cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let with_source = |rest: &str| format!("{MIN_SOURCE}{rest}");
    let both = |rest: &str| format!("{MIN_SOURCE}{MIN_TARGET}{rest}");
    vec![
        ("empty file", String::new(), "(document)", "the file is empty"),
        ("missing source", MIN_TARGET.to_string(), "source", "missing"),
        ("missing target", MIN_SOURCE.to_string(), "target", "missing"),
        (
            "source addr typo key",
            format!("source:\n  adr: 1.2.3.4:6379\n{MIN_TARGET}"),
            "source.adr",
            "did you mean `addr`?",
        ),
        (
            "unknown top-level key",
            both("pipline:\n  batch_commands: 10\n"),
            "pipline",
            "did you mean `pipeline`?",
        ),
        (
            "source addr without port",
            format!("source:\n  addr: dragonfly.local\n{MIN_TARGET}"),
            "source.addr",
            "the port is missing",
        ),
        (
            "source addr is a URL",
            format!("source:\n  addr: redis://h:6379\n{MIN_TARGET}"),
            "source.addr",
            "not a URL",
        ),
        (
            "bad second seed",
            with_source(
                "target:\n  type: redis-cluster\n  seeds: [\"127.0.0.1:7000\", \"127.0.0.1:99999\"]\n",
            ),
            "target.seeds[1]",
            "port must be a number between 1 and 65535",
        ),
        (
            "unknown flush policy",
            with_source("target:\n  addr: 127.0.0.1:7000\n  flush_before_full_sync: alway\n"),
            "target.flush_before_full_sync",
            "did you mean `always`?",
        ),
        (
            "unknown target type",
            with_source("target:\n  type: redis-clustr\n  addr: 127.0.0.1:7000\n"),
            "target.type",
            "did you mean `redis-cluster`?",
        ),
        (
            "standalone with two addresses",
            with_source(
                "target:\n  type: redis-standalone\n  seeds: [\"a:1\", \"b:2\"]\n",
            ),
            "target.seeds",
            "exactly one address, 2 given",
        ),
        (
            "addr and seeds both given",
            with_source("target:\n  addr: a:1\n  seeds: [\"b:2\"]\n"),
            "target.seeds",
            "conflicts with `target.addr`",
        ),
        (
            "seed listed twice",
            with_source("target:\n  type: redis-cluster\n  seeds: [\"a:1\", \"a:1\"]\n"),
            "target.seeds[1]",
            "listed twice",
        ),
        (
            "unset environment variable",
            format!("source:\n  addr: 127.0.0.1:6380\n  password: ${{T_NOT_SET}}\n{MIN_TARGET}"),
            "source.password",
            "environment variable T_NOT_SET is not set",
        ),
        (
            "announce_ip with a space",
            both("replica:\n  announce_ip: \"10.0.0.1 x\"\n"),
            "replica.announce_ip",
            "must be an IP address or host name",
        ),
        (
            "empty TLS server name",
            format!("{MIN_SOURCE}target:\n  addr: b:2\n  tls:\n    enabled: true\n    server_name: \"\"\n"),
            "target.tls.server_name",
            "must be a host name without spaces",
        ),
        (
            "duration with unknown unit",
            both("replica:\n  flow_timeout: 5 parsecs\n"),
            "replica.flow_timeout",
            "must be a duration",
        ),
        (
            "zero checkpoint interval",
            both("checkpoint:\n  interval: 0s\n"),
            "checkpoint.interval",
            "must be between 100ms and 1h",
        ),
        (
            "listening port out of range",
            both("replica:\n  listening_port: 70000\n"),
            "replica.listening_port",
            "must be between 0 and 65535",
        ),
        (
            "batch_commands is not a number",
            both("pipeline:\n  batch_commands: lots\n"),
            "pipeline.batch_commands",
            "must be a whole number",
        ),
        (
            "batch_bytes too small",
            both("pipeline:\n  batch_bytes: 10\n"),
            "pipeline.batch_bytes",
            "must be between 1024 and",
        ),
        (
            "channel capacity zero",
            both("pipeline:\n  channel_capacity: 0\n"),
            "pipeline.channel_capacity",
            "must be between 1 and 65536",
        ),
        (
            "bad log level",
            both("logging:\n  level: loud\n"),
            "logging.level",
            "must be one of off, error, warn, info, debug, trace",
        ),
        (
            "tls cert without key",
            format!("{MIN_SOURCE}target:\n  addr: a:1\n  tls:\n    cert: Cargo.toml\n"),
            "target.tls.key",
            "needs both `cert` and `key`",
        ),
        (
            "tls ca file missing",
            both("").replace(
                "addr: 127.0.0.1:6380\n",
                "addr: 127.0.0.1:6380\n  tls:\n    ca: /definitely/not/here/ca.pem\n",
            ),
            "source.tls.ca",
            "cannot read /definitely/not/here/ca.pem",
        ),
        (
            "tls is neither bool nor map",
            both("").replace("addr: 127.0.0.1:6380\n", "addr: 127.0.0.1:6380\n  tls: maybe\n"),
            "source.tls",
            "must be true or false",
        ),
        (
            "cluster db map to non-zero db",
            format!(
                "{MIN_SOURCE}target:\n  type: redis-cluster\n  seeds: [\"a:1\"]\ndatabases:\n  map:\n    1: 3\n"
            ),
            "databases.map.1",
            "Redis Cluster has only db 0",
        ),
        (
            "db map key not a number",
            both("databases:\n  map:\n    first: 2\n"),
            "databases.map.first",
            "the key must be a source db number",
        ),
        (
            "cpu list duplicate",
            both("cpu:\n  flow_threads: [0, 1, 1]\n"),
            "cpu.flow_threads[2]",
            "CPU listed twice",
        ),
        (
            "cpu range string reversed",
            both("cpu:\n  writer_threads: \"3-1\"\n"),
            "cpu.writer_threads",
            "ranges like 0-3",
        ),
        (
            "username without password",
            both("").replace("addr: 127.0.0.1:6379\n", "addr: 127.0.0.1:6379\n  username: app\n"),
            "target.password",
            "an ACL `username` needs a password",
        ),
        (
            "go conflict policy skip",
            both("conflict:\n  policy: skip\n"),
            "conflict.policy",
            "always overwrites",
        ),
        (
            "source type redis",
            format!("source:\n  type: redis\n  addr: a:1\n{MIN_TARGET}"),
            "source.type",
            "the source must be `dragonfly`",
        ),
        (
            "section is a scalar",
            both("replica: 5\n"),
            "replica",
            "must be a map of keys",
        ),
        (
            "marker prefix with a space",
            both("checkpoint:\n  marker_prefix: \"my marker\"\n"),
            "checkpoint.marker_prefix",
            "without spaces",
        ),
        (
            "interval and intervalSeconds",
            both("checkpoint:\n  interval: 5s\n  intervalSeconds: 5\n"),
            "checkpoint.intervalSeconds",
            "conflicts with `checkpoint.interval`",
        ),
        (
            "unterminated env reference",
            both("").replace("addr: 127.0.0.1:6379", "addr: ${T_HOST"),
            "target.addr",
            "unterminated `${`",
        ),
        (
            "ipv6 without brackets",
            format!("source:\n  addr: \"::1:6380\"\n{MIN_TARGET}"),
            "source.addr",
            "must be in brackets",
        ),
    ]
}

#[test]
fn bad_configs_name_key_path_and_reason() {
    let cases = bad_cases();
    assert!(
        cases.len() >= 15,
        "the table must stay at least 15 cases long"
    );
    for (name, yaml, key, reason) in cases {
        let err = match parse(&yaml) {
            Ok(cfg) => panic!("case `{name}`: expected an error, got {cfg:?}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{key} ")) || msg.contains(&format!("{key}:")),
            "case `{name}`: message does not name key path `{key}`:\n{msg}"
        );
        assert!(
            msg.contains(reason),
            "case `{name}`: message lacks reason `{reason}`:\n{msg}"
        );
        assert!(
            msg.starts_with("config test.yaml"),
            "case `{name}`: message does not name the origin:\n{msg}"
        );
    }
}

#[test]
fn the_offending_value_is_quoted() {
    let err = parse(&format!(
        "{MIN_SOURCE}target:\n  type: redis-cluster\n  seeds: [\"127.0.0.1:7000\", \"127.0.0.1:99999\"]\n"
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "config test.yaml: target.seeds[1] = `127.0.0.1:99999`: port must be a number between 1 and 65535"
    );
    let p = &err.problems()[0];
    assert_eq!(p.key, "target.seeds[1]");
    assert_eq!(p.value.as_deref(), Some("`127.0.0.1:99999`"));
}

#[test]
fn passwords_never_appear_in_errors() {
    // A password that is a list is invalid; the message must not echo it.
    let yaml = "source:\n  addr: a:1\n  password: [\"hunter2-secret\"]\ntarget:\n  addr: b:2\n  password: {x: \"hunter3-secret\"}\n";
    let msg = parse(yaml).unwrap_err().to_string();
    assert!(
        msg.contains("source.password: must be a string, not a list"),
        "{msg}"
    );
    assert!(
        msg.contains("target.password: must be a string, not a map"),
        "{msg}"
    );
    assert!(!msg.contains("hunter"), "{msg}");
    // And a loaded config's Debug output hides it too.
    let cfg =
        parse("source:\n  addr: a:1\n  password: hunter4-secret\ntarget:\n  addr: b:2\n").unwrap();
    assert!(!format!("{cfg:?}").contains("hunter4"));
    assert_eq!(
        cfg.source.password.as_ref().map(|p| p.expose()),
        Some("hunter4-secret")
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = "source:\n  addr: nope\ntarget:\n  addr: b:2\npipeline:\n  batch_commands: 0\n  channel_capacity: -1\n";
    let err = parse(yaml).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "source.addr",
            "pipeline.batch_commands",
            "pipeline.channel_capacity"
        ]
    );
    assert!(err.to_string().contains("has 3 problems:"));
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let err = parse("source:\n  addr: [unclosed\n").unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Syntax(_)));
    let msg = err.to_string();
    assert!(
        msg.starts_with("config test.yaml is not valid YAML"),
        "{msg}"
    );
    assert!(msg.contains("line"), "{msg}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(Path::new("/definitely/not/here.yaml")).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Read(_)));
    assert!(err
        .to_string()
        .starts_with("cannot read config file /definitely/not/here.yaml:"));
}

#[test]
fn go_tool_style_config() {
    // The shape the Go df2redis documented and shipped in its sample files.
    let yaml = r#"
taskName: ""
stateDir: ../out
statusFile: ../out/status.json
source:
  type: dragonfly
  addr: 10.46.128.12:7380
  password: ""
  tls: false
target:
  type: redis-standalone
  seed: 10.180.7.93:6379
  password: "pwd4dba"
  tls: false
dashboard:
  addr: ":7777"
checkpoint:
  enabled: true
  intervalSeconds: 10
  path: ""
log:
  dir: "../log"
  level: "debug"
  consoleEnabled: true
conflict:
  policy: "overwrite"
advanced:
  qps: 0
  batchSize: 500
replica:
  listening_port: 16379
  flow_timeout: 60
migrate:
  snapshotPath: ../tmp/placeholder.rdb
  shakeBinary: ../redis-shake-v4
"#;
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let path = conf_dir.join("replicate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cfg = Config::load(&path).unwrap();

    assert_eq!(cfg.source.addr, "10.46.128.12:7380");
    assert_eq!(cfg.source.password, None, "empty password means no AUTH");
    assert_eq!(cfg.source.tls, None);
    assert_eq!(cfg.target.kind, TargetKind::Standalone);
    assert_eq!(cfg.target.seeds, ["10.180.7.93:6379"]);
    assert_eq!(
        cfg.target.password.as_ref().map(|p| p.expose()),
        Some("pwd4dba")
    );
    // Relative paths are taken from the config file's directory, as in the Go tool.
    assert_eq!(cfg.checkpoint.dir, conf_dir.join("../out"));
    assert_eq!(cfg.checkpoint.interval, Duration::from_secs(10));
    assert!(cfg.checkpoint.enabled);
    assert_eq!(cfg.logging.level, log::LevelFilter::Debug);
    assert_eq!(
        cfg.logging.file,
        Some(conf_dir.join("../log").join("df2redis-sync.log"))
    );
    assert_eq!(cfg.pipeline.batch_commands, 500);
    assert_eq!(cfg.metrics.listen.as_deref(), Some("0.0.0.0:7777"));
    assert_eq!(cfg.replica.listening_port, 16379);
    assert_eq!(cfg.replica.flow_timeout, Duration::from_secs(60));
    // Ignored Go keys are reported, not silently dropped.
    for key in ["taskName", "statusFile", "migrate"] {
        assert!(
            cfg.warnings.iter().any(|w| w.contains(&format!("`{key}`"))),
            "no warning for {key}: {:?}",
            cfg.warnings
        );
    }
    let ep = cfg.target.endpoints();
    assert_eq!(ep.len(), 1);
    assert_eq!(ep[0].addr, "10.180.7.93:6379");
}

#[test]
fn go_tool_cluster_seeds() {
    let yaml = format!(
        "{MIN_SOURCE}target:\n  type: redis-cluster\n  cluster:\n    seeds: [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\n"
    );
    let cfg = parse(&yaml).unwrap();
    assert_eq!(cfg.target.kind, TargetKind::Cluster);
    assert_eq!(cfg.target.seeds, ["10.0.0.1:7000", "10.0.0.2:7000"]);
}

#[test]
fn full_style_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    for f in [&ca, &cert, &key] {
        std::fs::write(f, "not parsed by config").unwrap();
    }
    let yaml = format!(
        r#"
source:
  addr: "${{T_HOST}}:6380"
  username: replicator
  password: ${{T_SOURCE_PW}}
  tls:
    ca: {ca}
    server_name: dragonfly.internal
  connect_timeout: 2s
  io_timeout: 1m
target:
  type: redis-cluster
  seeds:
    - 10.0.1.1:${{T_PORT}}
    - "[::1]:7002"
  password: "$${{not-a-variable}}"
  tls:
    cert: {cert}
    key: {key}
    insecure_skip_verify: true
replica:
  listening_port: 6390
  announce_ip: 10.0.0.5
  flow_timeout: 1500ms
checkpoint:
  dir: /var/lib/df2redis
  interval: 2s
  marker_prefix: "ckpt:"
pipeline:
  batch_commands: 1000
  batch_bytes: 4MiB
  channel_capacity: 8
  inflight_batches: 2
  connections_per_node: 3
cpu:
  flow_threads: [0, 1]
  writer_threads: "2-4,7"
databases:
  map:
    0: 0
  key_prefix:
    1: "db1:"
    "2": "db2:"
logging:
  level: warn
  file: /tmp/df2redis-sync.log
metrics:
  listen: 127.0.0.1:9121
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display()
    );
    let cfg = parse(&yaml).unwrap();

    let src = cfg.source.endpoint();
    assert_eq!(src.addr, "10.0.0.9:6380");
    assert_eq!(src.username.as_deref(), Some("replicator"));
    assert_eq!(
        src.password.as_ref().map(|p| p.expose()),
        Some("from-env-pw")
    );
    let tls = src.tls.as_ref().unwrap();
    assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(tls.server_name.as_deref(), Some("dragonfly.internal"));
    assert!(!tls.insecure_skip_verify);
    assert_eq!(src.connect_timeout, Duration::from_secs(2));
    assert_eq!(src.io_timeout, Some(Duration::from_secs(60)));

    assert_eq!(cfg.target.kind, TargetKind::Cluster);
    assert_eq!(cfg.target.seeds, ["10.0.1.1:7001", "[::1]:7002"]);
    assert_eq!(
        cfg.target.password.as_ref().map(|p| p.expose()),
        Some("${not-a-variable}")
    );
    let ttls = cfg.target.tls.as_ref().unwrap();
    assert_eq!(ttls.cert_file.as_deref(), Some(cert.as_path()));
    assert_eq!(ttls.key_file.as_deref(), Some(key.as_path()));
    assert!(ttls.insecure_skip_verify);
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("target.tls.insecure_skip_verify") && w.contains("NOT verified")),
        "{:?}",
        cfg.warnings
    );
    let eps = cfg.target.endpoints();
    assert_eq!(eps.len(), 2);
    assert!(eps.iter().all(|e| e.tls.is_some() && e.password.is_some()));
    let discovered = cfg.target.endpoint_for("10.0.1.3:7005");
    assert_eq!(discovered.tls, cfg.target.tls);

    assert_eq!(cfg.replica.listening_port, 6390);
    assert_eq!(cfg.replica.announce_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(cfg.replica.flow_timeout, Duration::from_millis(1500));
    assert_eq!(cfg.checkpoint.dir, PathBuf::from("/var/lib/df2redis"));
    assert_eq!(cfg.checkpoint.interval, Duration::from_secs(2));
    assert_eq!(cfg.checkpoint.marker_prefix, "ckpt:");
    assert_eq!(cfg.pipeline.batch_commands, 1000);
    assert_eq!(cfg.pipeline.batch_bytes, 4 << 20);
    assert_eq!(cfg.pipeline.channel_capacity, 8);
    assert_eq!(cfg.pipeline.inflight_batches, 2);
    assert_eq!(cfg.pipeline.connections_per_node, 3);
    assert_eq!(cfg.cpu.flow_threads, [0, 1]);
    assert_eq!(cfg.cpu.writer_threads, [2, 3, 4, 7]);
    // A cluster has one database: everything lands in db 0, prefixes keep them apart.
    assert_eq!(cfg.databases.target_db(DbIndex(5)), DbIndex(0));
    assert_eq!(cfg.databases.key_prefix(DbIndex(1)), Some(&b"db1:"[..]));
    assert_eq!(cfg.databases.key_prefix(DbIndex(2)), Some(&b"db2:"[..]));
    assert_eq!(cfg.databases.key_prefix(DbIndex(0)), None);
    assert_eq!(cfg.logging.level, log::LevelFilter::Warn);
    assert_eq!(cfg.metrics.listen.as_deref(), Some("127.0.0.1:9121"));
}

#[test]
fn defaults_are_filled() {
    let cfg = parse(&format!("{MIN_SOURCE}{MIN_TARGET}")).unwrap();
    assert_eq!(cfg.source.connect_timeout, Duration::from_secs(5));
    assert_eq!(cfg.source.io_timeout, Duration::from_secs(30));
    assert_eq!(cfg.target.kind, TargetKind::Standalone);
    assert_eq!(cfg.replica.listening_port, 16379);
    assert_eq!(cfg.replica.announce_ip, None);
    assert_eq!(cfg.replica.flow_timeout, Duration::from_secs(60));
    assert!(cfg.checkpoint.enabled);
    assert_eq!(cfg.checkpoint.dir, PathBuf::from("./checkpoint"));
    assert_eq!(cfg.checkpoint.interval, Duration::from_secs(5));
    assert_eq!(cfg.checkpoint.marker_prefix, "df2redis-sync:ckpt:");
    assert_eq!(cfg.pipeline.batch_commands, 512);
    assert_eq!(cfg.pipeline.batch_bytes, 256 << 10);
    assert_eq!(cfg.pipeline.channel_capacity, 8);
    assert_eq!(cfg.pipeline.inflight_batches, 4);
    assert_eq!(cfg.pipeline.connections_per_node, 1);
    assert!(cfg.cpu.flow_threads.is_empty() && cfg.cpu.writer_threads.is_empty());
    assert_eq!(cfg.databases.target_db(DbIndex(3)), DbIndex(3));
    assert_eq!(cfg.logging.level, log::LevelFilter::Info);
    assert_eq!(cfg.logging.file, None);
    assert_eq!(cfg.metrics.listen, None);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn standalone_db_mapping() {
    let cfg = parse(&format!(
        "{MIN_SOURCE}{MIN_TARGET}databases:\n  map:\n    0: 2\n    1: 0\n"
    ))
    .unwrap();
    assert_eq!(cfg.databases.target_db(DbIndex(0)), DbIndex(2));
    assert_eq!(cfg.databases.target_db(DbIndex(1)), DbIndex(0));
    assert_eq!(cfg.databases.target_db(DbIndex(4)), DbIndex(4));
}

#[test]
fn tls_shorthand_true() {
    let cfg = parse("source:\n  addr: a:1\n  tls: true\ntarget:\n  addr: b:2\n  tls: \"false\"\n")
        .unwrap();
    assert_eq!(cfg.source.tls, Some(Default::default()));
    assert_eq!(cfg.target.tls, None);
}

#[test]
fn sample_config_parses() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/replicate.sample.yaml"
    ));
    let cfg = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.target.kind, TargetKind::Standalone);
    assert!(!cfg.source.addr.is_empty());
    let text = std::fs::read_to_string(path).unwrap();
    // Every section of the schema is shown in the sample.
    for section in [
        "source:",
        "target:",
        "replica:",
        "checkpoint:",
        "pipeline:",
        "cpu:",
        "databases:",
        "logging:",
        "metrics:",
    ] {
        assert!(text.contains(section), "sample lacks {section}");
    }
}

/// Replacing any value of a full config with junk yields `Ok` or an error naming a key, never
/// a panic: the config file is user input.
#[test]
fn junk_values_never_panic() {
    use proptest::prelude::*;
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/replicate.sample.yaml"
    ))
    .unwrap();
    let lines: Vec<String> = base.lines().map(str::to_string).collect();
    let junk = prop::sample::select(vec![
        "",
        "~",
        "-1",
        "1e99",
        "18446744073709551616",
        "[]",
        "[[[]]]",
        "{}",
        "{a: {b: c}}",
        "!!binary aGVsbG8=",
        "!custom 5",
        "${UNSET_VAR_FOR_TEST}",
        "${",
        "$${x}",
        "\"\\u0000\\u001b[31m\"",
        "[\"a:1\", 2, ~]",
        "0-99999",
        "9999999999999999999999d",
        "ｈｏｓｔ:６３７９",
    ]);
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(0..lines.len(), junk, any::<bool>()),
            |(i, junk, drop_line)| {
                let mut l = lines.clone();
                if drop_line {
                    l.remove(i);
                } else if let Some((key, _)) = l[i].split_once(':') {
                    l[i] = format!("{key}: {junk}");
                }
                match Config::from_yaml_str_with_env(&l.join("\n"), "junk.yaml", &env) {
                    Ok(_) => {}
                    Err(e) => prop_assert!(e.to_string().starts_with("config junk.yaml")),
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Every `Example` cell of `docs/configuration.md` is a valid setting: placed in its section of
/// a minimal config (TLS examples under `source.tls`, file paths pointed at files that exist),
/// it parses.
#[test]
fn configuration_reference_examples_parse() {
    let doc = include_str!("../docs/configuration.md");
    let existing = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut section: Option<String> = None;
    let mut checked = 0;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = if h.starts_with("TLS") {
                Some("tls".into())
            } else {
                h.strip_prefix('`')
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string)
            };
            continue;
        }
        let Some(sec) = section.as_deref() else {
            continue;
        };
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').collect();
        let example = cells
            .get(cells.len().saturating_sub(2))
            .map(|c| c.trim().trim_matches('`'))
            .unwrap_or("");
        assert!(example.contains(':'), "no example in: {line}");
        let example = example.replace("/etc/df2redis/ca.pem", existing);
        let example = example
            .replace("/etc/df2redis/client.pem", existing)
            .replace("/etc/df2redis/client.key", existing);
        let key = example.split(':').next().unwrap_or("").trim().to_string();
        // `username` needs a password beside it, `cert` and `key` each other (the table says
        // so).
        let example = match (sec, key.as_str()) {
            (_, "username") => format!("{example}\n  password: pw"),
            ("tls", "cert") => format!("{example}\n    key: {existing}"),
            ("tls", "key") => format!("{example}\n    cert: {existing}"),
            _ => example,
        };
        let source = "source:\n  addr: 127.0.0.1:6380\n";
        let yaml = match sec {
            "source" => format!(
                "source:\n  {}\n{MIN_TARGET}",
                if key == "addr" {
                    example.clone()
                } else {
                    format!("addr: 127.0.0.1:6380\n  {example}")
                }
            ),
            "target" => {
                let body = match key.as_str() {
                    "addr" | "seed" => example.clone(),
                    "seeds" | "cluster" => format!("type: redis-cluster\n  {example}"),
                    "type" => format!("{example}\n  addr: 127.0.0.1:7000"),
                    _ => format!("addr: 127.0.0.1:6379\n  {example}"),
                };
                format!("{source}target:\n  {body}\n")
            }
            "tls" => {
                format!("source:\n  addr: 127.0.0.1:6380\n  tls:\n    {example}\n{MIN_TARGET}")
            }
            other => format!("{source}{MIN_TARGET}{other}:\n  {example}\n"),
        };
        let env = |n: &str| Some(format!("value-of-{n}"));
        let origin = concat!(env!("CARGO_MANIFEST_DIR"), "/x.yaml");
        if let Err(e) = Config::from_yaml_str_with_env(&yaml, origin, &env) {
            panic!("docs/configuration.md example `{example}` ({sec}) does not parse: {e}\n{yaml}");
        }
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} examples found");
}
