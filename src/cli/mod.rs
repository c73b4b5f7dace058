//! Command-line interface: argument parsing, subcommands, exit codes. The only module that prints.

use std::process::ExitCode;

/// Entry point of the `df2redis-sync` binary.
pub fn main() -> ExitCode {
    ExitCode::from(2)
}
