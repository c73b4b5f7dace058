//! The `df2redis-sync` binary: everything lives in the library; this only hands over to the CLI.

fn main() -> std::process::ExitCode {
    df2redis_sync::cli::main()
}
