//! What the user can type: the clap derive definitions, `--help` text with examples and the
//! exit-code table. Only shape is checked here; values are checked when the config resolves.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  df2redis-sync replicate --dry-run replicate.yaml   validate the config, test source and target
  df2redis-sync replicate -c replicate.yaml          replicate (the Go df2redis spelling)
  RUST_LOG=debug df2redis-sync replicate -v replicate.yaml
  df2redis-sync status replicate.yaml                where it stands: phase, LSNs, lag, verdict
  df2redis-sync status --json replicate.yaml         the same as JSON (GET /status)
  df2redis-sync version

Exit codes:
  0    success
  1    runtime failure (a server unreachable, refused, or not what was expected)
  2    usage or configuration error
  130  interrupted (Ctrl-C)

Logging goes to stderr (and to --log-file / logging.file when set); results go to stdout.
Level: -v/--quiet if given, else RUST_LOG if set, else logging.level (default info).
See docs/configuration.md for every config key.";

/// Replicate a live Dragonfly database into Redis or Redis Cluster, attached as a Dragonfly
/// replica: full sync from every shard in parallel, then the live journal, with per-flow
/// checkpoints.
#[derive(Debug, Parser)]
#[command(
    name = "df2redis-sync",
    version,
    after_help = EXAMPLES,
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    /// More log output: -v debug, -vv trace (for df2redis-sync's own modules).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only warnings and errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also append the log to FILE (overrides logging.file).
    #[arg(long, value_name = "FILE", global = true)]
    pub log_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replicate from the Dragonfly source into the Redis target.
    #[command(after_help = "\
With --dry-run nothing is replicated: the config is validated, the source must answer PING
(after AUTH) and INFO SERVER must show a Dragonfly (no replication session is opened: REPLCONF
capa dragonfly is never sent), the target must answer PING (after AUTH) and, for a cluster, its
masters and slot ranges are discovered and printed. A source that answers but is not Dragonfly
fails the dry run (exit 1): replication could not start against it.")]
    Replicate {
        #[command(flatten)]
        config: ConfigArg,
        /// Validate the config and test connectivity, then stop.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare source and target: both directions, TTL-aware, big keys in chunks.
    #[command(after_help = "\
Modes: outline (existence, type), length (+ expiry, lengths), full (+ every value; big keys
in chunks), smart (full below the big-key threshold, length above). Differences are re-checked
--rounds times, --interval apart; what still differs is listed in
<result-dir>/check_<timestamp>.json. Flags override the config's `check` section.

Exit codes: 0 equal, 1 different, 2 error (config, connection, server).")]
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        opts: CheckArgs,
    },
    /// Show where a replication stands: per-flow phase, LSNs, lag, rates, errors and a
    /// one-word verdict, live from the running replicate or from its checkpoint.
    #[command(after_help = "\
The live figures come from the running replicate's status endpoint: the address in
<checkpoint.dir>/status.addr (written while it runs), else metrics.listen. When nothing answers,
the checkpoint file is reported instead. The first line is the verdict: syncing, streaming, lag N,
caught up, or stopped. Exit codes: 0 reported, 1 nothing to report (no running replicate and no
checkpoint), 2 configuration error.")]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the report as JSON (the same document as GET /status).
        #[arg(long)]
        json: bool,
    },
    /// Decode a recorded flow stream (a conn-NNN.s2c.bin file, or a recording folder) and
    /// print one JSON line per entry and journal op, then a summary.
    Inspect {
        /// A flow file, a capture folder or a recording folder.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the version.
    Version,
}

/// `check` flags; each overrides the config's `check.<same name>`.
#[derive(Debug, Args, Default)]
pub struct CheckArgs {
    /// outline, length, full or smart.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Comparison rounds (differences are re-checked in later rounds).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
    /// Pause between rounds, e.g. 5s or 500ms.
    #[arg(long, value_name = "D")]
    pub interval: Option<String>,
    /// Directory of the JSON report.
    #[arg(long, value_name = "DIR")]
    pub result_dir: Option<PathBuf>,
    /// Only keys matching this glob.
    #[arg(long, value_name = "P")]
    pub pattern: Option<String>,
    /// Only this source database.
    #[arg(long, value_name = "N")]
    pub db: Option<u32>,
    /// Compare this fraction of keys (0.1 or 10%).
    #[arg(long, value_name = "RATE")]
    pub sample: Option<String>,
    /// Commands per second allowed on each side (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub qps: Option<u64>,
    /// Worker threads.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// The config file, given as a positional argument or with `-c/--config`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ConfigArg {
    /// The YAML config file.
    #[arg(value_name = "CONFIG")]
    path: Option<PathBuf>,
    /// The YAML config file (same as the positional CONFIG).
    #[arg(short = 'c', long = "config", value_name = "CONFIG")]
    flag: Option<PathBuf>,
}

impl ConfigArg {
    /// The path, whichever way it was given (clap's group makes exactly one present).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref().or(self.flag.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_positional_or_flag() {
        let a = Cli::try_parse_from(["x", "replicate", "a.yaml"]).unwrap();
        let b = Cli::try_parse_from(["x", "replicate", "-c", "a.yaml", "--dry-run"]).unwrap();
        for cli in [a, b] {
            let Command::Replicate { config, .. } = cli.command else {
                panic!("not replicate");
            };
            assert_eq!(config.path(), Some(std::path::Path::new("a.yaml")));
        }
        assert!(Cli::try_parse_from(["x", "replicate", "a.yaml", "-c", "b.yaml"]).is_err());
        assert!(Cli::try_parse_from(["x", "replicate"]).is_err());
    }
}
