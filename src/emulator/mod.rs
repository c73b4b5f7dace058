//! A Dragonfly master emulator over a real redis-server, for tests, benchmarks and the demo.

use std::process::ExitCode;

/// Entry point of the `dfly-emulator` binary.
pub fn main() -> ExitCode {
    ExitCode::from(2)
}
