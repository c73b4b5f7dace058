//! `dfly-emulator`: a Dragonfly master for tests, benchmarks and the demo (see `emulator`).

fn main() -> std::process::ExitCode {
    df2redis_sync::emulator::main()
}
