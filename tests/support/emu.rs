//! Emulator-driven end-to-end helpers: the Dragonfly emulator (`dfly-emulator`) with its
//! dataset, the real `df2redis-sync replicate` binary against any target, and the
//! `check --mode full` loop that waits for source and target to compare equal. Every process
//! is a [`Proc`] killed on drop; [`Emulator`] is the one way tests start an emulator.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use df2redis_sync::model::Cmd;
use df2redis_sync::net::{Conn, Endpoint};
use df2redis_sync::resp::Value;

/// A child process: SIGTERM on drop, SIGKILL after 5 s.
pub struct Proc(pub std::process::Child);

impl Proc {
    /// `kill -9` now, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then SIGKILL after 5 s; nothing when it already exited and was reaped (its
    /// pid may belong to another process by now).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The redis-server an emulator started, as it names it in `<addr-file>.backend`.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Its process id.
    pub pid: u32,
    /// Its directory (`/tmp/dfly-emulator-redis-*`), also its working directory.
    pub dir: PathBuf,
}

impl Backend {
    /// Reads `<addr_file>.backend` (`<pid> <dir>`); `None` when the emulator uses `--backend`.
    fn read(addr_file: &Path) -> Option<Backend> {
        let text =
            std::fs::read_to_string(df2redis_sync::emulator::backend_file(addr_file)).ok()?;
        let (pid, dir) = text.trim_end().split_once(' ')?;
        Some(Backend {
            pid: pid.parse().ok()?,
            dir: PathBuf::from(dir),
        })
    }

    /// True while the process `pid` runs in `dir`: that is how a recycled pid (another
    /// process, never ours to signal) is told from the server we mean.
    pub fn running(&self) -> bool {
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid));
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        cwd.is_ok_and(|c| c == dir)
    }

    /// Stops the server if its emulator could not (a SIGKILLed emulator leaves it running)
    /// and removes its directory. Waits up to 10 s for it to go.
    pub fn reap(&self) {
        if self.running() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while self.running() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long [`Emulator::start`] waits for the emulator to report its address. Generous: the
/// emulator starts its own redis-server first, which takes seconds on a loaded machine.
const EMULATOR_START_LIMIT: Duration = Duration::from_secs(90);

/// A running `dfly-emulator` on a port the kernel picked (`--port 0 --addr-file`), so no other
/// test or server can race it for the port; its stderr (`RUST_LOG=info`) in a log file.
///
/// Dropping it sends SIGTERM (the emulator then stops the redis-server it started), then
/// SIGKILL after 5 s; a SIGKILLed emulator leaves its redis-server running, so that server
/// (named in `<addr-file>.backend`) is then stopped and its directory removed here. When the
/// test is panicking, the tail of the emulator's log is printed first.
pub struct Emulator {
    // Field order = drop order: the process stops before its temporary directory goes.
    proc: Proc,
    addr: String,
    log: PathBuf,
    backend: Option<Backend>,
    _tmp: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Starts `dfly-emulator <args>` with its log in `dir/emulator.log` and waits until it
    /// serves. Panics with its exit status and the tail of its log if it exits first, or
    /// with the log tail if it is not ready within 90 s.
    pub fn start(dir: &Path, args: &[&str]) -> Emulator {
        Emulator::start_named(dir, "emulator", args)
    }

    /// [`Emulator::start`] with the log in `dir/<name>.log` (and the address file in
    /// `dir/<name>.addr`), for a second emulator in one directory.
    pub fn start_named(dir: &Path, name: &str, args: &[&str]) -> Emulator {
        Emulator::spawn(dir, name, args, None)
    }

    /// [`Emulator::start`] in a temporary directory of its own (removed on drop).
    pub fn start_in_tempdir(args: &[&str]) -> Emulator {
        let tmp = tempfile::Builder::new()
            .prefix("df2redis-emulator-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        Emulator::spawn(&dir, "emulator", args, Some(tmp))
    }

    fn spawn(dir: &Path, name: &str, args: &[&str], tmp: Option<tempfile::TempDir>) -> Emulator {
        let log = dir.join(format!("{name}.log"));
        let addr_file = dir.join(format!("{name}.addr"));
        // A leftover from an earlier emulator in this directory would be read as ours.
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args(["--port", "0", "--addr-file"])
            .arg(&addr_file)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .unwrap_or_else(|e| panic!("create {}: {e}", log.display())),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dfly-emulator: {e}"));
        let mut proc = Proc(child);
        let start = Instant::now();
        let addr = loop {
            // The file is renamed into place whole, so any content is the full address.
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                let a = a.trim();
                if !a.is_empty() {
                    break a.to_string();
                }
            }
            if let Ok(Some(status)) = proc.0.try_wait() {
                panic!(
                    "dfly-emulator {args:?} exited with {status} before it served; \
                     tail of {}:\n{}",
                    log.display(),
                    log_tail(&log, 30)
                );
            }
            if start.elapsed() > EMULATOR_START_LIMIT {
                let tail = log_tail(&log, 30);
                drop(proc);
                panic!(
                    "dfly-emulator {args:?} did not serve within {EMULATOR_START_LIMIT:?}; \
                     tail of {}:\n{tail}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Written before the address file, so present now (absent with `--backend`).
        let backend = Backend::read(&addr_file);
        Emulator {
            proc,
            addr,
            log,
            backend,
            _tmp: tmp,
        }
    }

    /// The redis-server the emulator started (`None` with `--backend`).
    pub fn backend(&self) -> Option<&Backend> {
        self.backend.as_ref()
    }

    /// SIGTERM only (the emulator stops its redis-server itself); waits up to 30 s for the
    /// exit and returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.proc.0.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "dfly-emulator {} still running 30 s after SIGTERM; tail of its log:\n{}",
                self.addr,
                log_tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` the emulator now (it cannot stop its redis-server), then stop that server.
    pub fn kill9(&mut self) {
        self.proc.kill9();
        if let Some(b) = &self.backend {
            b.reap();
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("emulator address {} has no port", self.addr))
    }

    /// Process id of the emulator.
    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// Path of the emulator's log (its stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The emulator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fills the emulator with the deterministic dataset at `scale` (`dfly-emulator load`,
    /// bounded at 5 minutes); panics with the loader's output if it fails.
    pub fn load(&self, scale: &str) {
        let out = super::run_bounded(
            Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
                .args(["load", "--scale", scale, "--target", &self.addr]),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "dfly-emulator load --scale {scale} into {} failed ({}): {}",
            self.addr,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- dfly-emulator {} log tail (test panicked) ---\n{}",
                self.addr,
                log_tail(&self.log, 20)
            );
        }
        self.proc.stop();
        if let Some(b) = &self.backend {
            b.reap();
        }
    }
}

/// The last `n` lines of the file at `path` (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    super::tail_lines(&std::fs::read_to_string(path).unwrap_or_default(), n)
}

/// An emulator with 3 shards (plus `args`), its log in `dir/emulator.log`, its dataset loaded
/// at `scale` (dbs 0, 1, 3 and 7). Returns the emulator and its address.
pub fn start_emulator(dir: &Path, args: &[&str], scale: &str) -> (Emulator, String) {
    let (emu, addr) = start_empty_emulator(dir, args);
    emu.load(scale);
    (emu, addr)
}

/// An emulator with 3 shards (plus `args`) and no data, its log in `dir/emulator.log`.
pub fn start_empty_emulator(dir: &Path, args: &[&str]) -> (Emulator, String) {
    let mut a = vec!["--shards", "3"];
    a.extend_from_slice(args);
    let emu = Emulator::start(dir, &a);
    let addr = emu.addr().to_string();
    (emu, addr)
}

/// Writes `dir/replicate.yaml`: source `src`, `target_yaml` (the `target:` section body,
/// indented by two spaces), checkpoints in `dir/ckpt`, and `extra` (more top-level YAML).
pub fn write_config(dir: &Path, src: &str, target_yaml: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("replicate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  addr: {src}\ntarget:\n{target_yaml}checkpoint:\n  dir: {}\n  interval: 1s\n{extra}",
            dir.join("ckpt").display()
        ),
    )
    .unwrap();
    cfg
}

/// The real binary replicating with `cfg`, logging to `log`.
pub fn spawn_replica(cfg: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
            .args(["replicate", cfg.to_str().unwrap(), "--log-file"])
            .arg(log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The emulator's `work` mix (every specially journaled write) in the background.
pub fn spawn_work(addr: &str, rate: &str, ops: &str) -> std::thread::JoinHandle<bool> {
    let (addr, rate, ops) = (addr.to_string(), rate.to_string(), ops.to_string());
    std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_dfly-emulator"))
            .args(["work", "--target", &addr, "--rate", &rate, "--ops", &ops])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    })
}

/// Runs `check --mode full` once a second for up to `secs` seconds until it says equal
/// (exit 0); `Err(last report)` otherwise.
pub fn wait_check_equal(cfg: &Path, dir: &Path, secs: u32) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..secs {
        std::thread::sleep(Duration::from_secs(1));
        let out = super::run_bounded(
            Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
                .args(["-q", "check", cfg.to_str().unwrap(), "--mode", "full"])
                .args(["--rounds", "1", "--result-dir"])
                .arg(dir.join("check")),
            Duration::from_secs(30),
        );
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.code() == Some(0) {
            assert!(last.contains("result: equal"), "{last}");
            return Ok(());
        }
    }
    Err(last)
}

/// A plain client connection with test timeouts.
pub fn connect(addr: &str) -> Conn {
    let mut ep = Endpoint::plain(addr);
    ep.connect_timeout = Duration::from_secs(5);
    ep.io_timeout = Some(Duration::from_secs(10));
    Conn::connect(&ep).unwrap()
}

/// Sends one command, panics on an error reply.
pub fn call(c: &mut Conn, args: &[&str]) -> Value {
    let v = c.request(&Cmd::from_args(args)).unwrap();
    assert!(!v.is_error(), "{args:?}: {v:?}");
    v
}

/// Waits until `log` contains `needle` (up to `secs`).
pub fn wait_log(log: &Path, needle: &str, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Waits until `log` contains `needle` at least `n` times; panics with the log after 120 s.
/// Kill scenarios that count resumes wait for the n-th "stable sync: following the journal"
/// before each kill: a fixed sleep lets a loaded machine kill a run still in its full sync
/// (or still reading its markers).
pub fn wait_log_count(log: &Path, needle: &str, n: usize) {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return;
        }
        assert!(
            Instant::now() < end,
            "{needle:?} not {n} times in the log after 120 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
