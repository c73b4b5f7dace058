//! Command-line interface: argument parsing, subcommands, exit codes. The only module that prints.
//!
//! Two layers, as in ripgrep and fd: [`args`] is what clap checks (shape of the command line),
//! [`crate::config`] turns the YAML into a resolved `Config`. Every subcommand returns
//! `Result<(), Failure>`; [`main`] prints the failure's error chain once, to stderr, and maps it
//! to the documented exit code. Data (dry-run results, version) goes to stdout; logs and
//! errors to stderr.

mod args;
mod dry_run;
pub mod inspect;
mod logging;
mod progress;
mod status;

use crate::config::Config;
use args::{Cli, Command};
use clap::Parser;
use std::error::Error as StdError;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

/// The documented exit codes (also in `--help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok = 0,
    /// 1: runtime failure (unreachable or refusing server, unexpected server).
    Failure = 1,
    /// 2: usage or configuration error; for `check`, any
    /// error (its codes are 0 equal, 1 different, 2 error).
    Usage = 2,
    /// 130: interrupted by SIGINT (128 + 2, the shell convention).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Why a subcommand did not succeed: the exit code it maps to plus the error to print.
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    error: Box<dyn StdError + Send + Sync>,
}

impl Failure {
    fn usage(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Failure {
        Failure {
            exit: Exit::Usage,
            error: e.into(),
        }
    }

    fn runtime(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Failure {
        Failure {
            exit: Exit::Failure,
            error: e.into(),
        }
    }
}

/// A plain message as an error (for failures that have no richer type).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// Entry point of the `df2redis-sync` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout and usage errors to stderr; its exit code is
            // 0 for help/version and 2 for usage errors, which is our table too.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Exit::Usage as u8));
        }
    };
    match run(&cli) {
        Ok(()) => Exit::Ok.into(),
        Err(f) => {
            print_error(&*f.error);
            f.exit.into()
        }
    }
}

/// Prints `error: <e>` and then each cause on its own line, once: a cause whose text is
/// already part of the line above (many errors include their source in `Display`) is skipped.
fn print_error(e: &(dyn StdError + 'static)) {
    let mut err = std::io::stderr().lock();
    let mut shown = e.to_string();
    let _ = writeln!(err, "df2redis-sync: error: {shown}");
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !shown.contains(&text) {
            let _ = writeln!(err, "  caused by: {text}");
            shown = text;
        }
        source = s.source();
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Inspect { file } => inspect::command(file).map_err(|e| Failure {
            exit: Exit::Failure,
            error: e.into(),
        }),
        Command::Version => {
            println_out(&format!("df2redis-sync {}", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
        Command::Replicate { config, dry_run } => {
            let cfg = load(config.path())?;
            // Bars only for a person watching: a terminal on stderr and no --quiet.
            let bars = !*dry_run && !cli.quiet && std::io::stderr().is_terminal();
            init_logging_with(cli, Some(&cfg), bars)?;
            if *dry_run {
                exit_130_on_ctrl_c();
                dry_run::run(&cfg, &mut |line| println_out(line))
                    .map_err(|m| Failure::runtime(Message(m)))
            } else {
                replicate(&cfg, bars)
            }
        }
        Command::Check { config, opts } => {
            let cfg = load(config.path())?;
            init_logging(cli, Some(&cfg))?;
            check(&cfg, opts)
        }
        Command::Status { config, json } => {
            let cfg = load(config.path())?;
            init_logging(cli, Some(&cfg))?;
            let (report, origin) =
                status::report(&cfg).map_err(|m| Failure::runtime(Message(m)))?;
            if *json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| Failure::runtime(Message(format!("encoding the report: {e}"))))?;
                println_out(&text);
            } else {
                for line in status::render(&report, &origin) {
                    println_out(&line);
                }
            }
            Ok(())
        }
    }
}

/// `replicate`: runs the engine until SIGINT/SIGTERM (drain, final checkpoint, exit 0) or a
/// failure retrying cannot fix (exit 1). A second signal exits 130 at once. The metrics/status
/// endpoint (when configured) runs around the engine; `bars` draws live progress on stderr
/// instead of the periodic `progress:` log lines.
fn replicate(cfg: &Config, bars: bool) -> Result<(), Failure> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit sees the flag set by the first signal.
        signal_hook::flag::register_conditional_shutdown(
            sig,
            Exit::Interrupted as i32,
            stop.clone(),
        )
        .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
        .map_err(|e| Failure {
            exit: Exit::Failure,
            error: Box::new(Message(format!("installing the signal handlers: {e}"))),
        })?;
    }
    let stats = Arc::new(crate::ops::Stats::new());
    let ckpt_dir = cfg
        .checkpoint
        .enabled
        .then_some(cfg.checkpoint.dir.as_path());
    // Tells `status` that replicate runs (removed at exit).
    let _pid = ckpt_dir.and_then(|d| match crate::ops::status::PidFile::create(d) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!(
                "cannot write {}: {e}",
                d.join(crate::ops::status::PID_FILE).display()
            );
            None
        }
    });
    let server = match &cfg.metrics.listen {
        Some(l) => Some(
            crate::ops::http::Server::start(l, stats.clone(), ckpt_dir)
                .map_err(|m| Failure::runtime(Message(m)))?,
        ),
        None => None,
    };
    let mut opts = crate::pipeline::Options {
        progress_interval: cfg.logging.progress_interval,
        ..crate::pipeline::Options::default()
    };
    let display = if bars {
        // The bars replace the periodic lines (a century is "never").
        opts.progress_interval = std::time::Duration::from_secs(100 * 365 * 86_400);
        match progress::Display::start(stats.clone()) {
            Ok(d) => Some(d),
            Err(e) => {
                // Only a thread the OS refused gets here, and the engine's own threads would be
                // refused right after (`spawning …`, an error with its own entry in
                // docs/troubleshooting.md); the plain progress lines replace the bars.
                log::debug!("cannot start the progress display ({e}); logging progress lines");
                opts.progress_interval = cfg.logging.progress_interval;
                None
            }
        }
    } else {
        None
    };
    let r = crate::pipeline::run_with_stats(cfg, &opts, &stop, &stats);
    drop(display);
    drop(server);
    match r {
        Ok(()) => {
            log::info!("stopped: writers drained, checkpoint saved");
            Ok(())
        }
        Err(e) => {
            let exit = match e {
                crate::pipeline::Error::Unsupported(_) => Exit::Usage,
                crate::pipeline::Error::Fatal(_) => Exit::Failure,
            };
            Err(Failure {
                exit,
                error: Box::new(e),
            })
        }
    }
}

/// `check`: flags over the config's `check` section, progress on stderr, summary on stdout;
/// exit 0 equal, 1 different, 2 error.
fn check(cfg: &Config, a: &args::CheckArgs) -> Result<(), Failure> {
    let opts = check_options(cfg, a).map_err(|m| Failure::usage(Message(m)))?;
    let quiet = log::max_level() < log::LevelFilter::Info;
    let progress = |p: &crate::check::Progress| {
        if quiet {
            return;
        }
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "check: round {}/{}: scanned {} source + {} target keys, compared {} ({:.0}/s), {} differing, {:.1} MB read, {:.0}s",
            p.round,
            p.rounds,
            p.source_scanned,
            p.target_scanned,
            p.compared,
            p.compared as f64 / secs,
            p.differing,
            p.bytes as f64 / 1e6,
            p.elapsed.as_secs_f64()
        );
    };
    // Any error is exit 2 (Exit::Usage has that code); differences are exit 1.
    let out = crate::check::run(cfg, &opts, &progress).map_err(Failure::usage)?;
    let r = &out.report;
    let s = &r.summary;
    println_out(&format!(
        "check ({}): source {} keys, target {} keys scanned; {} + {} compared (coverage {:.1}%); {} differing; {:.0} keys/s, {:.1} MB/s",
        r.mode,
        s.source_keys_scanned,
        s.target_keys_scanned,
        s.source_keys_compared,
        s.target_keys_compared,
        s.coverage * 100.0,
        s.differing,
        s.keys_per_sec,
        s.mb_per_sec
    ));
    for d in r.diffs.iter().take(20) {
        println_out(&format!("  {d}"));
    }
    if r.diffs.len() > 20 {
        println_out(&format!("  ... {} more in the report", r.diffs.len() - 20));
    }
    if s.not_recorded > 0 {
        println_out(&format!(
            "  ... and {} differences not recorded (check.max_diffs reached)",
            s.not_recorded
        ));
    }
    println_out(&format!("report: {}", out.path.display()));
    if r.equal() {
        println_out("result: equal");
        Ok(())
    } else {
        Err(Failure {
            exit: Exit::Failure,
            error: Box::new(Message(format!(
                "source and target differ: {} difference(s) after {} round(s); see {}",
                s.differing,
                r.rounds.len(),
                out.path.display()
            ))),
        })
    }
}

/// The config's `check` settings with the command-line flags applied.
fn check_options(cfg: &Config, a: &args::CheckArgs) -> Result<crate::config::CheckConfig, String> {
    let mut o = cfg.check.clone();
    if let Some(m) = &a.mode {
        o.mode = m.parse().map_err(|e| format!("--mode {m:?}: {e}"))?;
    }
    if let Some(n) = a.rounds {
        if n == 0 {
            return Err("--rounds must be at least 1".into());
        }
        o.rounds = n;
    }
    if let Some(d) = &a.interval {
        o.interval =
            crate::config::parse_duration(d).map_err(|e| format!("--interval {d:?}: {e}"))?;
    }
    if let Some(d) = &a.result_dir {
        o.result_dir = d.clone();
    }
    if let Some(p) = &a.pattern {
        o.pattern = Some(p.clone()).filter(|p| !p.is_empty());
    }
    if let Some(db) = a.db {
        o.db = Some(crate::model::DbIndex(db));
    }
    if let Some(s) = &a.sample {
        o.sample = crate::check::parse_sample(s).map_err(|e| format!("--sample {s:?}: {e}"))?;
    }
    if let Some(q) = a.qps {
        o.source_qps = q;
        o.target_qps = q;
    }
    if let Some(w) = a.workers {
        if w == 0 || w > 256 {
            return Err("--workers must be between 1 and 256".into());
        }
        o.workers = w;
    }
    Ok(o)
}

/// Loads the config, logging nothing (the logger is not set up yet; the error is printed by
/// `main`).
fn load(path: Option<&Path>) -> Result<Config, Failure> {
    let path = path.ok_or_else(|| Failure::usage(Message("no config file given".into())))?;
    Config::load(path).map_err(Failure::usage)
}

/// Sets up logging from flags, `RUST_LOG` and the config, then logs the config's warnings.
fn init_logging(cli: &Cli, cfg: Option<&Config>) -> Result<(), Failure> {
    init_logging_with(cli, cfg, false)
}

/// [`init_logging`]; `board` routes stderr log lines above the progress bars.
fn init_logging_with(cli: &Cli, cfg: Option<&Config>, board: bool) -> Result<(), Failure> {
    let file = cli
        .log_file
        .as_deref()
        .or_else(|| cfg.and_then(|c| c.logging.file.as_deref()));
    let settings = logging::LogSettings {
        verbose: cli.verbose,
        quiet: cli.quiet,
        rust_log: std::env::var("RUST_LOG")
            .ok()
            .filter(|s| !s.trim().is_empty()),
        config_level: cfg.map_or(log::LevelFilter::Info, |c| c.logging.level),
        file,
        board,
    };
    logging::init(&settings).map_err(Failure::usage)?;
    if let Some(cfg) = cfg {
        for w in &cfg.warnings {
            log::warn!("{}: {w}", cfg.origin);
        }
    }
    Ok(())
}

/// Makes Ctrl-C end the process at once with the documented exit code 130 (the default
/// disposition kills it by signal, which scripts see as "no exit code"). Only for commands that
/// hold no state worth saving; `replicate` proper will drain and checkpoint on the first Ctrl-C.
fn exit_130_on_ctrl_c() {
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    if let Err(e) = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        Exit::Interrupted as i32,
        armed,
    ) {
        log::warn!("cannot install the Ctrl-C handler ({e}); Ctrl-C will kill without exit code");
    }
}

/// One line of data to stdout. A closed stdout (`| head`) is not an error worth a panic.
fn println_out(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
