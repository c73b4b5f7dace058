//! YAML configuration: schema, `${ENV}` expansion, validation into a resolved [`Config`].
//!
//! This is the only module that knows YAML. [`Config::load`] reads a file,
//! [`Config::from_yaml_str`] a string; both return either a fully resolved [`Config`] (typed
//! fields, every default filled) or an [`Error`] listing every invalid key with its path, its
//! value (never a password's) and the reason.
//!
//! The schema accepts the original Go df2redis keys (`source{addr,password,tls}`,
//! `target{type,seed|addr|seeds,password,tls}`, `checkpoint{dir,interval}`,
//! `replica{listening_port,flow_timeout}`, `logging{level,file}`, and its camelCase extras such
//! as `stateDir`, `log`, `advanced.batchSize`, `dashboard.addr`) plus this tool's own sections.
//! `docs/configuration.md` lists every key; `examples/replicate.sample.yaml` shows them all.
//!
//! Resolution does no network I/O. It does check that TLS files exist, because a typo there
//! otherwise surfaces only as a handshake failure much later.

mod dbmap;
mod error;
mod resolve;
mod tree;

pub use dbmap::{keyspace_dbs, DbMapping, MapError};
pub use error::{Error, ErrorKind, Problem};
/// Duration syntax of the config (`500ms`, `5s`, `1m`), for command-line flags too.
pub(crate) use tree::parse_duration;

use crate::model::DbIndex;
use crate::net::{Endpoint, Secret, TlsOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Config files larger than this are refused before reading (a config is a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The resolved configuration the rest of the program sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from: the file path, or the origin name given to `from_yaml_str`.
    pub origin: String,
    /// The Dragonfly master to replicate from.
    pub source: SourceConfig,
    /// The Redis (standalone or cluster) to write into.
    pub target: TargetConfig,
    /// How this tool presents itself to the master as a replica.
    pub replica: ReplicaConfig,
    /// Per-flow LSN checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Batching, channel and writer tuning.
    pub pipeline: PipelineConfig,
    /// CPU pinning of flow and writer threads.
    pub cpu: CpuConfig,
    /// Source database → target database mapping.
    pub databases: DbMapping,
    /// Log level and optional log file.
    pub logging: LoggingConfig,
    /// Metrics/status HTTP listener (off unless configured).
    pub metrics: MetricsConfig,
    /// Defaults of `df2redis-sync check` (its command-line flags override them).
    pub check: CheckConfig,
    /// Things the user should know but that do not stop the load (ignored legacy keys,
    /// `insecure_skip_verify`). The CLI logs each one at warn level.
    pub warnings: Vec<String>,
}

/// The Dragonfly master.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// `host:port`.
    pub addr: String,
    /// ACL user (`AUTH user pass`); `None` = `AUTH pass` or no AUTH.
    pub username: Option<String>,
    /// Password; `None` = no AUTH.
    pub password: Option<Secret>,
    /// TLS settings; `None` = plain TCP.
    pub tls: Option<TlsOptions>,
    /// Limit on connecting (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// Limit on one blocking read or write on the main connection.
    pub io_timeout: Duration,
}

/// Whether the target is one Redis or a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// One Redis server (`redis-standalone`; the Go tool's `redis` too).
    Standalone,
    /// A Redis Cluster reached through seed nodes (`redis-cluster`).
    Cluster,
}

impl TargetKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Standalone => "redis-standalone",
            TargetKind::Cluster => "redis-cluster",
        }
    }
}

/// The Redis target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Standalone or cluster.
    pub kind: TargetKind,
    /// `host:port` of the server (standalone: exactly one) or of the cluster seed nodes.
    pub seeds: Vec<String>,
    /// ACL user; `None` = `AUTH pass` or no AUTH.
    pub username: Option<String>,
    /// Password; `None` = no AUTH.
    pub password: Option<Secret>,
    /// TLS settings; `None` = plain TCP.
    pub tls: Option<TlsOptions>,
    /// Limit on connecting (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// Limit on one blocking read or write.
    pub io_timeout: Duration,
    /// Whether the target is emptied before a full sync (`flush_before_full_sync`).
    pub flush_before_full_sync: FlushPolicy,
}

/// When `replicate` empties the target (`FLUSHALL`) before a full sync.
///
/// A full sync rewrites every key the master has (delete-then-write), but a key the target
/// still holds from an earlier run that the master no longer has is in no snapshot: it stays,
/// and later writes to that key name merge into the stale value. Only an empty target makes a
/// full sync exact (Dragonfly's own replica flushes too: `Replica::InitiateDflySync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Flush when the target holds data an earlier run of df2redis-sync wrote (its owner
    /// marker is there); never on the very first sync into a target, which may hold other
    /// data.
    #[default]
    Auto,
    /// Flush before every full sync, the first one included.
    Always,
    /// Never flush: keys deleted on the master while no session ran can remain in the target.
    Never,
}

impl FlushPolicy {
    /// The spelling in the config file.
    pub fn name(self) -> &'static str {
        match self {
            FlushPolicy::Auto => "auto",
            FlushPolicy::Always => "always",
            FlushPolicy::Never => "never",
        }
    }
}

/// Replica-side handshake settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Port announced with `REPLCONF listening-port` (shown in the master's `INFO
    /// replication`; nothing listens on it).
    pub listening_port: u16,
    /// Address announced with `REPLCONF ip-address`; `None` = not sent (the master records the
    /// peer address).
    pub announce_ip: Option<String>,
    /// Limit on opening a flow connection and on each handshake reply (`DFLY FLOW`, `DFLY
    /// SYNC`, `DFLY STARTSTABLE`).
    pub flow_timeout: Duration,
}

/// Checkpoint settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Save checkpoints at all; without them a restart does a full sync.
    pub enabled: bool,
    /// Directory the checkpoint files live in.
    pub dir: PathBuf,
    /// How often the coordinator saves one.
    pub interval: Duration,
    /// Prefix of the marker keys written into the target to make a resumed journal replay
    /// exactly-once.
    pub marker_prefix: String,
}

/// Pipeline tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// A flow ships a batch once it holds this many commands…
    pub batch_commands: usize,
    /// …or this many bytes of RESP, whichever comes first.
    pub batch_bytes: usize,
    /// Capacity (in batches) of each bounded channel from flows to a writer.
    pub channel_capacity: usize,
    /// Batches a writer connection may have sent but not yet seen all replies for.
    pub inflight_batches: usize,
    /// Writer connections (and threads) per target node.
    pub connections_per_node: usize,
}

/// CPU pinning. Empty lists mean no pinning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuConfig {
    /// Cores for flow threads, handed out round-robin.
    pub flow_threads: Vec<usize>,
    /// Cores for writer threads, handed out round-robin.
    pub writer_threads: Vec<usize>,
}

/// Settings of `df2redis-sync check` (section `check`); see `docs/check.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// What is compared per key.
    pub mode: crate::check::Mode,
    /// Comparison rounds; differences of one round are compared again in the next.
    pub rounds: u32,
    /// Pause between rounds.
    pub interval: Duration,
    /// Where `check_<timestamp>.json` is written.
    pub result_dir: PathBuf,
    /// Only keys matching this glob (`SCAN ... MATCH`); `None` = every key.
    pub pattern: Option<String>,
    /// Only this source database; `None` = every database that has keys.
    pub db: Option<DbIndex>,
    /// Fraction of keys compared, in (0, 1]; 1 = all.
    pub sample: f64,
    /// Commands per second allowed on the source (all workers together); 0 = unlimited.
    pub source_qps: u64,
    /// Commands per second allowed on the target (all nodes and workers together); 0 = unlimited.
    pub target_qps: u64,
    /// Reply bytes per second allowed from the source; 0 = unlimited.
    pub source_bandwidth: u64,
    /// Reply bytes per second allowed from the target; 0 = unlimited.
    pub target_bandwidth: u64,
    /// Worker threads.
    pub workers: usize,
    /// Collections with more elements than this are big: compared in chunks (`full`) or by
    /// length only (`smart`).
    pub big_key_elements: u64,
    /// Strings longer than this are big.
    pub big_key_bytes: u64,
    /// Elements per chunk when a big key is walked (`HSCAN COUNT`, `LRANGE` window...).
    pub chunk_elements: u64,
    /// Bytes per `GETRANGE` window.
    pub chunk_bytes: u64,
    /// Compare expiry times.
    pub ttl: bool,
    /// Expiry times closer than this are equal.
    pub ttl_tolerance: Duration,
    /// `SCAN ... COUNT` hint.
    pub scan_count: u64,
    /// At most this many differing keys are kept (and re-checked, and reported); more are only
    /// counted.
    pub max_diffs: usize,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig {
            mode: crate::check::Mode::Smart,
            rounds: 3,
            interval: Duration::from_secs(5),
            result_dir: PathBuf::from("./check-results"),
            pattern: None,
            db: None,
            sample: 1.0,
            source_qps: 0,
            target_qps: 0,
            source_bandwidth: 0,
            target_bandwidth: 0,
            workers: 4,
            big_key_elements: 1024,
            big_key_bytes: 1 << 20,
            chunk_elements: 1024,
            chunk_bytes: 256 << 10,
            ttl: true,
            ttl_tolerance: Duration::from_secs(1),
            scan_count: 1000,
            max_diffs: 100_000,
        }
    }
}

/// Log settings (the CLI's `-v`, `--quiet`, `--log-file` and `RUST_LOG` can override them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// Level filter.
    pub level: log::LevelFilter,
    /// Also append logs to this file.
    pub file: Option<PathBuf>,
    /// How often a plain progress line is logged (when stderr is not a terminal; a terminal
    /// gets live progress bars instead).
    pub progress_interval: Duration,
}

/// Metrics/status listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// `host:port` to listen on; `None` = off.
    pub listen: Option<String>,
}

impl Config {
    /// Reads and resolves a config file. Relative paths inside it (checkpoint dir, log file,
    /// TLS files) are taken relative to the file's directory, as the Go tool did.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let origin = path.display().to_string();
        let text = read_capped(path).map_err(|e| Error::new(&origin, ErrorKind::Read(e)))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        resolve::resolve(&text, &origin, base, &|name| std::env::var(name).ok())
    }

    /// Resolves YAML text; `origin` names it in errors. Relative paths stay relative to the
    /// current directory. `${VAR}` reads the process environment.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, Error> {
        resolve::resolve(text, origin, None, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_yaml_str`] but `${VAR}` asks `env` (tests use this instead of
    /// mutating the process environment).
    pub fn from_yaml_str_with_env(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Error> {
        resolve::resolve(text, origin, None, env)
    }
}

impl SourceConfig {
    /// The connection endpoint of the master.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout,
            io_timeout: Some(self.io_timeout),
        }
    }
}

impl TargetConfig {
    /// Endpoints of the configured seeds (standalone: the one server).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.seeds.iter().map(|a| self.endpoint_for(a)).collect()
    }

    /// An endpoint for any node of the target (e.g. one discovered from `CLUSTER SHARDS`),
    /// with the configured credentials, TLS and timeouts.
    pub fn endpoint_for(&self, addr: &str) -> Endpoint {
        Endpoint {
            addr: addr.to_string(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout,
            io_timeout: Some(self.io_timeout),
        }
    }
}

/// Reads a file, refusing anything above [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes; is this really a config file?"),
        ));
    }
    Ok(text)
}
