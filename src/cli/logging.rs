//! Logger set-up: env_logger to stderr, optionally also appended to a file.
//!
//! Precedence of the level: `-v`/`--quiet` (typed now, so meant now), else `RUST_LOG` (full
//! env_logger syntax, per module), else `logging.level` from the config. `-v` raises only this
//! crate's modules so that `-vv` does not drown the output in rustls' handshake traces; other
//! crates stay at warn unless `RUST_LOG` says otherwise.
//!
//! Secrets never reach the log: passwords are [`crate::net::Secret`], whose `Debug`/`Display`
//! print `***`.

use log::LevelFilter;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// What decides the log level, gathered from flags, environment and config.
pub struct LogSettings<'a> {
    pub verbose: u8,
    pub quiet: bool,
    /// `RUST_LOG`, if set and not empty.
    pub rust_log: Option<String>,
    /// `logging.level` from the config (info when there is no config).
    pub config_level: LevelFilter,
    /// `--log-file`, else `logging.file`.
    pub file: Option<&'a Path>,
    /// Progress bars are drawn on stderr: log lines go above them (`progress::write_stderr`).
    pub board: bool,
}

/// Installs the global logger. Fails only when the log file cannot be opened.
pub fn init(s: &LogSettings) -> io::Result<()> {
    let mut b = env_logger::Builder::new();
    let crate_name = module_path!().split("::").next().unwrap_or("df2redis_sync");
    let flag_level = if s.quiet {
        Some(LevelFilter::Warn)
    } else {
        match s.verbose {
            0 => None,
            1 => Some(LevelFilter::Debug),
            _ => Some(LevelFilter::Trace),
        }
    };
    match (flag_level, &s.rust_log) {
        (Some(l), _) => {
            b.filter_level(LevelFilter::Warn.min(l))
                .filter_module(crate_name, l);
        }
        (None, Some(spec)) => {
            b.parse_filters(spec);
        }
        (None, None) => {
            b.filter_level(LevelFilter::Warn.min(s.config_level))
                .filter_module(crate_name, s.config_level);
        }
    }
    let file = match s.file {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open log file {}: {e}", path.display()),
                    )
                })?,
        ),
        None => None,
    };
    if file.is_some() || s.board {
        b.target(env_logger::Target::Pipe(Box::new(Tee {
            file,
            board: s.board,
        })));
    } else {
        b.target(env_logger::Target::Stderr);
    }
    // A second init (tests calling main twice in one process) keeps the first logger.
    let _ = b.try_init();
    Ok(())
}

/// Writes every log line to stderr (above the progress bars when they are drawn) and to the
/// log file. A failing stderr (closed pipe) must not stop the file copy, and vice versa, so
/// each error is swallowed separately and only a failure of both is reported.
struct Tee {
    file: Option<File>,
    board: bool,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let a = if self.board {
            super::progress::write_stderr(buf)
        } else {
            io::stderr().write_all(buf)
        };
        let b = match &mut self.file {
            Some(f) => f.write_all(buf),
            None => a
                .as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::new(e.kind(), e.to_string())),
        };
        match (a, b) {
            (Err(_), Err(e)) => Err(e),
            _ => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}
