//! The metrics/status HTTP endpoint: `GET /metrics` (Prometheus/OpenMetrics text), `GET
//! /status` (the JSON [`StatusReport`]), `GET /` (a list of both). One thread, a small
//! synchronous server (`tiny_http`), no async runtime.
//!
//! It is off unless `metrics.listen` is set, and the config resolver keeps it on the loopback
//! unless an address says otherwise. The bound address (useful with port 0) is written to
//! `<checkpoint.dir>/status.addr`, where `df2redis-sync status` looks first; the file is
//! removed when the server stops. The server lives outside the engine: started by the CLI
//! before the engine and stopped after it, it only reads [`Stats`]. When its listener fails
//! (out of file descriptors) it is bound again on the same address once a second, with a
//! warning at most once a minute.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::metrics;
use super::status::{addr_file, CheckpointStatus, StatusReport};
use super::Stats;
use crate::checkpoint::Store;

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
        let server = tiny_http::Server::http(listen)
            .map_err(|e| format!("metrics endpoint: cannot listen on {listen}: {e}"))?;
        let addr = match server.server_addr().to_ip() {
            Some(a) => a.to_string(),
            None => listen.to_string(),
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
        let addr2 = addr.clone();
        let handle = std::thread::Builder::new()
            .name("ops-http".into())
            .spawn(move || serve(server, &addr2, &stats, dir.as_deref(), &st))
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

fn serve(
    mut server: tiny_http::Server,
    addr: &str,
    stats: &Arc<Stats>,
    dir: Option<&Path>,
    stop: &AtomicBool,
) {
    let registry = metrics::registry(stats.clone());
    let mut accept_errors = AcceptErrors::default();
    while !stop.load(Ordering::SeqCst) {
        let req = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                // tiny_http hands over only an error of its listener's accept() (a request
                // that fails is dropped inside it) — on Linux in practice EMFILE/ENFILE, out
                // of file descriptors — and its accept thread ends with it, closing the
                // listener. Listen again on the same address (the one `status.addr` names)
                // once a second until it works.
                accept_errors.note(
                    "accepting a connection",
                    &e.to_string(),
                    std::time::Instant::now(),
                );
                drop(server);
                match relisten(addr, &mut accept_errors, stop) {
                    Some(s) => server = s,
                    None => return,
                }
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let (code, ctype, body) = if *req.method() != tiny_http::Method::Get {
            (405, "text/plain", "only GET\n".to_string())
        } else {
            match path.as_str() {
                "/metrics" => match metrics::render(&registry) {
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
        };
        let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
            resp = resp.with_header(h);
        }
        if let Err(e) = req.respond(resp) {
            log::debug!("metrics endpoint: answering {path}: {e}");
        }
    }
}

/// Binds `addr` again after the listener failed; `None` once `stop` is set.
fn relisten(addr: &str, errors: &mut AcceptErrors, stop: &AtomicBool) -> Option<tiny_http::Server> {
    loop {
        for _ in 0..5 {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match tiny_http::Server::http(addr) {
            Ok(s) => {
                log::info!("metrics endpoint: listening again on {addr}");
                return Some(s);
            }
            Err(e) => errors.note(
                &format!("listening again on {addr}"),
                &e.to_string(),
                std::time::Instant::now(),
            ),
        }
    }
}

/// Rate-limited report of the listener's accept errors.
#[derive(Default)]
struct AcceptErrors {
    /// When the last warning was logged.
    last: Option<std::time::Instant>,
    /// Errors since then.
    since: u64,
}

impl AcceptErrors {
    const EVERY: Duration = Duration::from_secs(60);

    /// Counts one failure of `what`; logs it unless a warning was logged within a minute.
    fn note(&mut self, what: &str, e: &str, now: std::time::Instant) {
        self.since += 1;
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            return;
        }
        log::warn!(
            "metrics endpoint: {what} failed: {e} ({} time(s) since the last \
             report); listening again every second, replication goes on",
            self.since
        );
        self.last = Some(now);
        self.since = 0;
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
}
