//! A Dragonfly master emulator over a real redis-server, for tests, benchmarks and the demo.
//!
//! `dfly-emulator` listens like a Dragonfly master: any Redis client can read and write
//! through it (reads are proxied to the backing redis-server, writes are applied there and
//! journaled per shard the way Dragonfly journals them), and a replica can attach with
//! Dragonfly's replication protocol (`REPLCONF capa dragonfly`, `DFLY FLOW/SYNC/STARTSTABLE`)
//! and receive one RDB snapshot stream per shard followed by the live journal.
//!
//! Threads and blocking sockets only: one thread per client connection, one writer thread per
//! flow, one listener for expired keys. The replica code of this crate never calls into this
//! module. See `docs/emulator.md`.

pub mod backend;
pub mod dataset;
pub mod journal;
pub mod proto;
pub mod rdbenc;
pub mod repl;
pub mod server;
pub mod snapshot;
pub mod writes;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use rdbenc::Compression;

/// The Dragonfly release the emulator presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ver {
    /// v1.40.1: 5-element capa reply, tagged chunks, partial sync without DFLY SYNC.
    #[value(name = "1.40")]
    V1_40,
    /// v1.34.2: 4-element capa reply, contiguous chunks, EXPIRED opcode, DFLY SYNC after PARTIAL.
    #[value(name = "1.34")]
    V1_34,
}

impl Ver {
    /// The `df-ver` / `dragonfly_version` string.
    pub fn df_ver(self) -> &'static str {
        match self {
            Ver::V1_40 => "df-v1.40.1",
            Ver::V1_34 => "df-v1.34.2",
        }
    }
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// LZ4 frames (Dragonfly's default, `--compression_mode=3`).
    Lz4,
    /// ZSTD frames (`--compression_mode=2`).
    Zstd,
    /// No compression (`--compression_mode=0`).
    None,
    /// Per-string LZF (`--compression_mode=1`).
    Lzf,
}

/// Command line of `dfly-emulator`.
#[derive(Debug, Parser)]
#[command(
    name = "dfly-emulator",
    about = "A Dragonfly master (replication protocol) over a real redis-server"
)]
pub struct Opts {
    /// Port to listen on; 0 = a free port picked by the kernel (see --addr-file).
    #[arg(long, default_value_t = 6390)]
    pub port: u16,
    /// Once ready to serve, write the bound `host:port` (one line) to this file, atomically
    /// (a temporary file renamed into place): a reader sees the whole address or no file.
    /// With a backend of its own, `PATH.backend` is written first: `<pid> <dir>` of that
    /// redis-server, so whoever SIGKILLs the emulator can stop the server it leaves behind.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<std::path::PathBuf>,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Number of shards (= replication flows).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: u16,
    /// Backing redis-server `host:port`; default: start one from PATH on a free port.
    #[arg(long)]
    pub backend: Option<String>,
    /// redis-server binary used when no --backend is given.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// Snapshot blob compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Lz4)]
    pub compression: CompressionArg,
    /// Tagged chunks for big values (default: true for 1.40, false for 1.34).
    #[arg(long)]
    pub tagged_chunks: Option<bool>,
    /// serialization_max_chunk_size in bytes (0 = never split).
    #[arg(long, default_value_t = 65536)]
    pub chunk_size: usize,
    /// Dragonfly release to present.
    #[arg(long = "version", value_enum, default_value_t = Ver::V1_40)]
    pub dfly_version: Ver,
    /// Partial-sync backlog per shard, in journal entries (shard_repl_backlog_len).
    #[arg(long, default_value_t = 8192)]
    pub backlog_entries: usize,
    /// Replication timeout in seconds: a flow whose writes stay blocked this long is dropped.
    #[arg(long, default_value_t = 30.0)]
    pub repl_timeout: f64,
    /// Require this password (AUTH) on every connection.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Fixed master id (40 hex chars); default: random per process.
    #[arg(long)]
    pub master_id: Option<String>,
    /// Benchmark source mode: serialize each flow's snapshot before answering DFLY SYNC and
    /// report the serving rate.
    #[arg(long)]
    pub bench_source: bool,
    /// Fault: answer every AUTH with WRONGPASS.
    #[arg(long)]
    pub fault_reject_auth: bool,
    /// Fault: close every flow after this many stream bytes.
    #[arg(long)]
    pub fault_close_flow_bytes: Option<u64>,
    /// Fault: close every flow after this many journal entries.
    #[arg(long)]
    pub fault_close_flow_entries: Option<u64>,
    /// Helper modes (dataset loader, workload).
    #[command(subcommand)]
    pub cmd: Option<Sub>,
}

/// Helper modes.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Fill a server with the deterministic dataset.
    Load(dataset::LoadOpts),
    /// Write a scripted mix of commands at a set rate.
    Work(dataset::WorkOpts),
}

/// Resolved configuration of the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shards.
    pub shards: usize,
    /// Compression.
    pub compression: Compression,
    /// Tagged chunks.
    pub tagged_chunks: bool,
    /// Chunk size.
    pub chunk_size: usize,
    /// Release.
    pub version: Ver,
    /// Backlog entries.
    pub backlog_entries: usize,
    /// Replication timeout.
    pub repl_timeout: Duration,
    /// Password.
    pub requirepass: Option<String>,
    /// Master id.
    pub master_id: Option<String>,
    /// Benchmark source mode.
    pub bench_source: bool,
}

impl Config {
    /// Resolves the options.
    pub fn from_opts(o: &Opts) -> Result<Config, String> {
        if let Some(id) = &o.master_id {
            if id.len() != 40
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err("--master-id must be 40 lowercase hex characters".into());
            }
        }
        if !(o.repl_timeout > 0.0 && o.repl_timeout < 1e6) {
            return Err("--repl-timeout must be a positive number of seconds".into());
        }
        Ok(Config {
            shards: usize::from(o.shards),
            compression: match o.compression {
                CompressionArg::Lz4 => Compression::Lz4,
                CompressionArg::Zstd => Compression::Zstd,
                CompressionArg::None => Compression::None,
                CompressionArg::Lzf => Compression::Lzf,
            },
            tagged_chunks: o.tagged_chunks.unwrap_or(o.dfly_version == Ver::V1_40),
            chunk_size: o.chunk_size,
            version: o.dfly_version,
            backlog_entries: o.backlog_entries.max(1),
            repl_timeout: Duration::from_secs_f64(o.repl_timeout),
            requirepass: o.requirepass.clone(),
            master_id: o.master_id.clone(),
            bench_source: o.bench_source,
        })
    }
}

/// Entry point of the `dfly-emulator` binary.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let opts = Opts::parse();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(opts: Opts) -> Result<(), String> {
    match &opts.cmd {
        Some(Sub::Load(l)) => return dataset::load(l).map_err(|e| format!("load: {e}")),
        Some(Sub::Work(w)) => return dataset::work(w).map_err(|e| format!("work: {e}")),
        None => {}
    }
    let cfg = Config::from_opts(&opts)?;
    // Bind before starting the backend: a fixed port that is taken fails at once, and with
    // `--port 0` the port is ours before anything else can pick it (no free-port guess).
    let listener = TcpListener::bind((opts.bind.as_str(), opts.port))
        .map_err(|e| format!("bind {}:{}: {e}", opts.bind, opts.port))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("bind {}:{}: {e}", opts.bind, opts.port))?;
    // Before the backend starts: a SIGTERM while it starts must still stop it.
    install_signal_exit();
    // Keep the child alive for the life of the process; killed on drop.
    let (_child, backend_addr) = match &opts.backend {
        Some(a) => (None, a.clone()),
        None => {
            let p = backend::RedisProcess::start(&opts.redis_server)
                .map_err(|e| format!("backend: {e}"))?;
            let a = p.addr.clone();
            (Some(p), a)
        }
    };
    // Before the address: whoever sees the address can also find the backend (the only way
    // to stop it when the emulator is SIGKILLed, which leaves it running).
    if let (Some(path), Some(p)) = (&opts.addr_file, &_child) {
        let bpath = backend_file(path);
        write_atomically(
            &bpath,
            format!("{} {}\n", p.pid(), p.dir().display()).as_bytes(),
        )
        .map_err(|e| format!("--addr-file {}: {e}", bpath.display()))?;
    }
    let m = server::Master::new(cfg, backend_addr.clone())
        .map_err(|e| format!("backend {backend_addr}: {e}"))?;
    {
        let mut f = m.faults.lock();
        f.reject_auth = opts.fault_reject_auth;
        if let Some(n) = opts.fault_close_flow_bytes {
            f.close_bytes.insert(server::ALL_FLOWS, n);
        }
        if let Some(n) = opts.fault_close_flow_entries {
            f.close_entries.insert(server::ALL_FLOWS, n);
        }
    }
    log::info!(
        "dfly-emulator ({}) listening on {bound} with {} shards, backend {backend_addr}, master id {}",
        m.cfg.version.df_ver(),
        m.cfg.shards,
        m.replid.lock()
    );
    // Announce readiness only now that the backend answers: whoever waits for the address
    // may use the emulator as soon as it sees it.
    if let Some(path) = &opts.addr_file {
        write_atomically(path, format!("{bound}\n").as_bytes())
            .map_err(|e| format!("--addr-file {}: {e}", path.display()))?;
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the emulator: the line is a convenience.
        let _ = writeln!(out, "listening on {bound}").and_then(|()| out.flush());
    }
    server::serve(Arc::new(m), listener).map_err(|e| e.to_string())
}

/// `<addr-file>.backend`: where the emulator names the redis-server it started.
pub fn backend_file(addr_file: &std::path::Path) -> std::path::PathBuf {
    let mut p = addr_file.as_os_str().to_owned();
    p.push(".backend");
    std::path::PathBuf::from(p)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames it
/// into place, so a reader never sees a partial file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// SIGINT/SIGTERM: kill the backing redis-server we started, then exit with 130.
fn install_signal_exit() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                log::info!("signal received, exiting");
                backend::kill_registered();
                std::process::exit(130);
            }
        });
}
