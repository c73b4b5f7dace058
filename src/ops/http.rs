//! The metrics/status HTTP endpoint: `GET /metrics` (Prometheus/OpenMetrics text), `GET
//! /status` (the JSON [`StatusReport`]), `GET /` (a list of both). One thread, no async
//! runtime, and a deliberately small HTTP/1.x server of its own on a `std` listener: each
//! connection is one request and one `Connection: close` answer; the request head must arrive
//! within 2 seconds and the answer is written with a 2-second timeout, so a stuck or trickling
//! scraper delays the next scrape by a few seconds at most.
//!
//! It is off unless `metrics.listen` is set, and the config resolver keeps it on the loopback
//! unless an address says otherwise. The bound address (useful with port 0) is written to
//! `<checkpoint.dir>/status.addr`, where `df2redis-sync status` looks first; the file is
//! removed when the server stops. The server lives outside the engine: started by the CLI
//! before the engine and stopped after it, it only reads [`Stats`].
//!
//! Why not a crate: `tiny_http` (used until 0.1) ends its accept thread at the first accept
//! error and *panics* when it cannot duplicate an accepted socket, both of which happen when
//! the process runs out of file descriptors; the endpoint then stayed dead for the rest of a
//! migration. Here an accept error (in practice EMFILE/ENFILE) is counted, logged at most once
//! a minute, and retried once a second on the same listener; the pending connection waits in
//! the kernel's backlog meanwhile.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics;
use super::status::{addr_file, CheckpointStatus, StatusReport};
use super::Stats;
use crate::checkpoint::Store;

/// How long the thread sleeps when no connection is waiting: the stop flag's and a new
/// scrape's worst-case delay.
const IDLE: Duration = Duration::from_millis(20);
/// Read and write timeout of one connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read; anything longer is answered 431.
const MAX_HEAD: usize = 16 * 1024;

/// A running endpoint; stopped (and its address file removed) on drop.
pub struct Server {
    addr: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    addr_file: Option<PathBuf>,
}

impl Server {
    /// Binds `listen` and serves `stats` on a thread named `ops-http`. `checkpoint_dir` (when
    /// checkpoints are on) gets the address file, and `/status` reports its checkpoint.
    pub fn start(
        listen: &str,
        stats: Arc<Stats>,
        checkpoint_dir: Option<&Path>,
    ) -> Result<Server, String> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| format!("metrics endpoint: cannot listen on {listen}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("metrics endpoint: cannot listen on {listen}: {e}"))?;
        let addr = match listener.local_addr() {
            Ok(a) => a.to_string(),
            Err(_) => listen.to_string(),
        };
        let addr_file = match checkpoint_dir {
            Some(dir) => {
                let path = addr_file(dir);
                let written = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&path, format!("{addr}\n")));
                match written {
                    Ok(()) => Some(path),
                    Err(e) => {
                        log::warn!(
                            "metrics endpoint: cannot write {} ({e}); `status` will use metrics.listen",
                            path.display()
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let dir = checkpoint_dir.map(Path::to_path_buf);
        let handle = std::thread::Builder::new()
            .name("ops-http".into())
            .spawn(move || serve(&listener, &stats, dir.as_deref(), &st))
            .map_err(|e| format!("metrics endpoint: spawning its thread: {e}"))?;
        log::info!("metrics on http://{addr}/metrics, status on http://{addr}/status");
        Ok(Server {
            addr,
            stop,
            handle: Some(handle),
            addr_file,
        })
    }

    /// The bound `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(p) = &self.addr_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn serve(listener: &TcpListener, stats: &Arc<Stats>, dir: Option<&Path>, stop: &AtomicBool) {
    let registry = metrics::registry(stats.clone());
    let mut errors = AcceptErrors::default();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _peer)) => {
                errors.recovered();
                let answer = |path: &str| respond(path, &registry, stats, dir);
                if let Err(e) = handle(conn, answer) {
                    log::debug!("metrics endpoint: a connection: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(IDLE),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // In practice EMFILE/ENFILE: out of file descriptors. The listener itself is
                // fine; the connection stays queued until a descriptor is free.
                errors.note(&e.to_string(), Instant::now());
                for _ in 0..50 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(IDLE);
                }
            }
        }
    }
}

/// Reads one request head from `conn` and writes the answer `answer(path)` gives.
fn handle(
    mut conn: TcpStream,
    answer: impl FnOnce(&str) -> (u16, &'static str, String),
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    // The whole head must arrive within IO_TIMEOUT (not each read: a client trickling a byte
    // now and then would otherwise hold the endpoint's only thread for hours).
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    let (code, ctype, body) = loop {
        if memchr::memmem::find(&head, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&head, b"\n\n").is_some()
        {
            break route(&head, answer);
        }
        if head.len() >= MAX_HEAD {
            break (431, "text/plain", "request head too long\n".to_string());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "request head not complete within 2 s",
            ));
        }
        conn.set_read_timeout(Some(left))?;
        let n = conn.read(&mut buf)?;
        if n == 0 {
            // Closed before a whole head (a port check, or a client that gave up).
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    conn.write_all(&out)?;
    conn.flush()
}

/// The request line of `head` → the answer: `GET` of a path (the query is ignored), else 405.
fn route(
    head: &[u8],
    answer: impl FnOnce(&str) -> (u16, &'static str, String),
) -> (u16, &'static str, String) {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return (400, "text/plain", "bad request line\n".into());
    };
    if method != "GET" {
        return (405, "text/plain", "only GET\n".into());
    }
    answer(target.split('?').next().unwrap_or(""))
}

/// The answer for `path`.
fn respond(
    path: &str,
    registry: &prometheus_client::registry::Registry,
    stats: &Arc<Stats>,
    dir: Option<&Path>,
) -> (u16, &'static str, String) {
    match path {
        "/metrics" => match metrics::render(registry) {
            Ok(t) => (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                t,
            ),
            Err(_) => (500, "text/plain", "encoding failed\n".into()),
        },
        "/status" => {
            let cp = dir.and_then(|d| {
                let store = Store::new(d);
                store
                    .load()
                    .ok()
                    .flatten()
                    .map(|c| CheckpointStatus::from_checkpoint(&c, &store.path()))
            });
            let r = StatusReport::live(stats, cp);
            match serde_json::to_string_pretty(&r) {
                Ok(t) => (200, "application/json", t),
                Err(e) => (500, "text/plain", format!("{e}\n")),
            }
        }
        "/" => (
            200,
            "text/plain",
            "df2redis-sync: /metrics (Prometheus), /status (JSON)\n".into(),
        ),
        _ => (
            404,
            "text/plain",
            "not found: try /metrics or /status\n".into(),
        ),
    }
}

/// Rate-limited report of the listener's accept errors.
#[derive(Default)]
struct AcceptErrors {
    /// When the last warning was logged.
    last: Option<Instant>,
    /// Errors since then.
    since: u64,
    /// Errors since the last accepted connection.
    streak: u64,
}

impl AcceptErrors {
    const EVERY: Duration = Duration::from_secs(60);

    /// Counts one failure; logs it unless a warning was logged within a minute.
    fn note(&mut self, e: &str, now: Instant) {
        self.since += 1;
        self.streak += 1;
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return;
        }
        log::warn!(
            "metrics endpoint: accepting a connection failed: {e} ({} time(s) since the last \
             report); retrying every second, replication goes on",
            self.since
        );
        self.last = Some(now);
        self.since = 0;
    }

    /// A connection was accepted: says so once after a run of failures.
    fn recovered(&mut self) {
        if self.streak > 0 {
            log::info!(
                "metrics endpoint: accepting connections again (after {} failed attempt(s))",
                self.streak
            );
            self.streak = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::http_get;

    #[test]
    fn serves_metrics_status_and_404_then_removes_its_address_file() {
        let d = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::new());
        let s = Server::start("127.0.0.1:0", stats, Some(d.path())).unwrap();
        let file = std::fs::read_to_string(addr_file(d.path())).unwrap();
        assert_eq!(file.trim(), s.addr());
        let t = Duration::from_secs(5);
        let m = http_get(s.addr(), "/metrics", t).unwrap();
        assert!(m.contains("df2redis_up 1"), "{m}");
        let j = http_get(s.addr(), "/status", t).unwrap();
        let r: StatusReport = serde_json::from_str(&j).unwrap();
        assert_eq!(r.state, "handshake");
        assert!(r.live);
        let e = http_get(s.addr(), "/nope", t).unwrap_err();
        assert!(e.contains("404"), "{e}");
        drop(s);
        assert!(!addr_file(d.path()).exists());
    }

    /// Raw exchanges: other methods, garbage, an overlong head, a client that leaves early.
    #[test]
    fn answers_bad_requests_with_their_codes_and_keeps_serving() {
        let stats = Arc::new(Stats::new());
        let s = Server::start("127.0.0.1:0", stats, None).unwrap();
        let raw = |req: &[u8]| {
            let mut c = TcpStream::connect(s.addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(req);
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        };
        let post = raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        let bad = raw(b"\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let long = raw(&[b'a'; MAX_HEAD + 10]);
        assert!(long.starts_with("HTTP/1.1 431 "), "{long}");
        drop(TcpStream::connect(s.addr()).unwrap());
        // A client trickling its head is cut off after IO_TIMEOUT, not per read.
        let t0 = Instant::now();
        let mut slow = TcpStream::connect(s.addr()).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut cut = false;
        for _ in 0..40 {
            if slow.write_all(b"G").is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
            let mut probe = [0u8; 1];
            slow.set_nonblocking(true).unwrap();
            let r = slow.read(&mut probe);
            slow.set_nonblocking(false).unwrap();
            if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != ErrorKind::WouldBlock) {
                cut = true;
                break;
            }
        }
        assert!(cut, "a trickling client was never cut off");
        assert!(
            t0.elapsed() < IO_TIMEOUT + Duration::from_secs(2),
            "{:?}",
            t0.elapsed()
        );
        let ok = raw(b"GET /?x=1 HTTP/1.0\n\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 53\r\n"), "{ok}");
        assert!(ok.ends_with("/status (JSON)\n"), "{ok}");
    }
}
