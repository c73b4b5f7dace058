//! The schema: walks the YAML tree section by section, applies defaults and cross-key rules,
//! and builds the resolved [`Config`].
//!
//! Each section's list of keys below is the whole schema for that section; anything else is
//! rejected with a suggestion. The Go tool's spellings (`seed`, `cluster.seeds`,
//! `intervalSeconds`, `stateDir`, `log`, `advanced`, `dashboard`, `conflict`) are accepted as
//! aliases; keys of the Go tool that mean nothing here (`migrate`, `taskName`, `statusFile`)
//! are accepted and produce a warning, so an old config file still loads.

use super::error::{Error, ErrorKind};
use super::tree::{join, show_str, suggest, Ctx, Section};
use super::{
    CheckConfig, CheckpointConfig, Config, CpuConfig, DbMapping, FlushPolicy, LoggingConfig,
    MetricsConfig, PipelineConfig, ReplicaConfig, SourceConfig, TargetConfig, TargetKind,
};
use crate::model::DbIndex;
use crate::net::{Secret, TlsOptions};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT_KEYS: &[&str] = &[
    "source",
    "target",
    "replica",
    "checkpoint",
    "pipeline",
    "cpu",
    "databases",
    "logging",
    "metrics",
    "check",
    // The Go tool's keys.
    "stateDir",
    "statusFile",
    "taskName",
    "log",
    "advanced",
    "dashboard",
    "conflict",
    "migrate",
];
const SOURCE_KEYS: &[&str] = &[
    "type",
    "addr",
    "username",
    "password",
    "tls",
    "connect_timeout",
    "io_timeout",
];
const TARGET_KEYS: &[&str] = &[
    "type",
    "addr",
    "seed",
    "seeds",
    "cluster",
    "username",
    "password",
    "tls",
    "connect_timeout",
    "io_timeout",
    "flush_before_full_sync",
];
const TLS_KEYS: &[&str] = &[
    "enabled",
    "ca",
    "cert",
    "key",
    "server_name",
    "insecure_skip_verify",
];
const REPLICA_KEYS: &[&str] = &["listening_port", "announce_ip", "flow_timeout"];
const CHECKPOINT_KEYS: &[&str] = &[
    "enabled",
    "dir",
    "interval",
    "marker_prefix",
    "intervalSeconds",
    "path",
];
const PIPELINE_KEYS: &[&str] = &[
    "batch_commands",
    "batch_bytes",
    "channel_capacity",
    "inflight_batches",
    "connections_per_node",
];
const CPU_KEYS: &[&str] = &["flow_threads", "writer_threads"];
const DATABASES_KEYS: &[&str] = &["map", "key_prefix"];
const LOGGING_KEYS: &[&str] = &["level", "file", "progress_interval"];
const METRICS_KEYS: &[&str] = &["listen"];
const CHECK_KEYS: &[&str] = &[
    "mode",
    "rounds",
    "interval",
    "result_dir",
    "pattern",
    "db",
    "sample",
    "qps",
    "source_qps",
    "target_qps",
    "bandwidth",
    "source_bandwidth",
    "target_bandwidth",
    "workers",
    "big_key_elements",
    "big_key_bytes",
    "chunk_elements",
    "chunk_bytes",
    "ttl",
    "ttl_tolerance",
    "scan_count",
    "max_diffs",
];
const GO_LOG_KEYS: &[&str] = &["level", "dir", "consoleEnabled"];
const GO_ADVANCED_KEYS: &[&str] = &["batchSize", "qps"];
const GO_DASHBOARD_KEYS: &[&str] = &["addr"];
const GO_CONFLICT_KEYS: &[&str] = &["policy"];

/// Defaults. Where the Go tool documented one (listening port, flow timeout, checkpoint dir and
/// interval) it is kept, so an old config behaves the same.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_LISTENING_PORT: u16 = 16379;
const DEFAULT_FLOW_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_CHECKPOINT_DIR: &str = "./checkpoint";
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_MARKER_PREFIX: &str = "df2redis-sync:ckpt:";
const DEFAULT_BATCH_COMMANDS: u64 = 512;
// 256 KiB x 8: small keys still batch by `batch_commands` (512 x ~100 B), while big values
// queue at most ~2 MiB per writer channel; 1 MiB x 16 let four flows of huge keys take the
// replica's peak RSS past 100 MiB (docs/performance.md).
const DEFAULT_BATCH_BYTES: u64 = 256 << 10;
const DEFAULT_CHANNEL_CAPACITY: u64 = 8;
const DEFAULT_INFLIGHT_BATCHES: u64 = 4;
const DEFAULT_CONNECTIONS_PER_NODE: u64 = 1;

/// Largest database index accepted on either side of the mapping.
const MAX_DB: u64 = 65_535;
/// Largest CPU index accepted in a pinning list.
const MAX_CPU: u64 = 4_095;

/// Parses and resolves `text`. `base` is the directory relative paths are resolved against.
pub(crate) fn resolve(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Error> {
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|e| Error::new(origin, ErrorKind::Syntax(e.to_string())))?;
    let mut ctx = Ctx::new(env);
    let r = Resolver { base };
    let cfg = r.root(&mut ctx, &doc, origin);
    match cfg {
        Some(cfg) if ctx.problems.is_empty() => Ok(Config {
            warnings: ctx.warnings,
            ..cfg
        }),
        _ => {
            if ctx.problems.is_empty() {
                // A section returned None without saying why: a bug here, but still an error
                // the user can act on rather than a panic.
                ctx.problem("", None, "configuration is incomplete");
            }
            Err(Error::new(origin, ErrorKind::Invalid(ctx.problems)))
        }
    }
}

struct Resolver<'b> {
    base: Option<&'b Path>,
}

impl Resolver<'_> {
    fn root(&self, ctx: &mut Ctx, doc: &Value, origin: &str) -> Option<Config> {
        if doc.is_null() {
            ctx.problem(
                "",
                None,
                "the file is empty; `source` and `target` are required",
            );
            return None;
        }
        let root = ctx.section("", doc, ROOT_KEYS)?;
        for legacy in ["taskName", "statusFile", "migrate"] {
            if root.has(legacy) {
                ctx.warnings.push(format!(
                    "config key `{legacy}` belongs to the Go df2redis and is ignored"
                ));
            }
        }
        self.go_conflict(ctx, &root);

        let source = match root.get("source") {
            Some((k, v)) => self.source(ctx, &k, v),
            None => {
                ctx.problem(
                    "source",
                    None,
                    "missing; the Dragonfly master's `addr` is required",
                );
                None
            }
        };
        let target = match root.get("target") {
            Some((k, v)) => self.target(ctx, &k, v),
            None => {
                ctx.problem(
                    "target",
                    None,
                    "missing; the Redis `addr` or `seeds` are required",
                );
                None
            }
        };
        let replica = self.replica(ctx, &root);
        let checkpoint = self.checkpoint(ctx, &root);
        let pipeline = self.pipeline(ctx, &root);
        let cpu = self.cpu(ctx, &root);
        let cluster = target
            .as_ref()
            .map(|t: &TargetConfig| t.kind == TargetKind::Cluster);
        let databases = self.databases(ctx, &root, cluster.unwrap_or(false));
        let logging = self.logging(ctx, &root);
        let metrics = self.metrics(ctx, &root);
        let check = self.check(ctx, &root);

        Some(Config {
            origin: origin.to_string(),
            source: source?,
            target: target?,
            replica: replica?,
            checkpoint: checkpoint?,
            pipeline: pipeline?,
            cpu: cpu?,
            databases: databases?,
            logging: logging?,
            metrics: metrics?,
            check: check?,
            warnings: Vec::new(),
        })
    }

    fn source(&self, ctx: &mut Ctx, path: &str, v: &Value) -> Option<SourceConfig> {
        let s = ctx.section(path, v, SOURCE_KEYS)?;
        if let Some((k, v)) = s.get("type") {
            if let Some(t) = ctx.string(&k, v, false) {
                if !t.eq_ignore_ascii_case("dragonfly") {
                    ctx.problem(&k, Some(show_str(&t)), "the source must be `dragonfly`");
                }
            }
        }
        let addr = match s.get("addr") {
            Some((k, v)) => ctx
                .string(&k, v, false)
                .and_then(|a| addr(ctx, &k, &a, false)),
            None => {
                ctx.problem(
                    &join(path, "addr"),
                    None,
                    "missing; the Dragonfly master's host:port",
                );
                None
            }
        };
        let (username, password) = self.credentials(ctx, &s);
        let tls = self.tls_opt(ctx, &s);
        let connect_timeout = timeout(ctx, &s, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
        let io_timeout = timeout(ctx, &s, "io_timeout", DEFAULT_IO_TIMEOUT);
        Some(SourceConfig {
            addr: addr?,
            username: username?,
            password: password?,
            tls: tls?,
            connect_timeout: connect_timeout?,
            io_timeout: io_timeout?,
        })
    }

    fn target(&self, ctx: &mut Ctx, path: &str, v: &Value) -> Option<TargetConfig> {
        let s = ctx.section(path, v, TARGET_KEYS)?;
        // Checked first so that an address problem below does not hide these.
        let (username, password) = self.credentials(ctx, &s);
        let tls = self.tls_opt(ctx, &s);
        let connect_timeout = timeout(ctx, &s, "connect_timeout", DEFAULT_CONNECT_TIMEOUT);
        let io_timeout = timeout(ctx, &s, "io_timeout", DEFAULT_IO_TIMEOUT);
        let flush = match s.get("flush_before_full_sync") {
            Some((k, v)) => flush_policy(ctx, &k, v),
            None => Some(FlushPolicy::Auto),
        };
        // `None` = not given; `Some(None)` = given but invalid (reported; the addresses are
        // still checked so one run shows every problem).
        let kind: Option<Option<TargetKind>> = s.get("type").map(|(k, v)| target_kind(ctx, &k, v));
        // Exactly one of the address spellings.
        let cluster_seeds = match s.get("cluster") {
            Some((k, v)) => {
                let c = ctx.section(&k, v, &["seeds"])?;
                c.get("seeds")
            }
            None => None,
        };
        let given: Vec<(String, &Value)> =
            [s.get("addr"), s.get("seed"), s.get("seeds"), cluster_seeds]
                .into_iter()
                .flatten()
                .collect();
        let (key, value) = match given.as_slice() {
            [] => {
                ctx.problem(
                    &join(path, "seeds"),
                    None,
                    "missing; set `addr` (one server) or `seeds` (cluster seed nodes)",
                );
                return None;
            }
            [one] => one.clone(),
            [first, second, ..] => {
                ctx.problem(
                    &second.0,
                    None,
                    format!(
                        "conflicts with `{}`; give the target address(es) once",
                        first.0
                    ),
                );
                return None;
            }
        };
        let mut seeds = Vec::new();
        let mut ok = true;
        for (k, item) in ctx.list(&key, value)? {
            match ctx
                .string(&k, item, false)
                .and_then(|a| addr(ctx, &k, &a, false))
            {
                Some(a) if seeds.contains(&a) => {
                    ctx.problem(&k, Some(show_str(&a)), "listed twice");
                    ok = false;
                }
                Some(a) => seeds.push(a),
                None => ok = false,
            }
        }
        if ok && seeds.is_empty() {
            ctx.problem(
                &key,
                None,
                "the list is empty; at least one host:port is required",
            );
            return None;
        }
        let kind = match kind {
            Some(Some(k)) => k,
            Some(None) => return None,
            None if seeds.len() > 1 => {
                ctx.problem(
                    &join(path, "type"),
                    None,
                    "missing; several addresses given, set `type: redis-cluster`",
                );
                return None;
            }
            None => TargetKind::Standalone,
        };
        if kind == TargetKind::Standalone && seeds.len() > 1 {
            ctx.problem(
                &key,
                None,
                format!(
                    "a redis-standalone target takes exactly one address, {} given",
                    seeds.len()
                ),
            );
            return None;
        }
        if !ok {
            return None;
        }
        Some(TargetConfig {
            kind,
            seeds,
            username: username?,
            password: password?,
            tls: tls?,
            connect_timeout: connect_timeout?,
            io_timeout: io_timeout?,
            flush_before_full_sync: flush?,
        })
    }

    /// `username` and `password` of a side. Empty strings mean "not set" (the Go sample has
    /// `password: ""`). Returns `(None, _)`/`(_, None)` on a problem.
    #[allow(clippy::type_complexity)]
    fn credentials(
        &self,
        ctx: &mut Ctx,
        s: &Section,
    ) -> (Option<Option<String>>, Option<Option<Secret>>) {
        let username = match s.get("username") {
            Some((k, v)) => ctx.string(&k, v, false).map(|u| {
                if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    ctx.problem(
                        &k,
                        Some(show_str(&u)),
                        "must not contain spaces or control characters",
                    );
                }
                (!u.is_empty()).then_some(u)
            }),
            None => Some(None),
        };
        let password = match s.get("password") {
            Some((k, v)) => ctx
                .string(&k, v, true)
                .map(|p| (!p.is_empty()).then(|| Secret::new(p))),
            None => Some(None),
        };
        if let (Some(Some(_)), Some(None)) = (&username, &password) {
            ctx.problem(
                &join(s.path(), "password"),
                None,
                "missing; an ACL `username` needs a password",
            );
        }
        (username, password)
    }

    /// `tls`: absent/false = plain TCP; `true` = TLS with system roots; a map = options.
    fn tls_opt(&self, ctx: &mut Ctx, s: &Section) -> Option<Option<TlsOptions>> {
        let Some((k, v)) = s.get("tls") else {
            return Some(None);
        };
        if !matches!(v, Value::Mapping(_)) {
            return ctx.boolean(&k, v).map(|on| on.then(TlsOptions::default));
        }
        let t = ctx.section(&k, v, TLS_KEYS)?;
        let enabled = match t.get("enabled") {
            Some((ek, ev)) => ctx.boolean(&ek, ev),
            None => Some(true),
        };
        let ca_file = self.file(ctx, &t, "ca");
        let cert_file = self.file(ctx, &t, "cert");
        let key_file = self.file(ctx, &t, "key");
        if let (Some(c), Some(kf)) = (&cert_file, &key_file) {
            if c.is_some() != kf.is_some() {
                let (missing, present) = if c.is_some() {
                    ("key", "cert")
                } else {
                    ("cert", "key")
                };
                ctx.problem(
                    &join(&k, missing),
                    None,
                    format!("missing; a client certificate needs both `cert` and `key` (only `{present}` is set)"),
                );
            }
        }
        let server_name = match t.get("server_name") {
            Some((nk, nv)) => ctx.word(&nk, nv, "a host name without spaces").map(Some),
            None => Some(None),
        };
        let insecure = match t.get("insecure_skip_verify") {
            Some((ik, iv)) => ctx.boolean(&ik, iv),
            None => Some(false),
        };
        if insecure == Some(true) && enabled == Some(true) {
            ctx.warnings.push(format!(
                "{k}.insecure_skip_verify is true: server certificates are NOT verified; \
                 anyone on the network path can read and change this connection's data"
            ));
        }
        let opts = TlsOptions {
            ca_file: ca_file?,
            cert_file: cert_file?,
            key_file: key_file?,
            server_name: server_name?,
            insecure_skip_verify: insecure?,
        };
        Some(enabled?.then_some(opts))
    }

    /// An existing file named under `key`, resolved against the config file's directory.
    fn file(&self, ctx: &mut Ctx, s: &Section, key: &str) -> Option<Option<PathBuf>> {
        let Some((k, v)) = s.get(key) else {
            return Some(None);
        };
        let p = ctx.string(&k, v, false)?;
        if p.is_empty() {
            ctx.problem(&k, Some(show_str(&p)), "must be a file path");
            return None;
        }
        let path = self.path(&p);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(Some(path)),
            Ok(_) => {
                ctx.problem(
                    &k,
                    Some(show_str(&p)),
                    format!("{} is not a file", path.display()),
                );
                None
            }
            Err(e) => {
                ctx.problem(
                    &k,
                    Some(show_str(&p)),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// `p` made relative to the config file's directory (when loading a file).
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        match self.base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.to_path_buf(),
        }
    }

    fn replica(&self, ctx: &mut Ctx, root: &Section) -> Option<ReplicaConfig> {
        let empty = Value::Null;
        let (path, v) = root.get("replica").unwrap_or(("replica".into(), &empty));
        let s = ctx.section(&path, v, REPLICA_KEYS)?;
        let listening_port = match s.get("listening_port") {
            Some((k, v)) => ctx
                .uint(&k, v, 0, 65_535)
                .and_then(|p| u16::try_from(p).ok()),
            None => Some(DEFAULT_LISTENING_PORT),
        };
        let announce_ip = match s.get("announce_ip") {
            Some((k, v)) => ctx.word(&k, v, "an IP address or host name").map(Some),
            None => Some(None),
        };
        let flow_timeout = match s.get("flow_timeout") {
            Some((k, v)) => ctx.duration(&k, v, Duration::from_secs(1), Duration::from_secs(3600)),
            None => Some(DEFAULT_FLOW_TIMEOUT),
        };
        Some(ReplicaConfig {
            listening_port: listening_port?,
            announce_ip: announce_ip?,
            flow_timeout: flow_timeout?,
        })
    }

    fn checkpoint(&self, ctx: &mut Ctx, root: &Section) -> Option<CheckpointConfig> {
        let empty = Value::Null;
        let (path, v) = root
            .get("checkpoint")
            .unwrap_or(("checkpoint".into(), &empty));
        let s = ctx.section(&path, v, CHECKPOINT_KEYS)?;
        let enabled = match s.get("enabled") {
            Some((k, v)) => ctx.boolean(&k, v),
            None => Some(true),
        };
        let interval = match (s.get("interval"), s.get("intervalSeconds")) {
            (Some(_), Some((k2, _))) => {
                ctx.problem(&k2, None, "conflicts with `checkpoint.interval`; keep one");
                None
            }
            (Some((k, v)), None) => {
                ctx.duration(&k, v, Duration::from_millis(100), Duration::from_secs(3600))
            }
            (None, Some((k, v))) => ctx.uint(&k, v, 1, 3600).map(Duration::from_secs),
            (None, None) => Some(DEFAULT_CHECKPOINT_INTERVAL),
        };
        let dir = match (s.get("dir"), s.get("path")) {
            (Some(_), Some((k2, _))) => {
                ctx.problem(&k2, None, "conflicts with `checkpoint.dir`; keep one");
                None
            }
            (Some((k, v)), None) => self.dir(ctx, &k, v),
            (None, Some((k, v))) => match ctx.string(&k, v, false) {
                // The Go tool's `path` names the checkpoint *file*; its directory is ours.
                Some(p) if p.is_empty() => Some(self.default_checkpoint_dir(ctx, root)?),
                Some(p) => {
                    let dir = Path::new(&p)
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                    ctx.warnings.push(format!(
                        "{k} (a file in the Go df2redis) is read as checkpoint.dir = {}",
                        dir.display()
                    ));
                    Some(self.path(&dir.to_string_lossy()))
                }
                None => None,
            },
            (None, None) => self.default_checkpoint_dir(ctx, root),
        };
        let marker_prefix = match s.get("marker_prefix") {
            Some((k, v)) => ctx.string(&k, v, false).and_then(|p| {
                if p.is_empty() || p.len() > 200 || p.chars().any(|c| !c.is_ascii_graphic()) {
                    ctx.problem(
                        &k,
                        Some(show_str(&p)),
                        "must be 1 to 200 printable ASCII characters without spaces",
                    );
                    None
                } else {
                    Some(p)
                }
            }),
            None => Some(DEFAULT_MARKER_PREFIX.to_string()),
        };
        Some(CheckpointConfig {
            enabled: enabled?,
            dir: dir?,
            interval: interval?,
            marker_prefix: marker_prefix?,
        })
    }

    /// The checkpoint directory when `checkpoint.dir` is not given: the Go tool's top-level
    /// `stateDir` if present, else `./checkpoint`.
    fn default_checkpoint_dir(&self, ctx: &mut Ctx, root: &Section) -> Option<PathBuf> {
        match root.get("stateDir") {
            Some((k, v)) => self.dir(ctx, &k, v),
            None => Some(self.path(DEFAULT_CHECKPOINT_DIR)),
        }
    }

    /// A directory path (it may not exist yet: the checkpoint code creates it).
    fn dir(&self, ctx: &mut Ctx, k: &str, v: &Value) -> Option<PathBuf> {
        let d = ctx.string(k, v, false)?;
        if d.is_empty() {
            ctx.problem(k, Some(show_str(&d)), "must be a directory path");
            return None;
        }
        let p = self.path(&d);
        if p.is_file() {
            ctx.problem(
                k,
                Some(show_str(&d)),
                format!("{} is a file, not a directory", p.display()),
            );
            return None;
        }
        Some(p)
    }

    fn pipeline(&self, ctx: &mut Ctx, root: &Section) -> Option<PipelineConfig> {
        let empty = Value::Null;
        let (path, v) = root.get("pipeline").unwrap_or(("pipeline".into(), &empty));
        let s = ctx.section(&path, v, PIPELINE_KEYS)?;
        let go_batch = match root.get("advanced") {
            Some((k, v)) => {
                let a = ctx.section(&k, v, GO_ADVANCED_KEYS)?;
                if let Some((qk, qv)) = a.get("qps") {
                    if ctx.uint(&qk, qv, 0, u64::MAX)? > 0 {
                        ctx.warnings
                            .push(format!("{qk} is ignored: df2redis-sync has no rate limit"));
                    }
                }
                a.get("batchSize")
            }
            None => None,
        };
        let batch_commands = match (s.get("batch_commands"), go_batch) {
            (Some(_), Some((k2, _))) => {
                ctx.problem(
                    &k2,
                    None,
                    "conflicts with `pipeline.batch_commands`; keep one",
                );
                None
            }
            (Some((k, v)), None) | (None, Some((k, v))) => ctx.uint(&k, v, 1, 100_000),
            (None, None) => Some(DEFAULT_BATCH_COMMANDS),
        };
        let batch_bytes = match s.get("batch_bytes") {
            Some((k, v)) => ctx.size(&k, v, 1 << 10, 256 << 20),
            None => Some(DEFAULT_BATCH_BYTES),
        };
        let channel_capacity = int_or(
            ctx,
            &s,
            "channel_capacity",
            1,
            65_536,
            DEFAULT_CHANNEL_CAPACITY,
        );
        let inflight = int_or(
            ctx,
            &s,
            "inflight_batches",
            1,
            1024,
            DEFAULT_INFLIGHT_BATCHES,
        );
        let conns = int_or(
            ctx,
            &s,
            "connections_per_node",
            1,
            64,
            DEFAULT_CONNECTIONS_PER_NODE,
        );
        Some(PipelineConfig {
            batch_commands: to_usize(batch_commands?)?,
            batch_bytes: to_usize(batch_bytes?)?,
            channel_capacity: to_usize(channel_capacity?)?,
            inflight_batches: to_usize(inflight?)?,
            connections_per_node: to_usize(conns?)?,
        })
    }

    fn cpu(&self, ctx: &mut Ctx, root: &Section) -> Option<CpuConfig> {
        let empty = Value::Null;
        let (path, v) = root.get("cpu").unwrap_or(("cpu".into(), &empty));
        let s = ctx.section(&path, v, CPU_KEYS)?;
        let flow = cpu_list(ctx, &s, "flow_threads");
        let writer = cpu_list(ctx, &s, "writer_threads");
        Some(CpuConfig {
            flow_threads: flow?,
            writer_threads: writer?,
        })
    }

    fn databases(&self, ctx: &mut Ctx, root: &Section, cluster: bool) -> Option<DbMapping> {
        let empty = Value::Null;
        let (path, v) = root
            .get("databases")
            .unwrap_or(("databases".into(), &empty));
        let s = ctx.section(&path, v, DATABASES_KEYS)?;
        let mut m = DbMapping::identity(cluster);
        let mut ok = true;
        if let Some((k, v)) = s.get("map") {
            for (ek, src, val) in db_entries(ctx, &k, v)? {
                let Some(dst) = ctx.uint(&ek, val, 0, MAX_DB) else {
                    ok = false;
                    continue;
                };
                if cluster && dst != 0 {
                    ctx.bad(
                        &ek,
                        val,
                        "Redis Cluster has only db 0; use `databases.key_prefix` to keep databases apart",
                    );
                    ok = false;
                    continue;
                }
                m.map.insert(src, DbIndex(dst as u32));
            }
        }
        if let Some((k, v)) = s.get("key_prefix") {
            for (ek, src, val) in db_entries(ctx, &k, v)? {
                match ctx.string(&ek, val, false) {
                    Some(p) if p.is_empty() || p.len() > 1024 => {
                        ctx.problem(&ek, Some(show_str(&p)), "must be 1 to 1024 bytes");
                        ok = false;
                    }
                    Some(p) => {
                        m.key_prefix.insert(src, p.into_bytes());
                    }
                    None => ok = false,
                }
            }
        }
        if ok {
            if let Err(e) = m.validate() {
                ctx.problem(&path, None, e);
                ok = false;
            }
        }
        ok.then_some(m)
    }

    fn logging(&self, ctx: &mut Ctx, root: &Section) -> Option<LoggingConfig> {
        let empty = Value::Null;
        let (path, v) = root.get("logging").unwrap_or(("logging".into(), &empty));
        let s = ctx.section(&path, v, LOGGING_KEYS)?;
        let go = match root.get("log") {
            Some((k, v)) => Some(ctx.section(&k, v, GO_LOG_KEYS)?),
            None => None,
        };
        let go_level = go.as_ref().and_then(|g| g.get("level"));
        let level = match (s.get("level"), go_level) {
            (Some(_), Some((k2, _))) => {
                ctx.problem(&k2, None, "conflicts with `logging.level`; keep one");
                None
            }
            (Some((k, v)), None) | (None, Some((k, v))) => ctx.string(&k, v, false).and_then(|l| {
                let level = match l.to_ascii_lowercase().as_str() {
                    "off" => Some(log::LevelFilter::Off),
                    "error" => Some(log::LevelFilter::Error),
                    "warn" | "warning" => Some(log::LevelFilter::Warn),
                    "info" => Some(log::LevelFilter::Info),
                    "debug" => Some(log::LevelFilter::Debug),
                    "trace" => Some(log::LevelFilter::Trace),
                    _ => None,
                };
                if level.is_none() {
                    ctx.problem(
                        &k,
                        Some(show_str(&l)),
                        "must be one of off, error, warn, info, debug, trace",
                    );
                }
                level
            }),
            (None, None) => Some(log::LevelFilter::Info),
        };
        let go_dir = go.as_ref().and_then(|g| g.get("dir"));
        let file = match (s.get("file"), go_dir) {
            (Some(_), Some((k2, _))) => {
                ctx.problem(&k2, None, "conflicts with `logging.file`; keep one");
                None
            }
            (Some((k, v)), None) => ctx.string(&k, v, false).and_then(|f| {
                if f.is_empty() {
                    Some(None)
                } else {
                    let p = self.path(&f);
                    if p.is_dir() {
                        ctx.problem(&k, Some(show_str(&f)), "is a directory; name a file");
                        None
                    } else {
                        Some(Some(p))
                    }
                }
            }),
            // The Go tool wrote `<task>_<command>.log` into `log.dir`; one fixed name here.
            (None, Some((k, v))) => self
                .dir(ctx, &k, v)
                .map(|d| Some(d.join("df2redis-sync.log"))),
            (None, None) => Some(None),
        };
        if let Some(g) = &go {
            if let Some((ck, cv)) = g.get("consoleEnabled") {
                if ctx.boolean(&ck, cv) == Some(false) {
                    ctx.warnings.push(format!(
                        "{ck} is ignored: logs always go to stderr (use --quiet to see fewer)"
                    ));
                }
            }
        }
        let progress_interval = match s.get("progress_interval") {
            Some((k, v)) => ctx.duration(
                &k,
                v,
                Duration::from_millis(100),
                Duration::from_secs(86_400),
            ),
            None => Some(Duration::from_secs(10)),
        };
        Some(LoggingConfig {
            level: level?,
            file: file?,
            progress_interval: progress_interval?,
        })
    }

    fn metrics(&self, ctx: &mut Ctx, root: &Section) -> Option<MetricsConfig> {
        let empty = Value::Null;
        let (path, v) = root.get("metrics").unwrap_or(("metrics".into(), &empty));
        let s = ctx.section(&path, v, METRICS_KEYS)?;
        let go = match root.get("dashboard") {
            Some((k, v)) => ctx.section(&k, v, GO_DASHBOARD_KEYS)?.get("addr"),
            None => None,
        };
        let listen = match (s.get("listen"), go) {
            (Some(_), Some((k2, _))) => {
                ctx.problem(&k2, None, "conflicts with `metrics.listen`; keep one");
                None
            }
            (Some((k, v)), None) | (None, Some((k, v))) => ctx.string(&k, v, false).and_then(|a| {
                if a.is_empty() || a.eq_ignore_ascii_case("off") {
                    return Some(None);
                }
                // The Go tool's `:7777` means every interface.
                let full = if a.starts_with(':') {
                    ctx.warnings.push(format!(
                        "{k} = {} listens on every network interface",
                        show_str(&a)
                    ));
                    format!("0.0.0.0{a}")
                } else {
                    a.clone()
                };
                addr(ctx, &k, &full, true).map(Some)
            }),
            (None, None) => Some(None),
        };
        Some(MetricsConfig { listen: listen? })
    }

    /// The `check` section: defaults of `df2redis-sync check`.
    fn check(&self, ctx: &mut Ctx, root: &Section) -> Option<CheckConfig> {
        let empty = Value::Null;
        let (path, v) = root.get("check").unwrap_or(("check".into(), &empty));
        let s = ctx.section(&path, v, CHECK_KEYS)?;
        let d = CheckConfig::default();
        let mode = match s.get("mode") {
            Some((k, v)) => ctx.string(&k, v, false).and_then(|m| {
                let r = m.parse::<crate::check::Mode>();
                if let Err(e) = &r {
                    ctx.problem(&k, Some(show_str(&m)), e.clone());
                }
                r.ok()
            }),
            None => Some(d.mode),
        };
        let rounds = int_or(ctx, &s, "rounds", 1, 1000, u64::from(d.rounds));
        let interval = match s.get("interval") {
            Some((k, v)) => ctx.duration(&k, v, Duration::ZERO, Duration::from_secs(86_400)),
            None => Some(d.interval),
        };
        let result_dir = match s.get("result_dir") {
            Some((k, v)) => self.dir(ctx, &k, v),
            None => Some(self.path(&d.result_dir.to_string_lossy())),
        };
        let pattern = match s.get("pattern") {
            Some((k, v)) => ctx
                .string(&k, v, false)
                .map(|p| Some(p).filter(|p| !p.is_empty())),
            None => Some(None),
        };
        let db = match s.get("db") {
            Some((k, v)) => ctx.uint(&k, v, 0, MAX_DB).map(|n| Some(DbIndex(n as u32))),
            None => Some(None),
        };
        let sample = match s.get("sample") {
            Some((k, v)) => ctx.string(&k, v, false).and_then(|t| {
                let r = crate::check::parse_sample(&t);
                if let Err(e) = &r {
                    ctx.problem(&k, Some(show_str(&t)), e.clone());
                }
                r.ok()
            }),
            None => Some(d.sample),
        };
        let qps = int_or(ctx, &s, "qps", 0, u64::MAX, 0);
        let source_qps = int_or(ctx, &s, "source_qps", 0, u64::MAX, 0);
        let target_qps = int_or(ctx, &s, "target_qps", 0, u64::MAX, 0);
        // `qps` is the shorthand for both sides; a side's own key wins.
        let both = |q: Option<u64>, side: Option<u64>| match (q, side) {
            (Some(q), Some(0)) => Some(q),
            (Some(_), Some(n)) => Some(n),
            _ => None,
        };
        let source_qps = both(qps, source_qps);
        let target_qps = both(qps, target_qps);
        let bw = |ctx: &mut Ctx, key: &str| match s.get(key) {
            Some((k, v)) => ctx.size(&k, v, 0, 1 << 40),
            None => Some(0),
        };
        let bandwidth = bw(ctx, "bandwidth");
        let source_bandwidth = bw(ctx, "source_bandwidth");
        let target_bandwidth = bw(ctx, "target_bandwidth");
        let source_bandwidth = both(bandwidth, source_bandwidth);
        let target_bandwidth = both(bandwidth, target_bandwidth);
        let workers = int_or(ctx, &s, "workers", 1, 256, d.workers as u64);
        let big_key_elements = int_or(ctx, &s, "big_key_elements", 1, 1 << 32, d.big_key_elements);
        let big_key_bytes = match s.get("big_key_bytes") {
            Some((k, v)) => ctx.size(&k, v, 1, 1 << 40),
            None => Some(d.big_key_bytes),
        };
        let chunk_elements = int_or(ctx, &s, "chunk_elements", 1, 1 << 20, d.chunk_elements);
        let chunk_bytes = match s.get("chunk_bytes") {
            Some((k, v)) => ctx.size(&k, v, 1, 64 << 20),
            None => Some(d.chunk_bytes),
        };
        let ttl = match s.get("ttl") {
            Some((k, v)) => ctx.boolean(&k, v),
            None => Some(d.ttl),
        };
        let ttl_tolerance = match s.get("ttl_tolerance") {
            Some((k, v)) => ctx.duration(&k, v, Duration::ZERO, Duration::from_secs(86_400)),
            None => Some(d.ttl_tolerance),
        };
        let scan_count = int_or(ctx, &s, "scan_count", 1, 1 << 20, d.scan_count);
        let max_diffs = int_or(ctx, &s, "max_diffs", 1, 1 << 30, d.max_diffs as u64);
        Some(CheckConfig {
            mode: mode?,
            rounds: u32::try_from(rounds?).ok()?,
            interval: interval?,
            result_dir: result_dir?,
            pattern: pattern?,
            db: db?,
            sample: sample?,
            source_qps: source_qps?,
            target_qps: target_qps?,
            source_bandwidth: source_bandwidth?,
            target_bandwidth: target_bandwidth?,
            workers: to_usize(workers?)?,
            big_key_elements: big_key_elements?,
            big_key_bytes: big_key_bytes?,
            chunk_elements: chunk_elements?,
            chunk_bytes: chunk_bytes?,
            ttl: ttl?,
            ttl_tolerance: ttl_tolerance?,
            scan_count: scan_count?,
            max_diffs: to_usize(max_diffs?)?,
        })
    }

    /// The Go tool's `conflict.policy`: only `overwrite` is what this tool does.
    fn go_conflict(&self, ctx: &mut Ctx, root: &Section) {
        let Some((k, v)) = root.get("conflict") else {
            return;
        };
        let Some(c) = ctx.section(&k, v, GO_CONFLICT_KEYS) else {
            return;
        };
        if let Some((pk, pv)) = c.get("policy") {
            if let Some(p) = ctx.string(&pk, pv, false) {
                match p.as_str() {
                    "overwrite" => {}
                    "panic" | "skip" => ctx.problem(
                        &pk,
                        Some(show_str(&p)),
                        "not supported: df2redis-sync always overwrites existing keys",
                    ),
                    _ => ctx.problem(&pk, Some(show_str(&p)), "must be `overwrite`"),
                }
            }
        }
    }
}

/// `target.flush_before_full_sync`; `None` after reporting an unknown value.
fn flush_policy(ctx: &mut Ctx, k: &str, v: &Value) -> Option<FlushPolicy> {
    let t = ctx.string(k, v, false)?;
    match t.to_ascii_lowercase().as_str() {
        "auto" => Some(FlushPolicy::Auto),
        "always" => Some(FlushPolicy::Always),
        "never" => Some(FlushPolicy::Never),
        _ => {
            let hint = match suggest(&t, &["auto", "always", "never"]) {
                Some(n) => format!("did you mean `{n}`?"),
                None => "expected `auto`, `always` or `never`".to_string(),
            };
            ctx.problem(
                k,
                Some(show_str(&t)),
                format!("unknown flush policy; {hint}"),
            );
            None
        }
    }
}

/// `target.type`; `None` after reporting an unknown type.
fn target_kind(ctx: &mut Ctx, k: &str, v: &Value) -> Option<TargetKind> {
    let t = ctx.string(k, v, false)?;
    match t.to_ascii_lowercase().as_str() {
        "redis-standalone" | "standalone" | "redis" => Some(TargetKind::Standalone),
        "redis-cluster" | "cluster" => Some(TargetKind::Cluster),
        _ => {
            let hint = match suggest(&t, &["redis-standalone", "redis-cluster"]) {
                Some(n) => format!("did you mean `{n}`?"),
                None => "expected `redis-standalone` or `redis-cluster`".to_string(),
            };
            ctx.problem(
                k,
                Some(show_str(&t)),
                format!("unknown target type; {hint}"),
            );
            None
        }
    }
}

/// Validates `host:port` (IPv6 in brackets). Returns the address as written.
fn addr(ctx: &mut Ctx, key: &str, a: &str, listen: bool) -> Option<String> {
    let fail = |ctx: &mut Ctx, reason: &str| {
        ctx.problem(key, Some(show_str(a)), reason.to_string());
        None
    };
    if a.is_empty() {
        return fail(ctx, "must be host:port, got an empty string");
    }
    if a.contains("://") {
        return fail(ctx, "must be host:port, not a URL");
    }
    if a.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail(ctx, "must be host:port without spaces");
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return fail(ctx, "must be host:port; the port is missing");
    };
    if host.is_empty() {
        return fail(ctx, "must be host:port; the host is missing");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return fail(ctx, "an IPv6 address must be in brackets, e.g. [::1]:6379");
    }
    match port.parse::<u16>() {
        Ok(0) if !listen => fail(ctx, "port must be between 1 and 65535"),
        Ok(_) => Some(a.to_string()),
        Err(_) => fail(ctx, "port must be a number between 1 and 65535"),
    }
}

/// A connect/IO timeout key of a server section.
fn timeout(ctx: &mut Ctx, s: &Section, key: &str, default: Duration) -> Option<Duration> {
    match s.get(key) {
        Some((k, v)) => ctx.duration(
            &k,
            v,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        ),
        None => Some(default),
    }
}

/// An integer key with a default.
fn int_or(ctx: &mut Ctx, s: &Section, key: &str, min: u64, max: u64, default: u64) -> Option<u64> {
    match s.get(key) {
        Some((k, v)) => ctx.uint(&k, v, min, max),
        None => Some(default),
    }
}

/// Every bound passed to `uint` fits in usize on the 64- and 32-bit targets we build for.
fn to_usize(n: u64) -> Option<usize> {
    usize::try_from(n).ok()
}

/// A CPU list: `[0, 1, 2]` or the string `"0-3,6"`.
fn cpu_list(ctx: &mut Ctx, s: &Section, key: &str) -> Option<Vec<usize>> {
    let Some((k, v)) = s.get(key) else {
        return Some(Vec::new());
    };
    let mut out: Vec<usize> = Vec::new();
    let mut ok = true;
    let push = |ctx: &mut Ctx, ek: &str, n: u64, out: &mut Vec<usize>| {
        let n = n as usize;
        if out.contains(&n) {
            ctx.problem(ek, Some(format!("`{n}`")), "CPU listed twice");
            false
        } else {
            out.push(n);
            true
        }
    };
    match v {
        Value::String(text) => {
            let text = ctx.expand(&k, text)?;
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let range = match part.split_once('-') {
                    Some((a, b)) => a
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .zip(b.trim().parse::<u64>().ok()),
                    None => part.parse::<u64>().ok().map(|n| (n, n)),
                };
                match range {
                    Some((a, b)) if a <= b && b <= MAX_CPU => {
                        for n in a..=b {
                            ok &= push(ctx, &k, n, &mut out);
                        }
                    }
                    _ => {
                        ctx.problem(
                            &k,
                            Some(show_str(part)),
                            format!("must be CPU numbers 0-{MAX_CPU} or ranges like 0-3, comma separated"),
                        );
                        ok = false;
                    }
                }
            }
        }
        _ => {
            for (ek, item) in ctx.list(&k, v)? {
                match ctx.uint(&ek, item, 0, MAX_CPU) {
                    Some(n) => ok &= push(ctx, &ek, n, &mut out),
                    None => ok = false,
                }
            }
        }
    }
    ok.then_some(out)
}

/// Entries of a map keyed by source database index: `(key path, db, value)`.
fn db_entries<'v>(
    ctx: &mut Ctx,
    key: &str,
    v: &'v Value,
) -> Option<Vec<(String, DbIndex, &'v Value)>> {
    let Value::Mapping(m) = v else {
        ctx.bad(key, v, "must be a map from source db number to a value");
        return None;
    };
    let mut out = Vec::with_capacity(m.len());
    let mut ok = true;
    for (dbk, val) in m {
        let label = match dbk {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => super::tree::show(other),
        };
        let ek = format!("{key}.{}", super::tree::escape(&label));
        match label.trim().parse::<u64>() {
            Ok(n) if n <= MAX_DB => out.push((ek, DbIndex(n as u32), val)),
            _ => {
                ctx.problem(
                    &ek,
                    Some(show_str(&label)),
                    format!("the key must be a source db number 0-{MAX_DB}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Go tool's spellings, documented in their own table rather than in the sample.
    const GO_ONLY: &[&str] = &[
        "stateDir",
        "statusFile",
        "taskName",
        "log",
        "advanced",
        "dashboard",
        "conflict",
        "migrate",
        "seed",
        "cluster",
        "intervalSeconds",
        "path",
    ];

    fn all_keys() -> Vec<&'static str> {
        [
            ROOT_KEYS,
            SOURCE_KEYS,
            TARGET_KEYS,
            TLS_KEYS,
            REPLICA_KEYS,
            CHECKPOINT_KEYS,
            PIPELINE_KEYS,
            CPU_KEYS,
            DATABASES_KEYS,
            LOGGING_KEYS,
            METRICS_KEYS,
            CHECK_KEYS,
        ]
        .concat()
    }

    #[test]
    fn sample_shows_every_key() {
        let sample = include_str!("../../examples/replicate.sample.yaml");
        for key in all_keys().into_iter().filter(|k| !GO_ONLY.contains(k)) {
            assert!(
                sample.contains(&format!(" {key}:")) || sample.contains(&format!("\n{key}:")),
                "examples/replicate.sample.yaml does not show `{key}`"
            );
        }
    }

    #[test]
    fn reference_documents_every_key() {
        let doc = include_str!("../../docs/configuration.md");
        let go = [
            GO_LOG_KEYS,
            GO_ADVANCED_KEYS,
            GO_DASHBOARD_KEYS,
            GO_CONFLICT_KEYS,
        ]
        .concat();
        for key in all_keys().into_iter().chain(go) {
            assert!(
                doc.contains(&format!("`{key}`"))
                    || doc.contains(&format!(".{key}`"))
                    || doc.contains(&format!("`{key}.")),
                "docs/configuration.md does not document `{key}`"
            );
        }
    }
}
