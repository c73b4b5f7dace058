//! Live progress on a terminal: bars for the full sync (total and per flow, with rate and ETA),
//! then one line for the stable sync (lag, rate), redrawn in place on stderr.
//!
//! Drawn by hand with three ANSI sequences (cursor up, erase below, carriage return) rather
//! than with a progress-bar crate: the frame is a few lines rebuilt from the status model
//! every 250 ms, and log lines must pass *above* it. Every write to stderr while the display
//! runs goes through [`Board`]: it erases the frame, writes the log line, and draws the frame
//! again, so logs and bars never overwrite each other. When stderr is not a terminal this
//! module is not used: the engine logs a plain `progress:` line every
//! `logging.progress_interval` instead; `--quiet` shows neither.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::ops::status::StatusReport;
use crate::ops::Stats;

/// The frame currently on screen (lines), shared by the drawing thread and the logger.
static BOARD: Mutex<Board> = Mutex::new(Board { lines: Vec::new() });

/// What is drawn below the log.
struct Board {
    lines: Vec<String>,
}

impl Board {
    fn erase(&self, out: &mut impl Write) -> io::Result<()> {
        if !self.lines.is_empty() {
            // Up to the frame's first line, then erase everything below.
            write!(out, "\r\x1b[{}A\x1b[J", self.lines.len())?;
        }
        Ok(())
    }

    fn draw(&self, out: &mut impl Write) -> io::Result<()> {
        for l in &self.lines {
            writeln!(out, "{l}")?;
        }
        Ok(())
    }
}

/// Writes `buf` (log output) to stderr above the frame.
pub fn write_stderr(buf: &[u8]) -> io::Result<()> {
    let board = BOARD.lock();
    let mut err = io::stderr().lock();
    board.erase(&mut err)?;
    err.write_all(buf)?;
    board.draw(&mut err)?;
    err.flush()
}

fn show(lines: Vec<String>) {
    let mut board = BOARD.lock();
    let mut err = io::stderr().lock();
    let _ = board.erase(&mut err);
    board.lines = lines;
    let _ = board.draw(&mut err);
    let _ = err.flush();
}

/// The drawing thread; removes its frame when dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Display {
    /// Starts redrawing from `stats` every 250 ms.
    pub fn start(stats: Arc<Stats>) -> io::Result<Display> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    show(frame(&StatusReport::live(&stats, None), width()));
                    std::thread::sleep(Duration::from_millis(250));
                }
            })?;
        Ok(Display {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        show(Vec::new());
    }
}

/// Terminal width from `COLUMNS` (shells export it), else 100.
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| (40..=500).contains(w))
        .unwrap_or(100)
}

fn bar(frac: f64, cells: usize) -> String {
    let frac = if frac.is_finite() {
        frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (frac * cells as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(full),
        "-".repeat(cells.saturating_sub(full))
    )
}

fn eta(s: Option<f64>) -> String {
    match s {
        Some(s) if s.is_finite() => {
            let t = s.max(0.0) as u64;
            if t >= 3600 {
                format!("{}h{:02}m", t / 3600, (t % 3600) / 60)
            } else {
                format!("{}m{:02}s", t / 60, t % 60)
            }
        }
        _ => "?".into(),
    }
}

/// The lines of one frame: while any flow loads its snapshot, a total bar and a bar per flow
/// (keys against the master's count shared evenly: Dragonfly spreads keys over its shards by
/// hash); afterwards one line with the verdict, lag and rate.
pub fn frame(r: &StatusReport, width: usize) -> Vec<String> {
    let cells = width.saturating_sub(70).clamp(10, 40);
    let mut out = Vec::new();
    match &r.full_sync {
        Some(fs) if !fs.done && r.state != "handshake" => {
            let rate = r.flows.iter().map(|f| f.keys_per_s).sum::<f64>() + 0.0;
            let mb = r.flows.iter().map(|f| f.bytes_per_s).sum::<f64>() / 1e6 + 0.0;
            let frac = fs.percent.map_or(0.0, |p| p / 100.0);
            let total = fs.keys_total.map(|t| format!("/{t}")).unwrap_or_default();
            out.push(format!(
                "full sync {} {:>3.0}% {}{total} keys  {rate:.0} keys/s  {mb:.1} MB/s  ETA {}",
                bar(frac, cells),
                frac * 100.0,
                fs.keys_done,
                eta(fs.eta_s)
            ));
            let n = r.flows.len().max(1) as f64;
            for f in &r.flows {
                let (frac, text) = if f.phase == "full_sync" {
                    let per = fs.keys_total.map(|t| t as f64 / n);
                    let frac = per.filter(|p| *p > 0.0).map_or(0.0, |p| f.keys as f64 / p);
                    (frac.min(0.99), format!("{:>3.0}%", frac.min(0.99) * 100.0))
                } else {
                    (1.0, "done".to_string())
                };
                out.push(format!(
                    "  flow {:<3} {} {text} {} keys  {:.0} keys/s  {:.1} MB/s",
                    f.flow,
                    bar(frac, cells),
                    f.keys,
                    f.keys_per_s,
                    f.bytes_per_s / 1e6
                ));
            }
        }
        _ => {
            // `+ 0.0`: an empty float sum is -0.0.
            let entries = r.flows.iter().map(|f| f.entries_per_s).sum::<f64>() + 0.0;
            out.push(format!(
                "{}: {} flow(s), lag {} entries / {} ms, {entries:.0} entries/s, {} commands applied",
                r.verdict,
                r.flows.len(),
                r.totals.lag_lsn,
                r.totals.lag_ms,
                r.totals.applied_commands
            ));
        }
    }
    for l in &mut out {
        if l.chars().count() > width {
            *l = l.chars().take(width).collect();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_etas() {
        assert_eq!(bar(0.5, 10), "[#####-----]");
        assert_eq!(bar(2.0, 4), "[####]");
        assert_eq!(bar(f64::NAN, 2), "[--]");
        assert_eq!(eta(Some(125.0)), "2m05s");
        assert_eq!(eta(Some(7300.0)), "2h01m");
        assert_eq!(eta(None), "?");
    }
}
